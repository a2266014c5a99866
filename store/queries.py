"""Read-side queries over the projections. Plain functions returning frozen views."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import peewee

from store.errors import AmbiguousIdError, NotFoundError
from store.models import (
    ActionRow,
    AgentStateRow,
    ApprovalRow,
    ContactRow,
    CursorRow,
    InboundRow,
    JobRow,
    QuestionRow,
    SpendRow,
)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class JobView:
    job_id: str
    agent: str
    status: str
    text: str
    channel: str
    chat_id: str
    requested_by: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    open_actions: int
    model_calls: int
    tokens: int
    summary: str
    error: str | None
    cost_usd: float = 0.0

    @property
    def short_id(self) -> str:
        return short_id(self.job_id)


@dataclass(frozen=True)
class ActionView:
    action_id: str
    job_id: str
    connector: str
    action: str
    params: dict[str, Any]
    idempotency_key: str
    summary: str
    contact_id: str | None
    status: str
    attempts: int
    result: str
    error: str | None
    flags: tuple[str, ...] = ()
    bindings: dict[str, str] = field(default_factory=dict)
    revises: str | None = None
    preliminary: bool = False


@dataclass(frozen=True)
class ApprovalView:
    token: str
    action_id: str
    job_id: str
    status: str
    requested_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    reminded_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.status == "pending" and now >= self.expires_at


@dataclass(frozen=True)
class ContactView:
    contact_id: str
    name: str
    email: str
    company: str
    created_at: datetime
    jobs: int


SHORT_ID_LENGTH = 6


def short_id(full_id: str) -> str:
    return full_id[:SHORT_ID_LENGTH]


def _job(row: JobRow) -> JobView:
    return JobView(
        job_id=row.job_id,
        agent=row.agent,
        status=row.status,
        text=row.text,
        channel=row.channel,
        chat_id=row.chat_id,
        requested_by=row.requested_by,
        requested_at=_aware(row.requested_at) or datetime.now(UTC),
        started_at=_aware(row.started_at),
        finished_at=_aware(row.finished_at),
        attempts=row.attempts,
        open_actions=row.open_actions,
        model_calls=row.model_calls,
        tokens=row.tokens,
        summary=row.summary,
        error=row.error,
        cost_usd=float(row.cost_usd or 0.0),
    )


def _action(row: ActionRow) -> ActionView:
    return ActionView(
        action_id=row.action_id,
        job_id=row.job_id,
        connector=row.connector,
        action=row.action,
        params=json.loads(row.params),
        idempotency_key=row.idempotency_key,
        summary=row.summary,
        contact_id=row.contact_id,
        status=row.status,
        attempts=row.attempts,
        result=row.result,
        error=row.error,
        flags=tuple(json.loads(row.flags or "[]")),
        bindings=json.loads(row.bindings or "{}"),
        revises=row.revises,
        preliminary=bool(row.preliminary),
    )


def _approval(row: ApprovalRow) -> ApprovalView:
    return ApprovalView(
        token=row.token,
        action_id=row.action_id,
        job_id=row.job_id,
        status=row.status,
        requested_at=_aware(row.requested_at) or datetime.now(UTC),
        expires_at=_aware(row.expires_at) or datetime.now(UTC),
        decided_by=row.decided_by,
        decided_at=_aware(row.decided_at),
        reminded_at=_aware(row.reminded_at),
    )


def _contact(row: ContactRow) -> ContactView:
    return ContactView(
        contact_id=row.contact_id,
        name=row.name,
        email=row.email,
        company=row.company,
        created_at=_aware(row.created_at) or datetime.now(UTC),
        jobs=row.jobs,
    )


# Jobs ----------------------------------------------------------------------------------


def get_job(job_id: str) -> JobView:
    row = JobRow.get_or_none(JobRow.job_id == job_id)
    if row is None:
        raise NotFoundError(f"no job {job_id!r}")
    return _job(row)


def find_job(prefix: str) -> JobView:
    """A job by its full id or a unique prefix (the short id shown in chat)."""
    prefix = prefix.strip().lower()
    if not prefix or not all(c in "0123456789abcdef" for c in prefix):
        raise NotFoundError(f"{prefix!r} is not a job id")
    rows = list(JobRow.select().where(JobRow.job_id.startswith(prefix)).limit(2))
    if not rows:
        raise NotFoundError(f"no job {prefix!r}")
    if len(rows) > 1:
        raise AmbiguousIdError(f"{prefix!r} matches several jobs; give more characters")
    return _job(rows[0])


def list_jobs(*, limit: int = 50, statuses: Sequence[str] = ()) -> list[JobView]:
    query = JobRow.select()
    if statuses:
        query = query.where(JobRow.status.in_(list(statuses)))
    return [_job(r) for r in query.order_by(JobRow.requested_at.desc()).limit(limit)]


def count_jobs_by_status() -> dict[str, int]:
    query = JobRow.select(JobRow.status, peewee.fn.COUNT(JobRow.job_id)).group_by(JobRow.status)
    rows = cast(Iterable[tuple[str, int]], query.tuples())
    return {str(status): int(count) for status, count in rows}


def last_error() -> JobView | None:
    row = (
        JobRow.select()
        .where(JobRow.error.is_null(False))
        .order_by(JobRow.updated_at.desc())
        .first()
    )
    return None if row is None else _job(row)


# Actions and approvals -----------------------------------------------------------------


def find_action(prefix: str) -> ActionView:
    """An action by its full id or a unique prefix."""
    prefix = prefix.strip().lower()
    if not prefix or not all(c in "0123456789abcdef" for c in prefix):
        raise NotFoundError(f"{prefix!r} is not an action id")
    rows = list(ActionRow.select().where(ActionRow.action_id.startswith(prefix)).limit(2))
    if not rows:
        raise NotFoundError(f"no action {prefix!r}")
    if len(rows) > 1:
        raise AmbiguousIdError(f"{prefix!r} matches several actions; give more characters")
    return get_action(rows[0].action_id)


def get_action(action_id: str) -> ActionView:
    row = ActionRow.get_or_none(ActionRow.action_id == action_id)
    if row is None:
        raise NotFoundError(f"no action {action_id!r}")
    return _action(row)


def actions_for_job(job_id: str) -> list[ActionView]:
    return [_action(r) for r in ActionRow.select().where(ActionRow.job_id == job_id)]


def get_approval(token: str) -> ApprovalView:
    row = ApprovalRow.get_or_none(ApprovalRow.token == token)
    if row is None:
        raise NotFoundError("no such approval")
    return _approval(row)


def approval_for_action(action_id: str) -> ApprovalView:
    row = (
        ApprovalRow.select()
        .where(ApprovalRow.action_id == action_id)
        .order_by(ApprovalRow.requested_at.desc())
        .first()
    )
    if row is None:
        raise NotFoundError(f"no approval for action {action_id!r}")
    return _approval(row)


def pending_approvals(*, limit: int = 50) -> list[ApprovalView]:
    query = (
        ApprovalRow.select()
        .where(ApprovalRow.status == "pending")
        .order_by(ApprovalRow.requested_at)
        .limit(limit)
    )
    return [_approval(r) for r in query]


def has_sent_to(connector: str, action: str, address: str) -> bool:
    """Whether an executed ``connector.action`` already went to ``address`` (its ``to``)."""
    needle = json.dumps({"to": address.lower()})[1:-1]  # '"to": "x@y"' as params store it
    return (
        ActionRow.select()
        .where(
            (ActionRow.connector == connector)
            & (ActionRow.action == action)
            & (ActionRow.status.in_(("executed", "compensated")))
            & (peewee.fn.LOWER(ActionRow.params).contains(needle))
        )
        .exists()
    )


def pending_edit(channel: str, chat_id: str, *, since: datetime) -> ApprovalView | None:
    """The pending approval whose Edit button was pressed last in this chat after ``since``."""
    row = (
        ApprovalRow.select()
        .where(
            (ApprovalRow.status == "pending")
            & (ApprovalRow.edit_chat == f"{channel}:{chat_id}")
            & (ApprovalRow.edit_requested_at >= since.replace(tzinfo=None))
        )
        .order_by(ApprovalRow.edit_requested_at.desc())
        .first()
    )
    return None if row is None else _approval(row)


def expired_pending_approvals(*, now: datetime) -> list[ApprovalView]:
    query = ApprovalRow.select().where(
        (ApprovalRow.status == "pending") & (ApprovalRow.expires_at <= now.replace(tzinfo=None))
    )
    return [_approval(r) for r in query]


def approvals_to_remind(
    *, requested_before: datetime, reminded_before: datetime
) -> list[ApprovalView]:
    """Pending approvals older than ``requested_before`` not reminded since ``reminded_before``."""
    query = (
        ApprovalRow.select()
        .where(
            (ApprovalRow.status == "pending")
            & (ApprovalRow.requested_at <= requested_before.replace(tzinfo=None))
            & (
                ApprovalRow.reminded_at.is_null()
                | (ApprovalRow.reminded_at <= reminded_before.replace(tzinfo=None))
            )
        )
        .order_by(ApprovalRow.requested_at)
    )
    return [_approval(r) for r in query]


# Contacts ------------------------------------------------------------------------------


def contact_by_email(email: str) -> ContactView | None:
    row = ContactRow.get_or_none(ContactRow.email == email.lower())
    return None if row is None else _contact(row)


def get_contact(contact_id: str) -> ContactView:
    row = ContactRow.get_or_none(ContactRow.contact_id == contact_id)
    if row is None:
        raise NotFoundError(f"no contact {contact_id!r}")
    return _contact(row)


# Cursors -------------------------------------------------------------------------------


def cursor(name: str) -> int | None:
    row = CursorRow.get_or_none(CursorRow.name == name)
    return None if row is None else int(row.position)


def save_cursor(name: str, position: int) -> None:
    (
        CursorRow.insert(name=name, position=position)
        .on_conflict(conflict_target=[CursorRow.name], update={CursorRow.position: position})
        .execute()
    )


# Questions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QuestionView:
    token: str
    kind: str
    job_id: str
    action_id: str | None
    text: str
    choices: list[str]
    status: str
    asked_at: datetime
    answer: str | None
    answered_by: str | None
    answered_at: datetime | None


def _question(row: QuestionRow) -> QuestionView:
    return QuestionView(
        token=row.token,
        kind=row.kind,
        job_id=row.job_id,
        action_id=row.action_id,
        text=row.text,
        choices=json.loads(row.choices),
        status=row.status,
        asked_at=_aware(row.asked_at) or datetime.now(UTC),
        answer=row.answer,
        answered_by=row.answered_by,
        answered_at=_aware(row.answered_at),
    )


def get_question(token: str) -> QuestionView:
    row = QuestionRow.get_or_none(QuestionRow.token == token)
    if row is None:
        raise NotFoundError("no such question")
    return _question(row)


def pending_questions(*, limit: int = 50) -> list[QuestionView]:
    query = (
        QuestionRow.select()
        .where(QuestionRow.status == "pending")
        .order_by(QuestionRow.asked_at)
        .limit(limit)
    )
    return [_question(r) for r in query]


# Agents --------------------------------------------------------------------------------


def agent_paused(agent: str) -> bool:
    row = AgentStateRow.get_or_none(AgentStateRow.agent == agent)
    return bool(row is not None and row.paused)


def paused_agents() -> list[str]:
    return [
        r.agent
        for r in AgentStateRow.select()
        .where(AgentStateRow.paused == peewee.Value(True))
        .order_by(AgentStateRow.agent)
    ]


# Orphans (for the reconciler) ----------------------------------------------------------


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def orphaned_jobs(*, now: datetime, queue_lease: timedelta, run_lease: timedelta) -> list[JobView]:
    """Jobs the log says should be moving but that nothing seems to be moving."""
    queued_before = _naive(now - queue_lease)
    started_before = _naive(now - run_lease)
    paused = paused_agents()
    query = JobRow.select().where(
        ((JobRow.status == "queued") & (JobRow.updated_at < queued_before))
        | ((JobRow.status == "retrying") & (JobRow.next_attempt_at < queued_before))
        | ((JobRow.status == "running") & (JobRow.started_at < started_before))
    )
    if paused:
        query = query.where(JobRow.agent.not_in(paused))
    return [_job(r) for r in query.order_by(JobRow.requested_at)]


def orphaned_actions(
    *, now: datetime, queue_lease: timedelta, run_lease: timedelta
) -> list[ActionView]:
    queued_before = _naive(now - queue_lease)
    started_before = _naive(now - run_lease)
    query = ActionRow.select().where(
        ((ActionRow.status == "approved") & (ActionRow.updated_at < queued_before))
        | ((ActionRow.status == "retrying") & (ActionRow.next_attempt_at < queued_before))
        | ((ActionRow.status == "running") & (ActionRow.started_at < started_before))
    )
    return [_action(r) for r in query.order_by(ActionRow.updated_at)]


def executed_actions_for_job(job_id: str) -> list[ActionView]:
    """Executed actions of a job, most recent first (the order compensation runs in)."""
    query = (
        ActionRow.select()
        .where((ActionRow.job_id == job_id) & (ActionRow.status == "executed"))
        .order_by(ActionRow.updated_at.desc())
    )
    return [_action(r) for r in query]


# Inbound deduplication -----------------------------------------------------------------


def seen(key: str) -> bool:
    """Whether a platform message id (Telegram update_id, Slack event_id) was handled."""
    return InboundRow.get_or_none(InboundRow.key == key[:255]) is not None


def mark_seen(key: str, *, now: datetime) -> None:
    """Record a handled platform message id (a second record of the same id is a no-op)."""
    InboundRow.insert(key=key[:255], seen_at=_naive(now)).on_conflict_ignore().execute()


# Spend ---------------------------------------------------------------------------------


def spend_rows(period: str, *, prefix: str, limit: int = 5) -> list[tuple[str, float, int]]:
    """(scope, usd, calls) of the scopes starting with ``prefix`` in ``period``, most first."""
    query = (
        SpendRow.select()
        .where((SpendRow.period == period) & SpendRow.scope.startswith(prefix))
        .order_by(SpendRow.usd.desc())
        .limit(limit)
    )
    return [(r.scope, float(r.usd), int(r.calls)) for r in query]


def spent(scope: str, period: str) -> tuple[float, bool]:
    """USD spent by ``scope`` in ``period``, and whether its 80 % warning was given."""
    row = SpendRow.get_or_none(SpendRow.key == f"{scope}|{period}")
    return (0.0, False) if row is None else (float(row.usd), bool(row.warned))
