"""/digest: the digest now, in the chat that asked, with the same buttons as the daily one."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.commands import ParsedCommand, parse_command
from bot.digest_commands import DigestCommands, digest_buttons
from bot.messages import InboundMessage, Reply
from bot.notifier import notification_for
from jobs.digest import ALL_QUIET, DigestSchedule, DigestService
from store import Store
from store import events as ev
from store.log import utcnow
from tests.bot.test_digest_notify import ask_from, decide, waiting
from tests.jobs.test_digest import fail_flow

BERLIN = ZoneInfo("Europe/Berlin")


def commands(store: Store, clock: datetime | None = None) -> DigestCommands:
    digests = DigestService(
        store.log,
        DigestSchedule(zone=BERLIN, at=time(8, 0)),
        None,
        lambda: [("workspace", "day:x", 0.5, 5.0), ("workspace", "month:x", 3.0, 50.0)],
    )
    return DigestCommands(digests, clock=(lambda: clock) if clock else utcnow)


def ask(store: Store, text: str = "/digest", *, clock: datetime | None = None) -> list[Reply]:
    cmd = parse_command(text)
    assert isinstance(cmd, ParsedCommand)
    handler = commands(store, clock).handlers()[cmd.name]
    return handler(InboundMessage("telegram", "42", "42", text), cmd)


def test_digest_answers_with_the_digest_and_buttons(store: Store) -> None:
    ask_from(store, "j1", channel="telegram", chat_id="42", by="telegram:42")
    waiting(store, "j1", "a1", "tok1")
    [reply] = ask(store)
    assert reply.text.startswith("Digest ")
    assert "Decisions waiting (1):" in reply.text
    assert "- workspace: today $0.50 of $5.00 · month $3.00 of $50.00" in reply.text
    assert [b.data for b in reply.buttons] == ["ap:tok1:y", "ap:tok1:n"]
    [event] = store.log.read_stream(ev.DIGEST_STREAM)
    assert isinstance(event.data, ev.DigestSent)
    assert event.data.kind == "on_demand" and event.data.text == reply.text
    assert event.metadata.actor == "telegram:42"
    assert notification_for(event) is None  # answered here, not sent again


def test_digest_uses_the_operators_day_and_leaves_the_daily_one_due(store: Store) -> None:
    late = datetime(2030, 1, 14, 23, 30, tzinfo=UTC)  # already the 15th in Berlin
    [reply] = ask(store, clock=late)
    [event] = store.log.read_stream(ev.DIGEST_STREAM)
    assert isinstance(event.data, ev.DigestSent) and event.data.day == "2030-01-15"
    assert event.data.since == late - timedelta(hours=24)
    assert reply.buttons == ()


def test_digest_with_nothing_to_report_is_all_quiet(store: Store) -> None:
    digests = DigestService(store.log, DigestSchedule(zone=BERLIN, at=None), None, lambda: [])
    [reply] = DigestCommands(digests).handlers()["digest"](
        InboundMessage("console", "local", "local", "/digest"), ParsedCommand("digest", "")
    )
    assert reply.text.endswith(ALL_QUIET) and reply.buttons == ()


def test_buttons_skip_decided_approvals(store: Store) -> None:
    ask_from(store, "j1", channel="telegram", chat_id="42", by="telegram:42")
    waiting(store, "j1", "a1", "tok1")
    waiting(store, "j1", "a2", "tok2")
    decide(store, "a1", "tok1")
    assert [b.label for b in digest_buttons(["tok1", "tok2"])] == ["Approve 2", "Reject 2"]


def test_a_failed_flows_alert_shows_once_and_the_buttons_stay_on_the_approvals(
    store: Store,
) -> None:
    ask_from(store, "j1", channel="telegram", chat_id="42", by="telegram:42")
    waiting(store, "j1", "a1", "tok1")
    ask_from(store, "j9", channel="telegram", chat_id="42", by="telegram:42")
    fail_flow(store, "f9abcdef", "alert9", "j9")
    [reply] = ask(store)
    assert reply.text.count("no price to invoice") == 1
    assert "Decisions waiting (1):" in reply.text
    assert "retry / undo / leave? [j9]" in reply.text.split("Needs attention:")[1]
    assert [b.data for b in reply.buttons] == ["ap:tok1:y", "ap:tok1:n"]
