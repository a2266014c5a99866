"""Executing an approved action exactly once, and undoing it when a plan fails.

``ActionStarted`` is appended (at the stream's expected version, so only one worker can
start it) before the connector is called with the action's idempotency key; the result is
recorded as ``ActionExecuted`` or ``ActionFailed``. A redelivered message finds the action
executed and does nothing. An action found started but not finished, and older than its
lease (a crash between the two), is never silently repeated: the connector's own lookup
resolves it where it can (the outbox file exists), and otherwise the operator is asked.

A transient connector failure (the connector guarantees no effect took place) is recorded as
``ActionAttemptFailed`` and retried with backoff; after the last retry, or on a permanent
failure, the action fails with one question (Retry / Discard), and the executed actions of
the same job that declare a compensation are undone, most recent first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from agents import questions
from agents.retry import RetryPolicy, failures_since_retry
from agents.runner import WORKER_ID
from agents.signals import RetryLater
from connectors.base import ActionResult, Connector
from connectors.errors import ConnectorError, OutcomeUnknownError, TransientConnectorError
from store import events as ev
from store import queries
from store.errors import ConcurrencyError, DatabaseError, NotFoundError
from store.log import EventLog, utcnow
from store.queries import ActionView

logger = logging.getLogger(__name__)

DONE = {"executed", "rejected", "expired", "failed", "discarded", "compensated", "unknown"}
ACTION_LEASE = timedelta(minutes=10)


@dataclass
class Effects:
    """Runs actions against the connectors, with the log as the source of truth."""

    log: EventLog
    connectors: Mapping[str, Connector]
    lease: timedelta = ACTION_LEASE
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_checkpoint: Callable[[str], None] = lambda point: None

    def execute(self, action_id: str, *, now: datetime | None = None) -> str:
        """Run one approved action. Returns the action's status afterwards."""
        stream = ev.action_stream(action_id)
        # Read the version before the status: if the status still says "approved", no start was
        # committed before this version, so a racing worker's start makes our append fail.
        version = self.log.stream_version(stream)
        try:
            action = queries.get_action(action_id)
        except NotFoundError:
            logger.error("action %s is not in the log; dropping the message", action_id)
            return "missing"
        if action.status in DONE:
            return action.status
        if (
            action.status in {"approved", "retrying"}
            and queries.get_job(action.job_id).status == "cancelled"
        ):
            self.log.append(
                stream,
                [ev.ActionDiscarded(action_id=action_id, by="cancel")],
                metadata=ev.Metadata(actor="worker", correlation_id=action.job_id),
                expected_version=version,
            )
            return "discarded"
        if action.status not in {"approved", "running", "retrying"}:
            logger.error(
                "action %s is %s, not approved: refusing to execute it", action_id, action.status
            )
            return action.status
        meta = ev.Metadata(actor=f"worker:{WORKER_ID}", correlation_id=action.job_id)
        connector = self.connectors[action.connector]

        if action.status == "running":
            history = self.log.read_stream(stream)
            if not _orphaned(history, now=now or utcnow(), lease=self.lease):
                logger.info("action %s is being executed by another worker; leaving it", action_id)
                return "running"
            found = connector.lookup(
                action.action, action.params, idempotency_key=action.idempotency_key
            )
            if found is not None or not connector.lookup_is_definitive:
                return self._resolve_unknown(action, found, meta, version)
            logger.warning(
                "action %s: the earlier attempt provably had no effect; running it again", action_id
            )

        try:
            self.log.append(
                stream,
                [
                    ev.ActionStarted(
                        action_id=action_id, attempt=action.attempts + 1, worker=WORKER_ID
                    )
                ],
                metadata=meta,
                expected_version=version,
            )
        except ConcurrencyError:
            logger.info("action %s was started by another worker", action_id)
            return "running"
        self.on_checkpoint("after_action_started")

        try:
            result = connector.execute(
                action.action, action.params, idempotency_key=action.idempotency_key
            )
        except OutcomeUnknownError as exc:
            return self._resolve_unknown(
                action, None, meta, self.log.stream_version(stream), reason=str(exc)
            )
        except ConnectorError as exc:
            return self._failed(action, exc, meta)
        self.on_checkpoint("after_effect")
        executed = ev.ActionExecuted(
            action_id=action_id, summary=result.summary, details=dict(result.details)
        )
        self._record_executed(stream, executed, meta, key=f"{action.idempotency_key}:executed")
        self.on_checkpoint("after_action_executed")
        return "executed"

    def _record_executed(
        self, stream: str, executed: ev.ActionExecuted, meta: ev.Metadata, *, key: str
    ) -> None:
        """Record an effect that has happened. Only this worker knows it did, so a database
        outage (a restart, a failover) is waited out, for up to half the action's lease, rather
        than leaving the action looking abandoned: for a connector that cannot look its effects
        up (SMTP, webhooks) that would end in asking the operator whether it happened. The key
        makes a retry whose first attempt did commit (its answer lost) write nothing."""
        deadline = time.monotonic() + self.lease.total_seconds() / 2
        pause = 0.2
        while True:
            try:
                self.log.append(stream, [ev.NewEvent(executed, idempotency_key=key)], metadata=meta)
                return
            except DatabaseError as exc:
                if time.monotonic() + pause > deadline:
                    raise
                logger.warning(
                    "action %s was executed but cannot be recorded yet (%s); trying again in %.1f s",
                    executed.action_id,
                    exc,
                    pause,
                )
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _resolve_unknown(
        self,
        action: ActionView,
        found: ActionResult | None,
        meta: ev.Metadata,
        version: int,
        *,
        reason: str = "",
    ) -> str:
        """An earlier attempt started and never reported back: record what the connector saw,
        or ask the operator; never repeat it blindly."""
        stream = ev.action_stream(action.action_id)
        outcome: list[ev.EventData | ev.NewEvent]
        if found is not None:
            outcome = [
                ev.ActionExecuted(
                    action_id=action.action_id, summary=found.summary, details=dict(found.details)
                )
            ]
        else:
            reason = reason or (
                "an earlier attempt stopped mid-call and the connector cannot tell whether it took effect; "
                "it was not repeated"
            )
            outcome = [
                ev.ActionOutcomeUnknown(action_id=action.action_id, reason=reason),
                questions.ask(
                    "action_unknown",
                    job_id=action.job_id,
                    action_id=action.action_id,
                    text=f"Did this happen? {action.summary}. {reason}.",
                ),
            ]
        try:
            self.log.append(stream, outcome, metadata=meta, expected_version=version)
        except ConcurrencyError:
            return queries.get_action(action.action_id).status
        return "executed" if found is not None else "unknown"

    def _failed(self, action: ActionView, exc: ConnectorError, meta: ev.Metadata) -> str:
        stream = ev.action_stream(action.action_id)
        attempt = (
            failures_since_retry(
                self.log.read_stream(stream), failed=ev.ActionAttemptFailed, reset=ev.ActionRetried
            )
            + 1
        )
        error = str(exc)[:2000]
        transient = isinstance(exc, TransientConnectorError)
        if transient and not self.retry.exhausted(attempt):
            delay = self.retry.delay_ms(attempt)
            self.log.append(
                stream,
                [
                    ev.ActionAttemptFailed(
                        action_id=action.action_id,
                        attempt=attempt,
                        error_type=type(exc).__name__,
                        error=error,
                        retry_in_s=delay / 1000,
                    )
                ],
                metadata=meta,
            )
            logger.warning(
                "action %s attempt %d failed (%s); retrying in %d ms",
                action.action_id,
                attempt,
                exc,
                delay,
            )
            raise RetryLater(delay, error)
        why = f"after {attempt} attempts" if transient else "(not retried: the error is permanent)"
        self.log.append(
            stream,
            [
                ev.ActionFailed(
                    action_id=action.action_id,
                    error_type=type(exc).__name__,
                    error=error,
                    transient=transient,
                ),
                questions.ask(
                    "action_failed",
                    job_id=action.job_id,
                    action_id=action.action_id,
                    text=f"Failed: {action.summary}. {type(exc).__name__}: {error} {why}",
                ),
            ],
            metadata=meta,
        )
        logger.warning("action %s failed for good: %s", action.action_id, exc)
        self.compensate_job(action.job_id, reason=f"{action.summary} failed")
        return "failed"

    # Compensation ----------------------------------------------------------------------

    def compensate_job(self, job_id: str, *, reason: str) -> list[str]:
        """Undo the job's executed, reversible actions, most recent first. Returns their ids."""
        undone = []
        for done in queries.executed_actions_for_job(job_id):
            spec = self.connectors[done.connector].spec(done.action)
            if (
                spec.compensation is not None
                and self.compensate(done.action_id, reason=reason) == "compensated"
            ):
                undone.append(done.action_id)
        return undone

    def compensate(self, action_id: str, *, reason: str, by: str | None = None) -> str:
        """Run the compensating action of one executed action, once. Returns its status."""
        stream = ev.action_stream(action_id)
        version = self.log.stream_version(stream)
        action = queries.get_action(action_id)
        if action.status != "executed":
            return action.status
        connector = self.connectors[action.connector]
        compensation = connector.spec(action.action).compensation
        meta = ev.Metadata(actor=by or f"worker:{WORKER_ID}", correlation_id=action.job_id)
        if compensation is None:
            return "irreversible"
        executed = [
            e.data for e in self.log.read_stream(stream) if isinstance(e.data, ev.ActionExecuted)
        ]
        details = dict(executed[-1].details) if executed else {}
        try:
            result = connector.execute(
                compensation,
                {**action.params, **{k: v for k, v in details.items() if k not in action.params}},
                idempotency_key=f"{action.idempotency_key}:undo",
            )
        except ConnectorError as exc:
            self.log.append(
                stream,
                [
                    ev.ActionCompensationFailed(
                        action_id=action_id,
                        compensation=compensation,
                        error_type=type(exc).__name__,
                        error=str(exc),
                    )
                ],
                metadata=meta,
            )
            return "compensation_failed"
        try:
            self.log.append(
                stream,
                [
                    ev.ActionCompensated(
                        action_id=action_id,
                        compensation=compensation,
                        summary=result.summary,
                        reason=reason,
                    )
                ],
                metadata=meta,
                expected_version=version,
            )
        except ConcurrencyError:
            return queries.get_action(action_id).status
        return "compensated"


def _orphaned(history: list[ev.RecordedEvent], *, now: datetime, lease: timedelta) -> bool:
    """Whether the last start of this action was abandoned: its lease ran out, or the
    reconciler re-sent the action after it (the reconciler has its own lease)."""
    last_start = None
    requeued_after = False
    for event in history:
        if isinstance(event.data, ev.ActionStarted):
            last_start, requeued_after = event.recorded_at, False
        elif isinstance(event.data, ev.ActionRequeued):
            requeued_after = True
    return last_start is None or requeued_after or now - last_start >= lease


def execute_action(
    log: EventLog,
    connectors: Mapping[str, Connector],
    action_id: str,
    *,
    lease: timedelta = ACTION_LEASE,
    now: datetime | None = None,
) -> str:
    """Run one approved action with the default retry policy (see :class:`Effects`)."""
    return Effects(log=log, connectors=connectors, lease=lease).execute(action_id, now=now)
