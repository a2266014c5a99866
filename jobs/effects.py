"""Executing an approved action exactly once.

``ActionStarted`` is appended (at the stream's expected version, so only one worker can
start it) before the connector is called with the action's idempotency key; the result is
recorded as ``ActionExecuted`` or ``ActionFailed``. A redelivered message finds the action
executed and does nothing. An action found started but not finished, and older than its lease (a crash
between the two), is never silently repeated: the connector's own lookup resolves it where it can, and
otherwise it is recorded as failed with its outcome unknown, for the operator to check.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

from agents.runner import WORKER_ID
from connectors.base import Connector
from connectors.errors import ConnectorError, PermanentConnectorError, TransientConnectorError
from store import events as ev
from store import queries
from store.errors import ConcurrencyError, NotFoundError
from store.log import EventLog, utcnow

logger = logging.getLogger(__name__)

DONE = {"executed", "rejected", "expired", "failed"}
ACTION_LEASE = timedelta(minutes=10)


def _last_start(log: EventLog, stream: str) -> datetime | None:
    starts = [
        e.recorded_at for e in log.read_stream(stream) if isinstance(e.data, ev.ActionStarted)
    ]
    return starts[-1] if starts else None


def execute_action(
    log: EventLog,
    connectors: Mapping[str, Connector],
    action_id: str,
    *,
    lease: timedelta = ACTION_LEASE,
    now: datetime | None = None,
) -> str:
    """Run one approved action. Returns the action's status afterwards.

    An action started less than ``lease`` ago belongs to the worker that started it; after
    that, its worker is presumed dead and the outcome is resolved (never repeated blindly)."""
    stream = ev.action_stream(action_id)
    # Read the version before the status: if the status still says "approved", no start was
    # committed before this version, so a racing worker's start makes our append fail.
    version = log.stream_version(stream)
    try:
        action = queries.get_action(action_id)
    except NotFoundError:
        logger.error("action %s is not in the log; dropping the message", action_id)
        return "missing"
    if action.status in DONE:
        return action.status
    if action.status not in {"approved", "running"}:
        logger.error(
            "action %s is %s, not approved: refusing to execute it", action_id, action.status
        )
        return action.status

    meta = ev.Metadata(actor=f"worker:{WORKER_ID}", correlation_id=action.job_id)
    connector = connectors[action.connector]

    if action.status == "running":
        started = _last_start(log, stream)
        if started is not None and (now or utcnow()) - started < lease:
            logger.info("action %s is being executed by another worker; leaving it", action_id)
            return "running"
        found = connector.lookup(
            action.action, action.params, idempotency_key=action.idempotency_key
        )
        if found is not None:
            log.append(
                stream,
                [
                    ev.ActionExecuted(
                        action_id=action_id, summary=found.summary, details=dict(found.details)
                    )
                ],
                metadata=meta,
            )
            return "executed"
        log.append(
            stream,
            [
                ev.ActionFailed(
                    action_id=action_id,
                    error_type="OutcomeUnknown",
                    error="an earlier attempt stopped mid-call and the connector cannot tell whether "
                    "it took effect; not repeating it. Check, then propose it again if needed.",
                )
            ],
            metadata=meta,
        )
        return "failed"

    try:
        log.append(
            stream,
            [ev.ActionStarted(action_id=action_id, attempt=action.attempts + 1, worker=WORKER_ID)],
            metadata=meta,
            expected_version=version,
        )
    except ConcurrencyError:
        logger.info("action %s was started by another worker", action_id)
        return "running"

    try:
        result = connector.execute(
            action.action, action.params, idempotency_key=action.idempotency_key
        )
    except ConnectorError as exc:
        log.append(
            stream,
            [
                ev.ActionFailed(
                    action_id=action_id,
                    error_type=type(exc).__name__,
                    error=str(exc)[:2000],
                    transient=isinstance(exc, TransientConnectorError)
                    and not isinstance(exc, PermanentConnectorError),
                )
            ],
            metadata=meta,
        )
        logger.warning("action %s failed: %s", action_id, exc)
        return "failed"
    log.append(
        stream,
        [
            ev.ActionExecuted(
                action_id=action_id, summary=result.summary, details=dict(result.details)
            )
        ],
        metadata=meta,
    )
    return "executed"
