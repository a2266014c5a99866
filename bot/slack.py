"""The Slack channel, on slack-bolt. It only translates (see bot/channel.py).

Socket Mode when ``OPCORE_SLACK_APP_TOKEN`` is set (no public URL needed), HTTP mode
otherwise, on ``OPCORE_SLACK_HTTP_LISTEN``, with Slack's request signing checked by Bolt (a
bad or stale signature gets 401). Bolt acknowledges every request at once and runs our
listeners afterwards on its thread pool, so Slack's 3-second limit holds even when the
database is slow. ``OPCORE_SLACK_API_URL`` points the Web API client elsewhere (tests).

Direct messages, app mentions and ``/opcore <command> …`` reach the dispatcher; approval
buttons are Block Kit buttons whose value is the short opaque token; after a decision the
message is updated (``chat.update``) to show who decided what, without buttons.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from slack_bolt import Ack, App, BoltRequest
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.buttons import parse_button
from bot.channel import Channel
from bot.dispatch import Dispatcher
from bot.errors import ChannelError
from bot.messages import ButtonPress, InboundMessage, Outbound, Reply
from config import Settings

logger = logging.getLogger(__name__)

CHANNEL = "slack"
SECTION_LIMIT = 3000
MAX_BODY = 1_000_000
_MENTION = re.compile(r"<@[A-Z0-9]+>\s*")


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: only &, < and > are special."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def blocks_for(reply: Reply) -> list[dict[str, Any]]:
    """Block Kit for a reply: sections of at most 3,000 characters, then the buttons."""
    text = escape(reply.text) or " "
    chunks: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > SECTION_LIMIT:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:SECTION_LIMIT])
            line = line[SECTION_LIMIT:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > SECTION_LIMIT:
            chunks.append(current)
            current = line
        else:
            current = candidate
    chunks.append(current or " ")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": c}} for c in chunks[:45]
    ]
    if reply.buttons:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": f"opcore_btn_{i}",
                        "text": {"type": "plain_text", "text": b.label[:75]},
                        "value": b.data,
                        **({"style": "primary"} if i == 0 else {}),
                    }
                    for i, b in enumerate(reply.buttons)
                ],
            }
        )
    return blocks


class SlackChannel(Channel):
    name = CHANNEL

    def __init__(self, *, settings: Settings, dispatcher: Dispatcher) -> None:
        self._settings = settings
        self._dispatcher = dispatcher
        token = settings.slack_bot_token.get_secret_value()
        self._client = WebClient(token=token, base_url=settings.slack_api_url)
        self._client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=3))
        self._socket_mode = bool(settings.slack_app_token.get_secret_value())
        secret = settings.slack_signing_secret.get_secret_value()
        if not self._socket_mode and not secret:
            raise ChannelError(
                "Slack HTTP mode needs OPCORE_SLACK_SIGNING_SECRET (or set OPCORE_SLACK_APP_TOKEN)"
            )
        try:
            self._app = App(
                token=token,
                client=self._client,
                signing_secret=secret or "socket-mode-has-no-signatures",
                request_verification_enabled=not self._socket_mode,
                process_before_response=False,
                raise_error_for_unhandled_request=False,
            )
        except SlackClientError as exc:
            raise ChannelError(f"Slack: {exc}") from exc
        self._app.event("message")(self._on_message)
        self._app.event("app_mention")(self._on_mention)
        self._app.command("/opcore")(self._on_command)
        self._app.action(re.compile(r"^opcore_btn_\d+$"))(self._on_button)
        self._app.error(self._on_error)
        self._ready = threading.Event()
        self.http_port: int | None = None

    # Running -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        if self._socket_mode:
            handler = SocketModeHandler(
                self._app,
                self._settings.slack_app_token.get_secret_value(),
                web_client=self._client,
            )
            try:
                handler.connect()
            except SlackClientError as exc:
                raise ChannelError(f"Slack Socket Mode: {exc}") from exc
            self._ready.set()
            stop.wait()
            handler.close()
            self._ready.clear()
            return
        host, _, port = self._settings.slack_http_listen.rpartition(":")
        server = ThreadingHTTPServer((host, int(port)), _http_handler(self._app))
        server.daemon_threads = True
        self.http_port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        thread.start()
        self._ready.set()
        stop.wait()
        server.shutdown()
        server.server_close()
        self._ready.clear()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    # Outbound ----------------------------------------------------------------------------

    def deliver(self, outbound: Outbound) -> None:
        self._post(outbound.chat_id, outbound.reply)

    def _post(self, channel: str, reply: Reply) -> None:
        if not reply.text and not reply.buttons:
            return
        try:
            self._client.chat_postMessage(
                channel=channel, text=reply.text[:3000] or " ", blocks=blocks_for(reply)
            )
        except SlackApiError as exc:
            raise ChannelError(f"Slack chat.postMessage: {exc.response.get('error', exc)}") from exc
        except SlackClientError as exc:
            raise ChannelError(f"Slack: {exc}") from exc

    # Inbound -----------------------------------------------------------------------------

    def _handle_text(self, *, user: str, channel: str, text: str, platform_id: str | None) -> None:
        inbound = InboundMessage(CHANNEL, user, channel, text, platform_id=platform_id)
        for reply in self._dispatcher.handle_message(inbound):
            self._post(channel, reply)

    def _on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        if event.get("bot_id") or event.get("subtype") or event.get("channel_type") != "im":
            return  # our own messages, edits, joins, and channel chatter are not instructions
        user, channel, text = event.get("user"), event.get("channel"), event.get("text")
        if not (isinstance(user, str) and isinstance(channel, str) and isinstance(text, str)):
            logger.warning("dropped a Slack message event without user, channel or text")
            return
        self._handle_text(user=user, channel=channel, text=text, platform_id=_event_id(body))

    def _on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        user, channel, text = event.get("user"), event.get("channel"), event.get("text")
        if event.get("bot_id") or not (
            isinstance(user, str) and isinstance(channel, str) and isinstance(text, str)
        ):
            logger.warning("dropped a Slack app_mention event without user, channel or text")
            return
        self._handle_text(
            user=user,
            channel=channel,
            text=_MENTION.sub("", text).strip(),
            platform_id=_event_id(body),
        )

    def _on_command(self, ack: Ack, command: dict[str, Any]) -> None:
        ack()
        user, channel = command.get("user_id"), command.get("channel_id")
        text = str(command.get("text") or "").strip()
        if not (isinstance(user, str) and isinstance(channel, str)):
            logger.warning("dropped a Slack slash command without user or channel")
            return
        self._handle_text(
            user=user,
            channel=channel,
            text=f"/{text}" if text else "/help",
            platform_id=str(command.get("trigger_id") or "") or None,
        )

    def _on_button(self, ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        user = (body.get("user") or {}).get("id")
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
            "channel_id"
        )
        value = action.get("value")
        if not (isinstance(user, str) and isinstance(channel, str) and isinstance(value, str)):
            logger.warning("dropped a Slack button press without user, channel or value")
            return
        platform_id = str(action.get("action_ts") or body.get("trigger_id") or "") or None
        reply = self._dispatcher.handle_button(
            ButtonPress(CHANNEL, user, channel, value, platform_id=platform_id)
        )
        if not reply.text:
            return
        message = body.get("message") or {}
        ts = message.get("ts")
        decision = parse_button(value) is not None and self._dispatcher.is_operator(CHANNEL, user)
        if not isinstance(ts, str) or not decision:
            self._post(channel, reply)
            return
        original = str(message.get("text") or "")
        decided = Reply(f"{original}\n\n*{reply.text}* (by <@{user}>)" if original else reply.text)
        blocks = blocks_for(Reply(original)) if original else []
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"{escape(reply.text)} — <@{user}>"}],
            }
        )
        try:
            self._client.chat_update(
                channel=channel, ts=ts, text=decided.text[:3000], blocks=blocks
            )
        except SlackClientError as exc:
            logger.warning("could not update the decided Slack message: %s", exc)
            self._post(channel, reply)

    def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        logger.error("Slack listener failed: %s", error)


def _event_id(body: dict[str, Any]) -> str | None:
    event_id = body.get("event_id")
    return event_id if isinstance(event_id, str) else None


def _http_handler(app: App) -> type[BaseHTTPRequestHandler]:
    class SlackHTTPHandler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("slack http: " + format, *args)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._respond(413, "payload too large", {})
                return
            body = self.rfile.read(length).decode("utf-8", errors="replace")
            headers: dict[str, str | Sequence[str]] = {
                k.lower(): v for k, v in self.headers.items()
            }
            try:
                response = app.dispatch(BoltRequest(body=body, headers=headers))
            except (ValueError, KeyError, TypeError) as exc:  # malformed payloads Bolt cannot parse
                logger.warning("dropped a malformed Slack request: %s", exc)
                self._respond(400, "malformed request", {})
                return
            self._respond(
                response.status, response.body, {k: v[0] for k, v in response.headers.items() if v}
            )

        def _respond(self, status: int, body: str, headers: dict[str, str]) -> None:
            data = body.encode()
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return SlackHTTPHandler
