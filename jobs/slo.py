"""Service level objectives for the critical flows, their error budgets, and burn alerts.

An objective (:class:`config.settings.Slo`) says what share of a flow's outcomes must be good
over a window: invoices sent within an hour of their approval, 99 % of the time over 28 days.
:func:`measure` reads the outcomes from the log's read models (approvals, actions, jobs and
the actions' own streams for the moment each was carried out) and gives the share met and
the error budget left: the misses the target allows over the window, minus those that
happened. An action still inside its allowance is not counted yet; one past it and not carried
out counts as a miss from that moment.

:class:`SloMonitor` runs on the reconciler's schedule. When the last ``fast_hours`` miss at a
rate that would spend the whole budget ``fast_burn`` times too fast (Google's SRE
multiwindow rule, with at least ``min_bad`` misses so one slow job in a quiet week does not
page anyone), it appends ``SloBurning`` to the objective's stream (with its expected version,
so two processes alert once) and one question to the operator: what missed with ``/trace``
links, and the suggested rollback as buttons (Roll back: the compensations of what the
missed work's jobs did, most recent first; Pause the agents involved; Leave it). The next
alert for the same objective waits until the fast window is clean again (``SloRecovered``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from agents.questions import LABELS
from config.settings import Slo
from jobs.flows import flow_token
from store import events as ev
from store import queries
from store.errors import ConcurrencyError, NotFoundError
from store.log import EventLog, utcnow
from store.models import ActionRow, ApprovalRow, EventRecord, JobRow
from store.queries import ActionView, short_id

logger = logging.getLogger(__name__)

ACTOR = "slo"
FAILED_ACTION = frozenset({"failed", "discarded", "unknown"})
NOT_CARRIED_OUT = frozenset({"rejected", "expired", "superseded"})  # no approval to meet
MISSES_SHOWN = 3


@dataclass(frozen=True)
class Outcome:
    """One action or job the objective counts."""

    ident: str  # action or job id
    job_id: str
    agent: str
    at: datetime  # when it was decided: carried out, failed, or the allowance ran out (UTC)
    good: bool
    why: str  # "sent 4 min after approval", "failed: 554 rejected", "not sent 2 h after approval"


@dataclass(frozen=True)
class SloReport:
    name: str
    slo: Slo
    good: int
    bad: int
    pending: int  # still inside their allowance
    budget_left: float  # share of the window's error budget not spent (negative: overspent)
    fast_bad: int
    fast_total: int
    burn_rate: float  # over the fast window, 1.0 = spending the budget exactly on time
    misses: tuple[Outcome, ...]  # newest first
    fast_since: datetime  # the start of the fast window

    @property
    def total(self) -> int:
        return self.good + self.bad

    @property
    def met(self) -> float | None:
        return self.good / self.total if self.total else None

    @property
    def burning(self) -> bool:
        return self.fast_bad >= self.slo.min_bad and self.burn_rate >= self.slo.fast_burn

    def line(self) -> str:
        """One line for /status and the digest."""
        target = f"{self.slo.target * 100:g} %"
        if self.met is None:
            met = f"nothing counted yet (target {target})"
        else:
            met = f"{self.met * 100:.1f} % of {self.total} (target {target})"
        budget = f"budget {max(self.budget_left, -9.99) * 100:.0f} % left"
        flag = " \u26a0 burning fast" if self.burning else ""
        pending = f", {self.pending} in progress" if self.pending else ""
        return f"{self.slo.label()}: {met}, {budget}{pending}{flag}"


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{max(minutes, 0)} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


def _carried_out(since: datetime) -> dict[str, datetime]:
    """When each action carried out since ``since`` was (its first ``ActionExecuted``): one
    query over the log, not one per action."""
    query = (
        EventRecord.select(EventRecord.stream_id, EventRecord.recorded_at)
        .where(
            (EventRecord.type == ev.ActionExecuted.type_name)
            & (EventRecord.recorded_at >= _naive(since))
        )
        .order_by(EventRecord.position)
    )
    found: dict[str, datetime] = {}
    prefix = ev.action_stream("")
    for stream_id, recorded_at in cast(Iterable[tuple[str, datetime]], query.tuples()):
        found.setdefault(stream_id.removeprefix(prefix), _aware(recorded_at))
    return found


def action_outcomes(
    log: EventLog, slo: Slo, *, since: datetime, now: datetime
) -> tuple[list[Outcome], int]:
    """The actions the objective counts, approved since ``since``; and how many are pending."""
    connector, _, action = slo.action.partition(".")
    query = (
        ApprovalRow.select(
            ApprovalRow.decided_at,
            ActionRow.action_id,
            ActionRow.job_id,
            ActionRow.status,
            ActionRow.error,
            ActionRow.updated_at,
            JobRow.agent,
        )
        .join(ActionRow, on=(ApprovalRow.action_id == ActionRow.action_id))
        .join(JobRow, on=(ActionRow.job_id == JobRow.job_id))
        .where(
            (ApprovalRow.status == "approved")
            & (ApprovalRow.decided_at >= _naive(since))
            & (ApprovalRow.decided_at <= _naive(now))
        )
    )
    if connector:
        query = query.where((ActionRow.connector == connector) & (ActionRow.action == action))
    if slo.agent:
        query = query.where(JobRow.agent == slo.agent)
    allowance = timedelta(minutes=slo.within_minutes)
    carried_out = _carried_out(since)  # approved since `since`: carried out after it
    outcomes, pending = [], 0
    rows = cast(Iterable[tuple[datetime, str, str, str, str | None, datetime, str]], query.tuples())
    for decided_at, action_id, job_id, status, error, updated_at, agent in rows:
        approved = _aware(decided_at)
        deadline = approved + allowance
        done = carried_out.get(action_id)
        if done is not None:
            good = done <= deadline
            verb = "carried out" if good else "carried out late,"
            why = f"{verb} {_duration(done - approved)} after approval"
            outcomes.append(
                Outcome(action_id, job_id, agent, done if good else deadline, good, why)
            )
        elif status in NOT_CARRIED_OUT:
            continue
        elif status in FAILED_ACTION:
            reason = (error or status).splitlines()[0][:80]
            at = min(_aware(updated_at), deadline)
            outcomes.append(Outcome(action_id, job_id, agent, at, False, f"{status}: {reason}"))
        elif now > deadline:
            why = f"not carried out {_duration(now - approved)} after approval ({status})"
            outcomes.append(Outcome(action_id, job_id, agent, deadline, False, why))
        else:
            pending += 1
    return outcomes, pending


def job_outcomes(slo: Slo, *, since: datetime, now: datetime) -> tuple[list[Outcome], int]:
    """The jobs the objective counts, ended since ``since`` (done or failed); and how many of
    them are being retried (pending)."""
    query = JobRow.select().where(
        (JobRow.finished_at >= _naive(since)) & (JobRow.finished_at <= _naive(now))
    )
    if slo.agent:
        query = query.where(JobRow.agent == slo.agent)
    outcomes, pending = [], 0
    for job in query:
        if job.finished_at is None:
            continue
        ended = _aware(job.finished_at)
        if job.status == "failed":
            reason = (job.error or "failed").splitlines()[0][:80]
            outcomes.append(Outcome(job.job_id, job.job_id, job.agent, ended, False, reason))
        elif job.status in {"done", "awaiting_approval"}:
            outcomes.append(Outcome(job.job_id, job.job_id, job.agent, ended, True, job.status))
        elif job.status in {"queued", "running", "retrying"}:
            pending += 1
    return outcomes, pending


def measure(log: EventLog, name: str, slo: Slo, *, now: datetime | None = None) -> SloReport:
    """The objective over its window ending ``now``, from the read models."""
    moment = _aware(now or utcnow())
    since = moment - timedelta(days=slo.window_days)
    if slo.kind == "action":
        outcomes, pending = action_outcomes(log, slo, since=since, now=moment)
    else:
        outcomes, pending = job_outcomes(slo, since=since, now=moment)
    bad = [o for o in outcomes if not o.good]
    allowed = (1 - slo.target) * len(outcomes)
    budget_left = 1.0 - (len(bad) / allowed if allowed else 0.0)
    fast_since = moment - timedelta(hours=slo.fast_hours)
    fast = [o for o in outcomes if o.at >= fast_since]
    fast_bad = sum(1 for o in fast if not o.good)
    burn = (fast_bad / len(fast)) / (1 - slo.target) if fast else 0.0
    return SloReport(
        name=name,
        slo=slo,
        good=len(outcomes) - len(bad),
        bad=len(bad),
        pending=pending,
        budget_left=budget_left,
        fast_bad=fast_bad,
        fast_total=len(fast),
        burn_rate=burn,
        misses=tuple(sorted(bad, key=lambda o: o.at, reverse=True)),
        fast_since=fast_since,
    )


def measure_all(
    log: EventLog, slos: Mapping[str, Slo], *, now: datetime | None = None
) -> list[SloReport]:
    return [measure(log, name, slo, now=now) for name, slo in sorted(slos.items())]


@dataclass
class SloMonitor:
    """Alerts once per fast burn of each objective and carries out the operator's answer."""

    log: EventLog
    slos: Mapping[str, Slo]
    # Runs the compensation of one executed action (jobs.effects.Effects.compensate).
    compensate: Callable[..., str]
    # Whether an executed action can be undone (jobs.effects.Effects.compensable).
    compensable: Callable[[ActionView], bool]
    # Pauses an agent (JobService.pause): False when it was paused already.
    pause: Callable[..., bool]

    def check(self, *, now: datetime | None = None) -> list[SloReport]:
        """Measure every objective; alert on a new fast burn, note a recovery, and carry out
        answered alerts. Returns the reports."""
        moment = _aware(now or utcnow())
        reports = measure_all(self.log, self.slos, now=moment)
        for report in reports:
            try:
                self._follow(report)
            except ConcurrencyError:
                logger.info("slo %s: another process updated it first", report.name)
        return reports

    def _follow(self, report: SloReport) -> None:
        stream = ev.slo_stream(report.name)
        history = self.log.read_stream(stream)
        version = history[-1].version if history else 0
        open_alert = _open_alert(history)
        if open_alert is not None:
            handled = self._carry_out(open_alert, history, version)
            if handled:
                return
            if not report.burning:
                self._append(
                    stream,
                    [ev.SloRecovered(slo=report.name, burn_rate=round(report.burn_rate, 2))],
                    version,
                )
                logger.info("slo %s recovered (burn rate %.1f)", report.name, report.burn_rate)
            return
        if report.burning and report.misses:
            self._alert(report, stream, version)

    def _alert(self, report: SloReport, stream: str, version: int) -> None:
        newest = report.misses[0]
        missed = [o for o in report.misses if o.at >= report.fast_since]
        jobs = list(dict.fromkeys(o.job_id for o in missed))
        undo = [
            a
            for job_id in jobs
            for a in reversed(queries.actions_for_job(job_id))
            if a.status == "executed" and self.compensable(a)
        ]
        agents = sorted({o.agent for o in missed})
        token = flow_token("slo", report.name, str(version + 1))  # short: a button's data
        rollback = "; ".join(a.summary for a in undo) or "nothing (none of it can be undone)"
        shown = "\n".join(
            f"- /trace {short_id(o.ident)} ({o.agent}): {o.why}" for o in missed[:MISSES_SHOWN]
        )
        more = f"\n  +{len(missed) - MISSES_SHOWN} more" if len(missed) > MISSES_SHOWN else ""
        text = (
            f"Objective burning fast: {report.slo.label()}. {report.fast_bad} of "
            f"{report.fast_total} missed in the last {report.slo.fast_hours:g} h "
            f"({report.burn_rate:.0f}\u00d7 the rate the {report.slo.target * 100:g} % target "
            f"allows); {max(report.budget_left, -9.99) * 100:.0f} % of the "
            f"{report.slo.window_days:g}-day budget left.\n{shown}{more}\n"
            f"{LABELS['rollback']} would undo: {rollback}. "
            f"{LABELS['pause']} would pause: {', '.join(agents)}."
        )
        choices = (["rollback"] if undo else []) + ["pause", "leave"]
        self._append(
            stream,
            [
                ev.SloBurning(
                    slo=report.name,
                    burn_rate=round(report.burn_rate, 2),
                    missed=[o.ident for o in missed],
                    job_id=newest.job_id,
                    token=token,
                    compensations=[a.action_id for a in undo],
                    agents=agents,
                )
            ],
            version,
        )
        self.log.append(
            ev.job_stream(newest.job_id),
            [
                ev.NewEvent(
                    ev.QuestionAsked(
                        token=token,
                        kind="slo_burn",
                        job_id=newest.job_id,
                        text=text,
                        choices=choices,
                    ),
                    idempotency_key=f"slo-alert:{token}",
                )
            ],
            metadata=ev.Metadata(actor=ACTOR, correlation_id=newest.job_id),
        )
        logger.warning(
            "slo %s burning: %d of %d missed in %g h (burn rate %.1f)",
            report.name,
            report.fast_bad,
            report.fast_total,
            report.slo.fast_hours,
            report.burn_rate,
        )

    def _carry_out(
        self, alert: ev.SloBurning, history: Iterable[ev.RecordedEvent], version: int
    ) -> bool:
        """Carry out the answer to the open alert once. True if it did something now."""
        if any(
            isinstance(e.data, ev.SloAlertHandled) and e.data.token == alert.token for e in history
        ):
            return False
        try:
            question = queries.get_question(alert.token)
        except NotFoundError:
            return False
        if question.status == "pending" or question.answer is None:
            return False
        by = question.answered_by or "operator"
        if question.answer == "rollback":
            results = [
                f"{short_id(a)} {self.compensate(a, reason=f'objective {alert.slo} rolled back by {by}', by=by)}"
                for a in alert.compensations
            ]
            outcome = "rolled back: " + (", ".join(results) or "nothing")
        elif question.answer == "pause":
            paused = [a for a in alert.agents if self.pause(a, by=by)]
            outcome = "paused: " + (", ".join(paused) or "already paused")
        else:
            outcome = "left as is"
        self._append(
            ev.slo_stream(alert.slo),
            [
                ev.SloAlertHandled(
                    slo=alert.slo, token=alert.token, choice=question.answer, by=by, outcome=outcome
                )
            ],
            version,
        )
        logger.info("slo %s alert answered by %s: %s", alert.slo, by, outcome)
        return True

    def _append(self, stream: str, events: list[ev.EventData | ev.NewEvent], version: int) -> None:
        self.log.append(stream, events, metadata=ev.Metadata(actor=ACTOR), expected_version=version)


def pause_agent(log: EventLog, agent: str, *, by: str) -> bool:
    """Pause ``agent`` (its new and queued jobs wait in the log); False if already paused."""
    if queries.agent_paused(agent):
        return False
    log.append(
        ev.agent_stream(agent), [ev.AgentPaused(agent=agent, by=by)], metadata=ev.Metadata(actor=by)
    )
    return True


def _open_alert(history: Iterable[ev.RecordedEvent]) -> ev.SloBurning | None:
    """The alert of the current burn: the last SloBurning not followed by SloRecovered."""
    current: ev.SloBurning | None = None
    for event in history:
        if isinstance(event.data, ev.SloBurning):
            current = event.data
        elif isinstance(event.data, ev.SloRecovered):
            current = None
    return current
