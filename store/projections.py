"""Projections: read models derived from events, updated in the append's transaction.

Each handler uses only the event and its ``recorded_at``, never the clock, so rebuilding
every table from the log (:func:`rebuild`) converges to the same state as the live tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import peewee

from store import events as ev
from store.models import PROJECTION_MODELS, ActionRow, ApprovalRow, ContactRow, JobRow

Handler = Callable[[ev.RecordedEvent], None]
_HANDLERS: dict[type[ev.EventData], Handler] = {}


def handles(event_cls: type[ev.EventData]) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS[event_cls] = fn
        return fn

    return register


def apply(event: ev.RecordedEvent) -> None:
    handler = _HANDLERS.get(type(event.data))
    if handler is not None:
        handler(event)


def _naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)


def _update_job(job_id: str, at: datetime, **fields: object) -> None:
    JobRow.update(updated_at=at, **fields).where(JobRow.job_id == job_id).execute()


def _close_action(action_id: str, at: datetime, status: str, **fields: object) -> None:
    """An action reached a final state: the job has one open action fewer."""
    row = ActionRow.get_or_none(ActionRow.action_id == action_id)
    if row is None:
        return
    ActionRow.update(status=status, updated_at=at, **fields).where(
        ActionRow.action_id == action_id
    ).execute()
    job = JobRow.get_or_none(JobRow.job_id == row.job_id)
    if job is None:
        return
    remaining = max(job.open_actions - 1, 0)
    job_status = job.status
    if remaining == 0 and job.status == "awaiting_approval":
        job_status = "done"
    if status == "failed":
        job_status = "failed"
    _update_job(
        job.job_id,
        at,
        open_actions=remaining,
        status=job_status,
        finished_at=at if job_status in {"done", "failed"} else job.finished_at,
        **({"error": fields.get("error")} if status == "failed" else {}),
    )


@handles(ev.JobRequested)
def _job_requested(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.JobRequested)
    at = _naive(event.recorded_at)
    JobRow.insert(
        job_id=data.job_id,
        agent=data.agent,
        status="queued",
        text=data.text,
        channel=data.channel,
        chat_id=data.chat_id,
        requested_by=data.requested_by,
        requested_at=at,
        updated_at=at,
    ).execute()


@handles(ev.JobStarted)
def _job_started(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.JobStarted)
    at = _naive(event.recorded_at)
    _update_job(data.job_id, at, status="running", started_at=at, attempts=data.attempt, error=None)


@handles(ev.JobCompleted)
def _job_completed(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.JobCompleted)
    at = _naive(event.recorded_at)
    job = JobRow.get_or_none(JobRow.job_id == data.job_id)
    waiting = job is not None and job.open_actions > 0
    _update_job(
        data.job_id,
        at,
        summary=data.summary,
        status="awaiting_approval" if waiting else "done",
        finished_at=None if waiting else at,
    )


@handles(ev.JobFailed)
def _job_failed(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.JobFailed)
    at = _naive(event.recorded_at)
    _update_job(
        data.job_id, at, status="failed", finished_at=at, error=f"{data.error_type}: {data.error}"
    )


@handles(ev.ModelCalled)
def _model_called(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.ModelCalled)
    _update_job(
        data.job_id,
        _naive(event.recorded_at),
        model_calls=JobRow.model_calls + 1,
        tokens=JobRow.tokens + data.prompt_tokens + data.completion_tokens,
    )


@handles(ev.ContactCreated)
def _contact_created(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.ContactCreated)
    ContactRow.insert(
        contact_id=data.contact_id,
        name=data.name,
        email=data.email.lower(),
        company=data.company,
        created_at=_naive(event.recorded_at),
        jobs=1,
    ).execute()


@handles(ev.ContactRecalled)
def _contact_recalled(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.ContactRecalled)
    ContactRow.update(jobs=ContactRow.jobs + 1).where(
        ContactRow.contact_id == data.contact_id
    ).execute()


@handles(ev.ActionProposed)
def _action_proposed(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.ActionProposed)
    at = _naive(event.recorded_at)
    ActionRow.insert(
        action_id=data.action_id,
        job_id=data.job_id,
        connector=data.connector,
        action=data.action,
        params=json.dumps(data.params, sort_keys=True),
        idempotency_key=data.idempotency_key,
        summary=data.summary,
        contact_id=data.contact_id,
        status="proposed",
        updated_at=at,
    ).execute()
    _update_job(data.job_id, at, open_actions=JobRow.open_actions + 1)


@handles(ev.ApprovalRequested)
def _approval_requested(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.ApprovalRequested)
    at = _naive(event.recorded_at)
    ApprovalRow.insert(
        token=data.token,
        action_id=data.action_id,
        job_id=data.job_id,
        status="pending",
        requested_at=at,
        expires_at=_naive(data.expires_at),
    ).execute()
    ActionRow.update(status="awaiting_approval", updated_at=at).where(
        ActionRow.action_id == data.action_id
    ).execute()


@handles(ev.ApprovalDecided)
def _approval_decided(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.ApprovalDecided)
    at = _naive(event.recorded_at)
    ApprovalRow.update(status=data.decision, decided_by=data.decided_by, decided_at=at).where(
        ApprovalRow.token == data.token
    ).execute()
    if data.decision == "approved":
        ActionRow.update(status="approved", updated_at=at).where(
            ActionRow.action_id == data.action_id
        ).execute()


@handles(ev.ApprovalExpired)
def _approval_expired(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.ApprovalExpired)
    at = _naive(event.recorded_at)
    ApprovalRow.update(status="expired", decided_at=at).where(
        ApprovalRow.token == data.token
    ).execute()
    _close_action(data.action_id, at, "expired")


@handles(ev.ActionStarted)
def _action_started(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.ActionStarted)
    ActionRow.update(
        status="running", attempts=data.attempt, updated_at=_naive(event.recorded_at)
    ).where(ActionRow.action_id == data.action_id).execute()


@handles(ev.ActionExecuted)
def _action_executed(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.ActionExecuted)
    _close_action(
        data.action_id, _naive(event.recorded_at), "executed", result=data.summary, error=None
    )


@handles(ev.ActionFailed)
def _action_failed(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.ActionFailed)
    _close_action(
        data.action_id,
        _naive(event.recorded_at),
        "failed",
        error=f"{data.error_type}: {data.error}",
    )


@handles(ev.ActionRejected)
def _action_rejected(event: ev.RecordedEvent) -> None:
    data = event.data
    assert isinstance(data, ev.ActionRejected)
    _close_action(data.action_id, _naive(event.recorded_at), "rejected")


def clear(db: peewee.Database) -> None:
    """Empty every projection table (before a rebuild)."""
    for model in PROJECTION_MODELS:
        model.delete().execute()
