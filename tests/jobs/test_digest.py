"""The daily digest: when it is due (time zones, quiet hours, DST), that it is appended once
per local day whatever the number of processes, and what it says."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import pytest

from config import Settings
from connectors.errors import TransientConnectorError
from jobs.digest import (
    ALL_QUIET,
    FOOTER,
    MAX_LINES,
    BudgetLine,
    Digest,
    DigestSchedule,
    DigestService,
    Upcoming,
    UpcomingItem,
    compose,
    due_day,
    upcoming_from,
    waiting_approvals,
)
from store import Store, queries
from store import events as ev
from store.log import utcnow
from tests.builders import create_contact, meta, request_job

BERLIN = ZoneInfo("Europe/Berlin")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def at(zone: ZoneInfo, clock: str, quiet: str = "") -> DigestSchedule:
    hour, minute = map(int, clock.split(":"))
    window = None
    if quiet:
        start, end = quiet.split("-")
        window = (time.fromisoformat(start), time.fromisoformat(end))
    return DigestSchedule(zone=zone, at=time(hour, minute), quiet=window)


# When --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "schedule", "last", "expected"),
    [
        # Berlin, an ordinary summer day: 08:00 CEST is 06:00 UTC
        (utc(2025, 6, 10, 5, 59), at(BERLIN, "08:00"), "2025-06-09", None),
        (utc(2025, 6, 10, 6, 0), at(BERLIN, "08:00"), "2025-06-09", "2025-06-10"),
        # the day before the spring change, 08:00 is 07:00 UTC (CET) ...
        (utc(2025, 3, 29, 6, 59), at(BERLIN, "08:00"), "2025-03-28", None),
        (utc(2025, 3, 29, 7, 0), at(BERLIN, "08:00"), "2025-03-28", "2025-03-29"),
        # ... on the change day (30 March), 06:00 UTC (CEST)
        (utc(2025, 3, 30, 5, 59), at(BERLIN, "08:00"), "2025-03-29", None),
        (utc(2025, 3, 30, 6, 0), at(BERLIN, "08:00"), "2025-03-29", "2025-03-30"),
        # 02:30 does not exist on 30 March: due as the clock jumps from 01:59 to 03:00
        (utc(2025, 3, 30, 0, 59), at(BERLIN, "02:30"), "2025-03-29", None),
        (utc(2025, 3, 30, 1, 0), at(BERLIN, "02:30"), "2025-03-29", "2025-03-30"),
        # 02:30 happens twice on 26 October: due the first time, not again the second
        (utc(2025, 10, 26, 0, 29), at(BERLIN, "02:30"), "2025-10-25", None),
        (utc(2025, 10, 26, 0, 30), at(BERLIN, "02:30"), "2025-10-25", "2025-10-26"),
        (utc(2025, 10, 26, 1, 30), at(BERLIN, "02:30"), "2025-10-26", None),
        # after the autumn change, 08:00 is 07:00 UTC (CET) again
        (utc(2025, 10, 26, 6, 59), at(BERLIN, "08:00"), "2025-10-25", None),
        (utc(2025, 10, 26, 7, 0), at(BERLIN, "08:00"), "2025-10-25", "2025-10-26"),
        # Los Angeles: 08:00 PST is 16:00 UTC, 08:00 PDT (from 9 March) is 15:00 UTC
        (utc(2025, 3, 8, 15, 59), at(LOS_ANGELES, "08:00"), "2025-03-07", None),
        (utc(2025, 3, 8, 16, 0), at(LOS_ANGELES, "08:00"), "2025-03-07", "2025-03-08"),
        (utc(2025, 3, 9, 14, 59), at(LOS_ANGELES, "08:00"), "2025-03-08", None),
        (utc(2025, 3, 9, 15, 0), at(LOS_ANGELES, "08:00"), "2025-03-08", "2025-03-09"),
        (utc(2025, 11, 2, 15, 59), at(LOS_ANGELES, "08:00"), "2025-11-01", None),
        (utc(2025, 11, 2, 16, 0), at(LOS_ANGELES, "08:00"), "2025-11-01", "2025-11-02"),
        # the local date, not the UTC one: 03:00 UTC on 2 June is 20:00 on 1 June in LA
        (utc(2025, 6, 2, 3, 0), at(LOS_ANGELES, "08:00"), "2025-05-31", "2025-06-01"),
        (utc(2025, 6, 2, 3, 0), at(LOS_ANGELES, "08:00"), "2025-06-01", None),
    ],
)
def test_due_day_follows_the_operators_wall_clock(
    now: datetime, schedule: DigestSchedule, last: str, expected: str | None
) -> None:
    assert due_day(now, schedule, last_daily_day=last) == expected


def test_a_process_down_at_digest_time_sends_it_when_back_the_same_day() -> None:
    schedule = at(BERLIN, "08:00")
    back_at = utc(2025, 6, 10, 19, 45)  # 21:45 local
    assert due_day(back_at, schedule, last_daily_day="2025-06-09") == "2025-06-10"
    assert due_day(back_at, schedule, last_daily_day=None) == "2025-06-10"


def test_a_missed_day_is_not_sent_afterwards() -> None:
    schedule = at(BERLIN, "08:00")
    # down all of 10 June: on 11 June before 08:00 nothing is due (not 10 June's) ...
    assert due_day(utc(2025, 6, 11, 5, 0), schedule, last_daily_day="2025-06-09") is None
    # ... and at 08:00 it is 11 June's digest
    assert due_day(utc(2025, 6, 11, 6, 0), schedule, last_daily_day="2025-06-09") == "2025-06-11"


def test_a_digest_time_inside_quiet_hours_waits_for_their_end() -> None:
    schedule = at(BERLIN, "06:30", quiet="22:00-07:00")  # wraps midnight
    assert due_day(utc(2025, 6, 10, 4, 59), schedule, last_daily_day="2025-06-09") is None
    assert due_day(utc(2025, 6, 10, 5, 0), schedule, last_daily_day="2025-06-09") == "2025-06-10"
    late = at(BERLIN, "23:00", quiet="22:00-07:00")  # goes out at 07:00, once a day
    assert due_day(utc(2025, 6, 10, 4, 59), late, last_daily_day="2025-06-09") is None
    assert due_day(utc(2025, 6, 10, 5, 0), late, last_daily_day="2025-06-09") == "2025-06-10"
    assert due_day(utc(2025, 6, 10, 21, 0), late, last_daily_day="2025-06-10") is None
    noon = at(BERLIN, "13:00", quiet="12:00-14:00")  # not wrapping
    assert due_day(utc(2025, 6, 10, 11, 30), noon, last_daily_day="2025-06-09") is None
    assert due_day(utc(2025, 6, 10, 12, 0), noon, last_daily_day="2025-06-09") == "2025-06-10"


def test_no_daily_digest_inside_quiet_hours_even_when_late() -> None:
    schedule = at(BERLIN, "08:00", quiet="22:00-07:00")
    assert due_day(utc(2025, 6, 10, 19, 59), schedule, last_daily_day="2025-06-09") == "2025-06-10"
    assert due_day(utc(2025, 6, 10, 20, 0), schedule, last_daily_day="2025-06-09") is None


def test_no_digest_time_means_no_daily_digest_and_naive_times_are_refused() -> None:
    never = DigestSchedule(zone=BERLIN, at=None)
    assert due_day(utc(2025, 6, 10, 12, 0), never, last_daily_day=None) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        due_day(datetime(2025, 6, 10, 12, 0), at(BERLIN, "08:00"), last_daily_day=None)


def test_schedule_from_settings(data_dir: Path) -> None:
    settings = Settings(
        data_dir=data_dir,
        timezone="Europe/Berlin",
        digest_time="08:30",
        quiet_hours="22:00-07:00",
    )
    schedule = DigestSchedule.from_settings(settings)
    assert schedule == DigestSchedule(zone=BERLIN, at=time(8, 30), quiet=(time(22), time(7)))
    off = DigestSchedule.from_settings(Settings(data_dir=data_dir, digest_time=""))
    assert off.at is None and off.quiet is None


# Exactly once ------------------------------------------------------------------------------

ALWAYS = DigestSchedule(zone=ZoneInfo("UTC"), at=time(0, 0))  # due from midnight UTC


def no_budgets() -> list[BudgetLine]:
    return []


def service(
    store: Store,
    *,
    schedule: DigestSchedule = ALWAYS,
    upcoming: Upcoming | None = None,
    budget_lines: Callable[[], Sequence[BudgetLine]] = no_budgets,
) -> DigestService:
    return DigestService(store.log, schedule, upcoming, budget_lines)


def dailies(store: Store) -> list[ev.DigestSent]:
    out = []
    for event in store.log.read_stream(ev.DIGEST_STREAM):
        assert isinstance(event.data, ev.DigestSent)
        if event.data.kind == "daily":
            out.append(event.data)
    return out


def test_two_processes_at_the_same_instant_append_one_digest(store: Store) -> None:
    now = utcnow()
    # Both pass the "already sent today?" check before either appends: the log's key decides.
    both_composing = threading.Barrier(2, timeout=5)

    def lines() -> list[BudgetLine]:
        both_composing.wait()
        return []

    with ThreadPoolExecutor(max_workers=2) as pool:  # two "processes", two service objects
        futures = [
            pool.submit(service(store, budget_lines=lines).send_daily_if_due, now=now)
            for _ in range(2)
        ]
        results = [f.result(timeout=10) for f in futures]  # re-raises what a thread raised
    assert sorted(results) == [False, True]
    [sent] = dailies(store)
    assert sent.day == now.date().isoformat()
    assert store.log.find_by_key(f"digest:{sent.day}") is not None


def test_a_restart_the_same_day_sends_nothing_and_the_next_day_sends_again(
    store: Store,
) -> None:
    now = utcnow()
    assert service(store).send_daily_if_due(now=now) is True
    assert service(store).send_daily_if_due(now=now + timedelta(hours=1)) is False  # restarted
    assert len(dailies(store)) == 1
    first = store.log.read_stream(ev.DIGEST_STREAM)[0]
    assert service(store).send_daily_if_due(now=now + timedelta(days=1)) is True
    one, two = dailies(store)
    assert two.day == (now + timedelta(days=1)).date().isoformat()
    assert one.since == now - timedelta(hours=24)  # nothing before it: the last day
    assert two.since == first.recorded_at  # the next covers everything since the last


def test_not_due_appends_nothing(store: Store) -> None:
    never = DigestSchedule(zone=BERLIN, at=None)
    assert service(store, schedule=never).send_daily_if_due(now=utcnow()) is False
    assert store.log.read_stream(ev.DIGEST_STREAM) == []


def test_on_demand_digests_are_recorded_without_taking_the_days_key(store: Store) -> None:
    now = utcnow()
    digests = service(store)
    first = digests.on_demand(now=now, by="telegram:42")
    digests.on_demand(now=now, by="telegram:42")
    events = store.log.read_stream(ev.DIGEST_STREAM)
    assert [e.data.kind for e in events if isinstance(e.data, ev.DigestSent)] == [
        "on_demand",
        "on_demand",
    ]
    assert events[0].metadata.actor == "telegram:42"
    assert all(e.idempotency_key is None for e in events)
    assert isinstance(first, Digest) and ALL_QUIET in first.text
    assert digests.send_daily_if_due(now=now) is True  # still due: on-demand ones do not count


# What it says ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Meeting:
    title: str
    start: datetime


def propose(
    store: Store,
    job_id: str,
    action_id: str,
    summary: str,
    *,
    token: str | None = None,
    connector: str = "email",
    action: str = "send_email",
    params: dict[str, object] | None = None,
) -> None:
    events: list[ev.EventData] = [
        ev.ActionProposed(
            action_id=action_id,
            job_id=job_id,
            connector=connector,
            action=action,
            params=params or {"to": "x@y.example"},
            idempotency_key=f"{action_id}:key",
            summary=summary,
        )
    ]
    if token is not None:
        events.append(
            ev.ApprovalRequested(
                action_id=action_id,
                job_id=job_id,
                token=token,
                expires_at=utcnow() + timedelta(hours=24),
            )
        )
    store.log.append(ev.action_stream(action_id), events, metadata=meta(job_id))


def append(store: Store, stream: str, *events: ev.EventData) -> None:
    store.log.append(stream, list(events), metadata=ev.Metadata(actor="test"))


def payment(
    external_id: str,
    status: Literal["succeeded", "failed", "refunded"],
    amount: str,
    invoice_number: str | None,
    *,
    contact_id: str | None = None,
) -> ev.PaymentRecorded:
    return ev.PaymentRecorded(
        source="stripe",
        external_id=external_id,
        status=status,
        amount=amount,
        currency="EUR",
        invoice_number=invoice_number,
        contact_id=contact_id,
    )


def seed(store: Store, today: date) -> None:
    """One of everything the digest reports."""
    create_contact(store, contact_id="c1", email="jane@acme.example", name="Jane Doe")
    request_job(store, "j1")
    propose(store, "j1", "a1", "Reply to Jane about the audit", token="tok1")  # waiting
    request_job(store, "j2")
    propose(store, "j2", "a2", "Proposal to Bob", token="tok2")
    append(
        store,
        ev.action_stream("a2"),
        ev.ApprovalDecided(
            action_id="a2", token="tok2", decision="approved", decided_by="t", channel="console"
        ),
        ev.ActionExecuted(action_id="a2", summary="sent", details={}),
    )
    request_job(store, "j3")
    append(
        store,
        ev.job_stream("j3"),
        ev.JobFailed(job_id="j3", error_type="PermanentError", error="model refused"),
        ev.QuestionAsked(
            token="q1",
            kind="job_failed",
            job_id="j3",
            text="The triage job failed for good",
            choices=["retry", "discard"],
        ),
    )
    request_job(store, "j4")
    append(store, ev.job_stream("j4"), ev.JobCompleted(job_id="j4", summary="ok", proposals=0))
    request_job(store, "j5")
    propose(store, "j5", "a5", "Calendar invite to Bob")
    append(
        store,
        ev.action_stream("a5"),
        ev.ActionOutcomeUnknown(action_id="a5", reason="connection lost"),
    )
    request_job(store, "j7")  # its action failed, so it failed: reported once, as the action
    propose(store, "j7", "a7", "Invoice email to Jane")
    append(
        store,
        ev.action_stream("a7"),
        ev.ActionFailed(action_id="a7", error_type="PermanentConnectorError", error="mailbox full"),
    )
    # An invoice published (issued) and overdue, and one paid.
    for number, due in (("INV-2025-0001", today - timedelta(days=10)), ("INV-2025-0002", today)):
        append(
            store,
            ev.INVOICES_STREAM,
            ev.InvoiceDrafted(
                invoice_id=number,
                number=number,
                contact_id="c1",
                currency="EUR",
                total="1200.00" if number.endswith("1") else "800.00",
                issue_date=(due - timedelta(days=14)).isoformat(),
                due_date=due.isoformat(),
            ),
        )
    request_job(store, "j6")
    propose(
        store,
        "j6",
        "a6",
        "Publish invoice INV-2025-0001",
        connector="documents",
        action="publish_invoice",
        params={"number": "INV-2025-0001"},
    )
    append(
        store,
        ev.action_stream("a6"),
        ev.ActionExecuted(action_id="a6", summary="published", details={}),
    )
    append(
        store,
        "payments",
        ev.PaymentRecorded(
            source="stripe",
            external_id="pi_1",
            status="succeeded",
            amount="800.00",
            currency="EUR",
            invoice_number="INV-2025-0002",
            contact_id="c1",
        ),
    )
    # A failed card on the overdue invoice, and a failed attempt at the invoice paid since
    # (nothing left to do: not reported).
    for external_id, amount, number in (
        ("pi_0", "800.00", "INV-2025-0002"),
        ("pi_2", "1200.00", "INV-2025-0001"),
    ):
        append(store, "payments", payment(external_id, "failed", amount, number, contact_id="c1"))
    # A flow that failed, one still running.
    append(
        store,
        ev.flow_stream("f1"),
        ev.FlowStarted(flow_id="f1abcdef", template="lead_to_invoice", trigger="job:j1"),
        ev.FlowFailed(flow_id="f1abcdef", step="send_invoice", reason="SMTP refused the address"),
    )
    append(
        store,
        ev.flow_stream("f2"),
        ev.FlowStarted(flow_id="f2abcdef", template="lead_to_invoice", trigger="job:j2"),
    )


SPEND: list[BudgetLine] = [
    ("workspace", "day:2030-01-14", 1.25, 5.0),
    ("workspace", "month:2030-01", 42.5, 50.0),
    ("agent:lead", "day:2030-01-14", 0.0, 1.0),
]


def test_compose_reports_every_section_in_order(store: Store) -> None:
    since = utcnow() - timedelta(minutes=5)
    today = utcnow().astimezone(BERLIN).date()
    seed(store, today)
    asked: list[tuple[datetime, int]] = []

    def upcoming(now: datetime, days: int) -> Sequence[UpcomingItem]:
        asked.append((now, days))
        return [Meeting("Call with Jane", utc(2030, 1, 15, 13, 0))]

    now = utcnow()
    digest = compose(now=now, since=since, zone=BERLIN, upcoming=upcoming, budget_lines=SPEND)
    text = digest.text
    lines = text.splitlines()
    titles = [
        "Decisions waiting (2):",
        "Done since the last digest:",
        "Needs attention:",
        "Spend against budgets:",
        "Upcoming (7 days):",
        "Overdue invoices:",
        "Flow health:",
    ]
    positions = [lines.index(title) for title in titles]
    assert positions == sorted(positions)
    assert lines[-1] == FOOTER and len(lines) <= MAX_LINES
    assert digest.approval_tokens == ("tok1",)
    assert digest.day == now.astimezone(BERLIN).date().isoformat()
    assert asked == [(now, 7)]
    for expected in (
        "1. Reply to Jane about the audit · 0 min [j1]",
        "? The triage job failed for good [j3]",
        "- Proposal to Bob",
        "- Publish invoice INV-2025-0001",
        "- 1 job completed",
        "- Paid: 800.00 EUR · INV-2025-0002 · Jane Doe",
        "- Job j3 (lead) failed: PermanentError: model refused",
        "- Failed: Invoice email to Jane: PermanentConnectorError: mailbox full [j7]",
        "- Payment failed: Jane Doe · 1,200.00 EUR · INV-2025-0001",
        "- Flow lead_to_invoice f1abcd failed at send_invoice: SMTP refused the address",
        "- Outcome unknown: Calendar invite to Bob [j5]",
        "- workspace: today $1.25 of $5.00 · month $42.50 of $50.00 ⚠",
        "- Tue 15 Jan 14:00 Call with Jane",  # 13:00 UTC is 14:00 in Berlin in winter
        "- INV-2025-0001 · Jane Doe · 1,200.00 EUR · 10 d overdue",
        "- lead_to_invoice: 1 running, 1 failed",
    ):
        assert expected in lines, f"{expected!r} not in:\n{text}"
    assert "agent:lead" not in text  # nothing spent by it
    assert "Job j7" not in text
    assert "INV-2025-0002 · Jane" not in text.split("Overdue invoices:")[1]  # paid
    assert "Payment failed: Jane Doe · 800.00 EUR" not in text  # its invoice is paid now
    assert digest.counts == {
        "approvals": 1,
        "questions": 1,
        "executed": 2,
        "jobs_done": 1,
        "payments": 1,
        "failed_jobs": 1,
        "failed_actions": 1,
        "failed_flows": 1,
        "failed_payments": 1,
        "refunds": 0,
        "unknown_outcomes": 1,
        "upcoming": 1,
        "overdue_invoices": 1,
        "flows": 2,
    }


def invoice(store: Store, number: str, total: str, *, contact_id: str | None = "c1") -> None:
    today = utcnow().date()
    append(
        store,
        ev.INVOICES_STREAM,
        ev.InvoiceDrafted(
            invoice_id=number,
            number=number,
            contact_id=contact_id,
            currency="EUR",
            total=total,
            issue_date=today.isoformat(),
            due_date=(today + timedelta(days=14)).isoformat(),
        ),
    )


def test_failed_and_refunded_payments_since_the_last_digest_need_attention(
    store: Store,
) -> None:
    create_contact(store, contact_id="c1", email="jane@acme.example", name="Jane Doe")
    invoice(store, "INV-2025-0007", "2400.00")
    invoice(store, "INV-2025-0008", "300.00")
    append(store, "payments", payment("pi_old", "failed", "99.00", None, contact_id="c1"))
    since = utcnow()
    append(
        store,
        "payments",
        payment("pi_7", "failed", "2400.00", "INV-2025-0007", contact_id="c1"),
        payment("pi_8", "succeeded", "300.00", "INV-2025-0008", contact_id="c1"),
        payment("pi_8", "refunded", "300.00", "INV-2025-0008"),  # the invoice names the client
        payment("ch_9", "failed", "50.00", None),  # no invoice, no client
    )

    digest = compose(now=utcnow(), since=since, zone=BERLIN, upcoming=None, budget_lines=[])

    attention = digest.text.split("Needs attention:\n")[1].splitlines()
    assert attention[:3] == [
        "- Payment failed: Jane Doe · 2,400.00 EUR · INV-2025-0007",
        "- Refunded: Jane Doe · 300.00 EUR · INV-2025-0008",
        "- Payment failed: no client · 50.00 EUR",
    ]
    assert "99.00" not in digest.text  # before the last digest
    assert (digest.counts["failed_payments"], digest.counts["refunds"]) == (2, 1)
    assert "- Paid: 300.00 EUR · INV-2025-0008 · Jane Doe" in digest.text


def fail_flow(store: Store, flow_id: str, token: str, job_id: str) -> None:
    """A consultant flow that failed, with its alert asked as the conductor does."""
    append(
        store,
        ev.flow_stream(flow_id),
        ev.FlowStarted(flow_id=flow_id, template="consultant", trigger=f"job:{job_id}"),
        ev.FlowFailed(
            flow_id=flow_id,
            step="invoice",
            reason="no price to invoice",
            job_id=job_id,
            token=token,
        ),
    )
    append(
        store,
        ev.job_stream(job_id),
        ev.QuestionAsked(
            token=token,
            kind="flow_failed",
            job_id=job_id,
            text="The consultant flow stopped at “invoice”: no price to invoice. "
            "Undo would roll back: Kick-off.",
            choices=["retry", "undo", "leave"],
        ),
    )


def test_a_failed_flows_alert_is_listed_once_under_needs_attention(store: Store) -> None:
    since = utcnow() - timedelta(minutes=5)
    request_job(store, "j1")
    propose(store, "j1", "a1", "Reply to Jane", token="tok1")
    request_job(store, "j9")
    fail_flow(store, "f9abcdef", "alert9", "j9")
    # An alert whose flow is not failed any more (moved on by hand) is still listed, once.
    request_job(store, "j8")
    fail_flow(store, "f8abcdef", "alert8", "j8")
    append(store, ev.flow_stream("f8abcdef"), ev.FlowCompleted(flow_id="f8abcdef", outcome="done"))

    digest = compose(now=utcnow(), since=since, zone=BERLIN, upcoming=None, budget_lines=[])
    text = digest.text

    decisions = text.split("Decisions waiting")[1].split("Needs attention:")[0]
    assert "Decisions waiting (1):" in text and "consultant flow" not in decisions
    assert (
        "- Flow consultant f9abcd failed at invoice: no price to invoice · retry / undo / leave? [j9]"
        in text.splitlines()
    )
    assert text.count("no price to invoice") == 2  # f9's line, and f8's alert: once each
    [alert] = [line for line in text.splitlines() if line.startswith("- ? ")]
    assert alert.startswith("- ? The consultant flow stopped at \u201cinvoice\u201d")
    assert alert.endswith("[j8]")
    assert digest.approval_tokens == ("tok1",)
    assert (digest.counts["questions"], digest.counts["failed_flows"]) == (0, 1)


def test_an_empty_log_is_all_quiet(store: Store) -> None:
    now = utcnow()
    zero: list[BudgetLine] = [("workspace", "day:x", 0.0, 5.0), ("workspace", "month:x", 0.0, 50.0)]
    digest = compose(
        now=now,
        since=now - timedelta(days=1),
        zone=BERLIN,
        upcoming=lambda now, days: [],
        budget_lines=zero,
    )
    header, quiet = digest.text.splitlines()
    assert header.startswith("Digest ")
    assert quiet == ALL_QUIET
    assert digest.approval_tokens == ()
    assert not any(digest.counts.values())


def test_long_lists_are_cut_to_fit_a_phone(store: Store) -> None:
    since = utcnow() - timedelta(minutes=5)
    for i in range(8):
        job = request_job(store, f"w{i}")
        propose(store, job, f"p{i}", f"Draft number {i}", token=f"t{i}")
        failed = request_job(store, f"f{i}")
        append(store, ev.job_stream(failed), ev.JobFailed(job_id=failed, error_type="E", error="x"))
        done = request_job(store, f"d{i}")
        propose(store, done, f"x{i}", f"Sent note {i}")
        append(
            store,
            ev.action_stream(f"x{i}"),
            ev.ActionExecuted(action_id=f"x{i}", summary="ok", details={}),
        )
    digest = compose(now=utcnow(), since=since, zone=BERLIN, upcoming=None, budget_lines=[])
    lines = digest.text.splitlines()
    assert len(lines) <= MAX_LINES
    assert any(line.strip().startswith("+") and line.endswith("more") for line in lines)
    for n in (1, 2, 3):  # the decisions with buttons are always listed
        assert any(line.startswith(f"{n}. Draft number {n - 1}") for line in lines)
    assert len(digest.approval_tokens) == 8
    assert digest.counts["failed_jobs"] == 8 and digest.counts["executed"] == 8


def test_same_summaries_are_grouped(store: Store) -> None:
    since = utcnow() - timedelta(minutes=5)
    for i in range(3):
        job = request_job(store, f"g{i}")
        propose(store, job, f"s{i}", "Weekly update to the list")
        append(
            store,
            ev.action_stream(f"s{i}"),
            ev.ActionExecuted(action_id=f"s{i}", summary="ok", details={}),
        )
    digest = compose(now=utcnow(), since=since, zone=BERLIN, upcoming=None, budget_lines=[])
    assert "- Weekly update to the list (x3)" in digest.text.splitlines()


def test_a_calendar_error_does_not_stop_the_digest(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(now: datetime, days: int) -> Sequence[UpcomingItem]:
        raise TransientConnectorError("CalDAV answered 503")

    digests = service(store, upcoming=broken)
    with caplog.at_level(logging.WARNING, logger="jobs.digest"):
        assert digests.send_daily_if_due(now=utcnow()) is True
    [sent] = dailies(store)
    assert "Upcoming:\n- calendar unavailable: CalDAV answered 503" in sent.text
    assert "calendar unavailable: CalDAV answered 503" in caplog.text


def test_waiting_approvals_are_those_pending_at_the_moment(store: Store) -> None:
    request_job(store, "j1")
    propose(store, "j1", "a1", "First", token="tok1")
    between = utcnow()
    propose(store, "j1", "a2", "Second", token="tok2")
    append(
        store,
        ev.action_stream("a1"),
        ev.ApprovalDecided(
            action_id="a1", token="tok1", decision="rejected", decided_by="t", channel="console"
        ),
    )
    assert [a.token for a in waiting_approvals(between)] == ["tok1"]  # decided only later
    assert [a.token for a in waiting_approvals(utcnow())] == ["tok2"]
    assert queries.get_approval("tok1").status == "rejected"


class FakeCalendar:
    """Speaks like the calendar connector: ``upcoming(*, now, days)``."""

    def __init__(self) -> None:
        self.asked: list[tuple[datetime, int]] = []

    def upcoming(self, *, now: datetime, days: int) -> list[Meeting]:
        self.asked.append((now, days))
        return [Meeting("Review", now + timedelta(days=1))]


def test_the_calendar_is_found_among_the_connectors() -> None:
    calendar = FakeCalendar()
    found = upcoming_from({"email": object(), "calendar": calendar})
    assert found is not None
    now = utcnow()
    assert [m.title for m in found(now, 7)] == ["Review"]
    assert calendar.asked == [(now, 7)]
    assert upcoming_from({"email": object()}) is None
