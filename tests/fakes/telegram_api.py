"""A local Bot API server on 127.0.0.1 speaking Telegram's wire format, for the real PTB.

``POST /bot<token>/<method>`` with form-encoded (as PTB sends it) or JSON bodies answers
``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": ..., "description": ...}``
like Telegram does. It is strict where Telegram is, so a test fails when we would fail in
production: ``parse_mode=HTML`` text must parse (an unescaped ``<x>`` or ``&`` is a 400),
a message is at most 4,096 characters after parsing, callback data at most 64 bytes, a
callback query is answered at most once, an edit must change something, getUpdates is
refused while a webhook is set.

Updates queued with :meth:`FakeTelegram.push` are served by ``getUpdates`` (honouring
``offset`` and ``limit``; long-polling at most ``max_poll`` seconds when there is nothing).
``allowed_updates`` is recorded but not applied, so tests can push what Telegram would
filter. Every call is recorded (method and decoded parameters); the next N calls of a
method can be scripted to fail (:meth:`fail_next`, :func:`retry_after`, :func:`migrated`).
Messages the bot sent are kept as Telegram stores them (plain text, keyboard) in
:attr:`FakeTelegram.messages`, and :func:`callback_update` presses a button on one.
"""

from __future__ import annotations

import html
import itertools
import json
import re
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
TEXT_LIMIT = 4096
ANSWER_LIMIT = 200
# Parameters Telegram takes as strings; PTB sends every other one JSON-encoded.
STRING_PARAMS = frozenset(
    {
        "text",
        "callback_query_id",
        "url",
        "secret_token",
        "parse_mode",
        "inline_message_id",
        "ip_address",
        "language_code",
        "caption",
    }
)
HTML_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    }
)
_HTML_TOKEN = re.compile(
    r"<(?P<end>/?)(?P<tag>[A-Za-z][A-Za-z0-9-]*)(?P<attrs>\s[^<>]*)?>"
    r"|&(?P<entity>#[0-9]+|#x[0-9A-Fa-f]+|[A-Za-z]+);"
    r"|(?P<bare>[<>&])"
)
_COMMAND_NAME = re.compile(r"^[a-z0-9_]{1,32}$")


class BotApiError(Exception):
    def __init__(self, code: int, description: str, **parameters: Any) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


def html_to_text(text: str) -> str:
    """What Telegram makes of ``parse_mode=HTML`` text: the plain text, or a 400."""
    out: list[str] = []
    open_tags: list[str] = []
    position = 0
    for match in _HTML_TOKEN.finditer(text):
        out.append(text[position : match.start()])
        position = match.end()
        offset = len(text[: match.start()].encode())
        if match.group("tag"):
            tag = match.group("tag").lower()
            if tag not in HTML_TAGS:
                raise BotApiError(
                    400,
                    f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}" '
                    f"at byte offset {offset}",
                )
            if not match.group("end"):
                open_tags.append(tag)
            elif not open_tags or open_tags.pop() != tag:
                raise BotApiError(
                    400,
                    f"Bad Request: can't parse entities: Unexpected end tag at byte offset {offset}",
                )
        elif match.group("entity"):
            entity = match.group("entity")
            if not entity.startswith("#") and entity not in {"lt", "gt", "amp", "quot"}:
                raise BotApiError(
                    400,
                    f"Bad Request: can't parse entities: Unsupported HTML entity at byte offset {offset}",
                )
            out.append(html.unescape(match.group(0)))
        else:
            raise BotApiError(
                400,
                f"Bad Request: can't parse entities: Unexpected {match.group('bare')!r} "
                f"at byte offset {offset}",
            )
    out.append(text[position:])
    if open_tags:
        raise BotApiError(
            400,
            f"Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"{open_tags[-1]}\"",
        )
    return "".join(out)


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float  # time.monotonic() when it arrived


def _decode(key: str, value: str) -> Any:
    if key in STRING_PARAMS:
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _chat(chat_id: int) -> dict[str, Any]:
    if chat_id > 0:
        return {"id": chat_id, "type": "private", "first_name": "Sam"}
    kind = "supergroup" if str(chat_id).startswith("-100") else "group"
    return {"id": chat_id, "type": kind, "title": "Ops"}


class FakeTelegram:
    def __init__(self, *, token: str = TOKEN, max_poll: float = 0.5) -> None:
        self.token = token
        self.max_poll = max_poll
        self.calls: list[Call] = []
        self.errors: dict[str, list[dict[str, Any]]] = {}
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}  # (chat, id) -> message
        self.commands: list[dict[str, Any]] = []
        self.webhook: dict[str, Any] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1000)
        self._message_ids = itertools.count(1)
        self._queries: set[str] = set()  # callback query ids pushed, not answered yet
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
        """What ``OPCORE_TELEGRAM_API_URL`` is set to: ``http://127.0.0.1:PORT/bot``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/bot"

    # Scripting ---------------------------------------------------------------------------

    def push(self, update: dict[str, Any]) -> int:
        """Queue an update (built with the helpers below); returns its new update_id."""
        with self._lock:
            update = {"update_id": next(self._update_ids), **update}
            self._queue(update)
            return int(update["update_id"])

    def push_raw(self, *updates: dict[str, Any]) -> None:
        """Queue updates exactly as given (their own update_id; possibly malformed), at
        once: a getUpdates call sees all of them or none."""
        with self._lock:
            for update in updates:
                self._queue(update)

    def _queue(self, update: dict[str, Any]) -> None:
        query = update.get("callback_query")
        if isinstance(query, dict) and isinstance(query.get("id"), str):
            self._queries.add(query["id"])
        self._updates.append(update)
        self._lock.notify_all()

    def fail_next(self, method: str, error: dict[str, Any], times: int = 1) -> None:
        """The next ``times`` calls of ``method`` get ``error`` (error_code, description,
        optional parameters) instead of a result."""
        with self._lock:
            self.errors.setdefault(method, []).extend([error] * times)

    def sent(self, method: str = "sendMessage") -> list[dict[str, Any]]:
        """The parameters of every call of ``method`` so far (failed calls included)."""
        return [c.params for c in self.calls_to(method)]

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def chat_messages(self, chat: int) -> list[dict[str, Any]]:
        """The messages the bot has in ``chat``, as Telegram stores them (plain text)."""
        with self._lock:
            return [dict(m) for (c, _), m in sorted(self.messages.items()) if c == chat]

    def texts(self, chat: int) -> list[str]:
        return [str(m.get("text", "")) for m in self.chat_messages(chat)]

    def with_keyboard(self, chat: int) -> list[dict[str, Any]]:
        return [m for m in self.chat_messages(chat) if m.get("reply_markup")]

    def pending(self) -> int:
        with self._lock:
            return len(self._updates)

    # Serving -----------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        prefix = f"/bot{self.token}/"
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
            params = {k: _decode(k, v[0]) for k, v in parse_qs(body).items()}
        with self._lock:
            self.calls.append(Call(method, params, time.monotonic()))
            scripted = self.errors.get(method)
            error = scripted.pop(0) if scripted else None
        if error is not None:
            self._reply(request, int(error.get("error_code", 400)), {"ok": False, **error})
            return
        try:
            result = self._result(method, params)
        except BotApiError as exc:
            payload: dict[str, Any] = {
                "ok": False,
                "error_code": exc.code,
                "description": exc.description,
            }
            if exc.parameters:
                payload["parameters"] = exc.parameters
            self._reply(request, exc.code, payload)
            return
        self._reply(request, 200, {"ok": True, "result": result})

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return {
                **BOT_USER,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        if method == "getUpdates":
            return self._get_updates(params)
        with self._lock:
            handler = getattr(self, f"_api_{method}", None)
            if handler is None:
                raise BotApiError(404, "Not Found")
            return handler(params)

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), self.max_poll)
        with self._lock:
            if self.webhook.get("url"):
                raise BotApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; "
                    "use deleteWebhook to delete the webhook first",
                )
            while True:
                if offset:  # confirms every update before it
                    self._updates = [
                        u for u in self._updates if int(u.get("update_id", 0)) >= offset
                    ]
                if self._updates or time.monotonic() >= deadline:
                    return list(self._updates[:limit])
                self._lock.wait(max(deadline - time.monotonic(), 0.0))

    @staticmethod
    def _text(params: dict[str, Any]) -> str:
        text = str(params.get("text", ""))
        if str(params.get("parse_mode", "")).upper() == "HTML":
            text = html_to_text(text)
        if not text.strip():
            raise BotApiError(400, "Bad Request: message text is empty")
        if units(text) > TEXT_LIMIT:
            raise BotApiError(400, "Bad Request: message is too long")
        return text

    @staticmethod
    def _markup(params: dict[str, Any]) -> dict[str, Any] | None:
        markup = params.get("reply_markup")
        if not markup:
            return None
        for row in markup.get("inline_keyboard", []):
            for button in row:
                if len(str(button.get("callback_data", "")).encode()) > 64:
                    raise BotApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return dict(markup)

    @staticmethod
    def _chat_id(params: dict[str, Any]) -> int:
        try:
            return int(params["chat_id"])
        except (KeyError, TypeError, ValueError):
            raise BotApiError(400, "Bad Request: chat not found") from None

    def _api_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat_id(params)
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": _chat(chat),
            "from": BOT_USER,
            "text": self._text(params),
        }
        markup = self._markup(params)
        if markup:
            message["reply_markup"] = markup
        self.messages[(chat, message["message_id"])] = message
        return message

    def _edited(self, params: dict[str, Any], *, text: str | None) -> dict[str, Any]:
        key = (self._chat_id(params), int(params.get("message_id") or 0))
        message = self.messages.get(key)
        if message is None:
            raise BotApiError(400, "Bad Request: message to edit not found")
        markup = self._markup(params)
        new_text = message["text"] if text is None else text
        if new_text == message["text"] and markup == message.get("reply_markup"):
            raise BotApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        message = {**message, "text": new_text, "edit_date": int(time.time())}
        message.pop("reply_markup", None)
        if markup:
            message["reply_markup"] = markup
        self.messages[key] = message
        return message

    def _api_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._edited(params, text=self._text(params))

    def _api_editMessageReplyMarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._edited(params, text=None)

    def _api_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        query_id = str(params.get("callback_query_id", ""))
        if query_id not in self._queries:
            raise BotApiError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        if units(str(params.get("text") or "")) > ANSWER_LIMIT:
            raise BotApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        self._queries.discard(query_id)
        return True

    def _api_setMyCommands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands") or []
        for command in commands:
            if not _COMMAND_NAME.match(str(command.get("command", ""))):
                raise BotApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise BotApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands = list(commands)
        return True

    def _api_getMyCommands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self.commands)

    def _api_setWebhook(self, params: dict[str, Any]) -> bool:
        url = str(params.get("url", ""))
        if url and not url.startswith("https://"):
            raise BotApiError(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        self.webhook = {"url": url, "secret_token": params.get("secret_token")} if url else {}
        return True

    def _api_deleteWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = {}
        return True

    def _api_getWebhookInfo(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": self.webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }

    def _api_close(self, params: dict[str, Any]) -> bool:
        return True

    def _api_logOut(self, params: dict[str, Any]) -> bool:
        return True

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


# Scripted errors ------------------------------------------------------------------------


def retry_after(seconds: int) -> dict[str, Any]:
    """Telegram's flood control answer."""
    return {
        "error_code": 429,
        "description": f"Too Many Requests: retry after {seconds}",
        "parameters": {"retry_after": seconds},
    }


def migrated(to_chat: int) -> dict[str, Any]:
    """The answer for a group that became a supergroup."""
    return {
        "error_code": 400,
        "description": "Bad Request: group chat was upgraded to a supergroup chat",
        "parameters": {"migrate_to_chat_id": to_chat},
    }


def blocked() -> dict[str, Any]:
    return {"error_code": 403, "description": "Forbidden: bot was blocked by the user"}


# Update builders ------------------------------------------------------------------------

_ids = itertools.count(1)


def user(uid: int, name: str = "Sam") -> dict[str, Any]:
    return {"id": uid, "is_bot": False, "first_name": name, "username": name.lower()}


def message(text: str | None = None, *, uid: int = 42, chat: int | None = None) -> dict[str, Any]:
    """A message from user ``uid`` in ``chat`` (their private chat by default)."""
    built: dict[str, Any] = {
        "message_id": 100_000 + next(_ids),
        "date": int(time.time()),
        "chat": _chat(chat if chat is not None else uid),
        "from": user(uid),
    }
    if text is not None:
        built["text"] = text
        if text.startswith("/"):
            length = len(text.split()[0]) if text.split() else 1
            built["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
    return built


def text_update(text: str, *, uid: int = 42, chat: int | None = None) -> dict[str, Any]:
    return {"message": message(text, uid=uid, chat=chat)}


def callback_update(data: str, *, message: dict[str, Any], uid: int = 42) -> dict[str, Any]:
    """User ``uid`` presses a button (``data``) on ``message``, a message the bot sent (one
    of :attr:`FakeTelegram.messages`)."""
    return {
        "callback_query": {
            "id": f"cbq-{next(_ids)}",
            "from": user(uid),
            "chat_instance": "ci-1",
            "data": data,
            "message": message,
        }
    }


def edited_update(text: str, *, uid: int = 42) -> dict[str, Any]:
    return {"edited_message": {**message(text, uid=uid), "edit_date": int(time.time())}}


def sticker_update(*, uid: int = 42) -> dict[str, Any]:
    sticker = {
        "file_id": "sticker-1",
        "file_unique_id": "s1",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
        "type": "regular",
    }
    return {"message": {**message(uid=uid), "sticker": sticker}}


def channel_post_update(text: str, *, chat: int = -1001234) -> dict[str, Any]:
    post = message(text, chat=chat)
    del post["from"]
    post["chat"] = {"id": chat, "type": "channel", "title": "News"}
    return {"channel_post": post}


def without(update: dict[str, Any], *path: str) -> dict[str, Any]:
    """A copy of ``update`` with the field at ``path`` removed, e.g.
    ``without(text_update("/help"), "message", "from")``."""
    copy: dict[str, Any] = json.loads(json.dumps(update))
    node = copy
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return copy


@pytest.fixture
def telegram_api() -> Iterator[FakeTelegram]:
    fake = FakeTelegram().start()
    try:
        yield fake
    finally:
        fake.stop()
