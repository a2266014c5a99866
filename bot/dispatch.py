"""Dispatch: who is this, which command, and what to answer. Shared by every channel.

Channels translate platform updates into :class:`InboundMessage` / :class:`ButtonPress` and
hand them here; everything that decides behaviour lives in this module, so the console,
Telegram and Slack behave the same.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from pydantic import BaseModel

from agents import pairing
from agents.approvals import Outcome, bundle, bundled
from agents.errors import AgentInputError, RegistryError
from agents.lead import parse_lead
from agents.proposal import parse_proposal
from agents.questions import Answer
from agents.release_notes import parse_release
from agents.triage import parse_triage
from bot import render, trace_story
from bot.buttons import BundleChoice, EditChoice, QuestionChoice, bundle_button, parse_button
from bot.commands import COMMANDS, ParsedCommand, help_text, parse_command
from bot.digest_commands import DigestCommands
from bot.flow_commands import FlowCommands
from bot.memory_commands import MemoryCommands
from bot.messages import MAX_TEXT, ButtonPress, InboundMessage, Reply
from config import Settings
from connectors.email import is_sendable_address
from jobs.service import JobRequest, JobService
from store import queries
from store.errors import NotFoundError
from store.log import EventLog, utcnow
from store.projections import periods
from store.queries import ActionView, ApprovalView

logger = logging.getLogger(__name__)

REFUSAL = "Sorry, I only take instructions from my operator."
REFUSAL_WINDOW = 3600.0  # seconds
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Dispatcher:
    def __init__(self, *, settings: Settings, service: JobService, log: EventLog) -> None:
        self._settings = settings
        self._service = service
        self._log = log
        self._refused: dict[str, float] = {}  # stranger -> when we last told them no
        self._handlers: dict[str, Callable[[InboundMessage, ParsedCommand], list[Reply]]] = {
            "help": self._help,
            "lead": self._lead,
            "triage": self._triage,
            "proposal": self._proposal,
            "release": self._release,
            "approvals": self._approvals,
            "trace": self._trace,
            "status": self._status,
            "budget": self._budget,
            "pause": self._pause,
            "resume": self._resume,
            "cancel": self._cancel,
            "undo": self._undo,
            "pair": lambda msg, cmd: [self._pair(msg, cmd)],
            "contact": self._contact,
            **MemoryCommands(service.memory).handlers(),
            **FlowCommands(log, advance=service.advance_flows).handlers(),
            **DigestCommands(service.digests()).handlers(),
        }
        missing = set(COMMANDS) - set(self._handlers)
        if missing:
            raise RuntimeError(f"commands without a handler: {sorted(missing)}")
        self.on_job_activity: Callable[[str], None] = lambda job_id: None

    # Messages --------------------------------------------------------------------------

    def handle_message(self, msg: InboundMessage) -> list[Reply]:
        """Answer a message once: a redelivery of a platform message id already handled is
        dropped. The id is recorded after handling, so a crash in between handles it again
        (a /lead is then deduplicated by the job's idempotency key)."""
        key = _inbound_key(msg.channel, msg.platform_id) if msg.platform_id else None
        if key is not None and queries.seen(key):
            logger.info("dropped a redelivered message %s from %s", msg.platform_id, msg.sender)
            return []
        replies = self._handle_message(msg)
        if key is not None:
            queries.mark_seen(key, now=utcnow())
        return replies

    def _first_refusal(self, sender: str) -> bool:
        """One polite refusal per stranger per hour; the rest are only logged (no spam back)."""
        now = time.monotonic()
        if now - self._refused.get(sender, -REFUSAL_WINDOW) < REFUSAL_WINDOW:
            return False
        if len(self._refused) > 10_000:
            self._refused.clear()
        self._refused[sender] = now
        return True

    def is_operator(self, channel: str, user_id: str) -> bool:
        """Listed in OPCORE_OPERATORS, or paired with a one-time code."""
        return self._settings.is_operator(channel, user_id) or pairing.is_paired(
            f"{channel}:{user_id}"
        )

    def _handle_message(self, msg: InboundMessage) -> list[Reply]:
        text = _CONTROL.sub("", msg.text).strip()  # NUL and friends: PostgreSQL refuses them
        pair = parse_command(text[:200])
        if pair is not None and pair.name == "pair":
            return [self._pair(msg, pair)]
        if not self.is_operator(msg.channel, msg.sender_id):
            logger.warning("refused a message from %s (not an operator): %r", msg.sender, text[:80])
            return [Reply(REFUSAL)] if self._first_refusal(msg.sender) else []
        if not text:
            return []
        if len(text) > MAX_TEXT:
            return [
                Reply(
                    f"That message is {len(text)} characters; the limit is {MAX_TEXT}. Nothing was done."
                )
            ]
        command = parse_command(text)
        if command is None:
            editing = self._service.pending_edit(msg.channel, msg.chat_id)
            if editing is not None:
                return self._correct(msg, editing, text)
            return [Reply("I work with commands for now. Try /help.")]
        spec = COMMANDS.get(command.name)
        if spec is None:
            return [Reply(f"Unknown command /{command.name}. Try /help.")]
        if spec.needs_args and not command.args:
            return [Reply(f"Usage: {spec.usage}")]
        return self._handlers[command.name](msg, command)

    def _pair(self, msg: InboundMessage, cmd: ParsedCommand) -> Reply:
        if not cmd.args:
            return Reply(f"Usage: {COMMANDS['pair'].usage}")
        if self.is_operator(msg.channel, msg.sender_id):
            return Reply("You are already an operator.")
        code = cmd.args.split()[0]
        if pairing.redeem(
            self._log, code, channel=msg.channel, user_id=msg.sender_id, chat_id=msg.chat_id
        ):
            logger.warning("paired %s as an operator", msg.sender)
            return Reply("Paired: you are now an operator of this opcore. Try /help.")
        logger.warning("refused a pairing attempt from %s", msg.sender)
        return Reply(
            f"That code is not valid here, or it expired. Run `opcore pair {msg.channel}` again."
        )

    def _correct(self, msg: InboundMessage, approval: ApprovalView, text: str) -> list[Reply]:
        submitted = self._service.revise(
            approval,
            text,
            by=msg.sender,
            channel=msg.channel,
            chat_id=msg.chat_id,
            inbound_key=_inbound_key(msg.channel, msg.platform_id) if msg.platform_id else None,
        )
        self.on_job_activity(submitted.job.job_id)
        action = queries.get_action(approval.action_id)
        return [
            Reply(
                f'Revising "{action.summary}" with your correction; the new draft will come '
                f"for approval. [job {submitted.job.short_id}]"
            )
        ]

    def _contact(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        parts = cmd.args.split()
        changes = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        unknown = set(changes) - {"email", "name", "company"}
        if not parts or not changes or unknown or len(changes) != len(parts) - 1:
            return [Reply(f"Usage: {COMMANDS['contact'].usage}")]
        changes = {k: v.replace("_", " ") if k != "email" else v for k, v in changes.items()}
        if "email" in changes and not is_sendable_address(changes["email"]):
            return [Reply(f"{changes['email']} does not look like an address I can send to.")]
        try:
            contact = self._service.update_contact(parts[0], changes, by=msg.sender)
        except (NotFoundError, ValueError) as exc:
            return [Reply(f"{exc}. Nothing changed.")]
        return [
            Reply(
                f"Updated: {contact.name} <{contact.email}>"
                + (f" ({contact.company})" if contact.company else "")
                + ". Pending drafts to the old address will ask again before sending."
            )
        ]

    def _help(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        return [Reply(help_text())]

    def _lead(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        try:
            lead = parse_lead(cmd.args)
        except AgentInputError as exc:
            return [Reply(str(exc))]
        submitted = self._service.submit(
            JobRequest(
                agent="lead",
                input=lead.model_dump(),
                text=f"/lead {cmd.args}",
                channel=msg.channel,
                chat_id=msg.chat_id,
                requested_by=msg.sender,
                inbound_key=_inbound_key(msg.channel, msg.platform_id) if msg.platform_id else None,
            )
        )
        job = submitted.job
        if submitted.duplicate:
            return []  # a redelivered update: the first delivery was answered
        self.on_job_activity(job.job_id)
        who = f"{lead.name} ({lead.company})" if lead.company else lead.name
        if submitted.paused:
            return [
                Reply(
                    f"The lead agent is paused: job {job.short_id} waits in the log. /resume lead to run it."
                )
            ]
        queued = (
            "" if submitted.enqueued else " The queue is unreachable; it will run when it is back."
        )
        return [Reply(f"On it: drafting a reply to {who}. [job {job.short_id}]{queued}")]

    def _triage(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        try:
            ticket = parse_triage(cmd.args)
        except AgentInputError as exc:
            return [Reply(str(exc))]
        return self._submit(msg, cmd, "triage", ticket, f"triaging the ticket from {ticket.sender}")

    def _proposal(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        try:
            proposal = parse_proposal(cmd.args)
        except AgentInputError as exc:
            return [Reply(str(exc))]
        return self._submit(
            msg, cmd, "proposal", proposal, f"drafting the proposal to {proposal.email}"
        )

    def _release(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        try:
            release = parse_release(cmd.args)
        except AgentInputError as exc:
            return [Reply(str(exc))]
        return self._submit(
            msg, cmd, "release_notes", release, f"drafting the notes for {release.version}"
        )

    def _submit(
        self, msg: InboundMessage, cmd: ParsedCommand, agent: str, payload: BaseModel, doing: str
    ) -> list[Reply]:
        """Submit a job for ``agent`` and say so; nothing for a redelivered message."""
        submitted = self._service.submit(
            JobRequest(
                agent=agent,
                input=payload.model_dump(),
                text=f"/{cmd.name} {cmd.args}",
                channel=msg.channel,
                chat_id=msg.chat_id,
                requested_by=msg.sender,
                inbound_key=_inbound_key(msg.channel, msg.platform_id) if msg.platform_id else None,
            )
        )
        job = submitted.job
        if submitted.duplicate:
            return []
        self.on_job_activity(job.job_id)
        if submitted.paused:
            return [
                Reply(
                    f"The {agent} agent is paused: job {job.short_id} waits in the log. "
                    f"/resume {agent} to run it."
                )
            ]
        return [Reply(f"On it: {doing}. [job {job.short_id}]")]

    def _approvals(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        pending = queries.pending_approvals()
        if not pending:
            return [Reply("No approvals waiting.")]
        replies = [Reply(f"{len(pending)} waiting for you:")]
        groups: dict[str, list[tuple[ApprovalView, ActionView]]] = {}
        for approval in pending:
            action = queries.get_action(approval.action_id)
            groups.setdefault(f"{action.connector}.{action.action}", []).append((approval, action))
        for kind, items in groups.items():
            # A flagged proposal is decided on its own, never inside "Approve all".
            clean = [(a, act) for a, act in items if not any(f.startswith("⚠") for f in act.flags)]
            if len(clean) > 1:
                token = bundle(self._log, kind, [a.token for a, _ in clean], by=msg.sender)
                who = ", ".join(str(act.params.get("to", act.summary)) for _, act in clean[:5])
                more = f" and {len(clean) - 5} more" if len(clean) > 5 else ""
                flagged = len(items) - len(clean)
                apart = f" ({flagged} flagged, to decide one by one below)" if flagged else ""
                replies.append(
                    Reply(
                        f"{len(clean)} waiting of kind {kind}: {who}{more}{apart}",
                        (bundle_button(token, len(clean)),),
                    )
                )
            for approval, action in items:
                replies.append(render.proposal(queries.get_job(approval.job_id), action, approval))
        return replies

    def _trace(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        try:
            job, action_id = trace_story.resolve(cmd.args)
        except NotFoundError as exc:
            return [Reply(f"{exc}. Usage: {COMMANDS['trace'].usage}")]
        trace = trace_story.build(job, self._log.read_correlated(job.job_id))
        return [Reply(trace_story.story(trace, focus=action_id))]

    def _status(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        return [Reply(render.status(self._service.status()))]

    def _budget(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        day, month = periods(utcnow().replace(tzinfo=None))
        text = render.budget(self._service.budget_lines())
        [cache_day] = queries.spend_rows(day, prefix="cache", limit=1) or [("cache", 0.0, 0)]
        [cache_month] = queries.spend_rows(month, prefix="cache", limit=1) or [("cache", 0.0, 0)]
        contacts = []
        for scope, usd, calls in queries.spend_rows(month, prefix="contact:"):
            contact_id = scope.removeprefix("contact:")
            try:
                who = queries.get_contact(contact_id).email
            except NotFoundError:
                who = contact_id
            contacts.append((who, usd, calls))
        return [Reply(text + render.spend_details(cache_day, cache_month, contacts))]

    def _pause(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        agent = cmd.args.split()[0].lower()
        try:
            changed = self._service.pause(agent, by=msg.sender)
        except RegistryError as exc:
            return [Reply(str(exc))]
        if not changed:
            return [Reply(f"{agent} is already paused. /resume {agent} to start it again.")]
        return [Reply(f"Paused {agent}: its jobs wait in the log until /resume {agent}.")]

    def _resume(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        agent = cmd.args.split()[0].lower()
        try:
            waiting = self._service.resume(agent, by=msg.sender)
        except RegistryError as exc:
            return [Reply(str(exc))]
        if waiting is None:
            return [Reply(f"{agent} is not paused.")]
        for job_id in waiting:
            self.on_job_activity(job_id)
        return [Reply(f"Resumed {agent}; {len(waiting)} waiting job(s) sent to the queue.")]

    def _cancel(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        try:
            job = queries.find_job(cmd.args.split()[0])
        except NotFoundError as exc:
            return [Reply(f"{exc}. Usage: {COMMANDS['cancel'].usage}")]
        if not self._service.cancel(job, by=msg.sender):
            return [Reply(f"Job {job.short_id} is already {job.status}; nothing to cancel.")]
        return [
            Reply(
                f"Cancelled job {job.short_id}; nothing more will be done for it. (/trace {job.short_id})"
            )
        ]

    def _undo(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        try:
            job = queries.find_job(cmd.args.split()[0])
        except NotFoundError as exc:
            return [Reply(f"{exc}. Usage: {COMMANDS['undo'].usage}")]
        executed = queries.executed_actions_for_job(job.job_id)
        if not executed:
            return [Reply(f"Job {job.short_id} has no executed action to undo.")]
        lines = []
        for action in executed:
            outcome = self._service.undo(action.action_id, by=msg.sender)
            lines.append(
                {
                    "compensated": f"Undone: {action.summary}",
                    "irreversible": f"Cannot be undone: {action.summary} ({action.connector}.{action.action} has no undo)",
                    "compensation_failed": f"Undo failed: {action.summary} (see /trace {job.short_id})",
                }.get(outcome, f"{action.summary}: {outcome}")
            )
        return [Reply("\n".join(lines))]

    # Buttons ---------------------------------------------------------------------------

    def handle_button(self, press: ButtonPress) -> Reply:
        """Answer a button press once (see :meth:`handle_message`)."""
        key = _inbound_key(press.channel, press.platform_id) if press.platform_id else None
        if key is not None and queries.seen(key):
            logger.info("dropped a redelivered button press %s", press.platform_id)
            return Reply("")
        reply = self._handle_button(press)
        if key is not None:
            queries.mark_seen(key, now=utcnow())
        return reply

    def _handle_button(self, press: ButtonPress) -> Reply:
        if not self.is_operator(press.channel, press.sender_id):
            logger.warning("refused a button press from %s (not an operator)", press.sender)
            return Reply(REFUSAL)
        choice = parse_button(press.data)
        if choice is None:
            logger.warning("dropped a button press with malformed data %r", press.data[:80])
            return Reply("That button is not one of mine.")
        if isinstance(choice, QuestionChoice):
            return self._answer(press, choice)
        if isinstance(choice, BundleChoice):
            return self._approve_all(press, choice)
        if isinstance(choice, EditChoice):
            editing = self._service.request_edit(
                choice.token, by=press.sender, channel=press.channel, chat_id=press.chat_id
            )
            if editing is None:
                return Reply("That draft is no longer waiting; nothing to edit. See /approvals.")
            return Reply(
                "What should change? Write it in plain words as your next message, e.g. "
                '"shorter, and offer Tuesday or Wednesday for the call". '
                "The draft waits, unchanged, until the new one comes."
            )
        result = self._service.decide(
            choice.token, approve=choice.approve, decided_by=press.sender, channel=press.channel
        )
        action, approval = result.action, result.approval
        if result.outcome is Outcome.UNKNOWN or action is None or approval is None:
            return Reply("That button is no longer valid. See /approvals.")
        job = queries.get_job(action.job_id)
        match result.outcome:
            case Outcome.APPROVED:
                self.on_job_activity(job.job_id)
                return Reply(f"Approved: {action.summary}. Working on it. [job {job.short_id}]")
            case Outcome.REJECTED:
                return Reply(f"Rejected: nothing sent. (/trace {job.short_id})")
            case Outcome.CHANGED:
                card = render.proposal(
                    job,
                    action,
                    approval,
                    headline=f"Not sent: {result.reason} since you were asked. Here it is again",
                )
                return card
            case Outcome.EXPIRED:
                return Reply(
                    f"This approval expired at {render.when(approval.expires_at)}; nothing was sent. "
                    f"(/trace {job.short_id})"
                )
            case _:
                return Reply(render.decision(action, approval))

    def _approve_all(self, press: ButtonPress, choice: BundleChoice) -> Reply:
        tokens = bundled(self._log, choice.token)
        if not tokens:
            return Reply("That button is no longer valid. See /approvals.")
        counts: dict[Outcome, int] = {}
        for token in tokens:
            result = self._service.decide(
                token, approve=True, decided_by=press.sender, channel=press.channel
            )
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
            if result.outcome is Outcome.APPROVED and result.action is not None:
                self.on_job_activity(result.action.job_id)
        approved = counts.get(Outcome.APPROVED, 0)
        others = [
            f"{n} {o.value.replace('_', ' ')}"
            for o, n in counts.items()
            if o is not Outcome.APPROVED
        ]
        tail = f" ({', '.join(others)})" if others else ""
        return Reply(f"Approved {approved} of {len(tokens)}{tail}. Working on it.")

    def _answer(self, press: ButtonPress, choice: QuestionChoice) -> Reply:
        result = self._service.answer(
            choice.token, choice.choice, by=press.sender, channel=press.channel
        )
        q = result.question
        if result.answer is Answer.UNKNOWN or q is None:
            return Reply("That button is no longer valid.")
        if result.answer is Answer.INVALID:
            return Reply("That is not one of the choices.")
        if result.answer is Answer.ALREADY_ANSWERED:
            return Reply(render.answered(q))
        job = queries.get_job(q.job_id)
        if result.requeue_job or result.requeue_action:
            self.on_job_activity(job.job_id)
        return Reply(
            {
                "retry": f"Trying again. [job {job.short_id}]",
                "discard": f"Discarded. (/trace {job.short_id})",
                "done": f"Recorded as done; it will not be repeated. (/trace {job.short_id})",
                "raise": f"Budget raised for this job, once. Trying again. [job {job.short_id}]",
                "skip": f"Skipped: job {job.short_id} is cancelled; nothing was spent.",
                "pause": f"Paused {job.agent}: job {job.short_id} waits in the log until /resume {job.agent}.",
            }.get(choice.choice, f"Recorded: {choice.choice}. (/trace {job.short_id})")
        )


def _inbound_key(channel: str, platform_id: str) -> str:
    return f"{channel}:{platform_id}"
