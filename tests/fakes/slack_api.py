"""A local Slack on 127.0.0.1: the Web API over HTTP and Socket Mode over a WebSocket.

The Web API answers ``POST /api/<method>`` (form or JSON bodies, ``Authorization: Bearer``)
in Slack's format: ``{"ok": true, ...}``, or ``{"ok": false, "error": "invalid_auth"}`` for a
wrong token. It knows auth.test, chat.postMessage, chat.update, chat.postEphemeral,
users.info and apps.connections.open (which hands out the URL of the local WebSocket
server); any other method answers ``{"ok": true}``. Every call is recorded, and errors can
be scripted (:meth:`FakeSlack.fail_next`: a 429 with ``Retry-After``, ``ok: false``, a 500).
``POST /respond/<id>`` stands in for a ``response_url``.

The WebSocket side (the ``websockets`` test dependency) greets a client with ``hello``,
sends Socket Mode envelopes (:meth:`FakeSlack.send_envelope`) and records the acks.
:func:`sign` signs an HTTP-mode request body with a signing secret, as Slack does.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

BOT_TOKEN = "xoxb-test"
APP_TOKEN = "xapp-test"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
TEAM_ID = "T1"
OPERATOR = "U_OPERATOR"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@dataclass(frozen=True)
class Call:
    method: str
    params: dict[str, Any]
    token: str
    result: dict[str, Any]  # what the fake answered


@dataclass(frozen=True)
class Failure:
    status: int
    payload: dict[str, Any]
    headers: dict[str, str]


def sign(
    body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """The headers Slack sends with an HTTP-mode request: ``v0=HMAC-SHA256(secret,
    "v0:{timestamp}:{body}")`` and the timestamp."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


class FakeSlack:
    def __init__(self, *, bot_token: str = BOT_TOKEN, app_token: str = APP_TOKEN) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._acks: list[dict[str, Any]] = []
        self._errors: dict[str, list[Failure]] = {}
        self._ts = itertools.count(1)
        self._envelopes = itertools.count(1)
        self._outbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.connections = 0
        self._connected = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._ws: Server = serve(self._socket, "127.0.0.1", 0)
        self._ws_thread = threading.Thread(target=self._ws.serve_forever, daemon=True)

    # Addresses and records ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    @property
    def ws_url(self) -> str:
        host, port = self._ws.socket.getsockname()[:2]
        return f"ws://{host}:{port}/link/?ticket=local"

    def response_url(self, name: str = "r1") -> str:
        return f"{self.base_url}/respond/{name}"

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    @property
    def acks(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._acks)

    def posted(self, method: str = "chat.postMessage") -> list[dict[str, Any]]:
        """The parameters of every call of ``method``, oldest first."""
        return [c.params for c in self.calls if c.method == method]

    def messages(self) -> list[dict[str, Any]]:
        """The messages posted, as Slack sends one back with a button press: ``ts``,
        ``text``, ``blocks`` (and the ``channel`` it is in)."""
        return [
            {
                "type": "message",
                "ts": c.result["ts"],
                "channel": c.params.get("channel"),
                "text": c.params.get("text", ""),
                "blocks": c.params.get("blocks") or [],
                "bot_id": BOT_ID,
            }
            for c in self.calls
            if c.method == "chat.postMessage" and c.result.get("ok")
        ]

    def fail_next(
        self,
        method: str,
        status: int,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next call of ``method`` gets this answer instead of the normal one."""
        with self._lock:
            self._errors.setdefault(method, []).append(Failure(status, payload, headers or {}))

    def pending_failures(self, method: str) -> int:
        with self._lock:
            return len(self._errors.get(method, []))

    # Web API -----------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length).decode() if length else ""
        if "json" in (request.headers.get("Content-Type") or ""):
            params = json.loads(raw or "{}")
        else:
            params = {k: v[0] for k, v in parse_qs(raw).items()}
        for key in ("blocks", "attachments"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        auth = request.headers.get("Authorization") or ""
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        token = token or str(params.get("token", ""))
        if path.startswith("/respond/"):
            with self._lock:
                self._calls.append(Call("respond", {**params, "url": path}, token, {}))
            self._answer(request, 200, {}, raw_text="ok")
            return
        if not path.startswith("/api/"):
            self._answer(request, 404, {"ok": False, "error": "unknown_path"})
            return
        method = path.removeprefix("/api/")
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        with self._lock:
            failures = self._errors.get(method)
            failure = failures.pop(0) if failures else None
            if failure is not None:
                status, result, headers = failure.status, failure.payload, failure.headers
            elif token != expected:
                status, result, headers = 200, {"ok": False, "error": "invalid_auth"}, {}
            else:
                status, result, headers = 200, {"ok": True, **self._result(method, params)}, {}
            self._calls.append(Call(method, params, token, result))
        self._answer(request, status, result, headers)

    def _result(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "url": "https://acme.slack.example/",
                "team": "Acme",
                "user": "opcore",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": BOT_ID,
                "is_enterprise_install": False,
            }
        if method in {"chat.postMessage", "chat.update"}:
            ts = params.get("ts") or f"1700000000.{next(self._ts):06d}"
            return {
                "channel": params.get("channel"),
                "ts": ts,
                "message": {"text": params.get("text", ""), "ts": ts, "bot_id": BOT_ID},
            }
        if method == "chat.postEphemeral":
            return {"message_ts": f"1700000000.{next(self._ts):06d}"}
        if method == "users.info":
            user = str(params.get("user", ""))
            return {"user": {"id": user, "name": user.lower(), "real_name": user}}
        if method == "apps.connections.open":
            return {"url": self.ws_url}
        return {}

    @staticmethod
    def _answer(
        request: BaseHTTPRequestHandler,
        status: int,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
        raw_text: str | None = None,
    ) -> None:
        body = (raw_text if raw_text is not None else json.dumps(payload)).encode()
        request.send_response(status)
        content_type = "text/plain" if raw_text is not None else "application/json"
        for key, value in {"Content-Type": content_type, **(headers or {})}.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    # Socket Mode -------------------------------------------------------------------------

    def _socket(self, connection: ServerConnection) -> None:
        connection.send(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "connection_info": {"app_id": "A1"},
                    "debug_info": {"host": "local"},
                }
            )
        )
        with self._lock:
            self.connections += 1
        self._connected.set()
        while True:
            try:
                try:
                    item = self._outbox.get(timeout=0.02)
                    connection.send(item["__raw__"] if "__raw__" in item else json.dumps(item))
                except queue.Empty:
                    pass
                try:
                    incoming = connection.recv(timeout=0.02)
                except TimeoutError:
                    continue
            except ConnectionClosed:
                return
            try:
                ack = json.loads(incoming)
            except ValueError:
                continue
            with self._lock:
                self._acks.append(ack)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def send_envelope(self, kind: str, payload: Any, *, retry_attempt: int = 0) -> str:
        """Send a Socket Mode envelope (``events_api``, ``slash_commands`` or
        ``interactive``); return its ``envelope_id``."""
        envelope_id = f"env-{next(self._envelopes)}"
        self._outbox.put(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": retry_attempt,
                "retry_reason": "timeout" if retry_attempt else "",
            }
        )
        return envelope_id

    def send_raw(self, text: str) -> None:
        """Send a frame that is not a proper envelope (malformed input)."""
        self._outbox.put({"__raw__": text})

    def acked(self, envelope_id: str) -> bool:
        return any(a.get("envelope_id") == envelope_id for a in self.acks)

    # Lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        self._thread.start()
        self._ws_thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._ws.shutdown()


# Payload builders ------------------------------------------------------------------------


def dm_event(
    text: str, *, user: str = OPERATOR, event_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    """An Events API callback: a direct message to the bot (``extra`` goes in the event)."""
    return {
        "token": "legacy",
        "team_id": TEAM_ID,
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": event_id or f"Ev{time.monotonic_ns()}",
        "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}],
        "event": {
            "type": "message",
            "channel_type": "im",
            "channel": "D1",
            "user": user,
            "text": text,
            "ts": f"{time.time():.6f}",
            **extra,
        },
    }


def mention_event(text: str, *, user: str = OPERATOR, channel: str = "C1") -> dict[str, Any]:
    """An Events API callback: ``@opcore …`` in a channel."""
    body = dm_event(f"<@{BOT_USER_ID}> {text}", user=user)
    body["event"] = {
        "type": "app_mention",
        "channel": channel,
        "user": user,
        "text": body["event"]["text"],
        "ts": body["event"]["ts"],
    }
    return body


def button_payload(
    value: str,
    *,
    message: dict[str, Any] | None = None,
    user: str = OPERATOR,
    channel: str = "D1",
    response_url: str = "http://127.0.0.1:9/unused",
) -> dict[str, Any]:
    """An interactive ``block_actions`` payload: ``user`` pressed a button whose value is
    ``value`` on ``message`` (as Slack sends it back: ts, text, blocks)."""
    message = message or {"ts": "1700000000.000001", "text": "draft", "type": "message"}
    return {
        "type": "block_actions",
        "team": {"id": TEAM_ID, "domain": "acme"},
        "user": {"id": user, "team_id": TEAM_ID},
        "api_app_id": "A1",
        "trigger_id": f"trig{time.monotonic_ns()}",
        "response_url": response_url,
        "container": {"type": "message", "channel_id": channel, "message_ts": message.get("ts")},
        "channel": {"id": channel},
        "message": message,
        "actions": [
            {
                "type": "button",
                "action_id": "opcore_btn_0",
                "block_id": "b",
                "value": value,
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def slash_command(
    text: str,
    *,
    user: str = OPERATOR,
    channel: str = "D1",
    response_url: str = "http://127.0.0.1:9/unused",
) -> dict[str, str]:
    """A slash command's form fields: ``/opcore <text>``."""
    return {
        "command": "/opcore",
        "text": text,
        "user_id": user,
        "channel_id": channel,
        "team_id": TEAM_ID,
        "trigger_id": f"trig{time.monotonic_ns()}",
        "response_url": response_url,
        "token": "legacy",
        "api_app_id": "A1",
    }


@pytest.fixture
def slack_api() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    try:
        yield fake
    finally:
        fake.stop()
