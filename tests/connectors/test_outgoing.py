"""Outgoing webhooks against a real HTTP receiver on 127.0.0.1 that records every request."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from connectors.errors import (
    InvalidParamsError,
    OutcomeUnknownError,
    PermanentConnectorError,
    TransientConnectorError,
)
from connectors.outgoing import MAX_PAYLOAD, OutgoingWebhookConnector
from tests.fakes.smtp_server import free_port

SECRET = "whsec_test_0123456789"
PARAMS: dict[str, Any] = {
    "target": "crm",
    "event": "invoice.published",
    "payload": {"number": "2026-0007", "total": "1228.14", "paid": False, "lines": [1, 2.5]},
}


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # read the request, then close the connection without answering


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """What the local webhook receiver got (``requests``), and how it answers (``reply``)."""

    def __init__(self) -> None:
        self.url = ""
        self.reply = Reply()
        self.requests: list[Request] = []


def _handler(rec: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            rec.requests.append(Request(self.path, headers, body))
            reply = rec.reply
            time.sleep(reply.delay)
            if reply.drop:
                self.close_connection = True
                return
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the read-timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1; stopped after the test."""
    rec = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/opcore"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def connector(url: str, *, timeout: float = 2.0) -> OutgoingWebhookConnector:
    return OutgoingWebhookConnector({"crm": (url, SECRET)}, timeout=timeout)


def test_a_post_is_signed_json_carrying_a_stable_id(receiver: Receiver) -> None:
    before = int(time.time())
    result = connector(receiver.url).execute("post", PARAMS, idempotency_key="job1:proposal:1")

    [request] = receiver.requests
    ident = hashlib.sha256(b"job1:proposal:1").hexdigest()[:32]
    assert request.path == "/hooks/opcore"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == ident
    assert request.headers["x-opcore-event"] == "invoice.published"
    body = json.loads(request.body)
    assert body["id"] == ident
    assert body["event"] == "invoice.published"
    assert body["data"] == PARAMS["payload"]
    assert body["created"].endswith("Z")

    stamp, mac = request.headers["x-opcore-signature"].split(",")
    assert stamp.startswith("t=") and mac.startswith("v1=")
    t = int(stamp[2:])
    assert before <= t <= int(time.time())
    expected = hmac.new(SECRET.encode(), f"{t}.".encode() + request.body, hashlib.sha256)
    assert hmac.compare_digest(mac[3:], expected.hexdigest())
    forged = hmac.new(b"other secret", f"{t}.".encode() + request.body, hashlib.sha256)
    assert mac[3:] != forged.hexdigest()

    assert result.details == {
        "target": "crm",
        "event": "invoice.published",
        "id": ident,
        "status": 200,
    }
    assert result.summary == "Posted invoice.published to crm (HTTP 200)"


def test_every_attempt_of_one_action_carries_the_same_id(receiver: Receiver) -> None:
    hooks = connector(receiver.url)
    hooks.execute("post", PARAMS, idempotency_key="k1")
    hooks.execute("post", PARAMS, idempotency_key="k1")
    hooks.execute("post", PARAMS, idempotency_key="k2")
    ids = [r.headers["idempotency-key"] for r in receiver.requests]
    assert ids[0] == ids[1] != ids[2]
    assert [json.loads(r.body)["id"] for r in receiver.requests] == ids


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        (Reply(500), TransientConnectorError, "Idempotency-Key"),
        (Reply(503), TransientConnectorError, "HTTP 503"),
        (Reply(429, {"Retry-After": "30"}), TransientConnectorError, "Retry-After: 30"),
        (Reply(408), TransientConnectorError, "HTTP 408"),
        (Reply(400), PermanentConnectorError, "HTTP 400"),
        (Reply(404), PermanentConnectorError, "HTTP 404"),
        (Reply(301, {"Location": "http://127.0.0.1:1/"}), PermanentConnectorError, "redirects"),
    ],
)
def test_the_receivers_answer_decides_between_a_retry_and_a_failure(
    receiver: Receiver, reply: Reply, error: type[Exception], words: str
) -> None:
    receiver.reply = reply
    with pytest.raises(error, match=words):
        connector(receiver.url).execute("post", PARAMS, idempotency_key="k1")
    assert len(receiver.requests) == 1  # a redirect is not followed either


def test_no_answer_after_the_request_went_out_is_an_unknown_outcome(receiver: Receiver) -> None:
    receiver.reply = Reply(delay=1.0)
    started = time.monotonic()
    with pytest.raises(OutcomeUnknownError, match="may have acted") as info:
        connector(receiver.url, timeout=0.3).execute("post", PARAMS, idempotency_key="k1")
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert time.monotonic() - started < 1.0
    assert len(receiver.requests) == 1  # it did arrive


def test_a_connection_dropped_before_the_answer_is_an_unknown_outcome(receiver: Receiver) -> None:
    receiver.reply = Reply(drop=True)
    with pytest.raises(OutcomeUnknownError):
        connector(receiver.url).execute("post", PARAMS, idempotency_key="k1")
    assert len(receiver.requests) == 1


def test_nothing_listening_is_transient_and_nothing_was_sent() -> None:
    hooks = connector(f"http://127.0.0.1:{free_port()}/hook")
    with pytest.raises(TransientConnectorError, match="nothing was sent") as info:
        hooks.execute("post", PARAMS, idempotency_key="k1")
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_an_unknown_target_is_refused_before_anything_is_sent(receiver: Receiver) -> None:
    hooks = connector(receiver.url)
    with pytest.raises(InvalidParamsError, match=r"no target 'evil'.*configured: crm"):
        hooks.validate("post", {**PARAMS, "target": "evil"})
    with pytest.raises(InvalidParamsError):
        hooks.execute("post", {**PARAMS, "target": "evil"}, idempotency_key="k1")
    with pytest.raises(InvalidParamsError):  # a URL is never a param
        hooks.execute("post", {**PARAMS, "url": "https://evil.example"}, idempotency_key="k1")
    assert receiver.requests == []


@pytest.mark.parametrize(
    "change",
    [
        {"payload": {"blob": "x" * MAX_PAYLOAD}},
        {"payload": {"amount": float("nan")}},
        {"payload": ["not", "an", "object"]},
        {"event": "has space"},
        {"event": "x\r\nX-Injected: 1"},
        {"event": ""},
    ],
)
def test_params_that_are_not_a_small_json_event_are_refused(
    receiver: Receiver, change: dict[str, Any]
) -> None:
    with pytest.raises(InvalidParamsError):
        connector(receiver.url).execute("post", {**PARAMS, **change}, idempotency_key="k1")
    assert receiver.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",
        "http://10.0.0.5/x",
        "ftp://127.0.0.1/x",
        "https://user:pw@hooks.example.com/x",
        "https:///nohost",
        "hooks.example.com",
    ],
)
def test_a_target_that_is_not_https_or_loopback_http_fails_at_construction(url: str) -> None:
    with pytest.raises(ValueError):
        OutgoingWebhookConnector({"crm": (url, SECRET)})


def test_https_anywhere_and_plain_http_to_loopback_are_accepted() -> None:
    hooks = OutgoingWebhookConnector(
        {
            "crm": ("https://hooks.example.com/opcore", SECRET),
            "local": ("http://localhost:8080/hook", SECRET),
            "v6": ("http://[::1]:8080/hook", SECRET),
        },
        timeout=5,
    )
    assert sorted(hooks.targets) == ["crm", "local", "v6"]
    with pytest.raises(ValueError, match="secret"):
        OutgoingWebhookConnector({"crm": ("https://hooks.example.com/", "")})
    with pytest.raises(ValueError, match="name"):
        OutgoingWebhookConnector({"bad name": ("https://hooks.example.com/", SECRET)})


def test_a_webhook_cannot_be_undone_or_looked_up() -> None:
    hooks = OutgoingWebhookConnector({"crm": ("https://hooks.example.com/", SECRET)})
    spec = hooks.spec("post")
    assert spec.mode == "write" and spec.compensation is None
    assert "no compensation" in spec.description.lower()
    assert hooks.lookup("post", PARAMS, idempotency_key="k1") is None
    assert not hooks.lookup_is_definitive
