"""The Slack channel end to end: the real Bolt app against signed requests and a local Slack."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from bot.dispatch import REFUSAL, Dispatcher
from bot.messages import Button, Reply
from bot.notifier import Notifier
from bot.slack import SlackChannel, blocks_for, escape
from config import Settings
from jobs.runtime import Runtime, build_runtime
from jobs.service import JobService
from store import queries
from tests.fakes.slack_api import (
    OPERATOR,
    SIGNING_SECRET,
    FakeSlack,
    button_payload,
    dm_event,
    sign,
    slash_command,
)

LEAD = "/lead Jane Doe <jane@acme.example> wants a website audit"


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Slack:
    api: FakeSlack
    runtime: Runtime
    channel: SlackChannel
    dispatcher: Dispatcher
    url: str

    def post_event(self, payload: dict[str, Any], **headers: str) -> httpx.Response:
        body = json.dumps(payload)
        return httpx.post(
            self.url,
            content=body,
            headers={"Content-Type": "application/json", **sign(body), **headers},
        )

    def post_form(self, form: dict[str, str]) -> httpx.Response:
        body = urlencode(form)
        return httpx.post(
            self.url,
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **sign(body)},
        )

    def press(
        self, value: str, *, message_text: str = "draft", user: str = OPERATOR
    ) -> httpx.Response:
        return self.post_form(
            {"payload": json.dumps(button_payload(value, message_text=message_text, user=user))}
        )

    def texts(self) -> list[str]:
        return [str(p.get("text", "")) for p in self.api.posted()]

    def button_value(self, label: str) -> str:
        for params in reversed(self.api.posted()):
            for block in params.get("blocks") or []:
                for element in block.get("elements", []) if block.get("type") == "actions" else []:
                    if element["text"]["text"] == label:
                        return str(element["value"])
        raise AssertionError(f"no button {label!r} posted")


def serve(settings: Settings) -> Iterator[tuple[Runtime, SlackChannel, Dispatcher]]:
    runtime = build_runtime(settings, with_worker=True)
    dispatcher = Dispatcher(settings=settings, service=JobService(runtime), log=runtime.store.log)
    channel = SlackChannel(settings=settings, dispatcher=dispatcher)
    notifier = Notifier(
        log=runtime.store.log, channel="slack", deliver=channel.deliver, interval=0.05
    )
    stop = threading.Event()
    thread = threading.Thread(target=channel.run, args=(stop,), daemon=True)
    thread.start()
    assert channel.wait_ready(15)
    notifier.start()
    try:
        yield runtime, channel, dispatcher
    finally:
        notifier.stop()
        stop.set()
        thread.join(timeout=15)
        runtime.close()


def slack_settings(data_dir: Path, api: FakeSlack, **extra: Any) -> Settings:
    return Settings(
        data_dir=data_dir,
        operators=(f"slack:{OPERATOR}",),
        slack_bot_token="xoxb-test",
        slack_api_url=api.api_url,
        **extra,
    )


@pytest.fixture
def slack(data_dir: Path, slack_api: FakeSlack) -> Iterator[Slack]:
    port = free_port()
    settings = slack_settings(
        data_dir,
        slack_api,
        slack_signing_secret=SIGNING_SECRET,
        slack_http_listen=f"127.0.0.1:{port}",
    )
    for runtime, channel, dispatcher in serve(settings):
        yield Slack(
            slack_api, runtime, channel, dispatcher, f"http://127.0.0.1:{port}/slack/events"
        )


def test_a_lead_goes_from_a_slack_dm_to_a_sent_email(slack: Slack) -> None:
    assert slack.post_event(dm_event(LEAD)).status_code == 200
    wait_for(
        lambda: any("Approve and send" in json.dumps(p.get("blocks")) for p in slack.api.posted())
    )
    draft = next(t for t in slack.texts() if "New lead: Jane Doe (Acme)" in t)
    assert (
        slack.press(slack.button_value("Approve and send"), message_text=draft).status_code == 200
    )
    wait_for(lambda: any("Sent to jane@acme.example" in t for t in slack.texts()))
    [update] = slack.api.posted("chat.update")
    assert "Approved" in update["text"] and f"<@{OPERATOR}>" in update["text"]
    assert not any(b.get("type") == "actions" for b in update["blocks"])
    assert len(list(slack.runtime.settings.outbox_dir.glob("*.eml"))) == 1


def test_the_slash_command_maps_onto_the_same_commands(slack: Slack) -> None:
    assert slack.post_form(slash_command("status")).status_code == 200
    wait_for(lambda: any("Queue" in t for t in slack.texts()))
    slack.post_form(slash_command(""))
    wait_for(lambda: any("Commands:" in t for t in slack.texts()))


def test_forged_or_stale_signatures_get_401(slack: Slack) -> None:
    body = json.dumps(dm_event(LEAD))
    forged = httpx.post(
        slack.url,
        content=body,
        headers={**sign(body, secret="wrong"), "Content-Type": "application/json"},
    )
    stale = httpx.post(
        slack.url,
        content=body,
        headers={
            **sign(body, timestamp=int(time.time()) - 600),
            "Content-Type": "application/json",
        },
    )
    unsigned = httpx.post(slack.url, content=body, headers={"Content-Type": "application/json"})
    assert (forged.status_code, stale.status_code, unsigned.status_code) == (401, 401, 401)
    time.sleep(0.3)
    assert queries.list_jobs() == []


def test_a_retried_event_is_handled_once(slack: Slack) -> None:
    event = dm_event("/status", event_id="Ev-retry-1")
    slack.post_event(event)
    slack.post_event(event, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    slack.post_event(dm_event("/help"))
    wait_for(lambda: any("Commands:" in t for t in slack.texts()))
    time.sleep(0.2)
    assert sum("Queue" in t for t in slack.texts()) == 1


def test_the_bot_ignores_its_own_messages_and_edits(slack: Slack) -> None:
    slack.post_event(dm_event(LEAD, bot_id="BBOT"))
    slack.post_event(dm_event(LEAD, subtype="message_changed"))
    slack.post_event(dm_event("/help"))
    wait_for(lambda: any("Commands:" in t for t in slack.texts()))
    assert queries.list_jobs() == []


def test_a_stranger_is_refused_politely(slack: Slack) -> None:
    slack.post_event(dm_event(LEAD, user="U_STRANGER"))
    wait_for(lambda: slack.texts())
    assert slack.texts() == [REFUSAL]
    assert queries.list_jobs() == []


def test_double_pressed_and_stale_buttons_send_nothing_more(slack: Slack) -> None:
    slack.post_event(dm_event(LEAD))
    wait_for(
        lambda: any("Approve and send" in json.dumps(p.get("blocks")) for p in slack.api.posted())
    )
    approve = slack.button_value("Approve and send")
    slack.press(approve)
    wait_for(lambda: any("Sent to" in t for t in slack.texts()))
    slack.press(approve)
    slack.press("ap:gone-token:y")
    wait_for(lambda: len(slack.api.posted("chat.update")) >= 3)
    updates = [u["text"] for u in slack.api.posted("chat.update")]
    assert any("Already decided" in t for t in updates)
    assert any("no longer valid" in t for t in updates)
    assert len(list(slack.runtime.settings.outbox_dir.glob("*.eml"))) == 1


def test_malformed_payloads_are_dropped_and_the_app_lives_on(slack: Slack) -> None:
    assert slack.post_event({"type": "event_callback"}).status_code < 500
    assert (
        slack.post_event(
            {"type": "event_callback", "event_id": "x", "event": {"type": "message"}}
        ).status_code
        < 500
    )
    weird = dm_event(LEAD)
    weird["event"]["text"] = 12345
    assert slack.post_event(weird).status_code < 500
    assert slack.post_form({"payload": "{not json"}).status_code < 500
    assert slack.post_event(dm_event("/lead " + "x" * 10_000)).status_code == 200
    slack.post_event(dm_event("/help"))
    wait_for(lambda: any("Commands:" in t for t in slack.texts()))
    assert any("limit" in t for t in wait_for(lambda: [t for t in slack.texts() if "limit" in t]))
    assert queries.list_jobs() == []


def test_the_url_verification_challenge_is_answered(slack: Slack) -> None:
    response = slack.post_event({"type": "url_verification", "challenge": "abc123", "token": "t"})
    assert response.status_code == 200 and "abc123" in response.text


def test_every_request_is_acked_fast_even_when_the_work_is_slow(
    slack: Slack, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = slack.dispatcher.handle_message

    def slow(msg: Any) -> Any:
        time.sleep(4)
        return real(msg)

    monkeypatch.setattr(slack.dispatcher, "handle_message", slow)
    started = time.monotonic()
    assert slack.post_event(dm_event("/help")).status_code == 200
    assert slack.post_form(slash_command("help")).status_code == 200
    assert time.monotonic() - started < 2.0  # Slack gives up after 3 s
    wait_for(lambda: sum("Commands:" in t for t in slack.texts()) == 2, timeout=20)


def test_rendering_escapes_and_splits_for_block_kit() -> None:
    assert escape("A_B*C <x> & co") == "A_B*C &lt;x&gt; &amp; co"
    blocks = blocks_for(
        Reply("line\n" * 2000, (Button("Approve", "ap:t:y"), Button("Reject", "ap:t:n")))
    )
    sections = [b for b in blocks if b["type"] == "section"]
    assert len(sections) > 1 and all(len(b["text"]["text"]) <= 3000 for b in sections)
    assert [e["value"] for e in blocks[-1]["elements"]] == ["ap:t:y", "ap:t:n"]


def test_socket_mode_runs_the_same_scenario(data_dir: Path, slack_api: FakeSlack) -> None:
    settings = slack_settings(data_dir, slack_api, slack_app_token="xapp-test")
    for runtime, _channel, _dispatcher in serve(settings):
        assert slack_api.wait_connected(10)
        first = slack_api.send_envelope("events_api", dm_event(LEAD))
        wait_for(
            lambda: any(
                "Approve and send" in json.dumps(p.get("blocks")) for p in slack_api.posted()
            )
        )
        value = next(
            e["value"]
            for p in slack_api.posted()
            for b in p.get("blocks") or []
            if b.get("type") == "actions"
            for e in b["elements"]
            if e["text"]["text"] == "Approve and send"
        )
        second = slack_api.send_envelope("interactive", button_payload(value, message_text="draft"))
        wait_for(
            lambda: any(
                "Sent to jane@acme.example" in str(p.get("text")) for p in slack_api.posted()
            )
        )
        acked = {a.get("envelope_id") for a in slack_api.acks}
        assert {first, second} <= acked
        assert len(list(runtime.settings.outbox_dir.glob("*.eml"))) == 1


def test_an_app_mention_works_like_a_direct_message(slack: Slack) -> None:
    mention = dm_event("<@UBOT> /status")
    mention["event"] = {**mention["event"], "type": "app_mention", "channel": "C1"}
    mention["event"].pop("channel_type")
    slack.post_event(mention)
    wait_for(lambda: any("Queue" in t for t in slack.texts()))
    [posted] = [p for p in slack.api.posted() if "Queue" in str(p.get("text"))]
    assert posted["channel"] == "C1"


def test_a_429_from_slack_is_waited_out(slack: Slack) -> None:
    slack.api.fail_next(
        "chat.postMessage", 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}
    )
    slack.post_event(dm_event("/help"))
    wait_for(lambda: any("Commands:" in t for t in slack.texts()))
    assert (
        slack.api.errors["chat.postMessage"] == []
    )  # the 429 was served, and the reply still arrived
