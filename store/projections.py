"""Projections: read models derived from events, updated in the append's transaction.

Each handler gets the event's data and its ``recorded_at`` and nothing else (never the
clock), so rebuilding every table from the log (:meth:`EventLog.rebuild_projections`)
converges to the same state as the live tables.

Job statuses: queued, running, retrying, awaiting_approval (open actions), done, failed,
cancelled. Action statuses: proposed, awaiting_approval, approved, running, retrying,
unknown (open); executed, rejected, expired, failed, discarded, compensated (closed).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import peewee

from store import events as ev
from store.models import (
    PROJECTION_MODELS,
    ActionRow,
    AgentStateRow,
    ApprovalRow,
    ContactRow,
    JobRow,
    PairedOperatorRow,
    PairingCodeRow,
    QuestionRow,
)

CLOSED_ACTIONS = frozenset(
    {"executed", "rejected", "expired", "failed", "discarded", "compensated"}
)

E = TypeVar("E", bound=ev.EventData)
Handler = Callable[[Any, datetime], None]
_HANDLERS: dict[type[ev.EventData], Handler] = {}


def handles(
    event_cls: type[E],
) -> Callable[[Callable[[E, datetime], None]], Callable[[E, datetime], None]]:
    def register(fn: Callable[[E, datetime], None]) -> Callable[[E, datetime], None]:
        _HANDLERS[event_cls] = fn
        return fn

    return register


def apply(event: ev.RecordedEvent) -> None:
    handler = _HANDLERS.get(type(event.data))
    if handler is not None:
        handler(event.data, event.recorded_at.replace(tzinfo=None))


def clear(db: peewee.Database) -> None:
    """Empty every projection table (before a rebuild)."""
    for model in PROJECTION_MODELS:
        model.delete().execute()


# Jobs ----------------------------------------------------------------------------------


def _update_job(job_id: str, at: datetime, **fields: object) -> None:
    JobRow.update(updated_at=at, **fields).where(JobRow.job_id == job_id).execute()


@handles(ev.JobRequested)
def _job_requested(d: ev.JobRequested, at: datetime) -> None:
    JobRow.insert(
        job_id=d.job_id,
        agent=d.agent,
        status="queued",
        text=d.text,
        channel=d.channel,
        chat_id=d.chat_id,
        requested_by=d.requested_by,
        requested_at=at,
        updated_at=at,
    ).execute()


@handles(ev.JobStarted)
def _job_started(d: ev.JobStarted, at: datetime) -> None:
    _update_job(
        d.job_id, at, status="running", started_at=at, attempts=d.attempt, next_attempt_at=None
    )


@handles(ev.JobCompleted)
def _job_completed(d: ev.JobCompleted, at: datetime) -> None:
    job = JobRow.get_or_none(JobRow.job_id == d.job_id)
    waiting = job is not None and job.open_actions > 0
    _update_job(
        d.job_id,
        at,
        summary=d.summary,
        status="awaiting_approval" if waiting else "done",
        finished_at=None if waiting else at,
        error=None,
    )


@handles(ev.JobFailed)
def _job_failed(d: ev.JobFailed, at: datetime) -> None:
    _update_job(
        d.job_id,
        at,
        status="failed",
        finished_at=at,
        error=f"{d.error_type}: {d.error}",
        next_attempt_at=None,
    )


@handles(ev.JobAttemptFailed)
def _job_attempt_failed(d: ev.JobAttemptFailed, at: datetime) -> None:
    _update_job(
        d.job_id,
        at,
        status="retrying",
        error=f"{d.error_type}: {d.error}",
        next_attempt_at=at + timedelta(seconds=d.retry_in_s),
    )


@handles(ev.JobRequeued)
def _job_requeued(d: ev.JobRequeued, at: datetime) -> None:
    _update_job(d.job_id, at, status="queued", next_attempt_at=None)


@handles(ev.JobRetried)
def _job_retried(d: ev.JobRetried, at: datetime) -> None:
    _update_job(d.job_id, at, status="queued", finished_at=None, error=None, next_attempt_at=None)


@handles(ev.JobCancelled)
def _job_cancelled(d: ev.JobCancelled, at: datetime) -> None:
    _update_job(d.job_id, at, status="cancelled", finished_at=at, next_attempt_at=None)


@handles(ev.ModelCalled)
def _model_called(d: ev.ModelCalled, at: datetime) -> None:
    _update_job(
        d.job_id,
        at,
        model_calls=JobRow.model_calls + 1,
        tokens=JobRow.tokens + d.prompt_tokens + d.completion_tokens,
    )


# Contacts ------------------------------------------------------------------------------


@handles(ev.ContactCreated)
def _contact_created(d: ev.ContactCreated, at: datetime) -> None:
    ContactRow.insert(
        contact_id=d.contact_id,
        name=d.name,
        email=d.email.lower(),
        company=d.company,
        created_at=at,
        jobs=1,
    ).execute()


@handles(ev.ContactRecalled)
def _contact_recalled(d: ev.ContactRecalled, at: datetime) -> None:
    ContactRow.update(jobs=ContactRow.jobs + 1).where(
        ContactRow.contact_id == d.contact_id
    ).execute()


# Actions -------------------------------------------------------------------------------


def _set_action(action_id: str, at: datetime, **fields: object) -> None:
    ActionRow.update(updated_at=at, **fields).where(ActionRow.action_id == action_id).execute()


def _close_action(action_id: str, at: datetime, status: str, **fields: object) -> None:
    """An action reached a final state: its job has one open action fewer."""
    row = ActionRow.get_or_none(ActionRow.action_id == action_id)
    if row is None:
        return
    was_open = row.status not in CLOSED_ACTIONS
    _set_action(action_id, at, status=status, next_attempt_at=None, **fields)
    job = JobRow.get_or_none(JobRow.job_id == row.job_id)
    if job is None or not was_open:
        return
    remaining = max(job.open_actions - 1, 0)
    job_status = job.status
    if status == "failed":
        job_status = "failed"
    elif remaining == 0 and job.status == "awaiting_approval":
        job_status = "done"
    _update_job(
        job.job_id,
        at,
        open_actions=remaining,
        status=job_status,
        finished_at=at if job_status in {"done", "failed"} else job.finished_at,
        **({"error": fields.get("error")} if status == "failed" else {}),
    )


def _reopen_action(action_id: str, at: datetime, status: str) -> None:
    """A closed action is live again (the operator asked to retry it)."""
    row = ActionRow.get_or_none(ActionRow.action_id == action_id)
    if row is None:
        return
    _set_action(action_id, at, status=status, error=None, next_attempt_at=None)
    if row.status in CLOSED_ACTIONS:
        _update_job(
            row.job_id,
            at,
            open_actions=JobRow.open_actions + 1,
            status="awaiting_approval",
            finished_at=None,
            error=None,
        )


@handles(ev.ActionProposed)
def _action_proposed(d: ev.ActionProposed, at: datetime) -> None:
    ActionRow.insert(
        action_id=d.action_id,
        job_id=d.job_id,
        connector=d.connector,
        action=d.action,
        params=json.dumps(d.params, sort_keys=True),
        idempotency_key=d.idempotency_key,
        summary=d.summary,
        contact_id=d.contact_id,
        status="proposed",
        updated_at=at,
    ).execute()
    _update_job(d.job_id, at, open_actions=JobRow.open_actions + 1)


@handles(ev.ApprovalRequested)
def _approval_requested(d: ev.ApprovalRequested, at: datetime) -> None:
    ApprovalRow.insert(
        token=d.token,
        action_id=d.action_id,
        job_id=d.job_id,
        status="pending",
        requested_at=at,
        expires_at=d.expires_at.replace(tzinfo=None),
    ).execute()
    _set_action(d.action_id, at, status="awaiting_approval")


@handles(ev.ApprovalDecided)
def _approval_decided(d: ev.ApprovalDecided, at: datetime) -> None:
    ApprovalRow.update(status=d.decision, decided_by=d.decided_by, decided_at=at).where(
        ApprovalRow.token == d.token
    ).execute()
    if d.decision == "approved":
        _set_action(d.action_id, at, status="approved")


@handles(ev.ApprovalExpired)
def _approval_expired(d: ev.ApprovalExpired, at: datetime) -> None:
    ApprovalRow.update(status="expired", decided_at=at).where(
        ApprovalRow.token == d.token
    ).execute()
    _close_action(d.action_id, at, "expired")


@handles(ev.ActionStarted)
def _action_started(d: ev.ActionStarted, at: datetime) -> None:
    _set_action(
        d.action_id, at, status="running", attempts=d.attempt, started_at=at, next_attempt_at=None
    )


@handles(ev.ActionExecuted)
def _action_executed(d: ev.ActionExecuted, at: datetime) -> None:
    _close_action(d.action_id, at, "executed", result=d.summary, error=None)


@handles(ev.ActionFailed)
def _action_failed(d: ev.ActionFailed, at: datetime) -> None:
    _close_action(d.action_id, at, "failed", error=f"{d.error_type}: {d.error}")


@handles(ev.ActionRejected)
def _action_rejected(d: ev.ActionRejected, at: datetime) -> None:
    _close_action(d.action_id, at, "rejected")


@handles(ev.ActionAttemptFailed)
def _action_attempt_failed(d: ev.ActionAttemptFailed, at: datetime) -> None:
    _set_action(
        d.action_id,
        at,
        status="retrying",
        error=f"{d.error_type}: {d.error}",
        next_attempt_at=at + timedelta(seconds=d.retry_in_s),
    )


@handles(ev.ActionOutcomeUnknown)
def _action_outcome_unknown(d: ev.ActionOutcomeUnknown, at: datetime) -> None:
    _set_action(d.action_id, at, status="unknown", error=d.reason)


@handles(ev.ActionRequeued)
def _action_requeued(d: ev.ActionRequeued, at: datetime) -> None:
    row = ActionRow.get_or_none(ActionRow.action_id == d.action_id)
    if row is not None and row.status in {"approved", "retrying"}:
        _set_action(d.action_id, at, status="approved", next_attempt_at=None)
    elif row is not None and row.status == "running":
        _set_action(d.action_id, at, started_at=at)  # the next orphan check waits a full lease


@handles(ev.ActionRetried)
def _action_retried(d: ev.ActionRetried, at: datetime) -> None:
    _reopen_action(d.action_id, at, "approved")


@handles(ev.ActionDiscarded)
def _action_discarded(d: ev.ActionDiscarded, at: datetime) -> None:
    _close_action(d.action_id, at, "discarded")


@handles(ev.ActionCompensated)
def _action_compensated(d: ev.ActionCompensated, at: datetime) -> None:
    _set_action(d.action_id, at, status="compensated", result=d.summary)


@handles(ev.ActionCompensationFailed)
def _action_compensation_failed(d: ev.ActionCompensationFailed, at: datetime) -> None:
    _set_action(
        d.action_id, at, error=f"compensation {d.compensation} failed: {d.error_type}: {d.error}"
    )


# Questions and agents ------------------------------------------------------------------


@handles(ev.QuestionAsked)
def _question_asked(d: ev.QuestionAsked, at: datetime) -> None:
    QuestionRow.insert(
        token=d.token,
        kind=d.kind,
        job_id=d.job_id,
        action_id=d.action_id,
        text=d.text,
        choices=json.dumps(d.choices),
        status="pending",
        asked_at=at,
    ).execute()


@handles(ev.QuestionAnswered)
def _question_answered(d: ev.QuestionAnswered, at: datetime) -> None:
    QuestionRow.update(
        status="answered", answer=d.choice, answered_by=d.answered_by, answered_at=at
    ).where(QuestionRow.token == d.token).execute()


def _agent_state(agent: str, paused: bool, by: str, at: datetime) -> None:
    (
        AgentStateRow.insert(agent=agent, paused=paused, by=by, updated_at=at)
        .on_conflict(
            conflict_target=[AgentStateRow.agent],
            update={
                AgentStateRow.paused: paused,
                AgentStateRow.by: by,
                AgentStateRow.updated_at: at,
            },
        )
        .execute()
    )


@handles(ev.AgentPaused)
def _agent_paused(d: ev.AgentPaused, at: datetime) -> None:
    _agent_state(d.agent, True, d.by, at)


@handles(ev.AgentResumed)
def _agent_resumed(d: ev.AgentResumed, at: datetime) -> None:
    _agent_state(d.agent, False, d.by, at)


@handles(ev.PairingCodeIssued)
def _pairing_code_issued(d: ev.PairingCodeIssued, at: datetime) -> None:
    PairingCodeRow.insert(
        code_hash=d.code_hash, channel=d.channel, expires_at=d.expires_at.replace(tzinfo=None)
    ).execute()


@handles(ev.OperatorPaired)
def _operator_paired(d: ev.OperatorPaired, at: datetime) -> None:
    operator = f"{d.channel}:{d.user_id}"
    PairingCodeRow.update(used_by=operator).where(PairingCodeRow.code_hash == d.code_hash).execute()
    (
        PairedOperatorRow.insert(operator=operator, chat_id=d.chat_id, paired_at=at)
        .on_conflict(
            conflict_target=[PairedOperatorRow.operator],
            update={PairedOperatorRow.chat_id: d.chat_id, PairedOperatorRow.paired_at: at},
        )
        .execute()
    )
