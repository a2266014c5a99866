"""The reconciler: the log is the truth, the queue is transport (invariant 1).

A job the log says is queued, retrying or running, or an approved action, that nothing has
moved for longer than its lease, is sent to the broker again: the broker may have lost the
message (Redis flushed, in-process broker gone with its process), or the worker holding it
died. Sending twice is harmless: the handlers are idempotent, and the log records each
requeue so the trace explains it.

The same pass runs the periodic hooks: reading the inbox (at most every ``inbox_every``, and
before the flows advance, so a reply moves its flow in the same pass), storing sent work as
memory, advancing flows, purging forgotten memories, the daily digest. The :class:`Scheduler`
wakes often enough for the inbox when it is read more often than the reconciler runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
    # Reads new mail into the log (returns how many emails it recorded), at most every
    # ``inbox_every``; called with ``now=``.
    poll_inbox: Callable[..., int] | None = None
    inbox_every: timedelta = timedelta(0)
    # Measures the objectives, alerts on a fast burn and carries out answered alerts.
    check_slos: Callable[..., object] | None = None
    _inbox_polled_at: datetime | None = field(default=None, init=False, repr=False, compare=False)

    def with_leases(self, lease: timedelta) -> Reconciler:
        return replace(self, queue_lease=lease, run_lease=lease)

    def poll_inbox_if_due(self, *, now: datetime) -> int:
        """Read the inbox if ``inbox_every`` has passed since the last read (or the clock went
        back); returns how many emails were recorded."""
        if self.poll_inbox is None:
            return 0
        last = self._inbox_polled_at
        if last is not None and timedelta(0) <= now - last < self.inbox_every:
            return 0
        self._inbox_polled_at = now
        return self.poll_inbox(now=now)

    def inbox_due_in(self, *, now: datetime) -> float | None:
        """Seconds until the inbox is due (0: now); None when it is not read on a timer of its
        own (no inbox, or read at every pass)."""
        if self.poll_inbox is None or self.inbox_every <= timedelta(0):
            return None
        last = self._inbox_polled_at
        if last is None:
            return 0.0
        left = (last + self.inbox_every - now).total_seconds()
        return min(max(left, 0.0), self.inbox_every.total_seconds())  # the clock may go back

    def check_inbox(self, *, now: datetime | None = None) -> int:
        """Between two reconciles: read the inbox if it is due, and when mail came, move the
        flows on at once (a reply may be what a flow waits for)."""
        moment = now or utcnow()
        recorded = self.poll_inbox_if_due(now=moment)
        if recorded and self.advance_flows is not None:
            self.advance_flows(now=moment)
        return recorded

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
        self.poll_inbox_if_due(now=moment)  # before the flows: a reply moves its flow now
        if self.advance_flows is not None:
            self.advance_flows(now=moment)
        if self.purge_forgotten is not None:
            purged = self.purge_forgotten(now=moment)
            if purged:
                logger.info("purged %d forgotten memories whose undo window ended", purged)
        if self.check_slos is not None:
            self.check_slos(now=moment)
        if self.daily_digest is not None:
            self.daily_digest(now=moment)
        if jobs or actions:
            logger.warning("reconciler re-sent %d job(s) and %d action(s)", len(jobs), len(actions))
        return ReconcileReport(tuple(jobs), tuple(actions))


class Scheduler:
    """Every ``interval`` seconds on a daemon thread: reconcile, and snapshot the read models
    when ``snapshot_every`` events have been appended since the last snapshot. When the
    reconciler reads an inbox, the thread also wakes when the inbox is due between two
    reconciles (:meth:`Reconciler.check_inbox`), so mail is read every ``inbox_every`` whatever
    the interval."""

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
        next_reconcile = time.monotonic() + self._interval
        while True:
            wait = next_reconcile - time.monotonic()
            inbox = self._reconciler.inbox_due_in(now=utcnow())
            if inbox is not None:
                wait = min(wait, inbox)
            if self._stop.wait(max(wait, 0.0)):
                return
            try:
                if time.monotonic() < next_reconcile:
                    self._reconciler.check_inbox()
                    continue
                try:
                    self._reconcile()
                finally:  # the next one is an interval after this one ended, as before
                    next_reconcile = time.monotonic() + self._interval
            except Exception:  # a dead scheduler loses the safety net: log, and try again
                logger.exception("reconciler failed; trying again in %.0f s", self._interval)

    def _reconcile(self) -> None:
        self._reconciler.run_once()
        log = self._reconciler.log
        if snapshots.due(head=log.head(), every=self._snapshot_every):
            position = snapshots.take(log.db)
            logger.info("snapshot of the read models at position %d", position)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
