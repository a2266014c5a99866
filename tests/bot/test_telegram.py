"""The Telegram channel end to end: the real PTB Application against a local Bot API server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.dispatch import REFUSAL, Dispatcher
from bot.notifier import Notifier
from bot.telegram import LIMIT, TelegramChannel, split_text
from config import Settings
from jobs.runtime import Runtime, build_runtime
from jobs.service import JobService
from store import queries
from tests.fakes.telegram_api import TOKEN, FakeTelegram, button_update, text_update

LEAD = "/lead Jane Doe <jane@acme.example> wants a website audit"


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@dataclass
class Bot:
    api: FakeTelegram
    runtime: Runtime
    channel: TelegramChannel

    def texts(self, chat: int = 42) -> list[str]:
        return [str(p.get("text", "")) for p in self.api.sent() if int(p["chat_id"]) == chat]

    def message_with_buttons(self) -> dict[str, Any]:
        found = [p for p in self.api.sent() if p.get("reply_markup")]
        return found[-1] if found else {}

    def press(self, data: str, *, uid: int = 42) -> None:
        message = self.message_with_buttons()
        self.api.push(
            button_update(
                data,
                message={"message_id": 7, "chat_id": 42, "text": message.get("text", "")},
                uid=uid,
            )
        )

    def button_data(self, label: str) -> str:
        markup = self.message_with_buttons()["reply_markup"]
        for row in markup["inline_keyboard"]:
            for button in row:
                if button["text"] == label:
                    return str(button["callback_data"])
        raise AssertionError(f"no button {label!r} in {markup}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve(settings: Settings) -> Iterator[tuple[Runtime, TelegramChannel]]:
    runtime = build_runtime(settings, with_worker=True)
    dispatcher = Dispatcher(settings=settings, service=JobService(runtime), log=runtime.store.log)
    channel = TelegramChannel(settings=settings, dispatcher=dispatcher)
    notifier = Notifier(
        log=runtime.store.log, channel="telegram", deliver=channel.deliver, interval=0.05
    )
    stop = threading.Event()
    thread = threading.Thread(target=channel.run, args=(stop,), daemon=True)
    thread.start()
    assert channel.wait_ready(15)
    notifier.start()
    try:
        yield runtime, channel
    finally:
        notifier.stop()
        stop.set()
        thread.join(timeout=15)
        runtime.close()


@pytest.fixture
def bot(data_dir: Path, telegram_api: FakeTelegram) -> Iterator[Bot]:
    settings = Settings(
        data_dir=data_dir,
        operators=("telegram:42",),
        telegram_token=TOKEN,
        telegram_api_url=telegram_api.base_url,
    )
    for runtime, channel in serve(settings):
        yield Bot(telegram_api, runtime, channel)


def test_a_lead_goes_from_a_telegram_message_to_a_sent_email(bot: Bot) -> None:
    bot.api.push(text_update(LEAD))
    wait_for(lambda: any("Approve and send" in str(p.get("reply_markup")) for p in bot.api.sent()))
    draft = bot.message_with_buttons()
    assert "New lead: Jane Doe (Acme)" in draft["text"] and draft["parse_mode"] == "HTML"
    bot.press(bot.button_data("Approve and send"))
    wait_for(lambda: any("Sent to jane@acme.example" in t for t in bot.texts()))
    [answer] = bot.api.sent("answerCallbackQuery")
    assert answer["text"].startswith("Approved")
    [edited] = bot.api.sent("editMessageText")
    assert "Approved" in edited["text"] and "Sam (@sam)" in edited["text"]
    assert "reply_markup" not in edited or not edited["reply_markup"]
    assert len(list(bot.runtime.settings.outbox_dir.glob("*.eml"))) == 1


def test_commands_are_registered_at_start(bot: Bot) -> None:
    [registered] = bot.api.sent("setMyCommands")
    names = {c["command"] for c in registered["commands"]}
    assert {"lead", "approvals", "trace", "status", "help", "pair"} <= names


def test_a_second_press_and_a_stale_button_say_so_and_send_nothing_more(bot: Bot) -> None:
    bot.api.push(text_update(LEAD))
    wait_for(lambda: bot.message_with_buttons())
    approve = bot.button_data("Approve and send")
    bot.press(approve)
    wait_for(lambda: any("Sent to" in t for t in bot.texts()))
    bot.press(bot.button_data("Reject") if bot.message_with_buttons() else approve)
    bot.press("ap:gone-token:y")
    bot.press("not-ours")
    answers = wait_for(
        lambda: (
            len(bot.api.sent("answerCallbackQuery")) >= 4 and bot.api.sent("answerCallbackQuery")
        )
    )
    texts = [a.get("text", "") for a in answers]
    assert any(t.startswith("Already decided") for t in texts)
    assert any("no longer valid" in t for t in texts)
    assert any("not one of mine" in t for t in texts)
    assert len(list(bot.runtime.settings.outbox_dir.glob("*.eml"))) == 1


def test_a_stranger_gets_one_polite_refusal_and_nothing_is_queued(bot: Bot) -> None:
    bot.api.push(text_update(LEAD, uid=999))
    wait_for(lambda: bot.texts(999))
    assert bot.texts(999) == [REFUSAL]
    assert queries.list_jobs() == []


def test_a_duplicated_update_is_handled_once(bot: Bot) -> None:
    update = text_update("/status")
    bot.api.push_raw({"update_id": 5000, **update})
    wait_for(lambda: bot.texts())
    bot.api.push_raw({"update_id": 5000, **update})  # redelivered (e.g. after a restart)
    bot.api.push_raw({"update_id": 5001, **text_update("/help")})
    wait_for(lambda: any("Commands:" in t for t in bot.texts()))
    assert sum("Queue" in t for t in bot.texts()) == 1


def test_malformed_and_odd_updates_are_dropped_and_the_bot_lives_on(bot: Bot) -> None:
    bot.api.push(
        {"message": {"message_id": 1, "date": 0, "chat": {"id": 42, "type": "private"}}}
    )  # no text
    bot.api.push(
        {
            "message": {
                "message_id": 2,
                "date": 0,
                "chat": {"id": 42, "type": "private"},
                "from": {"id": 42, "is_bot": False, "first_name": "S"},
                "sticker": {
                    "file_id": "x",
                    "file_unique_id": "y",
                    "width": 1,
                    "height": 1,
                    "is_animated": False,
                    "is_video": False,
                    "type": "regular",
                },
            }
        }
    )
    bot.api.push(
        {"edited_message": {**text_update("/lead edited <e@x.example>")["message"], "edit_date": 1}}
    )
    bot.api.push(
        {
            "channel_post": {
                "message_id": 3,
                "date": 0,
                "chat": {"id": -100, "type": "channel"},
                "text": "/status",
            }
        }
    )
    bot.api.push(text_update("/lead " + "x" * 5000))
    bot.api.push(text_update("/status"))
    wait_for(lambda: any("Queue" in t for t in bot.texts()))
    assert any("limit" in t for t in bot.texts())
    assert queries.list_jobs() == []


def test_a_429_is_waited_out_and_the_message_still_arrives(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    bot.api.fail_next(
        "sendMessage",
        {
            "error_code": 429,
            "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1},
        },
    )
    bot.api.push(text_update("/help"))
    wait_for(lambda: any("Commands:" in t for t in bot.texts()))
    assert "Telegram asks to wait 1.0 s" in caplog.text


def test_names_with_markup_characters_arrive_intact_and_long_replies_are_split(bot: Bot) -> None:
    bot.api.push(text_update("/lead A_B*C <x> & co <ab@acme.example> wants <b>bold</b> things"))
    wait_for(lambda: bot.message_with_buttons())
    text = bot.message_with_buttons()["text"]
    assert "A_B*C &lt;x&gt; &amp; co" in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    parts = split_text("line\n" * 3000)
    assert len(parts) > 1 and all(len(p) <= LIMIT for p in parts)
    assert "".join(p + "\n" for p in parts).count("line") == 3000


def test_a_chat_that_migrated_to_a_supergroup_still_gets_its_message(bot: Bot) -> None:
    bot.api.fail_next(
        "sendMessage",
        {
            "error_code": 400,
            "description": "Bad Request: group chat was upgraded to a supergroup chat",
            "parameters": {"migrate_to_chat_id": -1001},
        },
    )
    bot.api.push(text_update("/help"))
    wait_for(lambda: bot.texts(-1001))


def test_webhook_mode_checks_the_secret_token(data_dir: Path, telegram_api: FakeTelegram) -> None:
    port = free_port()
    settings = Settings(
        data_dir=data_dir,
        operators=("telegram:42",),
        telegram_token=TOKEN,
        telegram_api_url=telegram_api.base_url,
        telegram_webhook_url=f"https://bot.example/tg/{port}",
        telegram_webhook_secret="s3cret",
        telegram_webhook_listen=f"127.0.0.1:{port}",
    )
    for _runtime, _channel in serve(settings):
        [hook] = telegram_api.sent("setWebhook")
        assert hook["secret_token"] == "s3cret"
        url = f"http://127.0.0.1:{port}/tg/{port}"
        update = {"update_id": 77, **text_update("/help")}
        forged = httpx.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"})
        missing = httpx.post(url, json=update)
        assert forged.status_code in {401, 403} and missing.status_code in {401, 403}
        ok = httpx.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"})
        assert ok.status_code == 200
        wait_for(lambda: any("Commands:" in str(p.get("text")) for p in telegram_api.sent()))
        assert sum("Commands:" in str(p.get("text")) for p in telegram_api.sent()) == 1
