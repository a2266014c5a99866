"""The Telegram channel end to end: the real PTB Application against a local Bot API server
(tests/fakes/telegram_api.py), the real dispatcher, store, worker and notifier."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr

from bot.commands import COMMANDS
from bot.dispatch import REFUSAL, Dispatcher
from bot.errors import ChannelError
from bot.messages import Button, InboundMessage, Outbound, Reply
from bot.notifier import Notifier
from bot.telegram import BUTTON_FAILED, TelegramChannel
from bot.telegram_render import CUT, LIMIT, MAX_PARTS, render, split_text, units
from config import Settings
from jobs.runtime import Runtime
from store import queries
from tests.fakes.telegram_api import (
    TOKEN,
    FakeTelegram,
    blocked,
    callback_update,
    channel_post_update,
    edited_update,
    message,
    migrated,
    retry_after,
    sticker_update,
    text_update,
    without,
)

LEAD = "/lead Jane Doe <jane@acme.example> wants a website audit"
OPERATOR = 42
STRANGER = 999
T = TypeVar("T")

# PTB warns that RetryAfter.retry_after will become a timedelta; the channel handles both.
ignore_retry_after_warning = pytest.mark.filterwarnings("ignore:.*retry_after.*:DeprecationWarning")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running(channel: TelegramChannel) -> Iterator[None]:
    """``channel.run(stop)`` in a thread, ready before the body, stopped after it."""
    stop = threading.Event()
    failures: list[Exception] = []

    def serve() -> None:
        try:
            channel.run(stop)
        except Exception as exc:  # noqa: BLE001 - any failure of run() fails the test
            failures.append(exc)

    thread = threading.Thread(target=serve, name="telegram-under-test", daemon=True)
    thread.start()
    assert channel.wait_ready(10), f"the channel did not start: {failures}"
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive(), "run() did not return after stop was set"
    assert not failures, failures


@dataclass
class Bot:
    api: FakeTelegram
    channel: TelegramChannel
    runtime: Runtime

    def texts(self, chat: int = OPERATOR) -> list[str]:
        """What the chat shows: the bot's messages as Telegram stores them (plain text)."""
        return self.api.texts(chat)

    def said(self, fragment: str, chat: int = OPERATOR) -> bool:
        return any(fragment in text for text in self.texts(chat))

    def lead_draft(self, command: str = LEAD) -> dict[str, Any]:
        self.api.push(text_update(command))
        return wait_for(lambda: self.api.with_keyboard(OPERATOR))[-1]

    def press(self, label: str, on: dict[str, Any], *, uid: int = OPERATOR) -> int:
        for button in on["reply_markup"]["inline_keyboard"][0]:
            if button["text"] == label:
                return self.press_data(button["callback_data"], on, uid=uid)
        raise AssertionError(f"no button {label!r} on {on}")

    def press_data(self, data: str, on: dict[str, Any], *, uid: int = OPERATOR) -> int:
        return self.api.push(callback_update(data, message=on, uid=uid))

    def answers(self, count: int) -> list[str]:
        found = wait_for(lambda: len(self.api.sent("answerCallbackQuery")) >= count)
        assert found
        return [str(a.get("text", "")) for a in self.api.sent("answerCallbackQuery")]

    def current(self, sent: dict[str, Any]) -> dict[str, Any]:
        """A message as it is now (after any edit)."""
        return self.api.messages[(OPERATOR, sent["message_id"])]

    def edited(self, sent: dict[str, Any]) -> dict[str, Any]:
        """A message once it has been edited."""
        wait_for(lambda: "edit_date" in self.current(sent))
        return self.current(sent)

    def emails(self) -> list[Path]:
        return sorted(self.runtime.settings.outbox_dir.glob("*.eml"))


@pytest.fixture
def settings(data_dir: Path, telegram_api: FakeTelegram) -> Settings:
    """Overrides tests/bot/conftest.py's: the same operators, plus the local Bot API."""
    return Settings(
        data_dir=data_dir,
        operators=("console:local", f"telegram:{OPERATOR}"),
        telegram_token=SecretStr(TOKEN),
        telegram_api_url=telegram_api.base_url,
    )


@pytest.fixture
def channel(settings: Settings, dispatcher: Dispatcher) -> TelegramChannel:
    return TelegramChannel(settings=settings, dispatcher=dispatcher)


@pytest.fixture
def bot(telegram_api: FakeTelegram, runtime: Runtime, channel: TelegramChannel) -> Iterator[Bot]:
    notifier = Notifier(
        log=runtime.store.log, channel="telegram", deliver=channel.deliver, interval=0.05
    )
    with running(channel):
        notifier.start()
        try:
            yield Bot(telegram_api, channel, runtime)
        finally:
            notifier.stop()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="bot.telegram")
    return caplog


# The whole story ---------------------------------------------------------------------------


def test_a_lead_goes_from_a_telegram_message_to_exactly_one_sent_email(bot: Bot) -> None:
    draft = bot.lead_draft()

    assert bot.texts()[0].startswith("On it: drafting a reply to Jane Doe (Acme). [job ")
    assert draft["text"].startswith("New lead: Jane Doe (Acme).")
    assert "To: jane@acme.example" in draft["text"]
    buttons = draft["reply_markup"]["inline_keyboard"]
    assert [[b["text"] for b in row] for row in buttons] == [["Approve and send", "Edit", "Reject"]]
    assert all(b["callback_data"].startswith("ap:") for b in buttons[0])
    assert all(p["parse_mode"] == "HTML" for p in bot.api.sent())

    bot.press("Approve and send", draft)

    [answer] = bot.answers(1)
    assert answer.startswith("Approved: Send email to jane@acme.example")
    decided = bot.edited(draft)
    assert decided["text"].startswith(draft["text"])
    assert "Approved: Send email to jane@acme.example" in decided["text"]
    assert decided["text"].endswith("by Sam (@sam)")
    assert "reply_markup" not in decided  # the buttons are gone
    [answered], [edited] = (
        bot.api.calls_to("answerCallbackQuery"),
        bot.api.calls_to("editMessageText"),
    )
    assert answered.at <= edited.at  # the spinner stops first
    wait_for(lambda: bot.said("Sent to jane@acme.example"))
    assert len(bot.emails()) == 1


def test_commands_are_registered_at_start_and_only_messages_and_buttons_are_asked_for(
    bot: Bot,
) -> None:
    [registered] = bot.api.sent("setMyCommands")
    assert registered["commands"] == [
        {"command": spec.name, "description": spec.help} for spec in COMMANDS.values()
    ]
    polls = wait_for(lambda: bot.api.sent("getUpdates"))
    assert all(p["allowed_updates"] == ["message", "callback_query"] for p in polls)


# Buttons -----------------------------------------------------------------------------------


def test_a_second_press_says_already_decided_and_sends_nothing_more(bot: Bot) -> None:
    draft = bot.lead_draft()
    bot.press("Approve and send", draft)
    wait_for(lambda: bot.said("Sent to jane@acme.example"))

    bot.press("Reject", draft)  # the old keyboard, still on another device

    second = bot.answers(2)[1]
    assert second.startswith("Already decided: approved by telegram:42")
    wait_for(lambda: "Already decided" in bot.current(draft)["text"])
    assert not bot.said("Rejected")
    assert len(bot.emails()) == 1


def test_garbage_data_changes_nothing_and_a_stale_token_only_loses_its_buttons(bot: Bot) -> None:
    bot.channel.deliver(
        Outbound(
            "telegram",
            str(OPERATOR),
            Reply("Old buttons", (Button("Stale", "ap:gone-token:y"), Button("Odd", "not-ours"))),
        )
    )
    [old] = bot.api.with_keyboard(OPERATOR)

    bot.press("Odd", old)
    assert bot.answers(1) == ["That button is not one of mine."]
    bot.press("Stale", old)
    assert bot.answers(2)[1] == "That button is no longer valid. See /approvals."

    # Garbage left the message alone; the stale token removed its dead buttons.
    edited = bot.edited(old)
    assert "no longer valid" in edited["text"] and "reply_markup" not in edited
    assert len(bot.api.sent("editMessageText")) == 1
    assert queries.list_jobs() == [] and bot.emails() == []


def test_a_stranger_pressing_an_operators_button_is_refused_and_the_buttons_stay(bot: Bot) -> None:
    draft = bot.lead_draft()

    bot.press("Approve and send", draft, uid=STRANGER)

    assert bot.answers(1) == [REFUSAL]
    assert bot.api.sent("editMessageText") == []
    assert bot.current(draft)["reply_markup"] == draft["reply_markup"]
    assert [a.status for a in queries.pending_approvals()] == ["pending"]
    assert bot.emails() == []


# Messages ----------------------------------------------------------------------------------


def test_a_stranger_gets_one_polite_refusal_and_nothing_is_queued(bot: Bot) -> None:
    bot.api.push(text_update(LEAD, uid=STRANGER))

    wait_for(lambda: bot.texts(STRANGER))
    bot.api.push(text_update("/status"))  # an operator's message, to know the first is done
    wait_for(lambda: bot.said("Queue"))
    assert bot.texts(STRANGER) == [REFUSAL]
    assert queries.list_jobs() == []


def test_the_same_update_twice_in_one_batch_is_handled_once(bot: Bot) -> None:
    status = {"update_id": 5000, **text_update("/status")}

    bot.api.push_raw(status, status, {"update_id": 5001, **text_update("/help")})

    wait_for(lambda: bot.said("Commands:"))
    assert sum("Queue" in t for t in bot.texts()) == 1


def test_an_update_redelivered_after_a_restart_is_handled_once(
    telegram_api: FakeTelegram, settings: Settings, dispatcher: Dispatcher
) -> None:
    lead = {"update_id": 7000, **text_update(LEAD)}
    first = TelegramChannel(settings=settings, dispatcher=dispatcher)
    with running(first):
        telegram_api.push_raw(lead)
        wait_for(lambda: any("On it" in t for t in telegram_api.texts(OPERATOR)))

    # Telegram sends it again (the confirmation was lost with the process).
    telegram_api.push_raw(lead, {"update_id": 7001, **text_update("/help")})
    second = TelegramChannel(settings=settings, dispatcher=dispatcher)
    with running(second):
        wait_for(lambda: any("Commands:" in t for t in telegram_api.texts(OPERATOR)))

    assert sum("On it" in t for t in telegram_api.texts(OPERATOR)) == 1
    assert len(queries.list_jobs()) == 1


def test_malformed_and_odd_updates_are_logged_and_dropped_and_the_bot_lives_on(
    bot: Bot, logs: pytest.LogCaptureFixture
) -> None:
    dropped = [
        bot.api.push(without(text_update("/status"), "message", "from")),
        bot.api.push(without(text_update("/status"), "message", "chat")),
        bot.api.push({"message": message()}),  # no text
        bot.api.push(sticker_update()),
        bot.api.push(edited_update("/lead Edited Person <e@x.example> wants a thing")),
        bot.api.push(channel_post_update("/status")),
        bot.api.push({"message": "not an object"}),  # PTB cannot parse it at all
        bot.api.push({"message": {**message("/status"), "date": "yesterday"}}),
        bot.api.push(
            without(callback_update("ap:x:y", message=message()), "callback_query", "from")
        ),
    ]
    bot.api.push(text_update("/lead " + "x" * 5000))  # longer than Telegram would ever send
    bot.api.push(text_update("/status"))

    wait_for(lambda: bot.said("Queue"))
    assert len(bot.texts()) == 2  # the size limit, then the status: nothing else was answered
    assert "the limit is" in bot.texts()[0]
    assert queries.list_jobs() == []
    for update_id in dropped:
        assert f"dropped Telegram update {update_id}" in logs.text
    assert "could not be handled" not in logs.text


def test_a_failing_handler_is_logged_and_the_next_update_is_still_handled(
    bot: Bot,
    dispatcher: Dispatcher,
    monkeypatch: pytest.MonkeyPatch,
    logs: pytest.LogCaptureFixture,
) -> None:
    real = dispatcher.handle_message
    seen: list[str] = []

    def flaky(msg: InboundMessage) -> list[Reply]:
        seen.append(msg.text)
        if len(seen) == 1:
            raise RuntimeError("the database is on fire")
        return real(msg)

    def broken(press: object) -> Reply:
        raise RuntimeError("the buttons are on fire")

    monkeypatch.setattr(dispatcher, "handle_message", flaky)
    monkeypatch.setattr(dispatcher, "handle_button", broken)
    failing = bot.api.push(text_update("/status"))
    bot.api.push(text_update("/help"))
    wait_for(lambda: bot.said("Commands:"))
    bot.channel.deliver(
        Outbound("telegram", str(OPERATOR), Reply("Pick", (Button("Go", "ap:tok:y"),)))
    )
    [with_button] = bot.api.with_keyboard(OPERATOR)

    bot.press("Go", with_button)

    assert bot.answers(1) == [BUTTON_FAILED]  # answered anyway: no endless spinner
    wait_for(lambda: "the buttons are on fire" in logs.text)
    assert f"Telegram update {failing} could not be handled" in logs.text
    assert "the database is on fire" in logs.text
    assert bot.current(with_button)["reply_markup"] == with_button["reply_markup"]


# Sending -----------------------------------------------------------------------------------


@ignore_retry_after_warning
def test_a_429_is_waited_out_and_the_message_still_arrives(
    bot: Bot, logs: pytest.LogCaptureFixture
) -> None:
    bot.api.fail_next("sendMessage", retry_after(1))

    bot.api.push(text_update("/help"))

    wait_for(lambda: bot.said("Commands:"))
    refused, delivered = bot.api.calls_to("sendMessage")
    assert delivered.at - refused.at >= 0.9
    assert "Telegram asks to wait 1.0 s" in logs.text


def test_a_chat_that_became_a_supergroup_still_gets_its_messages(
    bot: Bot, logs: pytest.LogCaptureFixture
) -> None:
    bot.api.fail_next("sendMessage", migrated(-1001))

    bot.api.push(text_update("/help", chat=-5))
    wait_for(lambda: bot.api.texts(-1001))
    bot.api.push(text_update("/status", chat=-5))
    wait_for(lambda: len(bot.api.texts(-1001)) == 2)

    assert [p["chat_id"] for p in bot.api.sent()] == [-5, -1001, -1001]
    assert "became supergroup -1001" in logs.text


@ignore_retry_after_warning
def test_a_delivery_that_cannot_be_made_raises_channel_error(
    bot: Bot, settings: Settings, dispatcher: Dispatcher
) -> None:
    note = Outbound("telegram", str(OPERATOR), Reply("Hello"))
    bot.api.fail_next("sendMessage", blocked())
    with pytest.raises(ChannelError, match="blocked"):
        bot.channel.deliver(note)

    bot.api.fail_next("sendMessage", retry_after(3600))  # too long to hold a sender
    started = time.monotonic()
    with pytest.raises(ChannelError, match="Flood control"):
        bot.channel.deliver(note)
    assert time.monotonic() - started < 5

    bot.channel.deliver(Outbound("telegram", str(OPERATOR), Reply("")))  # nothing to send
    assert len(bot.api.sent()) == 2

    idle = TelegramChannel(settings=settings, dispatcher=dispatcher)
    with pytest.raises(ChannelError, match="not running"):
        idle.deliver(note)


# Rendering ---------------------------------------------------------------------------------


def test_names_with_markup_characters_arrive_exactly_as_typed(bot: Bot) -> None:
    draft = bot.lead_draft("/lead A_B*C <x> & co <ab@acme.example> wants <b>bold</b> & 'quotes'")

    assert "A_B*C <x> & co" in draft["text"]  # what the phone shows
    assert "<b>bold</b> & 'quotes'" in draft["text"]
    [html] = [p["text"] for p in bot.api.sent() if p.get("reply_markup")]
    assert "A_B*C &lt;x&gt; &amp; co" in html


def test_a_long_message_is_split_on_lines_with_the_buttons_on_the_last_part(bot: Bot) -> None:
    lines = [f"line {i} & <ok>" for i in range(1500)]
    buttons = (Button("Approve", "ap:tok:y"), Button("Reject", "ap:tok:n"))

    bot.channel.deliver(Outbound("telegram", str(OPERATOR), Reply("\n".join(lines), buttons)))

    parts = bot.api.chat_messages(OPERATOR)
    assert len(parts) > 1
    assert all(units(p["text"]) <= LIMIT for p in parts)
    assert "\n".join(p["text"] for p in parts).split("\n") == lines
    assert [bool(p.get("reply_markup")) for p in parts] == [False] * (len(parts) - 1) + [True]


def test_split_text_keeps_every_character_within_the_limit() -> None:
    rng = random.Random(7)
    alphabet = "ab &<>\n\U0001f600é"  # the emoji counts 2 for Telegram (UTF-16)
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
        parts = split_text(text, limit=40)
        assert all(units(p) <= 40 for p in parts)
        assert "".join(parts).replace("\n", "") == text.replace("\n", "")
        if all(units(line) <= 40 for line in text.split("\n")):
            assert "\n".join(parts) == text


def test_rendering_escapes_each_part_and_cuts_a_reply_too_long_for_a_few_messages() -> None:
    [only] = render(Reply("1 < 2 & 3 > 0"))
    assert only.html == "1 &lt; 2 &amp; 3 &gt; 0" and only.keyboard is None
    assert render(Reply("")) == [] and render(Reply(" \n ")) == []
    [lonely] = render(Reply("", (Button("Go", "ap:t:y"),)))
    assert lonely.html == "…" and lonely.keyboard is not None

    huge = render(Reply("&\n" * 40_000, (Button("Go", "ap:t:y"),)))
    assert len(huge) == MAX_PARTS
    assert huge[-1].html.endswith(CUT) and huge[-1].keyboard is not None
    assert all(p.keyboard is None for p in huge[:-1])


# Start-up and webhook mode -----------------------------------------------------------------


def test_a_wrong_token_stops_the_channel_with_a_clear_error(
    settings: Settings, dispatcher: Dispatcher
) -> None:
    channel = TelegramChannel(
        settings=settings.model_copy(update={"telegram_token": SecretStr("999:wrong")}),
        dispatcher=dispatcher,
    )
    with pytest.raises(ChannelError, match="refused the bot token"):
        channel.run(threading.Event())


def test_a_channel_that_cannot_reach_telegram_keeps_trying_until_stopped(
    settings: Settings,
    dispatcher: Dispatcher,
    telegram_api: FakeTelegram,
    logs: pytest.LogCaptureFixture,
) -> None:
    unreachable = settings.model_copy(
        update={"telegram_api_url": f"http://127.0.0.1:{free_port()}/bot"}
    )
    channel = TelegramChannel(settings=unreachable, dispatcher=dispatcher)
    stop = threading.Event()
    thread = threading.Thread(target=channel.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: logs.text.count("cannot reach Telegram") >= 2)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_a_channel_started_while_telegram_is_down_serves_once_it_is_back(
    settings: Settings, dispatcher: Dispatcher, telegram_api: FakeTelegram
) -> None:
    telegram_api.fail_next("getMe", {"error_code": 502, "description": "Bad Gateway"})
    channel = TelegramChannel(settings=settings, dispatcher=dispatcher)

    with running(channel):
        telegram_api.push(text_update("/help"))
        wait_for(lambda: any("Commands:" in t for t in telegram_api.texts(OPERATOR)))

    assert len(telegram_api.sent("getMe")) == 2


def test_webhook_mode_needs_a_secret(settings: Settings, dispatcher: Dispatcher) -> None:
    hooked = settings.model_copy(update={"telegram_webhook_url": "https://bot.example/tg"})
    with pytest.raises(ChannelError, match="OPCORE_TELEGRAM_WEBHOOK_SECRET"):
        TelegramChannel(settings=hooked, dispatcher=dispatcher)


def test_webhook_mode_handles_updates_with_the_secret_and_refuses_the_rest(
    telegram_api: FakeTelegram, settings: Settings, dispatcher: Dispatcher
) -> None:
    port = free_port()
    hooked = settings.model_copy(
        update={
            "telegram_webhook_url": "https://bot.example/tg/hook",
            "telegram_webhook_secret": SecretStr("s3cret"),
            "telegram_webhook_listen": f"127.0.0.1:{port}",
        }
    )
    url = f"http://127.0.0.1:{port}/tg/hook"
    status = {"update_id": 77, **text_update("/status")}
    with running(TelegramChannel(settings=hooked, dispatcher=dispatcher)):
        assert telegram_api.webhook == {
            "url": "https://bot.example/tg/hook",
            "secret_token": "s3cret",
        }
        wrong = {"X-Telegram-Bot-Api-Secret-Token": "wrong"}
        assert httpx.post(url, json=status, headers=wrong).status_code == 403
        assert httpx.post(url, json=status).status_code == 403
        right = {"X-Telegram-Bot-Api-Secret-Token": "s3cret"}
        garbled = {"update_id": 79, "message": "not an object"}
        assert httpx.post(url, json=garbled, headers=right).status_code == 400
        bad_json = {**right, "Content-Type": "application/json"}
        assert httpx.post(url, content=b"{not json", headers=bad_json).status_code >= 400
        help_ = {"update_id": 78, **text_update("/help")}
        assert httpx.post(url, json=help_, headers=right).status_code == 200
        wait_for(lambda: any("Commands:" in t for t in telegram_api.texts(OPERATOR)))

    [answered] = telegram_api.texts(OPERATOR)  # the forged /status was not handled
    assert answered.startswith("Commands:")
    assert telegram_api.sent("getUpdates") == []
    with pytest.raises(httpx.ConnectError):  # the webhook server is gone
        httpx.post(url, json=help_, headers=right)


# Progressive disclosure --------------------------------------------------------------------


@pytest.fixture
def model_settings(settings: Settings, openai_server: Any) -> Settings:
    return settings.model_copy(update={"llm_base_url": openai_server.base_url})


def test_a_quick_draft_shows_at_once_and_the_models_draft_replaces_it_in_place(
    model_settings: Settings, telegram_api: FakeTelegram, openai_server: Any
) -> None:
    import json

    from bot.dispatch import Dispatcher
    from jobs.runtime import build_runtime
    from jobs.service import JobService

    draft = {"subject": "Your website audit", "body": "Hi Jane,\n\nModel-written.\n\nSam"}
    openai_server.delay(1.5, json.dumps(draft))
    runtime = build_runtime(model_settings, with_worker=True)
    dispatcher = Dispatcher(
        settings=model_settings, service=JobService(runtime), log=runtime.store.log
    )
    channel = TelegramChannel(settings=model_settings, dispatcher=dispatcher)
    notifier = Notifier(
        log=runtime.store.log, channel="telegram", deliver=channel.deliver, interval=0.05
    )
    try:
        with running(channel):
            notifier.start()
            bot = Bot(telegram_api, channel, runtime)
            quick = bot.lead_draft()
            assert quick["text"].startswith("Quick draft: a better one is being written")
            assert "Thank you for getting in touch" in quick["text"]  # the template, at once
            refined = bot.edited(quick)  # the same message, edited in place
            assert refined["text"].startswith("New lead: Jane Doe (Acme).")
            assert "Model-written." in refined["text"]
            assert len(telegram_api.with_keyboard(OPERATOR)) == 1  # no second card
            [old, new] = [
                queries.approval_for_action(a.action_id)
                for a in sorted(
                    queries.actions_for_job(queries.list_jobs()[0].job_id),
                    key=lambda a: a.preliminary,
                    reverse=True,
                )
            ]
            assert old.status == "superseded" and new.status == "pending"
            bot.press("Approve and send", refined)
            wait_for(lambda: len(bot.emails()) == 1)
            assert "Model-written." in bot.emails()[0].read_text()
            notifier.stop()
    finally:
        runtime.close()


def test_approving_the_quick_draft_before_the_model_answers_sends_it_alone(
    model_settings: Settings, telegram_api: FakeTelegram, openai_server: Any
) -> None:
    import json

    from bot.dispatch import Dispatcher
    from jobs.runtime import build_runtime
    from jobs.service import JobService

    openai_server.delay(1.5, json.dumps({"subject": "Late", "body": "Too late."}))
    runtime = build_runtime(model_settings, with_worker=True)
    dispatcher = Dispatcher(
        settings=model_settings, service=JobService(runtime), log=runtime.store.log
    )
    channel = TelegramChannel(settings=model_settings, dispatcher=dispatcher)
    notifier = Notifier(
        log=runtime.store.log, channel="telegram", deliver=channel.deliver, interval=0.05
    )
    try:
        with running(channel):
            notifier.start()
            bot = Bot(telegram_api, channel, runtime)
            quick = bot.lead_draft()
            bot.press("Approve and send", quick)
            wait_for(lambda: len(bot.emails()) == 1)
            job = queries.list_jobs()[0]
            wait_for(lambda: queries.get_job(job.job_id).status in {"done", "awaiting_approval"})
            wait_for(lambda: len(openai_server.requests) == 1)
            time.sleep(2.0)  # the model's answer arrives after the decision
            assert len(bot.emails()) == 1
            assert "Too late." not in bot.emails()[0].read_text()
            assert not queries.pending_approvals()  # nothing else waits for a tap
            notifier.stop()
    finally:
        runtime.close()
