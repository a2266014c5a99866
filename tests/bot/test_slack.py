"""The Slack channel end to end: the real Bolt app, signed HTTP requests and Socket Mode
envelopes, against a local Slack (tests/fakes/slack_api.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr

from bot.dispatch import REFUSAL, Dispatcher
from bot.errors import ChannelError
from bot.messages import MAX_TEXT, Button, ButtonPress, InboundMessage, Outbound, Reply
from bot.notifier import Notifier
from bot.slack import MAX_BODY, SlackChannel
from bot.slack_render import (
    SECTION_LIMIT,
    Ignored,
    decided,
    escape,
    message_from_command,
    message_from_event,
    plain_text,
    press_from_action,
    render,
    slack_user,
    unescape,
)
from config import Settings
from jobs.runtime import Runtime
from store import queries
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_api import (
    APP_TOKEN,
    BOT_TOKEN,
    BOT_USER_ID,
    OPERATOR,
    SIGNING_SECRET,
    FakeSlack,
    button_payload,
    dm_event,
    mention_event,
    sign,
    slash_command,
)

LEAD = "/lead Jane Doe <jane@acme.example> wants a website audit"
MANIFEST = Path(__file__).parents[2] / "bot" / "slack_manifest.yaml"

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def emls(runtime: Runtime) -> list[Path]:
    return list(runtime.settings.outbox_dir.glob("*.eml"))


@dataclass
class Slack:
    api: FakeSlack
    channel: SlackChannel
    runtime: Runtime
    dispatcher: Dispatcher

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.channel.http_port}/slack/events"

    def post(self, body: str, content_type: str, **headers: str) -> httpx.Response:
        return httpx.post(
            self.url,
            content=body,
            headers={"Content-Type": content_type, **sign(body), **headers},
            timeout=10,
        )

    def event(self, payload: Any, **headers: str) -> httpx.Response:
        return self.post(json.dumps(payload), "application/json", **headers)

    def form(self, fields: dict[str, str]) -> httpx.Response:
        return self.post(urlencode(fields), "application/x-www-form-urlencoded")

    def interactive(self, payload: Any) -> httpx.Response:
        return self.form({"payload": json.dumps(payload)})

    def press(
        self, value: str, *, message: dict[str, Any] | None = None, user: str = OPERATOR
    ) -> httpx.Response:
        return self.interactive(button_payload(value, message=message, user=user))

    def texts(self, method: str = "chat.postMessage") -> list[str]:
        return [str(p.get("text", "")) for p in self.api.posted(method)]

    def said(self, fragment: str, method: str = "chat.postMessage") -> int:
        return sum(fragment in text for text in self.texts(method))

    def draft(self) -> dict[str, Any]:
        """The message with the approval buttons, once the notifier has posted it."""

        def find() -> dict[str, Any] | None:
            for message in self.api.messages():
                if any(b.get("type") == "actions" for b in message["blocks"]):
                    return message
            return None

        found = wait_for(find)
        assert found is not None
        return found


def value_of(message: dict[str, Any], label: str) -> str:
    for block in message["blocks"]:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element["text"]["text"] == label:
                return str(element["value"])
    raise AssertionError(f"no button {label!r} in the message")


def sections(message: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in message["blocks"] if b.get("type") == "section"]


@pytest.fixture
def mode() -> str:
    return "http"


@pytest.fixture
def llm_url() -> str:
    return ""  # offline templates; TestQuickDraft uses a local model server


@pytest.fixture
def settings(settings: Settings, slack_api: FakeSlack, mode: str, llm_url: str) -> Settings:
    update: dict[str, Any] = {
        "llm_base_url": llm_url,
        "operators": (*settings.operators, f"slack:{OPERATOR}"),
        "slack_bot_token": SecretStr(BOT_TOKEN),
        "slack_api_url": slack_api.api_url,
    }
    if mode == "socket":
        update["slack_app_token"] = SecretStr(APP_TOKEN)
    else:
        update["slack_signing_secret"] = SecretStr(SIGNING_SECRET)
        update["slack_http_listen"] = "127.0.0.1:0"  # any free port: see channel.http_port
    return settings.model_copy(update=update)


@pytest.fixture
def slack(
    settings: Settings, runtime: Runtime, dispatcher: Dispatcher, slack_api: FakeSlack
) -> Iterator[Slack]:
    channel = SlackChannel(settings=settings, dispatcher=dispatcher)
    notifier = Notifier(
        log=runtime.store.log, channel="slack", deliver=channel.deliver, interval=0.05
    )
    stop = threading.Event()
    thread = threading.Thread(target=channel.run, args=(stop,), name="slack-test", daemon=True)
    thread.start()
    assert channel.wait_ready(10)
    notifier.start()
    try:
        yield Slack(slack_api, channel, runtime, dispatcher)
    finally:
        notifier.stop()
        stop.set()
        thread.join(timeout=15)
        assert not thread.is_alive(), "the channel did not stop"


# HTTP mode: the whole scenario ----------------------------------------------------------


def test_a_lead_goes_from_a_dm_to_an_approved_and_sent_email(slack: Slack) -> None:
    assert slack.event(dm_event(LEAD)).status_code == 200
    wait_for(lambda: slack.said("On it: drafting a reply to Jane Doe (Acme)"))
    draft = slack.draft()
    assert "New lead: Jane Doe (Acme)" in draft["text"]
    assert slack.api.calls[0].method == "auth.test"  # at start, to the local Slack

    response = slack.press(value_of(draft, "Approve and send"), message=draft)

    assert response.status_code == 200
    wait_for(lambda: slack.said("Sent to jane@acme.example"))
    [update] = wait_for(lambda: slack.api.posted("chat.update"))
    assert (update["channel"], update["ts"]) == ("D1", draft["ts"])
    assert "Approved: Send email to jane@acme.example" in update["text"]
    assert f"<@{OPERATOR}>" in update["text"]
    assert not any(b["type"] == "actions" for b in update["blocks"])  # buttons gone
    assert update["blocks"][0] == draft["blocks"][0]  # the draft is still shown
    assert f"by <@{OPERATOR}>" in sections(update)[-1]
    assert len(emls(slack.runtime)) == 1


def test_text_typed_in_slack_is_read_as_the_user_typed_it(slack: Slack) -> None:
    typed = (
        "/lead Jane Doe &lt;<mailto:jane@acme.example|jane@acme.example>&gt; "
        "wants a website audit &amp; a review of <http://acme.example|acme.example>"
    )
    slack.event(dm_event(typed))
    wait_for(lambda: slack.said("On it: drafting a reply to Jane Doe (Acme)"))
    [job] = queries.list_jobs()
    assert "<jane@acme.example>" in job.text
    assert "audit & a review of acme.example" in job.text


def test_the_slash_command_maps_onto_the_same_commands(slack: Slack) -> None:
    response = slack.form(slash_command("status"))
    assert (response.status_code, response.text) == (200, "")
    wait_for(lambda: slack.said("Queue ("))
    slack.form(slash_command(""))
    wait_for(lambda: slack.said("Commands:"))
    slack.form(slash_command("/approvals"))
    wait_for(lambda: slack.said("No approvals waiting."))
    slack.form(slash_command("lead Jane Doe <jane@acme.example> wants a website audit"))
    assert "Approve and send" in json.dumps(slack.draft()["blocks"])


def test_a_slash_command_where_the_bot_cannot_post_is_answered_privately(
    slack: Slack,
) -> None:
    slack.api.fail_next("chat.postMessage", 200, {"ok": False, "error": "not_in_channel"})
    slack.form(slash_command("help", channel="C9", response_url=slack.api.response_url()))
    [answer] = wait_for(lambda: slack.api.posted("respond"))
    assert "Commands:" in answer["text"] and answer["response_type"] == "ephemeral"


def test_an_app_mention_works_like_a_direct_message(slack: Slack) -> None:
    slack.event(mention_event("status", channel="C1"))  # Slack's composer keeps a leading /
    wait_for(lambda: slack.said("Queue ("))
    [posted] = [p for p in slack.api.posted() if "Queue (" in p["text"]]
    assert posted["channel"] == "C1"


# HTTP mode: what must not get through ---------------------------------------------------


def test_forged_stale_or_unsigned_requests_get_401_and_change_nothing(slack: Slack) -> None:
    body = json.dumps(dm_event(LEAD))
    json_type = {"Content-Type": "application/json"}
    forged = httpx.post(
        slack.url, content=body, headers={**json_type, **sign(body, secret="wrong")}
    )
    stale = httpx.post(
        slack.url,
        content=body,
        headers={**json_type, **sign(body, timestamp=int(time.time()) - 6 * 60)},
    )
    unsigned = httpx.post(slack.url, content=body, headers=json_type)
    garbled = httpx.post(
        slack.url,
        content=body,
        headers={**json_type, **sign(body), "X-Slack-Request-Timestamp": "soon"},
    )
    unreadable = httpx.post(
        slack.url, content="{not json", headers={**json_type, **sign("other body")}
    )
    statuses = [r.status_code for r in (forged, stale, unsigned, garbled, unreadable)]
    assert statuses == [401] * 5
    slack.event(dm_event("/help"))  # then one that is signed
    wait_for(lambda: slack.said("Commands:"))
    assert len(slack.texts()) == 1 and queries.list_jobs() == []


def test_a_retried_event_is_handled_once(slack: Slack, monkeypatch: pytest.MonkeyPatch) -> None:
    real = slack.dispatcher.handle_message

    def slow(msg: InboundMessage) -> list[Reply]:
        time.sleep(0.5)  # the retry arrives while the first delivery is still in flight
        return real(msg)

    monkeypatch.setattr(slack.dispatcher, "handle_message", slow)
    event = dm_event("/status", event_id="Ev-retry-1")
    assert slack.event(event).status_code == 200
    assert slack.event(event, **{"X-Slack-Retry-Num": "1"}).status_code == 200
    wait_for(lambda: slack.said("Queue ("))
    slack.event(event, **{"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_timeout"})
    slack.event(dm_event("/help"))
    wait_for(lambda: slack.said("Commands:"))
    assert slack.said("Queue (") == 1


def test_the_bot_ignores_its_own_messages_and_edits(slack: Slack) -> None:
    slack.event(dm_event(LEAD, bot_id="BBOT"))
    slack.event(dm_event(LEAD, subtype="bot_message", bot_id="B2"))
    slack.event(dm_event(LEAD, subtype="message_changed", message={"text": LEAD}))
    slack.event(dm_event(LEAD, user=BOT_USER_ID))
    slack.event(dm_event(LEAD, channel_type="channel"))  # not a DM, no mention
    slack.event(dm_event("/help"))
    wait_for(lambda: slack.said("Commands:"))
    time.sleep(0.2)
    assert len(slack.texts()) == 1 and queries.list_jobs() == []


def test_a_stranger_is_refused_politely_once(slack: Slack) -> None:
    slack.event(dm_event(LEAD, user="U_STRANGER"))
    slack.event(dm_event(LEAD, user="U_STRANGER"))
    slack.event(dm_event("/help"))
    wait_for(lambda: slack.said("Commands:"))
    time.sleep(0.2)
    assert slack.texts().count(REFUSAL) == 1 and queries.list_jobs() == []


def test_the_operators_user_id_from_another_workspace_is_a_stranger(slack: Slack) -> None:
    """In a Slack Connect channel, people of another workspace post too: an operator is
    bound to the bot's own workspace, not matched by a user id alone."""
    slack.event(dm_event(LEAD, user_team="T_OTHER"))
    wait_for(lambda: slack.said(REFUSAL))
    slack.event(dm_event("/help"))  # the operator, from the bot's own workspace
    wait_for(lambda: slack.said("Commands:"))
    assert queries.list_jobs() == []


def who(parsed: InboundMessage | ButtonPress | Ignored) -> str:
    assert not isinstance(parsed, Ignored), parsed
    return parsed.sender_id


def test_the_sender_is_qualified_by_a_foreign_workspace_on_every_payload() -> None:
    own = "T_OWN"
    command = {"user_id": "U1", "channel_id": "C1", "text": "help", "team_id": own}
    assert who(message_from_command(command, own_team=own)) == "U1"
    shared = {**command, "user_team_id": "T_OTHER"}
    assert who(message_from_command(shared, own_team=own)) == "T_OTHER/U1"
    body = {"user": {"id": "U1", "team_id": "T_OTHER"}, "channel": {"id": "C1"}}
    action = {"value": "a:tok", "action_ts": "1.2"}
    assert who(press_from_action(body, action, own_team=own)) == "T_OTHER/U1"
    mention = {"type": "app_mention", "user": "U1", "channel": "C1", "text": "hi"}
    event = {"team_id": own, "event": {**mention, "user_team": "T_OTHER"}}
    assert who(message_from_event(event, bot_user_id="B", own_team=own)) == "T_OTHER/U1"
    assert (
        who(message_from_event({"team_id": own, "event": mention}, bot_user_id="B", own_team=own))
        == "U1"
    )
    # without the bot's own team (no auth.test answer), nothing is qualified
    assert who(message_from_event(event, bot_user_id="B")) == "U1"
    # what Slack's API is given back (an ephemeral answer to whoever pressed)
    assert slack_user("T_OTHER/U1") == slack_user("U1") == "U1"


def test_a_strangers_button_press_leaves_the_buttons_to_the_operator(slack: Slack) -> None:
    slack.event(dm_event(LEAD))
    draft = slack.draft()
    approve = value_of(draft, "Approve and send")

    slack.press(approve, message=draft, user="U_STRANGER")

    [private] = wait_for(lambda: slack.api.posted("chat.postEphemeral"))
    assert (private["user"], private["text"]) == ("U_STRANGER", REFUSAL)
    assert slack.api.posted("chat.update") == [] and len(queries.pending_approvals()) == 1
    slack.press(approve, message=draft)
    wait_for(lambda: slack.said("Sent to jane@acme.example"))
    assert len(emls(slack.runtime)) == 1


def test_double_pressed_stale_and_foreign_buttons_send_nothing_more(slack: Slack) -> None:
    slack.event(dm_event(LEAD))
    draft = slack.draft()
    approve = value_of(draft, "Approve and send")
    slack.press(approve, message=draft)
    wait_for(lambda: slack.said("Sent to jane@acme.example"))

    slack.press(approve, message=draft)  # a second client still showing the buttons
    slack.press(value_of(draft, "Reject"), message=draft)
    slack.press("ap:gone-token:y", message=draft)
    slack.press("not-one-of-ours", message=draft)

    wait_for(lambda: len(slack.texts("chat.update")) == 4)
    updates = slack.texts("chat.update")
    assert sum("Already decided: approved" in t for t in updates) == 2
    assert sum("no longer valid" in t for t in updates) == 1
    [foreign] = wait_for(lambda: slack.texts("chat.postEphemeral"))
    assert foreign == "That button is not one of mine."
    assert len(emls(slack.runtime)) == 1 and slack.said("Sent to") == 1


def test_malformed_payloads_get_a_4xx_or_are_dropped_and_the_app_lives_on(
    slack: Slack,
) -> None:
    no_event = {"type": "event_callback", "event_id": "Ev1"}
    wrong_event = {**dm_event("/help"), "event": "oops"}
    wrong_user = dm_event("/help", user=123)  # type: ignore[arg-type]
    wrong_text = dm_event("/help")
    wrong_text["event"]["text"] = 12345
    wrong_press = {**button_payload("ap:x:y"), "user": "U_OPERATOR"}
    huge = dm_event("/lead " + "x" * (MAX_TEXT * 50))
    answers = {
        "no event": slack.event(no_event).status_code,
        "event is a string": slack.event(wrong_event).status_code,
        "user is a number": slack.event(wrong_user).status_code,
        "text is a number": slack.event(wrong_text).status_code,
        "body is a list": slack.event([1, 2]).status_code,
        "payload not JSON": slack.form({"payload": "{not json"}).status_code,
        "actions not a list": slack.interactive(
            {"type": "block_actions", "actions": "x"}
        ).status_code,
        "press without user object": slack.interactive(wrong_press).status_code,
        "huge text": slack.event(huge).status_code,
        "too big for HTTP": slack.post("x" * (MAX_BODY + 1), "text/plain").status_code,
        "wrong path": httpx.post(slack.url + "/x", content="{}").status_code,
        "GET": httpx.get(slack.url).status_code,
    }
    assert answers == {
        "no event": 400,
        "event is a string": 400,
        "user is a number": 400,
        "text is a number": 200,  # well-formed enough to ack; logged and dropped
        "body is a list": 400,
        "payload not JSON": 400,
        "actions not a list": 400,
        "press without user object": 400,
        "huge text": 200,
        "too big for HTTP": 413,
        "wrong path": 404,
        "GET": 405,
    }
    wait_for(lambda: slack.said(f"the limit is {MAX_TEXT}"))
    slack.event(dm_event("/help"))
    wait_for(lambda: slack.said("Commands:"))
    assert queries.list_jobs() == []


def test_the_url_verification_challenge_is_answered(slack: Slack) -> None:
    response = slack.event({"type": "url_verification", "challenge": "abc123", "token": "t"})
    assert response.status_code == 200 and "abc123" in response.text


def test_every_request_is_acked_at_once_even_when_the_dispatcher_is_slow(
    slack: Slack, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_message, real_button = slack.dispatcher.handle_message, slack.dispatcher.handle_button

    def slow_message(msg: Any) -> Any:
        time.sleep(4)
        return real_message(msg)

    def slow_button(press: Any) -> Any:
        time.sleep(4)
        return real_button(press)

    monkeypatch.setattr(slack.dispatcher, "handle_message", slow_message)
    monkeypatch.setattr(slack.dispatcher, "handle_button", slow_button)
    acks = []
    sends: list[Callable[[], httpx.Response]] = [
        lambda: slack.event(dm_event("/help")),
        lambda: slack.form(slash_command("help")),
        lambda: slack.press("ap:gone-token:y"),
    ]
    for send in sends:
        started = time.monotonic()
        assert send().status_code == 200
        acks.append(time.monotonic() - started)
    assert max(acks) < 1.0, acks  # Slack gives up after 3 s
    wait_for(lambda: slack.said("Commands:") == 2, timeout=10)
    wait_for(lambda: slack.texts("chat.update"), timeout=10)


# Outbound ----------------------------------------------------------------------------------


def test_a_long_notification_is_delivered_in_parts_under_slacks_limits(slack: Slack) -> None:
    text = "\n".join(f"line {i}: A_B <x> & co" for i in range(4000))  # ~100k characters

    slack.channel.deliver(Outbound("slack", "D1", Reply(text, (Button("Approve", "ap:t:y"),))))

    messages = slack.api.messages()
    assert len(messages) > 1
    shown = [s for m in messages for s in sections(m)]
    assert all(len(s) <= SECTION_LIMIT for s in shown)
    assert unescape("\n".join(shown)) == text
    assert [m for m in messages if any(b["type"] == "actions" for b in m["blocks"])] == [
        messages[-1]
    ]


def test_a_429_from_slack_is_waited_out(slack: Slack) -> None:
    slack.api.fail_next(
        "chat.postMessage", 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}
    )
    slack.channel.deliver(Outbound("slack", "D1", Reply("hello")))
    calls = [c for c in slack.api.calls if c.method == "chat.postMessage"]
    assert [(c.params["text"], c.result["ok"]) for c in calls] == [
        ("hello", False),  # 429: waited out
        ("hello", True),
    ]


def test_deliver_raises_channel_error_when_slack_refuses_or_asks_to_wait_too_long(
    slack: Slack,
) -> None:
    slack.api.fail_next("chat.postMessage", 200, {"ok": False, "error": "channel_not_found"})
    with pytest.raises(ChannelError, match="channel_not_found"):
        slack.channel.deliver(Outbound("slack", "C404", Reply("hello")))
    slack.api.fail_next(
        "chat.postMessage", 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "3600"}
    )
    started = time.monotonic()
    with pytest.raises(ChannelError, match="ratelimited"):
        slack.channel.deliver(Outbound("slack", "D1", Reply("hello")))
    assert time.monotonic() - started < 2


# Socket Mode -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["socket"])
def test_socket_mode_runs_the_lead_to_sent_scenario_with_every_envelope_acked(
    slack: Slack,
) -> None:
    assert slack.api.wait_connected(10)
    [opened] = [c for c in slack.api.calls if c.method == "apps.connections.open"]
    assert opened.token == APP_TOKEN

    envelopes = [slack.api.send_envelope("events_api", dm_event(LEAD))]
    draft = slack.draft()
    payload = button_payload(value_of(draft, "Approve and send"), message=draft)
    envelopes.append(slack.api.send_envelope("interactive", payload))
    wait_for(lambda: slack.said("Sent to jane@acme.example"))
    envelopes.append(slack.api.send_envelope("slash_commands", slash_command("status")))
    wait_for(lambda: slack.said("Queue ("))

    assert wait_for(lambda: all(slack.api.acked(e) for e in envelopes))
    [update] = slack.api.posted("chat.update")
    assert "Approved" in update["text"] and f"<@{OPERATOR}>" in update["text"]
    assert len(emls(slack.runtime)) == 1


@pytest.mark.parametrize("mode", ["socket"])
def test_socket_mode_acks_malformed_envelopes_and_carries_on(slack: Slack) -> None:
    assert slack.api.wait_connected(10)
    bad = [
        slack.api.send_envelope("events_api", {"type": "event_callback", "event": "oops"}),
        slack.api.send_envelope("interactive", {"type": "block_actions", "actions": "x"}),
        slack.api.send_envelope("interactive", "not an object"),
        slack.api.send_envelope("events_api", {"type": "event_callback", "event_id": "E"}),
    ]
    slack.api.send_raw("{not json")
    retried = dm_event("/status", event_id="Ev-socket-1")
    slack.api.send_envelope("events_api", retried)
    slack.api.send_envelope("events_api", retried, retry_attempt=1)
    wait_for(lambda: slack.said("Queue ("))
    assert wait_for(lambda: all(slack.api.acked(e) for e in bad))
    slack.api.send_envelope("events_api", dm_event("/help"))
    wait_for(lambda: slack.said("Commands:"))
    assert slack.said("Queue (") == 1


# Starting ----------------------------------------------------------------------------------


def test_a_refused_token_stops_the_channel_at_start_with_a_clear_error(
    settings: Settings, dispatcher: Dispatcher
) -> None:
    wrong = settings.model_copy(update={"slack_bot_token": SecretStr("xoxb-revoked")})
    channel = SlackChannel(settings=wrong, dispatcher=dispatcher)
    with pytest.raises(ChannelError, match="invalid_auth"):
        channel.run(threading.Event())
    wrong_app = settings.model_copy(update={"slack_app_token": SecretStr("xapp-revoked")})
    channel = SlackChannel(settings=wrong_app, dispatcher=dispatcher)
    with pytest.raises(ChannelError, match="app-level token: invalid_auth"):
        channel.run(threading.Event())


def test_the_channel_needs_a_mode_and_the_right_kind_of_token(
    settings: Settings, dispatcher: Dispatcher
) -> None:
    neither = settings.model_copy(update={"slack_signing_secret": SecretStr("")})
    with pytest.raises(ChannelError, match="OPCORE_SLACK_APP_TOKEN"):
        SlackChannel(settings=neither, dispatcher=dispatcher)
    bot_as_app = settings.model_copy(update={"slack_app_token": SecretStr(BOT_TOKEN)})
    with pytest.raises(ChannelError, match="xapp-"):
        SlackChannel(settings=bot_as_app, dispatcher=dispatcher)


# Pure translation ---------------------------------------------------------------------------


def test_replies_are_escaped_and_buttons_carry_the_opaque_tokens() -> None:
    buttons = (Button("Approve and send", "ap:t1:y"), Button("Reject", "ap:t1:n"))
    [message] = render(Reply("A_B*C <x> & co", buttons))
    assert message.text == "A_B*C &lt;x&gt; &amp; co" == escape("A_B*C <x> & co")
    section, actions = message.blocks
    assert section["text"] == {"type": "mrkdwn", "text": message.text}
    assert [(e["action_id"], e["value"]) for e in actions["elements"]] == [
        ("opcore_btn_0", "ap:t1:y"),
        ("opcore_btn_1", "ap:t1:n"),
    ]
    assert render(Reply("")) == []


def test_a_long_line_is_never_split_inside_an_escape() -> None:
    text = "&<>" * 5000  # one line, 15,000 characters, 45,000 once escaped
    messages = render(Reply(text))
    shown = [b["text"]["text"] for m in messages for b in m.blocks]
    assert all(len(s) <= SECTION_LIMIT for s in shown)
    assert "".join(unescape(s) for s in shown) == text


def test_a_decision_replaces_the_buttons_with_what_was_decided_and_by_whom() -> None:
    [draft] = render(Reply("Draft for A & B", (Button("Approve", "ap:t:y"),)))
    message = {"ts": "1.2", "text": draft.text, "blocks": draft.blocks}

    update = decided(message, "Approved: send <it>", OPERATOR)

    assert [b["type"] for b in update.blocks] == ["section", "section"]
    assert update.blocks[0] == draft.blocks[0]
    assert update.blocks[1]["text"]["text"] == f"*Approved: send &lt;it&gt;*\nby <@{OPERATOR}>"
    assert update.text == f"Draft for A &amp; B\n\nApproved: send &lt;it&gt; (by <@{OPERATOR}>)"
    odd = decided({"blocks": 5, "text": 7}, "Rejected", "<!channel>")
    assert odd.text == "Rejected (by &lt;!channel&gt;)"


def test_slack_markup_is_read_back_as_typed() -> None:
    assert plain_text("&lt;<mailto:jane@acme.example|jane@acme.example>&gt;") == (
        "<jane@acme.example>"
    )
    assert plain_text("see <https://acme.example/a?b=1&amp;c=2>") == (
        "see https://acme.example/a?b=1&c=2"
    )
    assert plain_text("<http://acme.example|acme.example> &amp; <https://x.example|docs>") == (
        "acme.example & docs (https://x.example)"
    )
    assert plain_text("<#C1|general> <!here> <@U1> <@U2|sam>") == "#general @here <@U1> @sam"
    assert plain_text("<jane@acme.example>") == "<jane@acme.example>"  # not markup: as is


def test_events_commands_and_mentions_translate_to_the_dispatchers_messages() -> None:
    msg = message_from_event(mention_event("/status"), bot_user_id=BOT_USER_ID)
    assert isinstance(msg, InboundMessage)
    assert (msg.channel, msg.sender_id, msg.chat_id, msg.text) == (
        "slack",
        OPERATOR,
        "C1",
        "/status",
    )
    command = message_from_command(slash_command("lead Jane &lt;jane@acme.example&gt;"))
    assert isinstance(command, InboundMessage) and command.text == "/lead Jane <jane@acme.example>"
    typed = message_from_event(dm_event("lead Jane <jane@acme.example>"), bot_user_id=None)
    assert isinstance(typed, InboundMessage) and typed.text == "/lead Jane <jane@acme.example>"
    chatter = message_from_event(dm_event("leading the way"), bot_user_id=None)
    assert isinstance(chatter, InboundMessage) and chatter.text == "leading the way"
    edit = message_from_event(dm_event("x", subtype="message_changed"), bot_user_id=BOT_USER_ID)
    assert isinstance(edit, Ignored) and edit.routine


def test_the_manifest_declares_everything_the_channel_uses() -> None:
    manifest = MANIFEST.read_text()
    for needed in (
        "name: opcore",
        "display_name: opcore",
        "command: /opcore",
        "- chat:write",
        "- im:history",
        "- im:read",
        "- im:write",
        "- app_mentions:read",
        "- commands",
        "- message.im",
        "- app_mention",
        "is_enabled: true",
        "socket_mode_enabled: true",
        "request_url",
    ):
        assert needed in manifest, needed


class TestQuickDraft:
    @pytest.fixture
    def llm_url(self, openai_server: FakeOpenAI) -> str:
        draft = {"subject": "Your website audit", "body": "Hi Jane,\n\nModel-written.\n\nSam"}
        openai_server.delay(1.5, json.dumps(draft))
        return openai_server.base_url

    def test_the_models_draft_replaces_the_quick_one_in_the_same_message(
        self, slack: Slack
    ) -> None:
        assert slack.event(dm_event(LEAD)).status_code == 200
        quick = slack.draft()
        assert quick["text"].startswith("Quick draft: a better one is being written")
        update = wait_for(
            lambda: [u for u in slack.api.posted("chat.update") if "Model-written." in u["text"]]
        )[0]
        assert (update["channel"], update["ts"]) == ("D1", quick["ts"])
        assert update["text"].startswith("New lead: Jane Doe (Acme).")
        assert any(b["type"] == "actions" for b in update["blocks"])  # fresh buttons
        assert len(slack.api.posted()) == 2  # "On it" and the quick draft: no second card


def test_two_people_pressing_in_the_same_microsecond_are_two_presses() -> None:
    def press(user: str) -> str | None:
        body = {"user": {"id": user}, "channel": {"id": "C1"}}
        result = press_from_action(body, {"value": "a:tok", "action_ts": "1800000000.000100"})
        assert not isinstance(result, Ignored)
        return result.platform_id

    assert press("U1") != press("U2")
    assert press("U1") == press("U1")  # Slack's retry of the same press is the same press
