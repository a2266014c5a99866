"""The reconciler: the log is the truth, the queue is transport (invariant 1).

A job the log says is queued, retrying or running, or an approved action, that nothing has
moved for longer than its lease, is sent to the broker again: the broker may have lost the
message (Redis flushed, in-process broker gone with its process), or the worker holding it
died. Sending twice is harmless: the handlers are idempotent, and the log records each
requeue so the trace explains it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from agents import approvals
from store import events as ev
from store import queries, snapshots
from store.log import EventLog, utcnow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcileReport:
    jobs: tuple[str, ...]
    actions: tuple[str, ...]

    @property
    def total(self) -> int:
        return len(self.jobs) + len(self.actions)


@dataclass
class Reconciler:
    log: EventLog
    send_job: Callable[[str], bool]
    send_action: Callable[[str], bool]
    queue_lease: timedelta
    run_lease: timedelta
    remind_after: timedelta | None = None
    # Purges memories whose undo window ended (returns how many).
    purge_forgotten: Callable[..., int] | None = None
    # Stores sent work as memory (returns how many).
    capture_sent: Callable[[], int] | None = None
    # Starts triggered business flows and moves open ones on (timers: reminders, deadlines).
    advance_flows: Callable[..., int] | None = None
    # Sends the daily digest when it is due (once per local day).
    daily_digest: Callable[..., bool] | None = None

    def with_leases(self, lease: timedelta) -> Reconciler:
        return replace(self, queue_lease=lease, run_lease=lease)

    def run_once(self, *, now: datetime | None = None) -> ReconcileReport:
        moment = now or utcnow()
        jobs = []
        for job in queries.orphaned_jobs(
            now=moment, queue_lease=self.queue_lease, run_lease=self.run_lease
        ):
            reason = {
                "queued": f"queued for more than {self.queue_lease.total_seconds():.0f} s without starting",
                "retrying": "its retry did not start on time",
                "running": f"no result {self.run_lease.total_seconds():.0f} s after it started (worker gone?)",
            }.get(job.status, job.status)
            self.log.append(
                ev.job_stream(job.job_id),
                [ev.JobRequeued(job_id=job.job_id, reason=reason)],
                metadata=ev.Metadata(actor="reconciler", correlation_id=job.job_id),
            )
            if self.send_job(job.job_id):
                jobs.append(job.job_id)
        actions = []
        for action in queries.orphaned_actions(
            now=moment, queue_lease=self.queue_lease, run_lease=self.run_lease
        ):
            self.log.append(
                ev.action_stream(action.action_id),
                [
                    ev.ActionRequeued(
                        action_id=action.action_id, reason=f"{action.status} and not moving"
                    )
                ],
                metadata=ev.Metadata(actor="reconciler", correlation_id=action.job_id),
            )
            if self.send_action(action.action_id):
                actions.append(action.action_id)
        swept = approvals.sweep(self.log, now=moment, remind_after=self.remind_after)
        if swept.expired or swept.reminders:
            logger.info(
                "expired %d approval(s), sent %d reminder(s)", swept.expired, swept.reminders
            )
        if self.capture_sent is not None:
            self.capture_sent()
        if self.advance_flows is not None:
            self.advance_flows(now=moment)
        if self.purge_forgotten is not None:
            purged = self.purge_forgotten(now=moment)
            if purged:
                logger.info("purged %d forgotten memories whose undo window ended", purged)
        if self.daily_digest is not None:
            self.daily_digest(now=moment)
        if jobs or actions:
            logger.warning("reconciler re-sent %d job(s) and %d action(s)", len(jobs), len(actions))
        return ReconcileReport(tuple(jobs), tuple(actions))


class Scheduler:
    """Every ``interval`` seconds on a daemon thread: reconcile, and snapshot the read models
    when ``snapshot_every`` events have been appended since the last snapshot."""

    def __init__(self, reconciler: Reconciler, *, interval: float, snapshot_every: int) -> None:
        self._reconciler = reconciler
        self._interval = interval
        self._snapshot_every = snapshot_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="opcore-scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._reconciler.run_once()
                log = self._reconciler.log
                if snapshots.due(head=log.head(), every=self._snapshot_every):
                    position = snapshots.take(log.db)
                    logger.info("snapshot of the read models at position %d", position)
            except Exception:  # a dead scheduler loses the safety net: log, and try again
                logger.exception("reconciler failed; trying again in %.0f s", self._interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
