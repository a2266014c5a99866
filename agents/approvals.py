"""Deciding an approval: the first decision wins, expired buttons say so, nothing is lost.

The button carries only a short opaque token; the state lives in the log. Two presses racing
for the same approval append to the action's stream at the same expected version: exactly one
succeeds, the other reads what happened and reports it.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import datetime

from store import events as ev
from store import queries
from store.errors import ConcurrencyError, NotFoundError
from store.log import EventLog, utcnow
from store.queries import ActionView, ApprovalView


class Outcome(enum.Enum):
    APPROVED = "approved"
    REJECTED = "rejected"
    ALREADY_DECIDED = "already_decided"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DecisionResult:
    outcome: Outcome
    approval: ApprovalView | None = None
    action: ActionView | None = None


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
