"""The daily digest: the one message a day that replaces five dashboards.

:func:`due_day` decides, purely, whether a daily digest is due (the operator's local time,
``digest_time``, quiet hours, DST); :func:`compose` reads the read models into one short text
(decisions waiting, done, needs attention, spend, upcoming, overdue invoices, flow health);
:class:`DigestService` appends it to the log as ``DigestSent``, and the notifier delivers it.

Exactly once per local day: the daily digest is appended with the idempotency key
``digest:<local date>``. Two processes, or a restart, composing the same day's digest at the
same moment both append, and the log keeps the first; the "already sent today?" check that
comes before is only there to spare the composition.

Composing lives in :mod:`jobs.digest_render`, the reads it needs in :mod:`jobs.digest_queries`;
their public names are importable from here as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from config import Settings
from config.settings import parse_clock
from jobs.digest_queries import (
    actions_in,
    executed_since,
    failed_jobs_since,
    jobs_done_since,
    last_daily,
    payment_problems_since,
    waiting_approvals,
)
from jobs.digest_render import (
    ALL_QUIET,
    BUTTONS,
    FOOTER,
    LIST_CAP,
    MAX_LINES,
    TEXT,
    UPCOMING_DAYS,
    BudgetLine,
    Digest,
    Upcoming,
    UpcomingItem,
    compose,
)
from jobs.slo import SloReport
from store import events as ev
from store.log import EventLog

__all__ = [
    "ALL_QUIET",
    "BUTTONS",
    "FALLBACK_WINDOW",
    "FOOTER",
    "LIST_CAP",
    "MAX_LINES",
    "TEXT",
    "UPCOMING_DAYS",
    "BudgetLine",
    "Digest",
    "DigestSchedule",
    "DigestService",
    "Upcoming",
    "UpcomingItem",
    "UpcomingSource",
    "actions_in",
    "compose",
    "digest_key",
    "due_day",
    "executed_since",
    "failed_jobs_since",
    "in_quiet_hours",
    "jobs_done_since",
    "last_daily",
    "payment_problems_since",
    "send_time",
    "upcoming_from",
    "waiting_approvals",
]

logger = logging.getLogger(__name__)

FALLBACK_WINDOW = timedelta(hours=24)  # "since" when there was no daily digest before


@runtime_checkable
class UpcomingSource(Protocol):
    """A connector that lists coming events (the calendar connector)."""

    def upcoming(self, *, now: datetime, days: int) -> Sequence[UpcomingItem]: ...


def upcoming_from(connectors: Mapping[str, object]) -> Upcoming | None:
    """The digest's calendar: the first configured connector that lists coming events."""
    for connector in connectors.values():
        if isinstance(connector, UpcomingSource):
            source = connector
            return lambda now, days: source.upcoming(now=now, days=days)
    return None


def digest_key(day: str) -> str:
    return f"digest:{day}"


# When ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestSchedule:
    """When the daily digest goes out: ``at`` local time in ``zone`` (``None``: never),
    never inside the ``quiet`` hours (start, end), which may wrap midnight."""

    zone: ZoneInfo
    at: time | None
    quiet: tuple[time, time] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DigestSchedule:
        quiet: tuple[time, time] | None = None
        if settings.quiet_hours:
            start, _, end = settings.quiet_hours.partition("-")
            first, last = parse_clock(start), parse_clock(end)
            if first is not None and last is not None:  # the settings validated both
                quiet = (first, last)
        at = parse_clock(settings.digest_time) if settings.digest_time else None
        return cls(zone=settings.zone, at=at, quiet=quiet)


def in_quiet_hours(clock: time, quiet: tuple[time, time] | None) -> bool:
    """Whether a local time of day falls in ``[start, end)``; 22:00-07:00 wraps midnight.
    Equal ends mean no quiet hours."""
    if quiet is None:
        return False
    start, end = quiet
    if start == end:
        return False
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end


def send_time(schedule: DigestSchedule) -> time | None:
    """The local time of day the digest is due from: ``at``, or the end of the quiet hours
    when ``at`` falls inside them."""
    if schedule.at is None:
        return None
    if schedule.quiet is not None and in_quiet_hours(schedule.at, schedule.quiet):
        return schedule.quiet[1]
    return schedule.at


def due_day(now: datetime, schedule: DigestSchedule, *, last_daily_day: str | None) -> str | None:
    """The operator's local date (ISO) whose daily digest is due at ``now``, or ``None``.

    Due once the local wall-clock time reaches the send time, outside quiet hours, when no
    daily digest exists for that local date yet. A process that was down at the send time
    sends it when it is back the same local day; a day missed entirely is not sent afterwards
    (the next digest covers everything since the last one). Wall-clock comparison in the
    zone makes DST days work: a send time skipped by the spring change is due right after
    it, one repeated by the autumn change is due the first time only.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("due_day: now must be timezone-aware")
    at = send_time(schedule)
    if at is None:
        return None
    local = now.astimezone(schedule.zone)
    day = local.date().isoformat()
    if last_daily_day is not None and last_daily_day >= day:
        return None
    clock = local.time()
    if clock < at or in_quiet_hours(clock, schedule.quiet):
        return None
    return day


# Sending ---------------------------------------------------------------------------------


class DigestService:
    """Composes digests and appends them to the log (the notifier delivers daily ones)."""

    def __init__(
        self,
        log: EventLog,
        schedule: DigestSchedule,
        upcoming: Upcoming | None,
        budget_lines: Callable[[], Sequence[BudgetLine]],
        slos: Callable[[datetime], Sequence[SloReport]] | None = None,
    ) -> None:
        self._log = log
        self._schedule = schedule
        self._upcoming = upcoming
        self._budget_lines = budget_lines
        self._slos = slos

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        log: EventLog,
        budget_lines: Callable[[], Sequence[BudgetLine]],
        upcoming: Upcoming | None = None,
        slos: Callable[[datetime], Sequence[SloReport]] | None = None,
    ) -> DigestService:
        return cls(log, DigestSchedule.from_settings(settings), upcoming, budget_lines, slos)

    @property
    def schedule(self) -> DigestSchedule:
        return self._schedule

    def compose(self, *, now: datetime, since: datetime) -> Digest:
        return compose(
            now=now,
            since=since,
            zone=self._schedule.zone,
            upcoming=self._upcoming,
            budget_lines=self._budget_lines(),
            slos=self._slos(now) if self._slos is not None else (),
        )

    def send_daily_if_due(self, *, now: datetime) -> bool:
        """Append today's daily digest if it is due and not in the log yet. True if this call
        appended it; False if not due, or another process (or an earlier run) did."""
        last = last_daily()
        last_day = (
            last.data.day if last is not None and isinstance(last.data, ev.DigestSent) else None
        )
        day = due_day(now, self._schedule, last_daily_day=last_day)
        if day is None:
            return False
        digest = self.compose(now=now, since=self._since(last, now))
        result = self._log.append(
            ev.DIGEST_STREAM,
            [
                ev.NewEvent(
                    ev.DigestSent(
                        day=day,
                        kind="daily",
                        text=digest.text,
                        since=digest.since,
                        counts=digest.counts,
                    ),
                    idempotency_key=digest_key(day),
                )
            ],
            metadata=ev.Metadata(actor="digest"),
        )
        if result.duplicate:
            logger.info("daily digest for %s was already appended by another process", day)
            return False
        logger.info("daily digest for %s appended", day)
        return True

    def on_demand(self, *, now: datetime, by: str) -> Digest:
        """A digest now (``/digest``): recorded in the log, answered by the caller."""
        digest = self.compose(now=now, since=self._since(last_daily(), now))
        self._log.append(
            ev.DIGEST_STREAM,
            [
                ev.DigestSent(
                    day=digest.day,
                    kind="on_demand",
                    text=digest.text,
                    since=digest.since,
                    counts=digest.counts,
                )
            ],
            metadata=ev.Metadata(actor=by),
        )
        return digest

    @staticmethod
    def _since(last: ev.RecordedEvent | None, now: datetime) -> datetime:
        """When the previous daily digest was composed (appended), or a day ago."""
        if last is None:
            return now - FALLBACK_WINDOW
        return min(last.recorded_at, now)
