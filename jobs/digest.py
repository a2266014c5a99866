"""The daily digest: the one message a day that replaces five dashboards.

:func:`due_day` decides, purely, whether a daily digest is due (the operator's local time,
``digest_time``, quiet hours, DST); :func:`compose` reads the read models into one short text
(decisions waiting, done, needs attention, spend, upcoming, overdue invoices, flow health);
:class:`DigestService` appends it to the log as ``DigestSent``, and the notifier delivers it.

Exactly once per local day: the daily digest is appended with the idempotency key
``digest:<local date>``. Two processes, or a restart, composing the same day's digest at the
same moment both append, and the log keeps the first; the "already sent today?" check that
comes before is only there to spare the composition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from config import Settings
from config.settings import parse_clock
from connectors.errors import ConnectorError
from store import business, queries
from store import events as ev
from store.errors import NotFoundError
from store.log import EventLog, to_recorded
from store.models import ActionRow, ApprovalRow, EventRecord, JobRow
from store.queries import ActionView, ApprovalView, JobView, short_id

logger = logging.getLogger(__name__)

UPCOMING_DAYS = 7
MAX_LINES = 25  # what fits on a phone screen or two
LIST_CAP = 5  # items of one list before "+N more"
BUTTONS = 3  # approvals the digest offers buttons for (always listed in full)
FALLBACK_WINDOW = timedelta(hours=24)  # "since" when there was no daily digest before
TEXT = 70  # characters of a summary, an error, a title
FOOTER = "Details: /trace <id> · /approvals"
ALL_QUIET = "All quiet: nothing waiting, nothing failed."

BudgetLine = tuple[str, str, float, float]  # (scope, period, spent, limit): JobService.budget_lines


class UpcomingItem(Protocol):
    """What the digest needs of a calendar event (``connectors.ics.CalendarEvent`` is one)."""

    @property
    def title(self) -> str: ...

    @property
    def start(self) -> datetime: ...


Upcoming = Callable[[datetime, int], Sequence[UpcomingItem]]  # (now, days) -> events


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


# Read helpers the store does not have -----------------------------------------------------


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def waiting_approvals(at: datetime) -> list[ApprovalView]:
    """Approvals that were waiting for a decision at ``at``, oldest first: requested by then,
    not decided, expired or superseded before it, and not past their expiry. The digest lists
    these at composition; the notifier asks again at delivery to put buttons on the same ones."""
    moment = _naive(at)
    query = (
        ApprovalRow.select(ApprovalRow.token)
        .where(
            (ApprovalRow.requested_at <= moment)
            & (ApprovalRow.expires_at > moment)
            & (ApprovalRow.decided_at.is_null() | (ApprovalRow.decided_at > moment))
        )
        .order_by(ApprovalRow.requested_at, ApprovalRow.token)
        .limit(100)
    )
    return [queries.get_approval(row.token) for row in query]


def executed_since(since: datetime) -> list[ActionView]:
    """Actions whose ``ActionExecuted`` was recorded at or after ``since``, in log order."""
    rows = (
        EventRecord.select()
        .where(
            (EventRecord.type == ev.ActionExecuted.type_name)
            & (EventRecord.recorded_at >= _naive(since))
        )
        .order_by(EventRecord.position)
        .limit(1000)
    )
    out: list[ActionView] = []
    for row in rows:
        data = to_recorded(row).data
        if not isinstance(data, ev.ActionExecuted):
            continue
        try:
            out.append(queries.get_action(data.action_id))
        except NotFoundError:
            logger.warning("digest: executed action %s has no read model row", data.action_id)
    return out


def jobs_done_since(since: datetime) -> int:
    return int(
        JobRow.select()
        .where((JobRow.status == "done") & (JobRow.finished_at >= _naive(since)))
        .count()
    )


def failed_jobs_since(since: datetime, *, limit: int = 50) -> list[JobView]:
    rows = (
        JobRow.select(JobRow.job_id)
        .where((JobRow.status == "failed") & (JobRow.finished_at >= _naive(since)))
        .order_by(JobRow.finished_at)
        .limit(limit)
    )
    return [queries.get_job(row.job_id) for row in rows]


def actions_in(
    statuses: Sequence[str], *, since: datetime | None, limit: int = 50
) -> list[ActionView]:
    """Actions in one of ``statuses`` (changed at or after ``since``, if given), oldest first."""
    where = ActionRow.status.in_(list(statuses))
    if since is not None:
        where = where & (ActionRow.updated_at >= _naive(since))
    rows = ActionRow.select(ActionRow.action_id).where(where).order_by(ActionRow.updated_at)
    return [queries.get_action(row.action_id) for row in rows.limit(limit)]


def last_daily() -> ev.RecordedEvent | None:
    """The most recent daily ``DigestSent`` in the digest stream."""
    rows = (
        EventRecord.select()
        .where(
            (EventRecord.stream_id == ev.DIGEST_STREAM)
            & (EventRecord.type == ev.DigestSent.type_name)
        )
        .order_by(EventRecord.version.desc())
    )
    for row in rows.iterator():
        event = to_recorded(row)
        if isinstance(event.data, ev.DigestSent) and event.data.kind == "daily":
            return event
    return None


# What ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    day: str  # the operator's local date, ISO
    text: str
    counts: dict[str, int]
    since: datetime
    approval_tokens: tuple[str, ...]  # in the order the text numbers them


@dataclass(frozen=True)
class _Section:
    title: str
    groups: tuple[tuple[str, ...], ...]  # lists, each capped on its own
    keep: int = 0  # items of the first list never hidden by shrinking (the buttons' targets)


def _short(text: str, limit: int = TEXT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _age(delta: timedelta) -> str:
    minutes = max(int(delta.total_seconds() // 60), 0)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} d"


def _usd(value: float) -> str:
    return f"${value:.4f}" if 0 < value < 0.01 else f"${value:.2f}"


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


def _client(contact_id: str | None) -> str:
    if contact_id is None:
        return "no client"
    try:
        contact = queries.get_contact(contact_id)
    except NotFoundError:
        return f"contact {short_id(contact_id)}"
    return contact.name or contact.email


def _grouped(texts: Sequence[str]) -> tuple[str, ...]:
    """Identical lines once, with ``(xN)``, in first-seen order."""
    counts: dict[str, int] = {}
    for text in texts:
        counts[text] = counts.get(text, 0) + 1
    return tuple(f"- {t}" + (f" (x{n})" if n > 1 else "") for t, n in counts.items())


def _decisions(now: datetime, counts: dict[str, int]) -> tuple[_Section | None, tuple[str, ...]]:
    approvals = waiting_approvals(now)
    questions = queries.pending_questions()
    counts["approvals"], counts["questions"] = len(approvals), len(questions)
    if not approvals and not questions:
        return None, ()
    lines = []
    for n, approval in enumerate(approvals, start=1):
        action = queries.get_action(approval.action_id)
        warn = " ⚠" if any(f.startswith("⚠") for f in action.flags) else ""
        lines.append(
            f"{n}. {_short(action.summary)}{warn} · {_age(now - approval.requested_at)} "
            f"[{short_id(approval.job_id)}]"
        )
    asked = tuple(f"? {_short(q.text)} [{short_id(q.job_id)}]" for q in questions)
    section = _Section(
        f"Decisions waiting ({len(approvals) + len(questions)}):",
        (tuple(lines), asked),
        keep=min(BUTTONS, len(approvals)),
    )
    return section, tuple(a.token for a in approvals)


def _done(since: datetime, counts: dict[str, int]) -> _Section | None:
    executed = executed_since(since)
    jobs = jobs_done_since(since)
    paid = [p for p in business.payments_since(since) if p.status == "succeeded"]
    counts["executed"], counts["jobs_done"], counts["payments"] = len(executed), jobs, len(paid)
    if not executed and not jobs and not paid:
        return None
    summary = [f"- {jobs} job{'s' if jobs != 1 else ''} completed"] if jobs else []
    payments = tuple(
        f"- Paid: {_money(p.amount, p.currency)}"
        + (f" · {p.invoice_number}" if p.invoice_number else "")
        + (f" · {_client(p.contact_id)}" if p.contact_id else "")
        for p in paid
    )
    return _Section(
        "Done since the last digest:",
        (_grouped([_short(a.summary) for a in executed]), tuple(summary), payments),
    )


def _attention(since: datetime, counts: dict[str, int]) -> _Section | None:
    failed_actions = actions_in(["failed"], since=since)
    unknown = actions_in(["unknown"], since=None)
    with_action = {a.job_id for a in failed_actions}
    failed_jobs = [j for j in failed_jobs_since(since) if j.job_id not in with_action]
    flows = business.list_flows(statuses=("failed",))
    counts["failed_jobs"], counts["failed_actions"] = len(failed_jobs), len(failed_actions)
    counts["failed_flows"], counts["unknown_outcomes"] = len(flows), len(unknown)
    lines = [
        f"- Failed: {_short(a.summary, 40)}: {_short(a.error or '?', 50)} [{short_id(a.job_id)}]"
        for a in failed_actions
    ]
    lines += [
        f"- Job {j.short_id} ({j.agent}) failed: {_short(j.error or '?', 50)}" for j in failed_jobs
    ]
    lines += [
        f"- Flow {f.template} {f.short_id} failed at {f.step or 'start'}: "
        f"{_short(f.last_error or '?', 50)}"
        for f in flows
    ]
    lines += [f"- Outcome unknown: {_short(a.summary, 50)} [{short_id(a.job_id)}]" for a in unknown]
    return _Section("Needs attention:", (tuple(lines),)) if lines else None


def _spend(budget_lines: Sequence[BudgetLine]) -> _Section | None:
    if not any(spent > 0 for _, _, spent, _ in budget_lines):
        return None
    scopes: dict[str, dict[str, tuple[float, float]]] = {}
    for scope, period, spent, limit in budget_lines:
        kind = "today" if period.startswith("day:") else "month"
        scopes.setdefault(scope, {})[kind] = (spent, limit)
    lines = []
    for scope, by_period in scopes.items():
        if scope != "workspace" and not any(s > 0 for s, _ in by_period.values()):
            continue
        parts = []
        for kind in ("today", "month"):
            if kind in by_period:
                spent, limit = by_period[kind]
                warn = " ⚠" if limit and spent >= 0.8 * limit else ""
                parts.append(f"{kind} {_usd(spent)} of {_usd(limit)}{warn}")
        lines.append(f"- {scope}: {' · '.join(parts)}")
    return _Section("Spend against budgets:", (tuple(lines),))


def _upcoming(
    now: datetime, zone: ZoneInfo, upcoming: Upcoming | None, counts: dict[str, int]
) -> _Section | None:
    if upcoming is None:
        return None
    try:
        items = sorted(upcoming(now, UPCOMING_DAYS), key=lambda item: item.start)
    except ConnectorError as exc:
        logger.warning("digest: calendar unavailable: %s", exc)
        return _Section("Upcoming:", ((f"- calendar unavailable: {_short(str(exc))}",),))
    counts["upcoming"] = len(items)
    lines = tuple(
        f"- {item.start.astimezone(zone):%a %d %b %H:%M} {_short(item.title, 50)}" for item in items
    )
    return _Section(f"Upcoming ({UPCOMING_DAYS} days):", (lines,)) if lines else None


def _overdue(now: datetime, zone: ZoneInfo, counts: dict[str, int]) -> _Section | None:
    today = now.astimezone(zone).date()
    invoices = business.overdue_invoices(today)
    counts["overdue_invoices"] = len(invoices)
    lines = tuple(
        f"- {i.number} · {_client(i.contact_id)} · {_money(i.total, i.currency)} · "
        f"{(today - i.due_date).days} d overdue"
        for i in invoices
    )
    return _Section("Overdue invoices:", (lines,)) if lines else None


FLOW_ORDER = ("running", "waiting", "failed", "done")


def _flows(since: datetime, counts: dict[str, int]) -> _Section | None:
    health = business.flow_health(since=since)
    counts["flows"] = sum(sum(by.values()) for by in health.values())
    lines = []
    for template in sorted(health):
        by = health[template]
        order = [s for s in FLOW_ORDER if s in by] + sorted(set(by) - set(FLOW_ORDER))
        lines.append(f"- {template}: " + ", ".join(f"{by[s]} {s}" for s in order))
    return _Section("Flow health:", (tuple(lines),)) if lines else None


def _render(header: str, sections: Sequence[_Section], cap: int) -> list[str]:
    lines = [header]
    for section in sections:
        lines.append(section.title)
        for index, group in enumerate(section.groups):
            shown = max(cap, section.keep) if index == 0 else cap
            lines += group[:shown]
            if len(group) > shown:
                lines.append(f"  +{len(group) - shown} more")
    lines.append(FOOTER)
    return lines


def compose(
    *,
    now: datetime,
    since: datetime,
    zone: ZoneInfo,
    upcoming: Upcoming | None,
    budget_lines: Sequence[BudgetLine],
) -> Digest:
    """The digest at ``now`` of what happened since ``since``, read from the read models.
    Each section is left out when empty; lists are cut (``+N more``) until the text fits in
    about :data:`MAX_LINES` lines."""
    if now.tzinfo is None or since.tzinfo is None:
        raise ValueError("compose: now and since must be timezone-aware")
    counts: dict[str, int] = {}
    decisions, tokens = _decisions(now, counts)
    candidates = [
        decisions,
        _done(since, counts),
        _attention(since, counts),
        _spend(budget_lines),
        _upcoming(now, zone, upcoming, counts),
        _overdue(now, zone, counts),
        _flows(since, counts),
    ]
    sections = [s for s in candidates if s is not None]
    local, local_since = now.astimezone(zone), since.astimezone(zone)
    header = f"Digest {local:%a %d %b} · since {local_since:%a %d %b %H:%M}"
    if not sections:
        text = f"{header}\n{ALL_QUIET}"
    else:
        lines: list[str] = []
        for cap in range(LIST_CAP, 0, -1):
            lines = _render(header, sections, cap)
            if len(lines) <= MAX_LINES:
                break
        text = "\n".join(lines)
    return Digest(
        day=local.date().isoformat(),
        text=text,
        counts=counts,
        since=since,
        approval_tokens=tokens,
    )


# Sending ---------------------------------------------------------------------------------


class DigestService:
    """Composes digests and appends them to the log (the notifier delivers daily ones)."""

    def __init__(
        self,
        log: EventLog,
        schedule: DigestSchedule,
        upcoming: Upcoming | None,
        budget_lines: Callable[[], Sequence[BudgetLine]],
    ) -> None:
        self._log = log
        self._schedule = schedule
        self._upcoming = upcoming
        self._budget_lines = budget_lines

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        log: EventLog,
        budget_lines: Callable[[], Sequence[BudgetLine]],
        upcoming: Upcoming | None = None,
    ) -> DigestService:
        return cls(log, DigestSchedule.from_settings(settings), upcoming, budget_lines)

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
