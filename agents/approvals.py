"""Deciding an approval: the first decision wins, expired buttons say so, nothing is lost.

The button carries only a short opaque token; the state lives in the log. Two presses racing
for the same approval append to the action's stream at the same expected version: exactly one
succeeds, the other reads what happened and reports it.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from store import events as ev
from store import queries
from store.errors import ConcurrencyError, NotFoundError
from store.log import EventLog, utcnow
from store.queries import ActionView, ApprovalView


class Outcome(enum.Enum):
    APPROVED = "approved"
    CHANGED = "changed"  # an input changed since the proposal: asked again (new approval)
    REJECTED = "rejected"
    ALREADY_DECIDED = "already_decided"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DecisionResult:
    outcome: Outcome
    approval: ApprovalView | None = None
    action: ActionView | None = None
    reason: str = ""  # for CHANGED: what changed; approval and action are the new ones


def decide(
    log: EventLog,
    token: str,
    *,
    approve: bool,
    decided_by: str,
    channel: str,
    now: datetime | None = None,
) -> DecisionResult:
    """Record the operator's decision on the approval behind ``token``."""
    try:
        approval = queries.get_approval(token)
    except NotFoundError:
        return DecisionResult(Outcome.UNKNOWN)
    stream = ev.action_stream(approval.action_id)
    version = log.stream_version(stream)
    approval = queries.get_approval(token)  # re-read after the version: see jobs/effects.py
    action = queries.get_action(approval.action_id)
    if approval.status != "pending":
        return DecisionResult(Outcome.ALREADY_DECIDED, approval, action)

    meta = ev.Metadata(actor=decided_by, correlation_id=approval.job_id)
    cancelled = queries.get_job(approval.job_id).status == "cancelled"
    if cancelled or approval.expired(now or utcnow()):
        try:
            log.append(
                stream,
                [ev.ApprovalExpired(action_id=approval.action_id, token=token)],
                metadata=meta,
                expected_version=version,
            )
        except ConcurrencyError:
            return _already(token)
        return DecisionResult(Outcome.EXPIRED, queries.get_approval(token), action)

    if approve and action.bindings:
        changes = _changed(action)
        if changes:
            return _ask_again(log, action, approval, changes, meta=meta)

    decision: list[ev.EventData | ev.NewEvent] = [
        ev.NewEvent(
            ev.ApprovalDecided(
                action_id=approval.action_id,
                token=token,
                decision="approved" if approve else "rejected",
                decided_by=decided_by,
                channel=channel,
            ),
            idempotency_key=f"decision:{approval.action_id}:{token}",
        )
    ]
    if not approve:
        decision.append(ev.ActionRejected(action_id=approval.action_id, decided_by=decided_by))
    try:
        result = log.append(stream, decision, metadata=meta, expected_version=version)
    except ConcurrencyError:
        return _already(token)
    if result.duplicate:
        return _already(token)
    return DecisionResult(
        Outcome.APPROVED if approve else Outcome.REJECTED,
        queries.get_approval(token),
        queries.get_action(approval.action_id),
    )


def _already(token: str) -> DecisionResult:
    approval = queries.get_approval(token)
    return DecisionResult(Outcome.ALREADY_DECIDED, approval, queries.get_action(approval.action_id))


def bundle(log: EventLog, kind: str, tokens: list[str], *, by: str) -> str:
    """Offer one button for several pending approvals of one kind; returns its token."""
    token = secrets.token_urlsafe(9)
    log.append(
        ev.BUNDLE_STREAM,
        [
            ev.NewEvent(
                ev.ApprovalsBundled(token=token, kind=kind, approval_tokens=tokens),
                idempotency_key=f"bundle:{token}",
            )
        ],
        metadata=ev.Metadata(actor=by),
    )
    return token


def bundled(log: EventLog, token: str) -> list[str]:
    """The approval tokens behind a bundle button (empty if the token is unknown)."""
    event = log.find_by_key(f"bundle:{token}")
    return (
        list(event.data.approval_tokens)
        if event is not None and isinstance(event.data, ev.ApprovalsBundled)
        else []
    )


def _changed(action: ActionView) -> dict[str, tuple[Any, Any]]:
    """Params whose bound fact has another value now: {param: (proposed, current)}."""
    out: dict[str, tuple[Any, Any]] = {}
    for param, ref in action.bindings.items():
        current = resolve(ref)
        proposed = action.params.get(param)
        if current is not None and str(current).lower() != str(proposed).lower():
            out[param] = (proposed, current)
    return out


def resolve(ref: str) -> str | None:
    """The current value of a bound fact (``contact:<id>.email``); None if it is gone."""
    kind, _, rest = ref.partition(":")
    key, _, attr = rest.partition(".")
    if kind == "contact" and attr in {"email", "name", "company"}:
        try:
            return str(getattr(queries.get_contact(key), attr))
        except NotFoundError:
            return None
    return None


def _ask_again(
    log: EventLog,
    action: ActionView,
    approval: ApprovalView,
    changes: dict[str, tuple[Any, Any]],
    *,
    meta: ev.Metadata,
) -> DecisionResult:
    """The proposal with the new values, as a new approval; the old one is superseded."""
    reason = "; ".join(f"{p} changed from {old} to {new}" for p, (old, new) in changes.items())
    params = {**action.params, **{p: new for p, (_, new) in changes.items()}}
    summary = action.summary
    for old, new in changes.values():
        summary = summary.replace(str(old), str(new))
    flags = [f"⚠ {reason} since you were first asked", *action.flags]
    action_id = uuid.uuid4().hex
    token = secrets.token_urlsafe(9)
    key = f"reapproval:{action.action_id}"
    result = log.append(
        ev.action_stream(action_id),
        [
            ev.NewEvent(
                ev.ActionProposed(
                    action_id=action_id,
                    job_id=action.job_id,
                    connector=action.connector,
                    action=action.action,
                    params=params,
                    idempotency_key=key,
                    summary=summary,
                    contact_id=action.contact_id,
                    flags=list(dict.fromkeys(flags)),
                    bindings=action.bindings,
                    revises=action.action_id,
                ),
                idempotency_key=key,
            ),
            ev.ApprovalRequested(
                action_id=action_id,
                job_id=action.job_id,
                token=token,
                expires_at=utcnow() + (approval.expires_at - approval.requested_at),
            ),
        ],
        metadata=meta,
        expected_version=0,
    )
    if result.duplicate:
        first = result.events[0].data
        assert isinstance(first, ev.ActionProposed)
        action_id = first.action_id
    supersede(log, action.action_id, by_action_id=action_id, reason=reason, meta=meta)
    return DecisionResult(
        Outcome.CHANGED,
        queries.approval_for_action(action_id),
        queries.get_action(action_id),
        reason=reason,
    )


def supersede(
    log: EventLog, action_id: str, *, by_action_id: str, reason: str, meta: ev.Metadata
) -> bool:
    """Close a pending proposal as replaced by ``by_action_id``. False if it was no longer
    pending (decided, expired or replaced already): the first outcome stands."""
    stream = ev.action_stream(action_id)
    version = log.stream_version(stream)
    try:
        approval = queries.approval_for_action(action_id)
    except NotFoundError:
        return False
    if approval.status != "pending":
        return False
    try:
        log.append(
            stream,
            [
                ev.NewEvent(
                    ev.ActionSuperseded(
                        action_id=action_id,
                        token=approval.token,
                        by_action_id=by_action_id,
                        reason=reason,
                    ),
                    idempotency_key=f"superseded:{action_id}",
                )
            ],
            metadata=meta,
            expected_version=version,
        )
    except ConcurrencyError:
        return False
    return True


@dataclass(frozen=True)
class SweepReport:
    expired: int
    reminders: int


def sweep(log: EventLog, *, now: datetime, remind_after: timedelta | None) -> SweepReport:
    """Expire pending approvals past their time (the operator is told, nothing runs), and
    remind each chat once per ``remind_after`` of the approvals waiting longer than that."""
    expired = 0
    for approval in queries.expired_pending_approvals(now=now):
        stream = ev.action_stream(approval.action_id)
        version = log.stream_version(stream)
        if queries.get_approval(approval.token).status != "pending":
            continue
        try:
            log.append(
                stream,
                [ev.ApprovalExpired(action_id=approval.action_id, token=approval.token)],
                metadata=ev.Metadata(actor="reconciler", correlation_id=approval.job_id),
                expected_version=version,
            )
            expired += 1
        except ConcurrencyError:
            continue  # decided at this very moment: the decision stands
    reminders = 0
    if remind_after is not None and remind_after > timedelta(0):
        due = queries.approvals_to_remind(
            requested_before=now - remind_after, reminded_before=now - remind_after
        )
        chats: dict[tuple[str, str], list[ApprovalView]] = {}
        for approval in due:
            job = queries.get_job(approval.job_id)
            chats.setdefault((job.channel, job.chat_id), []).append(approval)
        bucket = int(now.timestamp() // remind_after.total_seconds())
        for (channel, chat_id), items in chats.items():
            tokens = sorted(a.token for a in items)
            key = hashlib.sha256(f"{channel}:{chat_id}:{bucket}:{tokens}".encode()).hexdigest()
            result = log.append(
                ev.REMINDER_STREAM,
                [
                    ev.NewEvent(
                        ev.ApprovalsReminded(
                            tokens=tokens,
                            oldest_requested_at=min(a.requested_at for a in items),
                            channel=channel,
                            chat_id=chat_id,
                        ),
                        idempotency_key=f"reminder:{key[:32]}",
                    )
                ],
                metadata=ev.Metadata(actor="reconciler"),
            )
            reminders += 0 if result.duplicate else 1
    return SweepReport(expired, reminders)
