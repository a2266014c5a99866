"""A local Slack: the Web API over HTTP and a Socket Mode WebSocket, both on 127.0.0.1.

The Web API answers ``/api/<method>`` (form or JSON bodies) in Slack's format (``{"ok": true,
...}``): auth.test, chat.postMessage, chat.update, apps.connections.open (which hands out the
local WebSocket URL). The WebSocket side sends Socket Mode envelopes and records the acks.
Also: signing of HTTP-mode requests with a signing secret, as Slack does.
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

BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
OPERATOR = "U_OPERATOR"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@dataclass
class Call:
    method: str
    params: dict[str, Any]


def sign(
    body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """The headers Slack sends with an HTTP-mode request."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


class FakeSlack:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.acks: list[dict[str, Any]] = []
        self.errors: dict[str, list[tuple[int, dict[str, Any], dict[str, str]]]] = {}
        self._ts = itertools.count(1)
        self._outbox: queue.Queue[dict[str, Any]] = queue.Queue()
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

    @property
    def api_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/api/"

    @property
    def ws_url(self) -> str:
        host, port = self._ws.socket.getsockname()[:2]
        return f"ws://{host}:{port}/link"

    def fail_next(
        self,
        method: str,
        status: int,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        self.errors.setdefault(method, []).append((status, payload, headers or {}))

    def posted(self, method: str = "chat.postMessage") -> list[dict[str, Any]]:
        return [c.params for c in self.calls if c.method == method]

    # Web API -----------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        method = request.path.split("?", 1)[0].removeprefix("/api/")
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length).decode() if length else ""
        if "json" in (request.headers.get("Content-Type") or ""):
            params = json.loads(raw or "{}")
        else:
            params = {k: v[0] for k, v in parse_qs(raw).items()}
        if isinstance(params.get("blocks"), str):
            params["blocks"] = json.loads(params["blocks"])
        self.calls.append(Call(method, params))
        if self.errors.get(method):
            status, payload, headers = self.errors[method].pop(0)
            body = json.dumps(payload).encode()
            request.send_response(status)
            for key, value in {"Content-Type": "application/json", **headers}.items():
                request.send_header(key, value)
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
            return
        result: dict[str, Any] = {"ok": True}
        if method == "auth.test":
            result |= {
                "url": "https://acme.slack.example/",
                "team": "Acme",
                "user": "opcore",
                "team_id": "T1",
                "user_id": BOT_USER_ID,
                "bot_id": BOT_ID,
            }
        elif method in {"chat.postMessage", "chat.update"}:
            result |= {
                "channel": params.get("channel"),
                "ts": params.get("ts") or f"1700000000.{next(self._ts):06d}",
                "message": {"text": params.get("text", "")},
            }
        elif method == "apps.connections.open":
            result |= {"url": self.ws_url}
        elif method == "bots.info":
            result |= {"bot": {"id": BOT_ID, "user_id": BOT_USER_ID, "name": "opcore"}}
        body = json.dumps(result).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
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
                    "debug_info": {},
                }
            )
        )
        self._connected.set()
        while True:
            try:
                envelope = self._outbox.get(timeout=0.05)
                connection.send(json.dumps(envelope))
            except queue.Empty:
                pass
            except ConnectionClosed:
                return
            try:
                incoming = connection.recv(timeout=0.01)
            except TimeoutError:
                continue
            except ConnectionClosed:
                return
            self.acks.append(json.loads(incoming))

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def send_envelope(self, kind: str, payload: dict[str, Any]) -> str:
        envelope_id = f"env-{time.monotonic_ns()}"
        self._outbox.put(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": 0,
            }
        )
        return envelope_id

    def start(self) -> FakeSlack:
        self._thread.start()
        self._ws_thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._ws.shutdown()


# Payload builders -----------------------------------------------------------------------


def dm_event(
    text: str, *, user: str = OPERATOR, event_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "token": "legacy",
        "team_id": "T1",
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": event_id or f"Ev{time.monotonic_ns()}",
        "event_time": int(time.time()),
        "authorizations": [{"team_id": "T1", "user_id": BOT_USER_ID, "is_bot": True}],
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


def button_payload(
    value: str, *, message_text: str, user: str = OPERATOR, ts: str = "1700000000.000001"
) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "team": {"id": "T1"},
        "user": {"id": user, "team_id": "T1"},
        "api_app_id": "A1",
        "trigger_id": f"trig{time.monotonic_ns()}",
        "container": {"type": "message", "channel_id": "D1", "message_ts": ts},
        "channel": {"id": "D1"},
        "message": {"ts": ts, "text": message_text, "type": "message"},
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


def slash_command(text: str, *, user: str = OPERATOR) -> dict[str, str]:
    return {
        "command": "/opcore",
        "text": text,
        "user_id": user,
        "channel_id": "D1",
        "team_id": "T1",
        "trigger_id": f"trig{time.monotonic_ns()}",
        "response_url": "http://127.0.0.1:9/unused",
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
