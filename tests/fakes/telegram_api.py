"""A local Bot API server on 127.0.0.1 speaking Telegram's wire format, for the real PTB.

``/bot<token>/<method>`` with form-encoded or JSON bodies, answers ``{"ok": true, "result":
...}``. Updates queued with :meth:`FakeTelegram.push` are served by ``getUpdates`` (honouring
``offset``, long-polling briefly). Every call is recorded; errors can be scripted per method.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

TOKEN = "123456:TEST-token"
BOT_USER = {"id": 123456, "is_bot": True, "first_name": "opcore", "username": "opcore_bot"}


@dataclass
class Call:
    method: str
    params: dict[str, Any]


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


class FakeTelegram:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.errors: dict[str, list[dict[str, Any]]] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1000)
        self._message_ids = itertools.count(1)
        self._lock = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/bot"

    # Scripting ---------------------------------------------------------------------------

    def push(self, update: dict[str, Any]) -> int:
        with self._lock:
            update = {"update_id": next(self._update_ids), **update}
            self._updates.append(update)
            self._lock.notify_all()
            return int(update["update_id"])

    def push_raw(self, update: dict[str, Any]) -> None:
        """Queue an update exactly as given (its own update_id; possibly malformed)."""
        with self._lock:
            self._updates.append(update)
            self._lock.notify_all()

    def fail_next(self, method: str, error: dict[str, Any], times: int = 1) -> None:
        self.errors.setdefault(method, []).extend([error] * times)

    def sent(self, method: str = "sendMessage") -> list[dict[str, Any]]:
        return [c.params for c in self.calls if c.method == method]

    def pending(self) -> int:
        with self._lock:
            return len(self._updates)

    # Serving -----------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        prefix = f"/bot{TOKEN}/"
        if not path.startswith(prefix):
            self._reply(
                request, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
            )
            return
        method = path[len(prefix) :]
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length).decode() if length else ""
        if "json" in (request.headers.get("Content-Type") or ""):
            params = json.loads(body or "{}")
        else:
            params = {k: _decode(v[0]) for k, v in parse_qs(body).items()}
        self.calls.append(Call(method, params))
        scripted = self.errors.get(method)
        if scripted:
            error = scripted.pop(0)
            self._reply(request, int(error.get("error_code", 400)), {"ok": False, **error})
            return
        result = self._result(method, params)
        self._reply(request, 200, {"ok": True, "result": result})

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        now = int(time.time())
        if method == "getMe":
            return {
                **BOT_USER,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        if method == "getUpdates":
            offset = int(params.get("offset") or 0)
            wait = min(float(params.get("timeout") or 0), 0.5)
            deadline = time.monotonic() + wait
            with self._lock:
                while True:
                    self._updates = [
                        u for u in self._updates if int(u.get("update_id", 0)) >= offset
                    ]
                    if self._updates or time.monotonic() >= deadline:
                        return list(self._updates[:100])
                    self._lock.wait(deadline - time.monotonic())
        if method == "sendMessage":
            chat = params["chat_id"]
            return {
                "message_id": next(self._message_ids),
                "date": now,
                "chat": {"id": int(chat), "type": "private"},
                "from": BOT_USER,
                "text": params.get("text", ""),
            }
        if method in {"editMessageText", "editMessageReplyMarkup"}:
            return {
                "message_id": int(params.get("message_id", 1)),
                "date": now,
                "chat": {"id": int(params.get("chat_id", 0)), "type": "private"},
                "from": BOT_USER,
                "text": params.get("text", ""),
            }
        if method == "getWebhookInfo":
            return {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
        return True  # answerCallbackQuery, setMyCommands, deleteWebhook, setWebhook, close, logOut

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def start(self) -> FakeTelegram:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# Update builders ------------------------------------------------------------------------


def user(uid: int, name: str = "Sam") -> dict[str, Any]:
    return {"id": uid, "is_bot": False, "first_name": name, "username": name.lower()}


def text_update(text: str, *, uid: int = 42, chat: int | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": int(time.time() * 1000) % 1_000_000,
        "date": int(time.time()),
        "chat": {"id": chat if chat is not None else uid, "type": "private"},
        "from": user(uid),
        "text": text,
    }
    if text.startswith("/"):
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return {"message": message}


def button_update(data: str, *, message: dict[str, Any], uid: int = 42) -> dict[str, Any]:
    return {
        "callback_query": {
            "id": f"cbq-{time.monotonic_ns()}",
            "from": user(uid),
            "chat_instance": "ci",
            "data": data,
            "message": {
                **message,
                "from": BOT_USER,
                "chat": {"id": int(message.get("chat_id", uid)), "type": "private"},
                "date": int(time.time()),
                "message_id": message.get("message_id", 1),
            },
        }
    }


@pytest.fixture
def telegram_api() -> Iterator[FakeTelegram]:
    fake = FakeTelegram().start()
    try:
        yield fake
    finally:
        fake.stop()
