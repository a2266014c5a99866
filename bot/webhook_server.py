"""The inbound webhook endpoint: ``POST /webhooks/<source>``, one small threaded HTTP server.

Each configured source (``OPCORE_WEBHOOK_SOURCES``) has its own secret and scheme; the
signature is checked by :mod:`connectors.webhooks` before anything in the body is looked at.
The answers:

=====================================  =====================================================
request                                answer
=====================================  =====================================================
a new, authentic delivery              200 ``{"ok": true, "duplicate": false}``
the same delivery again                200 ``{"ok": true, "duplicate": true}`` (dropped)
unknown source / path                  404
another method on a known path         405 with ``Allow``
no ``Content-Length`` (or chunked)     411, decided on the headers alone
more than 1 MiB                        413, decided on the headers alone
bad, missing or stale signature        401 ``{"error": …}`` and a WARNING (source, reason,
                                       client address; never the secret or the body)
authentic but malformed body           400 ``{"error": …}`` and a WARNING
``on_delivery`` raised                 500, logged with the traceback; the sender retries
                                       and the log append dedupes the retry
``GET /healthz``                       200 ``ok``
=====================================  =====================================================

A refused body is never buffered nor parsed: 404, 405, 411 and 413 are decided on the
request line and headers alone; after answering, the server drops what the sender still
transmits (bounded in bytes and time) and closes, so a sender that writes its whole body
before reading reads the answer instead of a reset connection. Nothing a request contains can stop the server; the standard library's
access log goes to this module's logger at DEBUG.

:func:`record_delivery` is the ``on_delivery`` that ``opcore run`` uses: it appends
``WebhookReceived`` with the idempotency key ``webhook:<source>:<replay key>``, so the log
itself is the dedupe (invariant 3), across threads and processes.

Errors::

    BotError (bot.errors)
    └── WebhookServerError   the server cannot start: a bad listen address, a source with
                             no secret or an unusable name, a port in use
"""

from __future__ import annotations

import json
import logging
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from bot.errors import BotError
from config.settings import WebhookSource
from connectors.webhooks import (
    MAX_BODY,
    PayloadError,
    SignatureError,
    WebhookDelivery,
    parse_delivery,
    verify,
)
from store.events import Metadata, NewEvent, WebhookReceived
from store.log import EventLog

logger = logging.getLogger(__name__)

WEBHOOK_PREFIX = "/webhooks/"
HEALTH_PATH = "/healthz"
SOURCE_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")  # fits the stream id and idempotency key
READ_TIMEOUT = 15.0  # seconds a connection may stay silent while we wait for its request
DISCARD_LIMIT = 16 * MAX_BODY  # bytes dropped after a refusal, at most…
DISCARD_SECONDS = 5.0  # …and for at most this long

Route = Callable[[], tuple[int, str, bytes]]
OnDelivery = Callable[[WebhookDelivery], bool]


class WebhookServerError(BotError):
    """The webhook server cannot start (see the module docstring)."""


def record_delivery(log: EventLog, delivery: WebhookDelivery) -> bool:
    """Append the delivery to ``webhook-<source>``; ``True`` if it is new, ``False`` if its
    idempotency key was already in the log (nothing is written then). The key is the
    delivery's replay key (a digest of what was signed, where the id is not): a captured
    request replayed under a fresh delivery id is the same delivery."""
    by_id = f"webhook:{delivery.source}:{delivery.delivery_id}"
    key = f"webhook:{delivery.source}:{delivery.replay_key}" if delivery.replay_key else by_id
    if key != by_id and log.find_by_key(by_id) is not None:
        return False  # recorded under its id (before replay keys, or by another sender)
    event = WebhookReceived(
        source=delivery.source,
        kind=delivery.kind,
        delivery_id=delivery.delivery_id,
        event_type=delivery.event_type,
        payload=delivery.payload,
    )
    result = log.append(
        f"webhook-{delivery.source}",
        [NewEvent(event, idempotency_key=key)],
        metadata=Metadata(actor=f"webhook:{delivery.source}"),
    )
    return not result.duplicate


class WebhookServer:
    """Serves ``POST /webhooks/<source>``, ``GET /healthz`` and ``extra_routes`` (GET path ->
    a callable returning status, content type and body) on a daemon thread.

    Settings are checked here, so a bad one fails at start-up with a hint; :meth:`start`
    binds (``listen`` ``"127.0.0.1:0"`` picks a free port, see :attr:`port`), :meth:`stop`
    closes. ``on_delivery`` is called from the request threads, concurrently."""

    def __init__(
        self,
        *,
        listen: str,
        sources: Mapping[str, WebhookSource],
        on_delivery: OnDelivery,
        extra_routes: Mapping[str, Route] | None = None,
    ) -> None:
        self._address = _parse_listen(listen)
        self._listen = listen
        for name, source in sources.items():
            if not SOURCE_NAME.fullmatch(name):
                raise WebhookServerError(
                    f"OPCORE_WEBHOOK_SOURCES: source name {name!r} must be 1-40 letters, "
                    "digits, '_' or '-' (it is the last part of the URL)"
                )
            if not source.secret.get_secret_value():
                raise WebhookServerError(
                    f"OPCORE_WEBHOOK_SOURCES: source {name!r} needs a secret "
                    "(the signing secret the sender shows you)"
                )
        routes = dict(extra_routes or {})
        for path in routes:
            if not path.startswith("/") or path == HEALTH_PATH or path.startswith(WEBHOOK_PREFIX):
                raise WebhookServerError(
                    f"extra route {path!r} must start with '/' and not be {HEALTH_PATH} "
                    f"or under {WEBHOOK_PREFIX}"
                )
        routes[HEALTH_PATH] = _health
        self.sources: dict[str, WebhookSource] = dict(sources)
        self.on_delivery = on_delivery
        self.routes: dict[str, Route] = routes
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one picked, for port 0); only once started."""
        if self._server is None:
            raise WebhookServerError("the webhook server is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve on a daemon thread; :class:`WebhookServerError` if it cannot."""
        if self._server is not None:
            raise WebhookServerError("the webhook server is already started")
        try:
            server = _HTTPServer(self._address, self)
        except OSError as exc:  # a port in use, an address not on this host
            raise WebhookServerError(f"webhook server on {self._listen}: {exc}") from exc
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="webhook-http",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        logger.info(
            "webhooks: listening on %s:%d%s<source> for %s",
            self._address[0],
            self.port,
            WEBHOOK_PREFIX,
            ", ".join(sorted(self.sources)) or "no sources",
        )

    def stop(self) -> None:
        """Stop accepting, close the socket and wait (bounded) for the serving thread.
        Requests already being handled finish on their own (daemon) threads."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> WebhookServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _health() -> tuple[int, str, bytes]:
    return 200, "text/plain; charset=utf-8", b"ok"


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise WebhookServerError(
            f"OPCORE_WEBHOOK_LISTEN {listen!r} must look like host:port, e.g. 127.0.0.1:8090"
        )
    return host, int(port)


# HTTP ------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: WebhookServer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the host name up (socket.getfqdn): a DNS query
        # at start-up that nothing here needs.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; here it is a sender that went away
        # mid-answer (or a bug, which the traceback shows).
        logger.info("webhooks: the connection from %s failed", client_address, exc_info=True)


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False  # close the connection after answering

    @classmethod
    def json(cls, status: int, data: Mapping[str, Any], **kwargs: Any) -> _Response:
        return cls(status, json.dumps(data).encode(), **kwargs)


def _error(status: int, message: str, **kwargs: Any) -> _Response:
    return _Response.json(status, {"error": message}, **kwargs)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = READ_TIMEOUT
    server_version = "opcore-webhooks"
    sys_version = ""  # no Python version in the Server header
    _body_consumed = False  # per request: was the body read (so nothing is left to drop)?

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("webhook http %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_OPTIONS(self) -> None:
        self._serve("OPTIONS")

    def _serve(self, method: str) -> None:
        self._body_consumed = False
        try:
            response = self._route(method)
        except Exception:  # one bad request must not take the server down
            logger.exception("webhooks: %s %s failed", method, urlsplit(self.path).path[:200])
            response = _error(500, "internal error")
        if response is None:  # the connection is gone: nobody to answer
            self.close_connection = True
            return
        self._send(response, head=method == "HEAD")

    def _route(self, method: str) -> _Response | None:
        path = urlsplit(self.path).path
        app = self.server.app
        if path.startswith(WEBHOOK_PREFIX):
            name = unquote(path[len(WEBHOOK_PREFIX) :])
            source = app.sources.get(name)
            if source is None:
                return _error(404, "unknown webhook source")
            if method != "POST":
                return _error(405, "POST only", headers=(("Allow", "POST"),))
            return self._delivery(name, source)
        route = app.routes.get(path)
        if route is None:
            return _error(404, "not found")
        if method not in ("GET", "HEAD"):
            return _error(405, "GET only", headers=(("Allow", "GET, HEAD"),))
        status, content_type, body = route()
        return _Response(status, body, content_type)

    def _delivery(self, name: str, source: WebhookSource) -> _Response | None:
        client = self.client_address[0]
        if self.headers.get("Transfer-Encoding"):
            return _error(411, "send a Content-Length (chunked bodies are not accepted)")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return _error(411, "Content-Length required")
        if not re.fullmatch(r"[0-9]{1,18}", length_text.strip()):
            return _error(400, "invalid Content-Length")
        length = int(length_text)
        if length > MAX_BODY:
            logger.warning(
                "webhook %s: refused %d bytes from %s (at most %d)", name, length, client, MAX_BODY
            )
            return _error(413, f"the body is larger than {MAX_BODY} bytes")
        self._body_consumed = True  # whatever happens next, nothing is left to drop
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            logger.warning("webhook %s: %s stopped sending its body", name, client)
            return _error(408, "timed out waiting for the body", close=True)
        except OSError as exc:
            logger.warning("webhook %s: the connection from %s failed: %s", name, client, exc)
            return None
        if len(body) != length:
            logger.warning("webhook %s: %s closed before sending its whole body", name, client)
            return _error(400, "the body is shorter than its Content-Length")
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            verify(source, headers, body, now=datetime.now(UTC))
        except SignatureError as exc:
            logger.warning("webhook %s: refused a request from %s: %s", name, client, exc)
            return _error(401, str(exc))
        try:
            delivery = parse_delivery(name, source.kind, headers, body)
        except PayloadError as exc:
            logger.warning(
                "webhook %s: dropped a malformed delivery from %s: %s", name, client, exc
            )
            return _error(400, str(exc))
        try:
            new = self.server.app.on_delivery(delivery)
        except Exception:  # answered 500: the sender retries, the append dedupes
            logger.exception(
                "webhook %s: delivery %s (%s) could not be recorded",
                name,
                delivery.delivery_id,
                delivery.event_type,
            )
            return _error(500, "the delivery could not be recorded; please retry")
        logger.info(
            "webhook %s: %s delivery %s (%s)",
            name,
            "new" if new else "duplicate",
            delivery.delivery_id,
            delivery.event_type,
        )
        return _Response.json(200, {"ok": True, "duplicate": not new})

    def _send(self, response: _Response, *, head: bool) -> None:
        unread = 0 if self._body_consumed else self._declared_body()
        close = response.close or unread > 0
        if close:
            self.close_connection = True
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for key, value in response.headers:
            self.send_header(key, value)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(response.body)
        self.wfile.flush()
        if unread:
            self._discard(unread)

    def _declared_body(self) -> int:
        """Bytes of request body the sender may still transmit (bounded by DISCARD_LIMIT)."""
        if self.headers.get("Transfer-Encoding"):
            return DISCARD_LIMIT
        length = self.headers.get("Content-Length", "0").strip()
        if not re.fullmatch(r"[0-9]{1,18}", length):
            return DISCARD_LIMIT
        return min(int(length), DISCARD_LIMIT)

    def _discard(self, limit: int) -> None:
        """Drop what the sender still transmits of a refused body (never kept), so closing
        the connection does not reset it before the sender has read the answer."""
        deadline = time.monotonic() + DISCARD_SECONDS
        self.connection.settimeout(0.5)
        left = limit
        while left > 0 and time.monotonic() < deadline:
            try:
                chunk = self.rfile.read1(min(left, 65536))
            except OSError as exc:  # the sender hung up or went quiet: nothing more to drop
                logger.debug("webhooks: stopped discarding a refused body: %s", exc)
                return
            if not chunk:
                return
            left -= len(chunk)
