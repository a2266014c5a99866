"""The notifier delivers each daily digest once, with buttons for the decisions still waiting,
to the home channel or the operator's last chat; on-demand digests are not re-sent."""

from __future__ import annotations

from datetime import time, timedelta
from zoneinfo import ZoneInfo

from bot.messages import Outbound
from bot.notifier import WATCHED, Notifier, addressed, notification_for
from jobs.digest import DigestSchedule, DigestService
from store import Store
from store import events as ev
from store.log import utcnow
from tests.builders import meta

ALWAYS = DigestSchedule(zone=ZoneInfo("UTC"), at=time(0, 0))


def digests(store: Store) -> DigestService:
    return DigestService(store.log, ALWAYS, None, lambda: [])


def ask_from(store: Store, job_id: str, *, channel: str, chat_id: str, by: str) -> None:
    store.log.append(
        ev.job_stream(job_id),
        [
            ev.JobRequested(
                job_id=job_id,
                agent="lead",
                input={},
                text="/lead Jane",
                channel=channel,
                chat_id=chat_id,
                requested_by=by,
            )
        ],
        metadata=meta(job_id),
    )


def waiting(store: Store, job_id: str, action_id: str, token: str) -> None:
    store.log.append(
        ev.action_stream(action_id),
        [
            ev.ActionProposed(
                action_id=action_id,
                job_id=job_id,
                connector="email",
                action="send_email",
                params={"to": "jane@acme.example"},
                idempotency_key=f"{action_id}:key",
                summary=f"Draft {action_id}",
            ),
            ev.ApprovalRequested(
                action_id=action_id,
                job_id=job_id,
                token=token,
                expires_at=utcnow() + timedelta(hours=24),
            ),
        ],
        metadata=meta(job_id),
    )


def decide(store: Store, action_id: str, token: str) -> None:
    store.log.append(
        ev.action_stream(action_id),
        [
            ev.ApprovalDecided(
                action_id=action_id,
                token=token,
                decision="rejected",
                decided_by="telegram:42",
                channel="telegram",
            )
        ],
        metadata=meta(),
    )


def notifier(store: Store, channel: str, sent: list[Outbound], *, home: str = "") -> Notifier:
    made = Notifier(log=store.log, channel=channel, deliver=sent.append, home=home)
    made.poll_once()  # a first start: from now on
    return made


def test_the_daily_digest_is_delivered_once_with_buttons(store: Store) -> None:
    assert ev.DigestSent.type_name in WATCHED
    ask_from(store, "j1", channel="telegram", chat_id="42", by="telegram:42")
    waiting(store, "j1", "a1", "tok1")
    sent: list[Outbound] = []
    telegram = notifier(store, "telegram", sent)
    now = utcnow()
    assert digests(store).send_daily_if_due(now=now) is True
    assert digests(store).send_daily_if_due(now=now) is False  # a second process: nothing
    assert telegram.poll_once() == 1
    assert telegram.poll_once() == 0  # delivered once
    [out] = sent
    [event] = store.log.read_stream(ev.DIGEST_STREAM)
    assert isinstance(event.data, ev.DigestSent)
    assert (out.channel, out.chat_id) == ("telegram", "42")
    assert out.reply.text == event.data.text
    assert "1. Draft a1" in out.reply.text
    assert [(b.label, b.data) for b in out.reply.buttons] == [
        ("Approve 1", "ap:tok1:y"),
        ("Reject 1", "ap:tok1:n"),
    ]


def test_on_demand_digests_are_not_notified(store: Store) -> None:
    ask_from(store, "j1", channel="telegram", chat_id="42", by="telegram:42")
    sent: list[Outbound] = []
    telegram = notifier(store, "telegram", sent)
    digests(store).on_demand(now=utcnow(), by="telegram:42")
    assert telegram.poll_once() == 0
    [event] = store.log.read_stream(ev.DIGEST_STREAM)
    assert notification_for(event) is None
    assert sent == []


def test_buttons_only_for_decisions_still_waiting_at_delivery_at_most_three(
    store: Store,
) -> None:
    ask_from(store, "j1", channel="telegram", chat_id="42", by="telegram:42")
    for n in range(1, 6):
        waiting(store, "j1", f"a{n}", f"tok{n}")
    assert digests(store).send_daily_if_due(now=utcnow()) is True
    decide(store, "a2", "tok2")  # decided between the digest and its delivery
    [event] = store.log.read_stream(ev.DIGEST_STREAM)
    out = notification_for(event)
    assert out is not None
    assert [b.label for b in out.reply.buttons] == [
        "Approve 1",
        "Reject 1",
        "Approve 3",
        "Reject 3",
        "Approve 4",
        "Reject 4",
    ]
    waiting(store, "j1", "a9", "tok9")  # asked after the digest: not one of its decisions
    later = notification_for(event)
    assert later is not None and "ap:tok9:y" not in [b.data for b in later.reply.buttons]


def test_the_home_channel_wins_over_the_last_chat(store: Store) -> None:
    ask_from(store, "j1", channel="telegram", chat_id="42", by="telegram:42")
    telegram_sent: list[Outbound] = []
    slack_sent: list[Outbound] = []
    telegram = notifier(store, "telegram", telegram_sent, home="slack:C0123")
    slack = notifier(store, "slack", slack_sent, home="slack:C0123")
    assert digests(store).send_daily_if_due(now=utcnow()) is True
    assert telegram.poll_once() == 0 and slack.poll_once() == 1
    assert (slack_sent[0].channel, slack_sent[0].chat_id) == ("slack", "C0123")


def test_without_a_home_channel_the_operators_last_chat_then_the_console(
    store: Store,
) -> None:
    assert digests(store).send_daily_if_due(now=utcnow()) is True
    [event] = store.log.read_stream(ev.DIGEST_STREAM)
    out = notification_for(event)
    assert out is not None and (out.channel, out.chat_id) == ("console", "local")
    ask_from(store, "j1", channel="slack", chat_id="D77", by="slack:U1")
    ask_from(store, "j2", channel="webhook", chat_id="stripe", by="webhook:stripe")  # not a person
    ask_from(store, "j3", channel="telegram", chat_id="99", by="flow:f1")  # nor an operator
    out = notification_for(event)
    assert out is not None and (out.channel, out.chat_id) == ("slack", "D77")
    assert addressed(out, "") == out
