"""Executing an approved action exactly once.

``ActionStarted`` is appended (at the stream's expected version, so only one worker can
start it) before the connector is called with the action's idempotency key; the result is
recorded as ``ActionExecuted`` or ``ActionFailed``. A redelivered message finds the action
executed and does nothing. An action found started but not finished (a crash between the
two) is never silently repeated: the connector's own lookup resolves it where it can, and
otherwise it is recorded as failed with its outcome unknown, for the operator to check.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from agents.runner import WORKER_ID
from connectors.base import Connector
from connectors.errors import ConnectorError, PermanentConnectorError, TransientConnectorError
from store import events as ev
from store import queries
from store.errors import ConcurrencyError, NotFoundError
from store.log import EventLog

logger = logging.getLogger(__name__)

DONE = {"executed", "rejected", "expired", "failed"}


def execute_action(log: EventLog, connectors: Mapping[str, Connector], action_id: str) -> str:
    """Run one approved action. Returns the action's status afterwards."""
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

    stream = ev.action_stream(action_id)
    meta = ev.Metadata(actor=f"worker:{WORKER_ID}", correlation_id=action.job_id)
    connector = connectors[action.connector]

    if action.status == "running":
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
            expected_version=log.stream_version(stream),
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
