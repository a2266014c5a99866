"""Inbound webhook signatures and parsing: Stripe, GitHub and our generic scheme."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr

from config.settings import WebhookSource
from connectors.errors import ConnectorError
from connectors.webhooks import (
    MAX_BODY,
    MAX_DEPTH,
    PayloadError,
    SignatureError,
    WebhookDelivery,
    WebhookError,
    parse_delivery,
    verify,
    verify_generic,
    verify_github,
    verify_stripe,
)

NOW = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)  # 1700000000
T = 1_700_000_000
STRIPE_SECRET = "whsec_test_secret"
STRIPE_BODY = b'{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"invoice.paid"}'
# Computed independently of Python:
#   printf '1700000000.<STRIPE_BODY>' | openssl dgst -sha256 -hmac whsec_test_secret
STRIPE_VECTOR = "8fcb50c2d45bc391e3252f24411d84654bfdfc8e96eaf71d71534ee00b714f1e"
# The same with the key "test_secret": what a verifier that strips "whsec_" would expect.
STRIPE_VECTOR_STRIPPED_KEY = "8060cf5a0fa66dfcf1c8ec742dce2bb6fa8e11d83bc875298f9904350ed4197d"


def stripe_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The v1 signature exactly as Stripe documents it: HMAC-SHA256 of "{t}.{payload}"."""
    signed_payload = f"{timestamp}.{body.decode('utf-8')}"
    return hmac.new(secret.encode(), signed_payload.encode(), hashlib.sha256).hexdigest()


def hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def check_stripe(header: str, body: bytes = STRIPE_BODY, *, now: datetime = NOW) -> None:
    verify_stripe(STRIPE_SECRET, header, body, now=now, tolerance=300)


# Stripe ----------------------------------------------------------------------------------------


def test_stripe_signature_matches_a_vector_computed_with_openssl() -> None:
    assert stripe_signature(STRIPE_SECRET, T, STRIPE_BODY) == STRIPE_VECTOR
    check_stripe(f"t={T},v1={STRIPE_VECTOR}")


def test_stripe_secret_is_the_whole_whsec_string() -> None:
    with pytest.raises(SignatureError, match="no signature matches"):
        check_stripe(f"t={T},v1={STRIPE_VECTOR_STRIPPED_KEY}")


def test_stripe_header_with_a_v0_and_spaces_still_verifies() -> None:
    check_stripe(f"t={T}, v1={STRIPE_VECTOR}, v0={'0' * 64}")


def test_stripe_any_v1_may_match_during_a_secret_rotation() -> None:
    old = stripe_signature("whsec_old", T, STRIPE_BODY)
    new = stripe_signature(STRIPE_SECRET, T, STRIPE_BODY)
    check_stripe(f"t={T},v1={old},v1={new}")
    check_stripe(f"t={T},v1={new},v1={old}")
    with pytest.raises(SignatureError):
        check_stripe(f"t={T},v1={old},v1={stripe_signature('whsec_other', T, STRIPE_BODY)}")


def test_stripe_v0_alone_is_not_enough() -> None:
    with pytest.raises(SignatureError, match="no v1 signature"):
        check_stripe(f"t={T},v0={STRIPE_VECTOR}")


@pytest.mark.parametrize("offset", [-301, 301, -86_400, 86_400])
def test_stripe_timestamp_outside_the_tolerance_either_way_is_refused(offset: int) -> None:
    signed_at = T + offset
    header = f"t={signed_at},v1={stripe_signature(STRIPE_SECRET, signed_at, STRIPE_BODY)}"
    with pytest.raises(SignatureError, match="timestamp outside the tolerance"):
        check_stripe(header)


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_stripe_timestamp_inside_the_tolerance_is_accepted(offset: int) -> None:
    signed_at = T + offset
    check_stripe(f"t={signed_at},v1={stripe_signature(STRIPE_SECRET, signed_at, STRIPE_BODY)}")


def test_stripe_tampered_body_is_refused() -> None:
    tampered = STRIPE_BODY.replace(b"invoice.paid", b"invoice.void")
    with pytest.raises(SignatureError, match="no signature matches"):
        check_stripe(f"t={T},v1={STRIPE_VECTOR}", tampered)


def test_stripe_changed_timestamp_is_refused() -> None:
    with pytest.raises(SignatureError, match="no signature matches"):
        check_stripe(f"t={T + 1},v1={STRIPE_VECTOR}")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "missing Stripe-Signature"),
        (f"v1={STRIPE_VECTOR}", "no timestamp"),
        (f"t=,v1={STRIPE_VECTOR}", "no timestamp"),
        (f"t=abc,v1={STRIPE_VECTOR}", "no timestamp"),
        (f"t=-{T},v1={STRIPE_VECTOR}", "no timestamp"),
        (f"t=\u00b2,v1={STRIPE_VECTOR}", "no timestamp"),  # a Unicode digit int() refuses
        (f"t={'9' * 5000},v1={STRIPE_VECTOR}", "no timestamp"),
        (f"t={T}", "no v1 signature"),
        (f"t={T},v1", "no v1 signature"),
        (f"t={T},t={T},v1={STRIPE_VECTOR}", "more than one timestamp"),
        (f"t={T},v1=", "no signature matches"),
        (f"t={T},v1={STRIPE_VECTOR[:-2]}", "no signature matches"),
        (f"t={T},v1=é{STRIPE_VECTOR[1:]}", "no signature matches"),  # non-ASCII
        ("garbage", "no timestamp"),
    ],
)
def test_stripe_malformed_headers_are_refused(header: str, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        check_stripe(header)


def test_stripe_accepts_an_uppercase_hex_signature() -> None:
    check_stripe(f"t={T},v1={STRIPE_VECTOR.upper()}")


def test_signature_errors_are_connector_errors() -> None:
    assert issubclass(SignatureError, WebhookError)
    assert issubclass(PayloadError, WebhookError)
    assert issubclass(WebhookError, ConnectorError)


def test_a_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check_stripe(f"t={T},v1={STRIPE_VECTOR}", now=NOW.replace(tzinfo=None))


# GitHub ----------------------------------------------------------------------------------------

GITHUB_SECRET = "It's a Secret to Everybody"


def test_github_documented_vector() -> None:
    # From GitHub's "Validating webhook deliveries" page (also checked with openssl).
    verify_github(
        GITHUB_SECRET,
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        b"Hello, World!",
    )


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "missing X-Hub-Signature-256"),
        ("757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", "sha256=<hex>"),
        ("sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", "sha256=<hex>"),
        ("sha256=" + "0" * 64, "does not match"),
        ("sha256=", "does not match"),
    ],
)
def test_github_bad_signatures_are_refused(header: str, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify_github(GITHUB_SECRET, header, b"Hello, World!")


def test_github_tampered_body_is_refused() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify_github(
            GITHUB_SECRET,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            b"Hello, World?",
        )


# Generic ---------------------------------------------------------------------------------------

GENERIC_SECRET = "s3cret-generic"
GENERIC_BODY = b'{"type": "order.created", "id": 7}'


def check_generic(headers: dict[str, str], body: bytes = GENERIC_BODY) -> None:
    verify_generic(GENERIC_SECRET, headers, body, now=NOW, tolerance=300)


def test_generic_without_a_timestamp_signs_the_body() -> None:
    check_generic({"X-Signature-256": "sha256=" + hmac_hex(GENERIC_SECRET, GENERIC_BODY)})


def test_generic_headers_are_case_insensitive() -> None:
    check_generic({"x-signature-256": "sha256=" + hmac_hex(GENERIC_SECRET, GENERIC_BODY)})


def test_generic_with_a_timestamp_signs_timestamp_dot_body() -> None:
    signature = hmac_hex(GENERIC_SECRET, f"{T}.".encode() + GENERIC_BODY)
    check_generic({"X-Signature-256": f"sha256={signature}", "X-Timestamp": str(T)})
    # The body-only signature is not valid once a timestamp is sent (it is not what was signed).
    body_only = hmac_hex(GENERIC_SECRET, GENERIC_BODY)
    with pytest.raises(SignatureError, match="does not match"):
        check_generic({"X-Signature-256": f"sha256={body_only}", "X-Timestamp": str(T)})


def test_generic_cannot_drop_the_timestamp_of_a_captured_request() -> None:
    signature = hmac_hex(GENERIC_SECRET, f"{T}.".encode() + GENERIC_BODY)
    with pytest.raises(SignatureError, match="does not match"):
        check_generic({"X-Signature-256": f"sha256={signature}"})


@pytest.mark.parametrize("offset", [-301, 301])
def test_generic_timestamp_outside_the_tolerance_is_refused(offset: int) -> None:
    signed_at = T + offset
    signature = hmac_hex(GENERIC_SECRET, f"{signed_at}.".encode() + GENERIC_BODY)
    with pytest.raises(SignatureError, match="timestamp outside the tolerance"):
        check_generic({"X-Signature-256": f"sha256={signature}", "X-Timestamp": str(signed_at)})


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing X-Signature-256"),
        ({"X-Signature-256": "sha256=" + "a" * 64}, "does not match"),
        ({"X-Signature-256": "sha256=" + "a" * 64, "X-Timestamp": "soon"}, "Unix time"),
        ({"X-Signature-256": "sha256=" + "a" * 64, "X-Timestamp": "1.5"}, "Unix time"),
    ],
)
def test_generic_bad_signatures_are_refused(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        check_generic(headers)


# verify() dispatch ------------------------------------------------------------------------------


def source(kind: Any, secret: str, tolerance: int = 300) -> WebhookSource:
    return WebhookSource(kind=kind, secret=SecretStr(secret), tolerance_seconds=tolerance)


def test_verify_dispatches_on_the_kind_with_case_insensitive_headers() -> None:
    verify(
        source("stripe", STRIPE_SECRET),
        {"stripe-signature": f"t={T},v1={STRIPE_VECTOR}"},
        STRIPE_BODY,
        now=NOW,
    )
    verify(
        source("github", GITHUB_SECRET),
        {
            "X-HUB-SIGNATURE-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        },
        b"Hello, World!",
        now=NOW,
    )
    verify(
        source("generic", GENERIC_SECRET),
        {"X-Signature-256": "sha256=" + hmac_hex(GENERIC_SECRET, GENERIC_BODY)},
        GENERIC_BODY,
        now=NOW,
    )


def test_verify_uses_the_source_tolerance() -> None:
    signed_at = T - 600
    header = f"t={signed_at},v1={stripe_signature(STRIPE_SECRET, signed_at, STRIPE_BODY)}"
    verify(source("stripe", STRIPE_SECRET, 900), {"Stripe-Signature": header}, STRIPE_BODY, now=NOW)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(
            source("stripe", STRIPE_SECRET, 300), {"Stripe-Signature": header}, STRIPE_BODY, now=NOW
        )


def test_verify_does_not_accept_another_kinds_header() -> None:
    github_header = "sha256=" + hmac_hex(STRIPE_SECRET, STRIPE_BODY)
    with pytest.raises(SignatureError, match="missing Stripe-Signature"):
        verify(
            source("stripe", STRIPE_SECRET),
            {"X-Hub-Signature-256": github_header},
            STRIPE_BODY,
            now=NOW,
        )


def test_verify_refuses_everything_for_a_source_without_a_secret() -> None:
    # With an empty key anyone could compute the "signature".
    header = "sha256=" + hmac_hex("", b"{}")
    with pytest.raises(SignatureError, match="no secret"):
        verify(source("github", ""), {"X-Hub-Signature-256": header}, b"{}", now=NOW)


# Parsing ---------------------------------------------------------------------------------------


def test_stripe_delivery_id_and_type_come_from_the_event() -> None:
    delivery = parse_delivery("stripe", "stripe", {}, STRIPE_BODY)
    assert delivery == WebhookDelivery(
        source="stripe",
        kind="stripe",
        delivery_id="evt_1NG8Du2eZvKYlo2CUI79vXWy",
        event_type="invoice.paid",
        payload=json.loads(STRIPE_BODY),
        replay_key="evt_1NG8Du2eZvKYlo2CUI79vXWy",  # the id is inside the signed body
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"type": "invoice.paid"}', "missing the event's id"),
        (b'{"id": 5, "type": "invoice.paid"}', "missing the event's id"),
        (b'{"id": "evt 1", "type": "invoice.paid"}', "visible ASCII"),
        (b'{"id": "' + b"e" * 201 + b'", "type": "x"}', "visible ASCII"),
        (b'{"id": "evt_1"}', "missing the event's type"),
        (b'{"id": "evt_1", "type": "a\\nb"}', "printable"),
    ],
)
def test_stripe_event_without_a_usable_id_or_type_is_a_payload_error(
    body: bytes, reason: str
) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse_delivery("stripe", "stripe", {}, body)


GITHUB_HEADERS = {
    "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    "X-GitHub-Event": "push",
}


def test_github_delivery_id_and_type_come_from_the_headers() -> None:
    delivery = parse_delivery(
        "gh", "github", {k.lower(): v for k, v in GITHUB_HEADERS.items()}, b'{"ref": "main"}'
    )
    assert (delivery.delivery_id, delivery.event_type) == (
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "push",
    )
    assert delivery.payload == {"ref": "main"}
    assert (delivery.source, delivery.kind) == ("gh", "github")


def test_github_ping_is_a_delivery() -> None:
    headers = {**GITHUB_HEADERS, "X-GitHub-Event": "ping"}
    delivery = parse_delivery("gh", "github", headers, b'{"zen": "Keep it logically awesome."}')
    assert delivery.event_type == "ping"


def test_github_form_encoded_payload_is_read_from_its_payload_field() -> None:
    payload = {"action": "published", "release": {"tag_name": "v1.2 — ünïcode & more"}}
    body = urlencode({"payload": json.dumps(payload)}).encode()
    headers = {**GITHUB_HEADERS, "Content-Type": "application/x-www-form-urlencoded"}
    delivery = parse_delivery("gh", "github", headers, body)
    assert delivery.payload == payload


@pytest.mark.parametrize(
    "body",
    [
        b"payload=%7B%7D&payload=%7B%7D",  # two payloads
        b"other=%7B%7D",  # none
        b"payload=%ff",  # not UTF-8 once decoded
        b"payload=%5B1%5D",  # a list, not an object
        b"payload=%7Bnot json",
    ],
)
def test_bad_form_encoded_github_bodies_are_payload_errors(body: bytes) -> None:
    headers = {**GITHUB_HEADERS, "content-type": "application/x-www-form-urlencoded; charset=utf-8"}
    with pytest.raises(PayloadError):
        parse_delivery("gh", "github", headers, body)


def test_github_without_delivery_headers_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="X-GitHub-Delivery"):
        parse_delivery("gh", "github", {"X-GitHub-Event": "push"}, b"{}")
    with pytest.raises(PayloadError, match="X-GitHub-Event"):
        parse_delivery("gh", "github", {"X-GitHub-Delivery": "d-1"}, b"{}")


def test_generic_id_and_type_from_headers() -> None:
    delivery = parse_delivery(
        "shop",
        "generic",
        {"x-webhook-id": "msg_1", "X-Webhook-Event": "order.paid"},
        GENERIC_BODY,
    )
    assert (delivery.delivery_id, delivery.event_type) == ("msg_1", "order.paid")


def test_generic_webhook_id_header_is_accepted_too() -> None:
    delivery = parse_delivery("shop", "generic", {"Webhook-Id": "msg_2"}, GENERIC_BODY)
    assert delivery.delivery_id == "msg_2"
    assert delivery.event_type == "order.created"  # from the payload's type


def test_generic_without_an_id_uses_the_body_hash_and_a_default_type() -> None:
    body = b'{"hello": "world", "type": 3}'
    delivery = parse_delivery("shop", "generic", {}, body)
    assert delivery.delivery_id == hashlib.sha256(body).hexdigest()
    assert delivery.event_type == "event"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[1, 2]", "JSON object, not list"),
        (b'"text"', "JSON object, not str"),
        (b"\xff{}", "not UTF-8"),
        (b'{"n": NaN}', "NaN"),
        (b'{"n": -Infinity}', "-Infinity"),
        (b'{"n": 1e999}', "too large"),
        (b'{"n": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b'{"s": "\\ud800"}', "surrogate"),
        (b'{"\\udfff": 1}', "surrogate"),
        (b'{"a": ' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), "nested deeper"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper|not valid JSON"),
    ],
)
def test_bodies_the_log_could_not_hold_are_payload_errors(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse_delivery("shop", "generic", {}, body)


def test_payload_nested_up_to_the_limit_is_accepted() -> None:
    body = b'{"a": ' * (MAX_DEPTH - 1) + b"1" + b"}" * (MAX_DEPTH - 1)
    assert parse_delivery("shop", "generic", {}, body).payload["a"]


def test_body_over_one_mebibyte_is_a_payload_error() -> None:
    body = b'{"pad": "' + b"x" * (MAX_BODY - 11) + b'"}'
    assert len(body) == MAX_BODY
    parse_delivery("shop", "generic", {}, body)
    with pytest.raises(PayloadError, match="larger than"):
        parse_delivery("shop", "generic", {}, body[:-2] + b'x"}')


def test_generic_id_header_must_be_visible_ascii() -> None:
    with pytest.raises(PayloadError, match="X-Webhook-Id"):
        parse_delivery("shop", "generic", {"X-Webhook-Id": "a b"}, b"{}")


def test_the_helper_signs_its_timestamp() -> None:
    # Guards the tolerance tests against a helper that ignores its timestamp.
    assert NOW.timestamp() == T
    assert stripe_signature(STRIPE_SECRET, T, STRIPE_BODY) != stripe_signature(
        STRIPE_SECRET, T + 1, STRIPE_BODY
    )
