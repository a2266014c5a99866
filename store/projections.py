"""Projections: read models derived from events, updated in the append's transaction.

Each handler gets the event's data, its ``recorded_at`` and a :class:`Rows` unit of work, and
nothing else (never the clock), so rebuilding every table from the log converges to the same
state as the live tables. Handlers read and change rows as dicts; :class:`Rows` loads each
row at most once and writes what changed when it is flushed: one UPDATE per touched row for
a live append, bulk INSERTs for a rebuild into empty tables.

Job statuses: queued, running, retrying, awaiting_approval (open actions), done, failed,
cancelled. Action statuses: proposed, awaiting_approval, approved, running, retrying,
unknown (open); executed, rejected, expired, failed, discarded, compensated, superseded
(closed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import peewee

from store import events as ev
from store import sql
from store.models import (
    PROJECTION_MODELS,
    ActionRow,
    AgentStateRow,
    ApprovalRow,
    BaseModel,
    ContactRow,
    FactRow,
    FactSlotRow,
    JobRow,
    MemoryRow,
    PairedOperatorRow,
    PairingCodeRow,
    QuestionRow,
    SpendRow,
)

CLOSED_ACTIONS = frozenset(
    {"executed", "rejected", "expired", "failed", "discarded", "compensated", "superseded"}
)
Row = dict[str, Any]
_Key = tuple[type[BaseModel], Any]


class Rows:
    """A unit of work over the projection tables.

    ``empty=True`` (a rebuild into empty tables) never reads the database: a row not seen yet
    does not exist. Otherwise a row is read once, on first use."""

    def __init__(self, db: peewee.Database, *, empty: bool = False) -> None:
        self._db = db
        self._empty = empty
        self._rows: dict[_Key, Row | None] = {}
        self._new: dict[_Key, None] = {}  # insertion order
        self._dirty: dict[_Key, set[str]] = {}
        # The event being applied, for handlers that record provenance (its id).
        self.event: ev.RecordedEvent | None = None

    def get(self, model: type[BaseModel], pk: Any) -> Row | None:
        key = (model, pk)
        if key not in self._rows:
            self._rows[key] = None if self._empty else sql.select_row(self._db, model, pk)
        return self._rows[key]

    def insert(self, model: type[BaseModel], row: Row) -> None:
        pk = row[model._meta.primary_key.name]  # type: ignore[union-attr]
        key = (model, pk)
        self._rows[key] = _with_defaults(model, row)
        self._new[key] = None

    def update(self, model: type[BaseModel], pk: Any, **fields: Any) -> Row | None:
        row = self.get(model, pk)
        if row is None:
            return None
        row.update(fields)
        key = (model, pk)
        if key not in self._new:
            self._dirty.setdefault(key, set()).update(fields)
        return row

    def upsert(self, model: type[BaseModel], pk: Any, row: Row) -> None:
        if self.get(model, pk) is None:
            self.insert(model, row)
        else:
            self.update(model, pk, **row)

    def flush(self) -> None:
        by_model: dict[type[BaseModel], list[Row]] = {}
        for key in self._new:
            row = self._rows[key]
            if row is not None:
                by_model.setdefault(key[0], []).append(row)
        for model, rows in by_model.items():
            sql.insert_rows(self._db, model, rows)
        for (model, pk), fields in self._dirty.items():
            row = self._rows[(model, pk)]
            if row is not None and fields:
                sql.update_row(self._db, model, pk, {f: row[f] for f in fields})
        self._new.clear()
        self._dirty.clear()


def _with_defaults(model: type[BaseModel], row: Row) -> Row:
    """The row with the model's defaults filled in (handlers read them; insert_many needs
    the same keys in every row)."""
    full = dict(row)
    for name, field in model._meta.fields.items():
        if name not in full:
            full[name] = field.default() if callable(field.default) else field.default
    return full


E = TypeVar("E", bound=ev.EventData)
Handler = Callable[[Any, datetime, Rows], None]
_HANDLERS: dict[type[ev.EventData], list[Handler]] = {}


def handles(
    event_cls: type[E],
) -> Callable[[Callable[[E, datetime, Rows], None]], Callable[[E, datetime, Rows], None]]:
    """Register a handler; an event type may have several (one per read model), applied in
    the order they were registered."""

    def register(fn: Callable[[E, datetime, Rows], None]) -> Callable[[E, datetime, Rows], None]:
        _HANDLERS.setdefault(event_cls, []).append(fn)
        return fn

    return register


def apply(
    db: peewee.Database, events: Iterable[ev.RecordedEvent], rows: Rows | None = None
) -> None:
    """Apply events to the read models (the caller holds the transaction). Without ``rows``,
    the changes are written at once; with them, when the caller flushes ``rows``."""
    work = rows if rows is not None else Rows(db)
    for event in events:
        handlers = _HANDLERS.get(type(event.data))
        if handlers is not None:
            work.event = event
            at = event.recorded_at.replace(tzinfo=None)
            for handler in handlers:
                handler(event.data, at, work)
    if rows is None:
        work.flush()


def clear(db: peewee.Database) -> None:
    """Empty every projection table (before a rebuild)."""
    for model in PROJECTION_MODELS:
        model.delete().execute()


# Jobs ----------------------------------------------------------------------------------


def _job(rows: Rows, job_id: str, at: datetime, **fields: Any) -> Row | None:
    return rows.update(JobRow, job_id, updated_at=at, **fields)


@handles(ev.JobRequested)
def _job_requested(d: ev.JobRequested, at: datetime, rows: Rows) -> None:
    rows.insert(
        JobRow,
        {
            "job_id": d.job_id,
            "agent": d.agent,
            "status": "queued",
            "text": d.text,
            "channel": d.channel,
            "chat_id": d.chat_id,
            "requested_by": d.requested_by,
            "requested_at": at,
            "updated_at": at,
        },
    )


@handles(ev.JobStarted)
def _job_started(d: ev.JobStarted, at: datetime, rows: Rows) -> None:
    _job(
        rows,
        d.job_id,
        at,
        status="running",
        started_at=at,
        attempts=d.attempt,
        next_attempt_at=None,
    )


@handles(ev.JobCompleted)
def _job_completed(d: ev.JobCompleted, at: datetime, rows: Rows) -> None:
    job = rows.get(JobRow, d.job_id)
    if job is not None and job["status"] == "cancelled":
        _job(rows, d.job_id, at, summary=d.summary)  # a cancelled job stays cancelled
        return
    waiting = job is not None and job["open_actions"] > 0
    _job(
        rows,
        d.job_id,
        at,
        summary=d.summary,
        status="awaiting_approval" if waiting else "done",
        finished_at=None if waiting else at,
        error=None,
    )


@handles(ev.JobFailed)
def _job_failed(d: ev.JobFailed, at: datetime, rows: Rows) -> None:
    _job(
        rows,
        d.job_id,
        at,
        status="failed",
        finished_at=at,
        error=f"{d.error_type}: {d.error}",
        next_attempt_at=None,
    )


@handles(ev.JobAttemptFailed)
def _job_attempt_failed(d: ev.JobAttemptFailed, at: datetime, rows: Rows) -> None:
    _job(
        rows,
        d.job_id,
        at,
        status="retrying",
        error=f"{d.error_type}: {d.error}",
        next_attempt_at=at + timedelta(seconds=d.retry_in_s),
    )


@handles(ev.JobRequeued)
def _job_requeued(d: ev.JobRequeued, at: datetime, rows: Rows) -> None:
    _job(rows, d.job_id, at, status="queued", next_attempt_at=None)


@handles(ev.JobRetried)
def _job_retried(d: ev.JobRetried, at: datetime, rows: Rows) -> None:
    _job(rows, d.job_id, at, status="queued", finished_at=None, error=None, next_attempt_at=None)


@handles(ev.JobCancelled)
def _job_cancelled(d: ev.JobCancelled, at: datetime, rows: Rows) -> None:
    _job(rows, d.job_id, at, status="cancelled", finished_at=at, next_attempt_at=None)


def periods(at: datetime) -> tuple[str, str]:
    """The budget periods a moment falls in: its UTC day and month."""
    return f"day:{at:%Y-%m-%d}", f"month:{at:%Y-%m}"


def spend_key(scope: str, period: str) -> str:
    return f"{scope}|{period}"


@handles(ev.ModelCalled)
def _model_called(d: ev.ModelCalled, at: datetime, rows: Rows) -> None:
    job = rows.get(JobRow, d.job_id)
    if job is not None:
        _job(
            rows,
            d.job_id,
            at,
            model_calls=job["model_calls"] + 1,
            tokens=job["tokens"] + d.prompt_tokens + d.completion_tokens,
            cost_usd=job["cost_usd"] + d.cost_usd,
        )
    scopes = ["workspace"] + ([f"agent:{d.agent}"] if d.agent else [])
    scopes += [f"contact:{d.contact_id}"] if d.contact_id else []
    amounts = [(scope, d.cost_usd) for scope in scopes]
    if d.cached:  # what the cache saved: the price the call would have had
        amounts.append(("cache", d.estimated_usd))
    for scope, usd in amounts:
        for period in periods(at):
            key = spend_key(scope, period)
            row = rows.get(SpendRow, key)
            if row is None:
                rows.insert(
                    SpendRow,
                    {"key": key, "scope": scope, "period": period, "usd": usd, "calls": 1},
                )
            else:
                rows.update(SpendRow, key, usd=row["usd"] + usd, calls=row["calls"] + 1)


@handles(ev.BudgetWarning)
def _budget_warning(d: ev.BudgetWarning, at: datetime, rows: Rows) -> None:
    rows.update(SpendRow, spend_key(d.scope, d.period), warned=True)


@handles(ev.BudgetBlocked)
def _budget_blocked(d: ev.BudgetBlocked, at: datetime, rows: Rows) -> None:
    _job(
        rows,
        d.job_id,
        at,
        status="blocked",
        error=f"budget {d.scope} {d.period}: ${d.spent_usd:.2f} of ${d.limit_usd:.2f} spent",
    )


# Contacts ------------------------------------------------------------------------------


@handles(ev.ContactCreated)
def _contact_created(d: ev.ContactCreated, at: datetime, rows: Rows) -> None:
    rows.insert(
        ContactRow,
        {
            "contact_id": d.contact_id,
            "name": d.name,
            "email": d.email.lower(),
            "company": d.company,
            "created_at": at,
            "jobs": 1,
        },
    )

    _contact_facts(
        d.contact_id,
        {"name": d.name, "email": d.email.lower(), "company": d.company},
        at,
        rows,
        source="contact created",
    )


@handles(ev.ContactRecalled)
def _contact_recalled(d: ev.ContactRecalled, at: datetime, rows: Rows) -> None:
    contact = rows.get(ContactRow, d.contact_id)
    if contact is not None:
        rows.update(ContactRow, d.contact_id, jobs=contact["jobs"] + 1)


# Actions -------------------------------------------------------------------------------


def _action(rows: Rows, action_id: str, at: datetime, **fields: Any) -> Row | None:
    return rows.update(ActionRow, action_id, updated_at=at, **fields)


def _close_action(rows: Rows, action_id: str, at: datetime, status: str, **fields: Any) -> None:
    """An action reached a final state: its job has one open action fewer."""
    action = rows.get(ActionRow, action_id)
    if action is None:
        return
    was_open = action["status"] not in CLOSED_ACTIONS
    _action(rows, action_id, at, status=status, next_attempt_at=None, **fields)
    job = rows.get(JobRow, action["job_id"])
    if job is None or not was_open:
        return
    remaining = max(job["open_actions"] - 1, 0)
    job_status = job["status"]
    if status == "failed":
        job_status = "failed"
    elif remaining == 0 and job_status == "awaiting_approval":
        job_status = "done"
    extra = {"error": fields.get("error")} if status == "failed" else {}
    _job(
        rows,
        job["job_id"],
        at,
        open_actions=remaining,
        status=job_status,
        finished_at=at if job_status in {"done", "failed"} else job["finished_at"],
        **extra,
    )


@handles(ev.ActionProposed)
def _action_proposed(d: ev.ActionProposed, at: datetime, rows: Rows) -> None:
    rows.insert(
        ActionRow,
        {
            "action_id": d.action_id,
            "job_id": d.job_id,
            "connector": d.connector,
            "action": d.action,
            "params": json.dumps(d.params, sort_keys=True),
            "idempotency_key": d.idempotency_key,
            "summary": d.summary,
            "contact_id": d.contact_id,
            "status": "proposed",
            "updated_at": at,
            "flags": json.dumps(d.flags),
            "bindings": json.dumps(d.bindings, sort_keys=True),
            "revises": d.revises,
            "preliminary": d.preliminary,
        },
    )
    job = rows.get(JobRow, d.job_id)
    if job is not None:
        _job(rows, d.job_id, at, open_actions=job["open_actions"] + 1)


@handles(ev.ApprovalRequested)
def _approval_requested(d: ev.ApprovalRequested, at: datetime, rows: Rows) -> None:
    rows.insert(
        ApprovalRow,
        {
            "token": d.token,
            "action_id": d.action_id,
            "job_id": d.job_id,
            "status": "pending",
            "requested_at": at,
            "expires_at": d.expires_at.replace(tzinfo=None),
        },
    )
    _action(rows, d.action_id, at, status="awaiting_approval")


@handles(ev.ApprovalDecided)
def _approval_decided(d: ev.ApprovalDecided, at: datetime, rows: Rows) -> None:
    rows.update(ApprovalRow, d.token, status=d.decision, decided_by=d.decided_by, decided_at=at)
    if d.decision == "approved":
        _action(rows, d.action_id, at, status="approved")


@handles(ev.ApprovalExpired)
def _approval_expired(d: ev.ApprovalExpired, at: datetime, rows: Rows) -> None:
    rows.update(ApprovalRow, d.token, status="expired", decided_at=at)
    _close_action(rows, d.action_id, at, "expired")


@handles(ev.ActionSuperseded)
def _action_superseded(d: ev.ActionSuperseded, at: datetime, rows: Rows) -> None:
    action = rows.get(ActionRow, d.action_id)
    if action is None:
        return
    rows.update(ApprovalRow, d.token, status="superseded", decided_at=at)
    _close_action(rows, d.action_id, at, "superseded", result=f"replaced: {d.reason}")


@handles(ev.EditRequested)
def _edit_requested(d: ev.EditRequested, at: datetime, rows: Rows) -> None:
    rows.update(ApprovalRow, d.token, edit_chat=f"{d.channel}:{d.chat_id}", edit_requested_at=at)


@handles(ev.EditSubmitted)
def _edit_submitted(d: ev.EditSubmitted, at: datetime, rows: Rows) -> None:
    rows.update(ApprovalRow, d.token, edit_chat=None, edit_requested_at=None)


@handles(ev.ApprovalsReminded)
def _approvals_reminded(d: ev.ApprovalsReminded, at: datetime, rows: Rows) -> None:
    for token in d.tokens:
        rows.update(ApprovalRow, token, reminded_at=at)


@handles(ev.ContactUpdated)
def _contact_updated(d: ev.ContactUpdated, at: datetime, rows: Rows) -> None:
    changes = {
        key: value
        for key, value in (("name", d.name), ("email", d.email), ("company", d.company))
        if value is not None
    }
    if "email" in changes:
        changes["email"] = changes["email"].lower()
    rows.update(ContactRow, d.contact_id, **changes)
    _contact_facts(d.contact_id, changes, at, rows, source="/contact correction")


@handles(ev.ActionStarted)
def _action_started(d: ev.ActionStarted, at: datetime, rows: Rows) -> None:
    _action(
        rows,
        d.action_id,
        at,
        status="running",
        attempts=d.attempt,
        started_at=at,
        next_attempt_at=None,
    )


@handles(ev.ActionExecuted)
def _action_executed(d: ev.ActionExecuted, at: datetime, rows: Rows) -> None:
    _close_action(rows, d.action_id, at, "executed", result=d.summary, error=None)


@handles(ev.ActionFailed)
def _action_failed(d: ev.ActionFailed, at: datetime, rows: Rows) -> None:
    _close_action(rows, d.action_id, at, "failed", error=f"{d.error_type}: {d.error}")


@handles(ev.ActionRejected)
def _action_rejected(d: ev.ActionRejected, at: datetime, rows: Rows) -> None:
    _close_action(rows, d.action_id, at, "rejected")


@handles(ev.ActionAttemptFailed)
def _action_attempt_failed(d: ev.ActionAttemptFailed, at: datetime, rows: Rows) -> None:
    _action(
        rows,
        d.action_id,
        at,
        status="retrying",
        error=f"{d.error_type}: {d.error}",
        next_attempt_at=at + timedelta(seconds=d.retry_in_s),
    )


@handles(ev.ActionOutcomeUnknown)
def _action_outcome_unknown(d: ev.ActionOutcomeUnknown, at: datetime, rows: Rows) -> None:
    _action(rows, d.action_id, at, status="unknown", error=d.reason)


@handles(ev.ActionRequeued)
def _action_requeued(d: ev.ActionRequeued, at: datetime, rows: Rows) -> None:
    action = rows.get(ActionRow, d.action_id)
    if action is not None and action["status"] in {"approved", "retrying"}:
        _action(rows, d.action_id, at, status="approved", next_attempt_at=None)
    elif action is not None and action["status"] == "running":
        _action(rows, d.action_id, at, started_at=at)  # the next orphan check waits a full lease


@handles(ev.ActionRetried)
def _action_retried(d: ev.ActionRetried, at: datetime, rows: Rows) -> None:
    action = rows.get(ActionRow, d.action_id)
    if action is None:
        return
    was_closed = action["status"] in CLOSED_ACTIONS
    _action(rows, d.action_id, at, status="approved", error=None, next_attempt_at=None)
    job = rows.get(JobRow, action["job_id"])
    if was_closed and job is not None:
        _job(
            rows,
            job["job_id"],
            at,
            open_actions=job["open_actions"] + 1,
            status="awaiting_approval",
            finished_at=None,
            error=None,
        )


@handles(ev.ActionDiscarded)
def _action_discarded(d: ev.ActionDiscarded, at: datetime, rows: Rows) -> None:
    _close_action(rows, d.action_id, at, "discarded")


@handles(ev.ActionCompensated)
def _action_compensated(d: ev.ActionCompensated, at: datetime, rows: Rows) -> None:
    _action(rows, d.action_id, at, status="compensated", result=d.summary)


@handles(ev.ActionCompensationFailed)
def _action_compensation_failed(d: ev.ActionCompensationFailed, at: datetime, rows: Rows) -> None:
    _action(
        rows,
        d.action_id,
        at,
        error=f"compensation {d.compensation} failed: {d.error_type}: {d.error}",
    )


# Questions, agents, pairing ------------------------------------------------------------


@handles(ev.QuestionAsked)
def _question_asked(d: ev.QuestionAsked, at: datetime, rows: Rows) -> None:
    rows.insert(
        QuestionRow,
        {
            "token": d.token,
            "kind": d.kind,
            "job_id": d.job_id,
            "action_id": d.action_id,
            "text": d.text,
            "choices": json.dumps(d.choices),
            "status": "pending",
            "asked_at": at,
        },
    )


@handles(ev.QuestionAnswered)
def _question_answered(d: ev.QuestionAnswered, at: datetime, rows: Rows) -> None:
    rows.update(
        QuestionRow,
        d.token,
        status="answered",
        answer=d.choice,
        answered_by=d.answered_by,
        answered_at=at,
    )


def _agent_state(rows: Rows, agent: str, paused: bool, by: str, at: datetime) -> None:
    rows.upsert(
        AgentStateRow, agent, {"agent": agent, "paused": paused, "by": by, "updated_at": at}
    )


@handles(ev.AgentPaused)
def _agent_paused(d: ev.AgentPaused, at: datetime, rows: Rows) -> None:
    _agent_state(rows, d.agent, True, d.by, at)


@handles(ev.AgentResumed)
def _agent_resumed(d: ev.AgentResumed, at: datetime, rows: Rows) -> None:
    _agent_state(rows, d.agent, False, d.by, at)


@handles(ev.PairingCodeIssued)
def _pairing_code_issued(d: ev.PairingCodeIssued, at: datetime, rows: Rows) -> None:
    rows.insert(
        PairingCodeRow,
        {
            "code_hash": d.code_hash,
            "channel": d.channel,
            "expires_at": d.expires_at.replace(tzinfo=None),
        },
    )


@handles(ev.OperatorPaired)
def _operator_paired(d: ev.OperatorPaired, at: datetime, rows: Rows) -> None:
    operator = f"{d.channel}:{d.user_id}"
    rows.update(PairingCodeRow, d.code_hash, used_by=operator)
    rows.upsert(
        PairedOperatorRow, operator, {"operator": operator, "chat_id": d.chat_id, "paired_at": at}
    )


# Memory and facts ----------------------------------------------------------------------

# Keys that hold many values at once (each value is its own fact); every other key holds
# one value, and a new one supersedes it.
MULTI_VALUED_KEYS = frozenset({"rule", "promise", "preference", "note"})


def fact_slot(subject: str, key: str, value: str) -> str:
    """Where a fact lives: one slot per (subject, key), or per value for multi-valued keys."""
    if key in MULTI_VALUED_KEYS:
        return f"{subject}|{key}|{normal_digest(value)}"
    return f"{subject}|{key}"


def normal_digest(text: str) -> str:
    """A digest of ``text`` that ignores case and spacing: the same fact written twice."""
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:16]


def fact_id(event_id: str, key: str) -> str:
    return "f" + hashlib.sha256(f"{event_id}|{key}".encode()).hexdigest()[:11]


def _event_id(rows: Rows) -> tuple[str, str]:
    assert rows.event is not None  # set by apply() before each handler
    return rows.event.event_id, rows.event.type


def _assert_fact(
    rows: Rows,
    at: datetime,
    *,
    subject: str,
    key: str,
    value: str,
    source: str,
    by: str,
    job_id: str | None,
) -> None:
    event_id, event_type = _event_id(rows)
    slot = fact_slot(subject, key, value)
    head = rows.get(FactSlotRow, slot)
    previous = rows.get(FactRow, head["fact_id"]) if head and head["fact_id"] else None
    if previous is not None and normal_digest(previous["value"]) == normal_digest(value):
        return  # the same fact again: stored once
    new_id = fact_id(event_id, key)
    rows.insert(
        FactRow,
        {
            "fact_id": new_id,
            "subject": subject,
            "key": key,
            "value": value,
            "slot": slot,
            "status": "current",
            "source": source,
            "by": by,
            "job_id": job_id,
            "event_id": event_id,
            "event_type": event_type,
            "asserted_at": at,
            "replaces": previous["fact_id"] if previous else None,
        },
    )
    if previous is not None:
        rows.update(
            FactRow, previous["fact_id"], status="superseded", ended_at=at, replaced_by=new_id
        )
    rows.upsert(FactSlotRow, slot, {"slot": slot, "fact_id": new_id})


def _contact_facts(
    contact_id: str, values: dict[str, str], at: datetime, rows: Rows, *, source: str
) -> None:
    for key, value in values.items():
        if value:
            _assert_fact(
                rows,
                at,
                subject=f"contact:{contact_id}",
                key=key,
                value=value,
                source=source,
                by="operator",
                job_id=None,
            )


@handles(ev.FactAsserted)
def _fact_asserted(d: ev.FactAsserted, at: datetime, rows: Rows) -> None:
    _assert_fact(
        rows,
        at,
        subject=d.subject,
        key=d.key,
        value=d.value,
        source=d.source,
        by=d.by,
        job_id=d.job_id,
    )


@handles(ev.FactRetracted)
def _fact_retracted(d: ev.FactRetracted, at: datetime, rows: Rows) -> None:
    fact = rows.get(FactRow, d.fact_id)
    if fact is None or fact["status"] != "current":
        return
    rows.update(FactRow, d.fact_id, status="retracted", ended_at=at)
    rows.update(FactSlotRow, fact["slot"], fact_id=None)


@handles(ev.FactRestored)
def _fact_restored(d: ev.FactRestored, at: datetime, rows: Rows) -> None:
    fact = rows.get(FactRow, d.fact_id)
    if fact is None or fact["status"] != "retracted":
        return
    head = rows.get(FactSlotRow, fact["slot"])
    if head is not None and head["fact_id"]:
        return  # a newer fact holds the slot: restoring would contradict it
    rows.update(FactRow, d.fact_id, status="current", ended_at=None)
    rows.upsert(FactSlotRow, fact["slot"], {"slot": fact["slot"], "fact_id": d.fact_id})


@handles(ev.MemoryStored)
def _memory_stored(d: ev.MemoryStored, at: datetime, rows: Rows) -> None:
    event_id, _ = _event_id(rows)
    existing = rows.get(MemoryRow, d.memory_id)
    if existing is not None and existing["status"] != "purged":
        return
    rows.upsert(
        MemoryRow,
        d.memory_id,
        {
            "memory_id": d.memory_id,
            "kind": d.kind,
            "text": d.text,
            "contact_id": d.contact_id,
            "job_id": d.job_id,
            "source": d.source,
            "by": d.by,
            "status": "active",
            "event_id": event_id,
            "created_at": at,
            "forgotten_at": None,
            "forgotten_by": None,
        },
    )


@handles(ev.MemoryForgotten)
def _memory_forgotten(d: ev.MemoryForgotten, at: datetime, rows: Rows) -> None:
    memory = rows.get(MemoryRow, d.memory_id)
    if memory is not None and memory["status"] == "active":
        rows.update(MemoryRow, d.memory_id, status="forgotten", forgotten_at=at, forgotten_by=d.by)


@handles(ev.MemoryRestored)
def _memory_restored(d: ev.MemoryRestored, at: datetime, rows: Rows) -> None:
    memory = rows.get(MemoryRow, d.memory_id)
    if memory is not None and memory["status"] == "forgotten":
        rows.update(MemoryRow, d.memory_id, status="active", forgotten_at=None, forgotten_by=None)


@handles(ev.MemoryPurged)
def _memory_purged(d: ev.MemoryPurged, at: datetime, rows: Rows) -> None:
    memory = rows.get(MemoryRow, d.memory_id)
    if memory is not None and memory["status"] == "forgotten":
        rows.update(MemoryRow, d.memory_id, status="purged", text="")


# The business read models (flows, invoices, payments, the board) register their handlers
# on import; they live in their own module to keep this one readable.
from store import projections_business  # noqa: E402, F401
