"""Choreography: small reactions that subscribe to event types, with no conductor in charge.

Each reaction follows the log with its own cursor and turns an event into the events that
follow from it, under idempotency keys, so a reaction run twice (a restart, two processes)
does its work once:

- ``finance``: a verified Stripe webhook (``payment_intent.succeeded``/``payment_failed``,
  ``invoice.paid``/``payment_failed``, ``charge.refunded``) becomes ``PaymentRecorded``,
  matched to our invoice by the number in its metadata or description, else by the client's
  email and the exact amount; the payer's email links it to a contact.
- ``paid``: a payment that settles an invoice triggers the thank-you email (a proposal to
  approve) and a bookkeeping note in memory (``worklog`` of the contact).
- ``tickets``: a webhook delivery whose event type matches ``ticket_events`` (``{"email":
  ..., "subject": ..., "text": ...}``) or, with ``email_tickets``, a new inbound email thread
  (not a reply to anything opcore sent, not an auto-reply) becomes a ``triage`` job; triage
  posts what it learns on the blackboard.

When to pick which pattern (the README says the same): a *conductor* (jobs/flows.py) when
the order matters and someone must know where a case stands; *choreography* (here) when one
fact has several independent consequences that need no coordination; a *blackboard*
(``BoardPosted``) when agents contribute partial knowledge that others pick up later.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from agents.policy import UNVERIFIED
from connectors.email import is_sendable_address
from store import business, queries
from store import events as ev
from store.errors import NotFoundError
from store.log import EventLog

logger = logging.getLogger(__name__)

CURSOR = "reactions"
MAX_TICKET = 8000
_NUMBER = re.compile(r"\b(\d{4}-\d{4})\b")
# Stripe amounts are in the currency's smallest unit; these have none.
ZERO_DECIMAL = frozenset(
    {
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    }
)
STRIPE_EVENTS = {
    "payment_intent.succeeded": "succeeded",
    "payment_intent.payment_failed": "failed",
    "invoice.paid": "succeeded",
    "invoice.payment_failed": "failed",
    "charge.refunded": "refunded",
}


def stripe_payment(delivery: ev.WebhookReceived) -> ev.PaymentRecorded | None:
    """The finance event in a Stripe delivery, or None if it carries none. Pure."""
    status = STRIPE_EVENTS.get(delivery.event_type)
    obj = (
        delivery.payload.get("data", {}).get("object")
        if isinstance(delivery.payload.get("data"), dict)
        else None
    )
    if status is None or not isinstance(obj, dict):
        return None
    currency = str(obj.get("currency") or "").upper()
    minor = (
        obj.get("amount_received")
        or obj.get("amount_paid")
        or obj.get("amount_refunded")
        or obj.get("amount")
        or obj.get("amount_due")
    )
    try:
        amount = Decimal(int(minor or 0))
    except (TypeError, ValueError, InvalidOperation):
        logger.warning(
            "stripe delivery %s: unreadable amount %r; dropped", delivery.delivery_id, minor
        )
        return None
    if currency not in ZERO_DECIMAL:
        amount = amount / 100
    raw_metadata = obj.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    texts = [
        str(metadata.get("invoice_number") or ""),
        str(obj.get("description") or ""),
        str(metadata.get("invoice") or ""),
    ]
    number = next((m.group(1) for t in texts if (m := _NUMBER.search(t))), None)
    email = str(
        obj.get("receipt_email")
        or obj.get("customer_email")
        or (obj.get("billing_details") or {}).get("email")
        or ""
    ).lower()
    return ev.PaymentRecorded(
        source=delivery.source,
        external_id=str(obj.get("id") or delivery.delivery_id),
        status=status,  # type: ignore[arg-type]
        amount=f"{amount:.2f}",
        currency=currency or "XXX",
        invoice_number=number,
        email=email,
        description=str(obj.get("description") or "")[:300],
    )


def ticket_of(payload: dict[str, Any]) -> dict[str, str] | None:
    """Sender and text of a ticket webhook's payload (``email``/``from``, ``subject``,
    ``text``/``body``/``message``), or None. Pure."""
    sender = payload.get("email") or payload.get("from")
    text = payload.get("text") or payload.get("body") or payload.get("message")
    if not isinstance(sender, str) or not isinstance(text, str) or not text.strip():
        return None
    subject = payload.get("subject")
    head = f"{subject}\n\n" if isinstance(subject, str) and subject.strip() else ""
    return {"sender": sender.strip(), "ticket": f"{head}{text.strip()}"}


def new_thread(email: ev.EmailReceived) -> bool:
    """A message that starts a conversation: not a reply to anything, not automatic. Pure."""
    return not (
        email.auto_submitted or email.in_reply_to or email.references or email.answers_action
    )


@dataclass
class Reactions:
    log: EventLog
    # Requests a job (the thank-you email) the way the conductor does; returns its id.
    request_job: Callable[..., str] | None = None
    remember: Callable[..., Any] | None = None
    ticket_events: str = ""  # glob of webhook event types that are support tickets
    email_tickets: bool = False

    def run_once(self) -> int:
        position = queries.cursor(CURSOR)
        if position is None:
            queries.save_cursor(CURSOR, self.log.head())
            return 0
        done = 0
        types = (
            ev.WebhookReceived.type_name,
            ev.PaymentRecorded.type_name,
            ev.EmailReceived.type_name,
        )
        while batch := self.log.read_all(after=position, limit=200, types=types):
            for event in batch:
                done += self._react(event)
                position = event.position
            queries.save_cursor(CURSOR, position)
        return done

    def _react(self, event: ev.RecordedEvent) -> int:
        data = event.data
        if isinstance(data, ev.WebhookReceived) and data.kind == "stripe":
            payment = stripe_payment(data)
            if payment is None:
                return 0
            payment = self._matched(payment)
            self.log.append(
                f"payments-{data.source}",
                [
                    ev.NewEvent(
                        payment,
                        idempotency_key=f"payment:{payment.source}:{payment.external_id}:{payment.status}",
                    )
                ],
                metadata=ev.Metadata(actor="reaction:finance", causation_id=event.event_id),
            )
            return 1
        if isinstance(data, ev.WebhookReceived) and self._is_ticket_event(data.event_type):
            ticket = ticket_of(data.payload)
            if ticket is None:
                logger.warning(
                    "webhook %s/%s (%s) is not a ticket: it needs an email and a text; dropped",
                    data.source,
                    data.delivery_id,
                    data.event_type,
                )
                return 0
            return self._triage(ticket, key=f"ticket:{data.source}:{data.delivery_id}")
        if isinstance(data, ev.EmailReceived) and self.email_tickets and new_thread(data):
            subject = f"{data.subject}\n\n" if data.subject else ""
            return self._triage(
                {"sender": data.from_address, "ticket": f"{subject}{data.text}".strip()},
                key=f"ticket:email:{data.message_id}",
                unverified="the ticket came by email, whose sender anyone can forge",
            )
        if (
            isinstance(data, ev.PaymentRecorded)
            and data.status == "succeeded"
            and data.invoice_number
        ):
            return self._paid(data, event)
        return 0

    def _is_ticket_event(self, event_type: str) -> bool:
        return bool(self.ticket_events) and fnmatch.fnmatchcase(event_type, self.ticket_events)

    def _triage(self, ticket: dict[str, str], *, key: str, unverified: str = "") -> int:
        if self.request_job is None or not ticket["ticket"]:
            return 0
        if not is_sendable_address(ticket["sender"]):
            logger.warning(
                "ticket %s: %r is not an address to reply to; dropped", key, ticket["sender"]
            )
            return 0
        job_input = {"sender": ticket["sender"], "ticket": ticket["ticket"][:MAX_TICKET]}
        if unverified:
            job_input[UNVERIFIED] = unverified
        self.request_job(
            "triage",
            job_input,
            key=key,
            text=f"ticket from {ticket['sender']}",
        )
        return 1

    @staticmethod
    def _matched(payment: ev.PaymentRecorded) -> ev.PaymentRecorded:
        contact = queries.contact_by_email(payment.email) if payment.email else None
        number = payment.invoice_number
        if number is not None:
            try:
                invoice = business.get_invoice(number)
            except NotFoundError:
                number = None
            else:
                contact_id = contact.contact_id if contact else invoice.contact_id
                return payment.model_copy(update={"contact_id": contact_id})
        if contact is not None:
            match = business.open_invoice_for(
                contact.contact_id, Decimal(payment.amount), payment.currency
            )
            number = match.number if match else None
        return payment.model_copy(
            update={"invoice_number": number, "contact_id": contact.contact_id if contact else None}
        )

    def _paid(self, payment: ev.PaymentRecorded, event: ev.RecordedEvent) -> int:
        try:
            invoice = business.get_invoice(str(payment.invoice_number))
        except NotFoundError:
            return 0
        if invoice.contact_id is None:
            return 0
        if self.remember is not None:
            self.remember(
                f"Bookkeeping: invoice {invoice.number} paid, {payment.currency} {payment.amount} "
                f"via {payment.source} ({payment.external_id}).",
                kind="worklog",
                contact_id=invoice.contact_id,
                source="payment",
                by="reaction:paid",
            )
        if self.request_job is not None:
            self.request_job(
                "thank_you",
                {"invoice_number": invoice.number},
                key=f"thank-you:{invoice.number}",
                text=f"thank-you for invoice {invoice.number}",
            )
        return 1
