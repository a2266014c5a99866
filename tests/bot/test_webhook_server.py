"""The webhook endpoint end to end: a real server on 127.0.0.1, real HTTP, a real store."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr

from bot.errors import BotError
from bot.webhook_server import WebhookServer, WebhookServerError, record_delivery
from config.settings import WebhookSource
from connectors.webhooks import MAX_BODY, WebhookDelivery
from store import Store
from store.events import Metadata, NewEvent, WebhookReceived
from store.log import EventLog

STRIPE_SECRET = "whsec_server_test_secret"
GITHUB_SECRET = "gh-server-secret"
SHOP_SECRET = "shop-server-secret"

SOURCES = {
    "stripe": WebhookSource(kind="stripe", secret=SecretStr(STRIPE_SECRET)),
    "gh": WebhookSource(kind="github", secret=SecretStr(GITHUB_SECRET)),
    "shop": WebhookSource(kind="generic", secret=SecretStr(SHOP_SECRET), tolerance_seconds=60),
}


def stripe_event(event_id: str = "evt_test_1", event_type: str = "invoice.paid") -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "data": {"object": {"id": "in_1", "amount_paid": 4200, "currency": "eur"}},
        }
    ).encode()


def stripe_headers(
    body: bytes, *, at: int | None = None, secret: str = STRIPE_SECRET
) -> dict[str, str]:
    t = int(time.time()) if at is None else at
    v1 = hmac.new(secret.encode(), f"{t}.{body.decode()}".encode(), hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={v1}", "Content-Type": "application/json"}


class Recorder:
    """``on_delivery``: records into the real log, or fails when told to."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.fail = False
        self.calls: list[WebhookDelivery] = []
        self._lock = threading.Lock()

    def __call__(self, delivery: WebhookDelivery) -> bool:
        with self._lock:
            self.calls.append(delivery)
        if self.fail:
            raise RuntimeError("the database is down")
        return record_delivery(self.log, delivery)


def metrics() -> tuple[int, str, bytes]:
    return 200, "text/plain; version=0.0.4", b"opcore_up 1\n"


@pytest.fixture
def recorder(store: Store) -> Recorder:
    return Recorder(store.log)


@pytest.fixture
def server(recorder: Recorder) -> Iterator[WebhookServer]:
    with WebhookServer(
        listen="127.0.0.1:0",
        sources=SOURCES,
        on_delivery=recorder,
        extra_routes={"/metrics": metrics},
    ) as running:
        yield running


@pytest.fixture
def client(server: WebhookServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as c:
        yield c


def received(store: Store) -> list[WebhookReceived]:
    """Every WebhookReceived in the log, in order."""
    out: list[WebhookReceived] = []
    for event in store.log.read_all(types=["WebhookReceived"]):
        assert isinstance(event.data, WebhookReceived)
        out.append(event.data)
    return out


# Deliveries -------------------------------------------------------------------------------------


def test_a_new_delivery_is_recorded_and_its_redelivery_acknowledged_as_duplicate(
    client: httpx.Client, store: Store
) -> None:
    body = stripe_event()
    first = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert (first.status_code, first.json()) == (200, {"ok": True, "duplicate": False})
    again = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert (again.status_code, again.json()) == (200, {"ok": True, "duplicate": True})

    [event] = store.log.read_stream("webhook-stripe")
    assert event.idempotency_key == "webhook:stripe:evt_test_1"
    assert event.metadata.actor == "webhook:stripe"
    assert event.data == WebhookReceived(
        source="stripe",
        kind="stripe",
        delivery_id="evt_test_1",
        event_type="invoice.paid",
        payload=json.loads(body),
    )


def test_record_delivery_reports_new_then_duplicate(store: Store) -> None:
    delivery = WebhookDelivery("gh", "github", "d-1", "push", {"ref": "main"})
    assert record_delivery(store.log, delivery) is True
    assert record_delivery(store.log, delivery) is False
    # Same id from another source is another delivery.
    assert record_delivery(store.log, WebhookDelivery("gh2", "github", "d-1", "push", {})) is True
    assert len(received(store)) == 2


def test_github_form_encoded_ping_is_acknowledged(client: httpx.Client, store: Store) -> None:
    body = urlencode({"payload": json.dumps({"zen": "Design for failure.", "hook_id": 1})}).encode()
    signature = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = client.post(
        "/webhooks/gh",
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Hub-Signature-256": f"sha256={signature}",
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": "9f8e7d6c-0000-11ee-8000-000000000001",
        },
    )
    assert response.json() == {"ok": True, "duplicate": False}
    [event] = received(store)
    assert (event.event_type, event.payload["hook_id"]) == ("ping", 1)


def test_generic_delivery_with_a_timestamp(client: httpx.Client, store: Store) -> None:
    body = b'{"type": "order.created", "order": 17}'
    ts = str(int(time.time()))
    signature = hmac.new(SHOP_SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256)
    headers = {
        "X-Signature-256": f"sha256={signature.hexdigest()}",
        "X-Timestamp": ts,
        "X-Webhook-Id": "msg_17",
    }
    assert client.post("/webhooks/shop", content=body, headers=headers).status_code == 200
    [event] = received(store)
    assert (event.delivery_id, event.event_type, event.source) == (
        "msg_17",
        "order.created",
        "shop",
    )


def test_a_captured_request_replayed_under_a_fresh_delivery_id_is_a_duplicate(
    client: httpx.Client, store: Store
) -> None:
    """GitHub signs only the body and the generic scheme the body and its timestamp: the
    delivery id is not signed, so the dedupe must not rest on it alone."""
    push = json.dumps({"ref": "refs/heads/main", "after": "abc123"}).encode()
    signature = hmac.new(GITHUB_SECRET.encode(), push, hashlib.sha256).hexdigest()

    def github(delivery: str) -> dict[str, Any]:
        return client.post(
            "/webhooks/gh",
            content=push,
            headers={
                "Content-Type": "application/json",
                "X-Hub-Signature-256": f"sha256={signature}",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": delivery,
            },
        ).json()

    assert github("d-original") == {"ok": True, "duplicate": False}
    assert github("d-forged-fresh-id") == {"ok": True, "duplicate": True}

    body = b'{"type": "order.created", "order": 18}'

    def shop(ts: str, webhook_id: str) -> dict[str, Any]:
        mac = hmac.new(SHOP_SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256)
        headers = {
            "X-Signature-256": f"sha256={mac.hexdigest()}",
            "X-Timestamp": ts,
            "X-Webhook-Id": webhook_id,
        }
        return client.post("/webhooks/shop", content=body, headers=headers).json()

    now = int(time.time())
    assert shop(str(now), "msg_18") == {"ok": True, "duplicate": False}
    assert shop(str(now), "msg_18-replayed") == {"ok": True, "duplicate": True}
    # The same body signed again at another moment is another delivery.
    assert shop(str(now - 5), "msg_19")["duplicate"] is False
    assert [e.delivery_id for e in received(store)] == ["d-original", "msg_18", "msg_19"]


def test_a_delivery_recorded_under_its_id_stays_a_duplicate(store: Store) -> None:
    """Deliveries recorded before replay keys (keyed by their id) are still recognised."""
    store.log.append(
        "webhook-gh",
        [
            NewEvent(
                WebhookReceived(
                    source="gh", kind="github", delivery_id="d-old", event_type="push", payload={}
                ),
                idempotency_key="webhook:gh:d-old",
            )
        ],
        metadata=Metadata(actor="webhook:gh"),
    )
    again = WebhookDelivery("gh", "github", "d-old", "push", {}, replay_key="sha256:00")
    assert record_delivery(store.log, again) is False


def test_concurrent_redeliveries_are_recorded_once(client: httpx.Client, store: Store) -> None:
    body = stripe_event("evt_concurrent")
    headers = stripe_headers(body)
    barrier = threading.Barrier(8)
    answers: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def deliver() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=10) as own:
            barrier.wait()
            response = own.post("/webhooks/stripe", content=body, headers=headers)
        with lock:
            answers.append((response.status_code, response.json()))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(answers) == 8
    assert all(status == 200 for status, _ in answers), answers
    assert sorted(data["duplicate"] for _, data in answers) == [False] + [True] * 7
    assert len(received(store)) == 1


# Refusals ---------------------------------------------------------------------------------------


def test_a_forged_signature_is_refused_and_logged_without_secret_or_body(
    client: httpx.Client, store: Store, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.webhook_server")
    body = stripe_event("evt_forged", "payout.paid")
    response = client.post(
        "/webhooks/stripe", content=body, headers=stripe_headers(body, secret="whsec_guess")
    )
    assert response.status_code == 401
    assert response.json() == {"error": "no signature matches the payload"}
    assert recorder.calls == [] and received(store) == []

    [record] = [r for r in caplog.records if r.name == "bot.webhook_server"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "stripe" in message and "no signature matches" in message and "127.0.0.1" in message
    assert STRIPE_SECRET not in caplog.text and "evt_forged" not in caplog.text


def test_a_missing_signature_is_refused(client: httpx.Client) -> None:
    response = client.post("/webhooks/stripe", content=stripe_event())
    assert response.status_code == 401
    assert response.json() == {"error": "missing Stripe-Signature header"}


def test_a_replay_outside_the_tolerance_is_refused(client: httpx.Client, store: Store) -> None:
    body = stripe_event("evt_replayed")
    an_hour_ago = int(time.time()) - 3600
    response = client.post(
        "/webhooks/stripe", content=body, headers=stripe_headers(body, at=an_hour_ago)
    )
    assert response.status_code == 401
    assert response.json() == {"error": "timestamp outside the tolerance"}
    assert received(store) == []


def test_unknown_source_is_404(client: httpx.Client) -> None:
    body = stripe_event()
    response = client.post("/webhooks/paypal", content=body, headers=stripe_headers(body))
    assert response.status_code == 404
    assert client.post("/webhooks/stripe/extra", content=b"{}").status_code == 404
    assert client.post("/elsewhere", content=b"{}").status_code == 404


def test_other_methods_on_a_webhook_path_are_405_with_allow(client: httpx.Client) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = client.request(method, "/webhooks/stripe")
        assert response.status_code == 405
        assert response.headers["Allow"] == "POST"


def test_an_oversized_body_is_413(client: httpx.Client, recorder: Recorder) -> None:
    body = b"{" + b" " * MAX_BODY + b"}"
    response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 413
    assert recorder.calls == []
    assert client.get("/healthz").text == "ok"


def raw_post(port: int, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    """Send only a request's head (no body at all) and read the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    conn.putrequest("POST", path)
    for key, value in headers.items():
        conn.putheader(key, value)
    conn.endheaders()
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_413_is_decided_on_the_headers_without_waiting_for_the_body(server: WebhookServer) -> None:
    started = time.monotonic()
    response = raw_post(server.port, "/webhooks/stripe", {"Content-Length": str(50 * MAX_BODY)})
    assert response.status == 413
    assert time.monotonic() - started < 2  # no body was sent: the server did not wait for one


def test_missing_content_length_is_411(server: WebhookServer) -> None:
    assert raw_post(server.port, "/webhooks/stripe", {}).status == 411
    chunked = raw_post(server.port, "/webhooks/stripe", {"Transfer-Encoding": "chunked"})
    assert chunked.status == 411


def test_an_invalid_content_length_is_400(server: WebhookServer) -> None:
    assert raw_post(server.port, "/webhooks/stripe", {"Content-Length": "-5"}).status == 400


def test_a_malformed_body_with_a_valid_signature_is_400_and_the_server_lives_on(
    client: httpx.Client, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.webhook_server")
    body = b'{"id": "evt_broken", "type": '
    response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]
    assert any(
        r.levelno == logging.WARNING and "malformed" in r.getMessage() for r in caplog.records
    )
    good = stripe_event("evt_after")
    assert client.post("/webhooks/stripe", content=good, headers=stripe_headers(good)).json() == {
        "ok": True,
        "duplicate": False,
    }
    assert [e.delivery_id for e in received(store)] == ["evt_after"]


def test_a_failing_on_delivery_is_500_logged_and_the_retry_succeeds(
    client: httpx.Client, recorder: Recorder, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="bot.webhook_server")
    body = stripe_event("evt_retry")
    recorder.fail = True
    response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 500
    [record] = [r for r in caplog.records if r.name == "bot.webhook_server"]
    assert record.exc_info is not None and "evt_retry" in record.getMessage()
    assert received(store) == []

    recorder.fail = False  # the sender retries: nothing was lost
    retry = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert retry.json() == {"ok": True, "duplicate": False}
    assert [e.delivery_id for e in received(store)] == ["evt_retry"]


# Other routes, logging, life cycle -------------------------------------------------------------


def test_healthz_and_extra_routes(client: httpx.Client) -> None:
    health = client.get("/healthz")
    assert (health.status_code, health.text) == (200, "ok")
    assert client.head("/healthz").status_code == 200
    scraped = client.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"] == "text/plain; version=0.0.4"
    assert scraped.text == "opcore_up 1\n"
    refused = client.post("/healthz", content=b"")
    assert (refused.status_code, refused.headers["Allow"]) == (405, "GET, HEAD")
    assert client.get("/nothing-here").status_code == 404


def test_a_failing_extra_route_is_500_and_logged(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> tuple[int, str, bytes]:
        raise ValueError("no metrics today")

    with (
        WebhookServer(
            listen="127.0.0.1:0",
            sources=SOURCES,
            on_delivery=recorder,
            extra_routes={"/metrics": broken},
        ) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as c,
    ):
        assert c.get("/metrics").status_code == 500
        assert c.get("/healthz").status_code == 200
    assert any(r.exc_info and r.levelno == logging.ERROR for r in caplog.records)


def test_the_access_log_goes_to_logging_not_stderr(
    client: httpx.Client, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.webhook_server")
    client.get("/healthz")
    assert any(
        r.levelno == logging.DEBUG and "GET /healthz" in r.getMessage() for r in caplog.records
    )
    assert "GET /healthz" not in capfd.readouterr().err


def test_the_server_header_does_not_name_python(client: httpx.Client) -> None:
    assert client.get("/healthz").headers["server"] == "opcore-webhooks"


def test_stop_closes_the_port(recorder: Recorder) -> None:
    server = WebhookServer(listen="127.0.0.1:0", sources=SOURCES, on_delivery=recorder)
    with pytest.raises(WebhookServerError, match="not started"):
        _ = server.port
    server.start()
    port = server.port
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).text == "ok"
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_a_port_in_use_fails_at_start(recorder: Recorder) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = WebhookServer(listen=f"127.0.0.1:{port}", sources=SOURCES, on_delivery=recorder)
        with pytest.raises(WebhookServerError, match=f"127.0.0.1:{port}"):
            server.start()


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"listen": "8090"}, "host:port"),
        ({"listen": "localhost:http"}, "host:port"),
        ({"sources": {"bad/name": SOURCES["stripe"]}}, "source name"),
        (
            {"sources": {"nosecret": WebhookSource(kind="github", secret=SecretStr(""))}},
            "needs a secret",
        ),
        ({"extra_routes": {"/healthz": metrics}}, "extra route"),
        ({"extra_routes": {"/webhooks/metrics": metrics}}, "extra route"),
    ],
)
def test_bad_settings_fail_at_construction_with_a_hint(
    recorder: Recorder, kwargs: dict[str, Any], hint: str
) -> None:
    arguments: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "sources": SOURCES,
        "on_delivery": recorder,
        **kwargs,
    }
    with pytest.raises(WebhookServerError, match=hint) as info:
        WebhookServer(**arguments)
    assert isinstance(info.value, BotError)  # the CLI reports BotError and exits


def test_a_sender_that_writes_its_whole_huge_body_first_still_reads_the_413(
    server: WebhookServer,
) -> None:
    # 8 MiB does not fit in the socket buffers: the answer goes out while the sender is still
    # writing. A plain client (http.client: write everything, then read) sees the 413 only
    # because the server drops the rest of the body instead of closing on it (a reset).
    body = b"{" + b" " * (8 * MAX_BODY) + b"}"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("POST", "/webhooks/stripe", body=body, headers=stripe_headers(body))
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read()) == {"error": f"the body is larger than {MAX_BODY} bytes"}
    finally:
        conn.close()
