"""The business commands: /flows, /won, /paid, /backlog.

``/won <contact email>`` records that the client accepted (``ContactWon``: the consultant
flow moves on to milestones and invoicing); ``/paid <invoice number>`` records a payment that
came outside Stripe (a bank transfer); ``/flows`` lists the open flows and where each stands;
``/backlog`` ranks the open bugs and feature requests triage posted on the blackboard.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from agents import board
from bot.commands import COMMANDS, ParsedCommand
from bot.messages import InboundMessage, Reply
from store import business, queries
from store import events as ev
from store.errors import NotFoundError
from store.log import EventLog

Handler = Callable[[InboundMessage, ParsedCommand], list[Reply]]
ICONS = {"running": "\u25b6", "waiting": "\u23f3", "failed": "\u26a0", "done": "\u2713"}


def _age(moment: datetime, now: datetime) -> str:
    minutes = int((now - moment).total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} d"


class FlowCommands:
    def __init__(self, log: EventLog, *, advance: Callable[[], object]) -> None:
        self._log = log
        self._advance = advance

    def handlers(self) -> dict[str, Handler]:
        return {"flows": self.flows, "won": self.won, "paid": self.paid, "backlog": self.backlog}

    def backlog(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        return [Reply(board.render_backlog(board.backlog()))]

    def flows(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        now = datetime.now(UTC)
        open_flows = business.list_flows(statuses=business.OPEN_FLOWS, limit=20)
        if not open_flows:
            return [Reply("No business flow is open. A /proposal starts the consultant flow.")]
        lines = [f"{len(open_flows)} open flow(s):"]
        for flow in open_flows:
            who = ""
            if flow.contact_id:
                try:
                    contact = queries.get_contact(flow.contact_id)
                    who = f" \u00b7 {contact.company or contact.name}"
                except NotFoundError:
                    who = ""
            state = flow.status + (f" for {flow.waiting_for}" if flow.waiting_for else "")
            until = f" until {flow.until:%d %b}" if flow.until else ""
            trace = f" /trace {queries.short_id(flow.job_id)}" if flow.job_id else ""
            lines.append(
                f"{ICONS.get(flow.status, '-')} {flow.template} {flow.short_id}{who}: "
                f"{flow.step} ({state}{until}, {_age(flow.updated_at, now)}){trace}"
            )
            if flow.last_error:
                lines.append(f"   {flow.last_error[:160]}")
        return [Reply("\n".join(lines))]

    def won(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        email = cmd.args.strip().strip("<>").lower()
        contact = queries.contact_by_email(email) if email else None
        if contact is None:
            return [Reply(f"Usage: {COMMANDS['won'].usage} (a contact's email; see /facts)")]
        flows = business.open_flows_for_contact(contact.contact_id)
        result = self._log.append(
            ev.contact_stream(contact.contact_id),
            [
                ev.NewEvent(
                    ev.ContactWon(contact_id=contact.contact_id, by=msg.sender, evidence="/won"),
                    idempotency_key=f"won:{contact.contact_id}:{'|'.join(f.flow_id for f in flows)}",
                )
            ],
            metadata=ev.Metadata(actor=msg.sender),
        )
        self._advance()
        if result.duplicate:
            return [Reply(f"Already recorded: {contact.name} accepted.")]
        moving = [f for f in flows if f.waiting_for == "won"]
        tail = (
            " The consultant flow moves on: milestones and the invoice come for approval."
            if moving
            else " No flow was waiting for it."
        )
        return [
            Reply(
                f"Won \U0001f389 {contact.name}"
                + (f" ({contact.company})." if contact.company else ".")
                + tail
            )
        ]

    def paid(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        number = cmd.args.strip()
        try:
            invoice = business.get_invoice(number)
        except NotFoundError:
            return [Reply(f"Usage: {COMMANDS['paid'].usage}; no invoice {number!r}.")]
        if invoice.status == "paid":
            return [Reply(f"Invoice {invoice.number} is already paid.")]
        if invoice.status not in {"issued", "sent"}:
            return [Reply(f"Invoice {invoice.number} is {invoice.status}: nothing to mark paid.")]
        self._log.append(
            "payments-manual",
            [
                ev.NewEvent(
                    ev.PaymentRecorded(
                        source="manual",
                        external_id=f"{invoice.number}:{msg.sender}",
                        status="succeeded",
                        amount=str(invoice.total),
                        currency=invoice.currency,
                        invoice_number=invoice.number,
                        contact_id=invoice.contact_id,
                        description=f"marked paid with /paid by {msg.sender}",
                    ),
                    idempotency_key=f"payment:manual:{invoice.number}",
                )
            ],
            metadata=ev.Metadata(actor=msg.sender),
        )
        self._advance()
        return [
            Reply(
                f"Invoice {invoice.number} marked paid ({invoice.currency} {invoice.total:,.2f})."
            )
        ]
