"""The memory commands: /remember, /recall, /facts, /why, /forget, /unforget.

Parsing is pure (:func:`parse_remember`, :func:`parse_recall`); the handlers call the memory
service and render short, phone-readable answers with the ids the other commands take.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.commands import COMMANDS, ParsedCommand
from bot.messages import InboundMessage, Reply
from bot.render import describe
from store import events as ev
from store.errors import NotFoundError, RecallError
from store.memory.base import MEMORY_KINDS, RecallFilter
from store.memory.service import Fact, Memory, MemoryInputError, MemoryItem, Recall
from store.models import ContactRow

Handler = Callable[[InboundMessage, ParsedCommand], list[Reply]]

_FACT = re.compile(
    r"^(?P<who>.+?)\s+(?P<key>[A-Za-z][A-Za-z _-]{0,30}?)\s*:\s*(?P<value>.+)$", re.S
)
_RULE = re.compile(r"^rule\s*:\s*(?P<value>.+)$", re.I | re.S)
_FILTER = re.compile(r"\b(?P<name>contact|kind):(?P<value>\S+)", re.I)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PREVIEW = 140


@dataclass(frozen=True)
class RememberRequest:
    """What /remember was asked: a rule, a fact about a contact, or a note."""

    kind: str  # "rule", "fact" or "note"
    text: str
    who: str = ""
    key: str = ""


def parse_remember(args: str) -> RememberRequest:
    """``rule: …`` is a business rule; ``<contact> <key>: <value>`` may be a fact about a
    contact (the caller checks the contact exists); anything else is a note."""
    args = args.strip()
    rule = _RULE.match(args)
    if rule:
        return RememberRequest("rule", rule.group("value").strip())
    fact = _FACT.match(args)
    if fact and len(fact.group("who")) <= 100:
        return RememberRequest(
            "fact",
            fact.group("value").strip(),
            who=fact.group("who").strip(),
            key=fact.group("key").strip().lower(),
        )
    return RememberRequest("note", args)


def parse_recall(args: str) -> tuple[str, str | None, frozenset[str]]:
    """``/recall audit contact:jane@acme.example kind:proposal`` -> query, contact, kinds."""
    contact: str | None = None
    kinds: set[str] = set()
    for match in _FILTER.finditer(args):
        if match.group("name").lower() == "contact":
            contact = match.group("value")
        else:
            kinds.add(match.group("value").lower())
    query = _FILTER.sub(" ", args)
    return " ".join(query.split()), contact, frozenset(kinds)


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW else flat[: PREVIEW - 1] + "…"


def _contact_label(contact_id: str | None) -> str:
    if contact_id is None:
        return ""
    row = ContactRow.get_or_none(ContactRow.contact_id == contact_id)
    return f" · {row.email}" if row is not None else f" · contact {contact_id}"


def _subject_label(subject: str) -> str:
    if subject.startswith("contact:"):
        return _contact_label(subject.removeprefix("contact:")).removeprefix(" · ")
    return subject


def render_recall(result: Recall) -> str:
    if not result.items:
        lines = [f'Nothing remembered matches "{result.query}".']
    else:
        lines = [
            f'Recalled for "{result.query}" ({result.mode}{", cached" if result.cached else ""}):'
        ]
        for n, found in enumerate(result.items, start=1):
            item = found.item
            lines.append(
                f"{n}. {_preview(item.text)}\n"
                f"   {item.memory_id} · {item.kind} · {_day(item.created_at)} · "
                f"{item.source}{_contact_label(item.contact_id)}"
            )
    if result.mode == "keyword" and not result.note:
        lines.append("(keyword-only recall: no embedding model is configured)")
    if result.note:
        lines.append(f"({result.note})")
    return "\n".join(lines)


def render_facts(label: str, facts: list[Fact], *, history: bool) -> str:
    if not facts:
        return f"No facts about {label} yet. Add one: /remember {label} rate: 120 EUR/h"
    lines = [f"Facts about {label}{' (with history)' if history else ''}:"]
    for fact in facts:
        status = "" if fact.status == "current" else f" [{fact.status}]"
        lines.append(
            f"• {fact.key}: {fact.value}{status}\n"
            f"  {fact.fact_id} · since {_day(fact.asserted_at)} · {fact.source}"
        )
    lines.append("/why <id> shows where a fact comes from.")
    return "\n".join(lines)


def render_why(memory: Memory, found: Fact | MemoryItem) -> str:
    provenance = memory.why(found.fact_id if isinstance(found, Fact) else found.memory_id)
    if isinstance(found, MemoryItem):
        lines = [
            f"Memory {found.memory_id} ({found.kind}, {found.status}): {_preview(found.text)}",
            "Its history:",
        ]
        for event in provenance.events:
            lines.append(
                f"• {event.recorded_at:%Y-%m-%d %H:%M} {event.type} by {event.metadata.actor}"
            )
        return "\n".join(lines)
    lines = [
        f"{_subject_label(found.subject)} · {found.key} = {found.value} ({found.status})",
        f"• {found.asserted_at:%Y-%m-%d %H:%M} {found.event_type} ({found.source}, by {found.by})"
        + (f", job {found.job_id}" if found.job_id else ""),
    ]
    for older in provenance.history:
        lines.append(
            f"• replaced {older.value!r}: {older.asserted_at:%Y-%m-%d %H:%M} "
            f"{older.event_type} ({older.source}, by {older.by})"
        )
    return "\n".join(lines)


# What a contact's history shows: the steps that matter to the operator.
HISTORY_EVENTS = (
    ev.JobRequested,
    ev.ContactCreated,
    ev.ContactUpdated,
    ev.ActionProposed,
    ev.ApprovalDecided,
    ev.ApprovalExpired,
    ev.ActionExecuted,
    ev.ActionFailed,
    ev.FactAsserted,
    ev.MemoryStored,
    ev.JobFailed,
)
HISTORY_LINES = 25


def render_history(email: str, days: int, events: list[ev.RecordedEvent]) -> str:
    shown = [e for e in events if isinstance(e.data, HISTORY_EVENTS)]
    if not shown:
        return f"Nothing happened with {email} in the last {days} days."
    lines = [f"With {email}, last {days} days ({len(shown)} steps):"]
    for event in shown[-HISTORY_LINES:]:
        lines.append(f"• {event.recorded_at:%m-%d %H:%M} {event.type}: {describe(event)[:120]}")
    if len(shown) > HISTORY_LINES:
        lines.insert(1, f"(the last {HISTORY_LINES}; /trace <job> shows a job in full)")
    return "\n".join(lines)


class MemoryCommands:
    """The handlers, registered by the dispatcher."""

    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    def handlers(self) -> dict[str, Handler]:
        return {
            "remember": self._guard(self.remember),
            "recall": self._guard(self.recall),
            "facts": self._guard(self.facts),
            "why": self._guard(self.why),
            "forget": self._guard(self.forget),
            "unforget": self._guard(self.unforget),
            "history": self._guard(self.history),
        }

    @staticmethod
    def _guard(handler: Handler) -> Handler:
        """Expected refusals become a clear answer; nothing was changed."""

        def guarded(msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
            try:
                return handler(msg, cmd)
            except (MemoryInputError, NotFoundError) as exc:
                return [Reply(f"{exc}. Nothing changed.")]
            except RecallError as exc:
                return [Reply(f"Memory is unavailable right now: {exc}")]

        return guarded

    def remember(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        request = parse_remember(cmd.args)
        if request.kind == "rule":
            done = self._memory.assert_fact(
                "workspace", "rule", request.text, source="/remember", by=msg.sender
            )
            verb = "Rule noted" if done.created else "Already a rule"
            return [Reply(f"{verb}: {done.fact.value} ({done.fact.fact_id}).")]
        if request.kind == "fact":
            contact = self._contact_or_none(request.who)
            if contact is not None:
                done = self._memory.assert_fact(
                    f"contact:{contact.contact_id}",
                    request.key,
                    request.text,
                    source="/remember",
                    by=msg.sender,
                )
                if not done.created:
                    return [
                        Reply(f"Already known: {contact.email} {request.key} = {done.fact.value}.")
                    ]
                text = f"Noted: {contact.email} {request.key} = {done.fact.value} ({done.fact.fact_id})."
                if done.superseded is not None:
                    text += (
                        f" It replaces {done.superseded.value!r}, kept in history "
                        f"(/why {done.fact.fact_id})."
                    )
                return [Reply(text)]
        contact_id = self._mentioned_contact(cmd.args)
        stored = self._memory.remember(
            cmd.args, contact_id=contact_id, source="/remember", by=msg.sender
        )
        if stored.restored:
            return [Reply(f"Remembered again ({stored.memory_id}); it had been forgotten.")]
        if not stored.created:
            return [Reply(f"Already remembered ({stored.memory_id}).")]
        return [
            Reply(
                f"Remembered ({stored.memory_id}){_contact_label(contact_id)}. "
                f"/forget {stored.memory_id} to undo."
            )
        ]

    def recall(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        query, who, kinds = parse_recall(cmd.args)
        unknown = kinds - MEMORY_KINDS
        if unknown:
            return [
                Reply(
                    f"Unknown kind {sorted(unknown)[0]!r}: use one of {', '.join(sorted(MEMORY_KINDS))}."
                )
            ]
        if not query:
            return [Reply(f"Usage: {COMMANDS['recall'].usage}")]
        contact_id = self._memory.resolve_contact(who).contact_id if who else None
        result = self._memory.recall(
            query, filters=RecallFilter(contact_id=contact_id, kinds=kinds)
        )
        return [Reply(render_recall(result))]

    def facts(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        words = cmd.args.split()
        history = bool(words) and words[-1].lower() in {"all", "history"}
        ref = " ".join(words[:-1] if history else words)
        if ref.lower() in {"workspace", "rules"}:
            return [
                Reply(
                    render_facts(
                        "the workspace",
                        self._memory.facts("workspace", history=history),
                        history=history,
                    )
                )
            ]
        contact = self._memory.resolve_contact(ref)
        facts = self._memory.facts(f"contact:{contact.contact_id}", history=history)
        return [Reply(render_facts(contact.email, facts, history=history))]

    def why(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        words = cmd.args.split()
        if len(words) >= 2:  # "/why jane@acme.example rate"
            contact = self._memory.resolve_contact(" ".join(words[:-1]))
            key = words[-1].lower()
            current = [
                f for f in self._memory.facts(f"contact:{contact.contact_id}") if f.key == key
            ]
            if not current:
                return [
                    Reply(
                        f"No current {key} for {contact.email}. /facts {contact.email} lists them."
                    )
                ]
            return [Reply(render_why(self._memory, current[0]))]
        found = self._memory.why(words[0]).current
        return [Reply(render_why(self._memory, found))]

    def forget(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        item = self._memory.forget(cmd.args.split()[0], by=msg.sender)
        days = self._memory.undo.days
        if isinstance(item, MemoryItem):
            return [
                Reply(
                    f"Forgotten: {_preview(item.text)} ({item.memory_id}). It no longer comes up "
                    f"in recall; /unforget {item.memory_id} within {days} days brings it back."
                )
            ]
        return [
            Reply(
                f"Forgotten: {item.key} = {item.value} ({item.fact_id}); kept in history. "
                f"/unforget {item.fact_id} within {days} days restores it."
            )
        ]

    def unforget(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        item = self._memory.restore(cmd.args.split()[0], by=msg.sender)
        if isinstance(item, MemoryItem):
            return [Reply(f"Restored: {_preview(item.text)} ({item.memory_id}).")]
        return [Reply(f"Restored: {item.key} = {item.value} ({item.fact_id}).")]

    def history(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        words = cmd.args.split()
        days = 30
        if len(words) > 1 and words[-1].isdigit():
            days = max(1, min(int(words[-1]), 3650))
            words = words[:-1]
        contact = self._memory.resolve_contact(" ".join(words))
        since = datetime.now(UTC) - timedelta(days=days)
        events = self._memory.episodes(contact.contact_id, since=since)
        return [Reply(render_history(contact.email, days, events))]

    # Helpers ---------------------------------------------------------------------------

    def _contact_or_none(self, ref: str) -> ContactRow | None:
        try:
            return self._memory.resolve_contact(ref)
        except NotFoundError:
            return None

    @staticmethod
    def _mentioned_contact(text: str) -> str | None:
        """The contact whose address the note mentions, if exactly one."""
        found = {
            row.contact_id
            for row in ContactRow.select().where(
                ContactRow.email.in_([e.lower() for e in _EMAIL.findall(text)][:10])
            )
        }
        return found.pop() if len(found) == 1 else None
