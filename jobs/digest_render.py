"""What the digest says: :func:`compose` reads the read models into one short text.

Sections, in order, each left out when empty: decisions waiting, done since the last digest,
needs attention, spend against budgets, upcoming, overdue invoices, flow health, objectives
(with their error budgets). Lists are cut
(``+N more``) until the text fits a phone screen or two (:data:`MAX_LINES`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

from connectors.errors import ConnectorError
from jobs.digest_queries import (
    actions_in,
    executed_since,
    failed_jobs_since,
    flow_alert_token,
    jobs_done_since,
    payment_problems_since,
    pending_questions,
    waiting_approvals,
)
from jobs.slo import SloReport
from store import business, queries
from store.business import PaymentView
from store.errors import NotFoundError
from store.queries import short_id

# Split out of jobs/digest.py: its records keep the logger name they always had.
logger = logging.getLogger("jobs.digest")

UPCOMING_DAYS = 7
MAX_LINES = 25  # what fits on a phone screen or two
LIST_CAP = 5  # items of one list before "+N more"
BUTTONS = 3  # approvals the digest offers buttons for (always listed in full)
TEXT = 70  # characters of a summary, an error, a title
FOOTER = "Details: /trace <id> · /approvals"
ALL_QUIET = "All quiet: nothing waiting, nothing failed."
# Questions that are an alert about a failure: listed once, under "Needs attention" with what
# failed, not again under "Decisions waiting".
ALERT_KINDS = ("flow_failed",)

BudgetLine = tuple[str, str, float, float]  # (scope, period, spent, limit): JobService.budget_lines


class UpcomingItem(Protocol):
    """What the digest needs of a calendar event (``connectors.ics.CalendarEvent`` is one)."""

    @property
    def title(self) -> str: ...

    @property
    def start(self) -> datetime: ...


Upcoming = Callable[[datetime, int], Sequence[UpcomingItem]]  # (now, days) -> events


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
    questions = pending_questions(ALERT_KINDS, exclude=True)  # alerts: under "Needs attention"
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


def _payment(payment: PaymentView) -> str:
    what = "Payment failed" if payment.status == "failed" else "Refunded"
    invoice = f" · {payment.invoice_number}" if payment.invoice_number else ""
    return (
        f"- {what}: {_client(payment.contact_id)} · "
        f"{_money(payment.amount, payment.currency)}{invoice}"
    )


def _flow_alerts(counts: dict[str, int]) -> list[str]:
    """Failed flows, each with the question its alert asked when it is still unanswered;
    an unanswered alert whose flow is no longer failed is listed on its own."""
    flows = business.list_flows(statuses=("failed",))
    alerts = {q.token: q for q in pending_questions(ALERT_KINDS)}
    counts["failed_flows"] = len(flows)
    lines = []
    for flow in flows:
        line = (
            f"- Flow {flow.template} {flow.short_id} failed at {flow.step or 'start'}: "
            f"{_short(flow.last_error or '?', 50)}"
        )
        token = flow_alert_token(flow.flow_id)
        if token is not None and (alert := alerts.pop(token, None)) is not None:
            line += f" · {' / '.join(alert.choices)}? [{short_id(alert.job_id)}]"
        lines.append(line)
    lines += [f"- ? {_short(q.text)} [{short_id(q.job_id)}]" for q in alerts.values()]
    return lines


def _attention(since: datetime, counts: dict[str, int]) -> _Section | None:
    failed_actions = actions_in(["failed"], since=since)
    unknown = actions_in(["unknown"], since=None)
    with_action = {a.job_id for a in failed_actions}
    failed_jobs = [j for j in failed_jobs_since(since) if j.job_id not in with_action]
    payments = payment_problems_since(since)
    counts["failed_jobs"], counts["failed_actions"] = len(failed_jobs), len(failed_actions)
    counts["failed_payments"] = sum(p.status == "failed" for p in payments)
    counts["refunds"] = sum(p.status == "refunded" for p in payments)
    counts["unknown_outcomes"] = len(unknown)
    lines = [
        f"- Failed: {_short(a.summary, 40)}: {_short(a.error or '?', 50)} [{short_id(a.job_id)}]"
        for a in failed_actions
    ]
    lines += [
        f"- Job {j.short_id} ({j.agent}) failed: {_short(j.error or '?', 50)}" for j in failed_jobs
    ]
    lines += [_payment(p) for p in payments]
    lines += _flow_alerts(counts)
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


def _objectives(slos: Sequence[SloReport]) -> _Section | None:
    """Objectives with something counted; a burning or overspent one first."""
    counted = [r for r in slos if r.total or r.pending]
    counted.sort(key=lambda r: (not r.burning, r.budget_left))
    lines = tuple(f"- {r.line()}" for r in counted)
    return _Section("Objectives:", (lines,)) if lines else None


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
    slos: Sequence[SloReport] = (),
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
        _objectives(slos),
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
