"""Inbound webhooks: signature verification and parsing of one delivery. Pure: no I/O.

The HTTP side lives in :mod:`bot.webhook_server`; this module only decides whether a request
is authentic (:func:`verify`) and what it says (:func:`parse_delivery`).

Schemes, one per :class:`config.settings.WebhookSource` ``kind``:

``stripe``
    Stripe's documented scheme. ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>][,v0=…]``;
    the signed payload is ``<t>.<body>``, HMAC-SHA256 keyed with the endpoint secret as
    given (the whole ``whsec_…`` string). Any ``v1`` may match (Stripe sends one per active
    secret while a secret is being rolled); other schemes are ignored. The timestamp must be
    within the source's tolerance of now, in either direction. Delivery id: the event's
    ``id`` (``evt_…``), type: its ``type``.
``github``
    ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``. Delivery id:
    ``X-GitHub-Delivery``, type: ``X-GitHub-Event`` (a ``ping`` is a delivery like any other).
    The body may be JSON or ``application/x-www-form-urlencoded`` with a ``payload`` field.
    GitHub signs no timestamp: a captured delivery stays valid (the delivery id dedupes an
    exact replay).
``generic``
    Our scheme for everything else. ``X-Signature-256: sha256=<hex>``, the HMAC-SHA256 of
    the body with the shared secret; when the sender adds ``X-Timestamp: <unix seconds>``
    the signed payload is ``<timestamp>.<body>`` instead and the tolerance applies. Senders
    SHOULD send the timestamp: without it a captured request can be replayed forever.
    Delivery id: ``X-Webhook-Id`` (or ``Webhook-Id``), else the SHA-256 of the body (so two
    identical bodies without an id are one delivery); type: ``X-Webhook-Event``, else the
    payload's ``type``, else ``"event"``.

Every comparison of signatures is constant-time (:func:`hmac.compare_digest`). The body must
be a UTF-8 JSON object of at most :data:`MAX_BODY` bytes, nested at most :data:`MAX_DEPTH`
deep, with finite numbers only: anything else could be appended to the log and never read
back, so it is refused here.

Errors (all raised by this module; none wraps a third-party error)::

    ConnectorError (connectors.errors)
    └── WebhookError       root: an inbound delivery is refused
        ├── SignatureError the request is not authentic: a missing or malformed signature
        │                  header, no matching signature, or a timestamp outside the
        │                  tolerance (HTTP 401; never says what the right signature is)
        └── PayloadError   the request is authentic but unusable: too big, not a JSON
                           object, no delivery id (HTTP 400)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qs

from config.settings import WebhookSource
from connectors.errors import ConnectorError

WebhookKind = Literal["stripe", "github", "generic"]

MAX_BODY = 1024 * 1024  # bytes
MAX_DEPTH = 64  # nesting of the payload (the log's JSON reader refuses deeper documents)
MAX_ID = 200  # characters of a delivery id or event type (the idempotency key holds 255)

STRIPE_HEADER = "Stripe-Signature"
GITHUB_HEADER = "X-Hub-Signature-256"
GENERIC_HEADER = "X-Signature-256"
GENERIC_TIMESTAMP = "X-Timestamp"
FORM_TYPE = "application/x-www-form-urlencoded"

_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_DELIVERY_ID = re.compile(r"[\x21-\x7e]{1,200}")  # visible ASCII, no spaces


class WebhookError(ConnectorError):
    """Root of the inbound webhook errors (see the module docstring for the tree)."""


class SignatureError(WebhookError):
    """The request is not authentic (HTTP 401)."""


class PayloadError(WebhookError):
    """The request is authentic but its content is unusable (HTTP 400)."""


@dataclass(frozen=True)
class WebhookDelivery:
    """One verified delivery, as the rest of opcore sees it. ``payload`` is untrusted data."""

    source: str  # the configured source's name
    kind: WebhookKind
    delivery_id: str
    event_type: str
    payload: dict[str, Any]
    # What a replay cannot change: the delivery id where the signature covers it (Stripe's is
    # in the body), else a digest of what was signed. GitHub signs only the body and the
    # generic scheme the body and its timestamp, so a captured request sent again under a
    # fresh X-GitHub-Delivery or X-Webhook-Id must still count as the same delivery.
    replay_key: str = ""


# Signatures ----------------------------------------------------------------------------------


def sign(secret: str, message: bytes) -> str:
    """Hex HMAC-SHA256 of ``message`` keyed with ``secret`` (UTF-8): what every scheme sends."""
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify_stripe(secret: str, header: str, body: bytes, *, now: datetime, tolerance: int) -> None:
    """Check a ``Stripe-Signature`` header against ``body``; :class:`SignatureError` if not."""
    if not header.strip():
        raise SignatureError("missing Stripe-Signature header")
    timestamp: str | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if timestamp is not None:
                raise SignatureError("more than one timestamp in the Stripe-Signature header")
            timestamp = value
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not _UNIX_SECONDS.fullmatch(timestamp):
        raise SignatureError("no timestamp in the Stripe-Signature header")
    if not candidates:
        raise SignatureError("no v1 signature in the Stripe-Signature header")
    expected = sign(secret, timestamp.encode("ascii") + b"." + body)
    if not any(_hex_equal(expected, candidate) for candidate in candidates):
        raise SignatureError("no signature matches the payload")
    _check_tolerance(timestamp, now=now, tolerance=tolerance)


def verify_github(secret: str, header: str, body: bytes) -> None:
    """Check an ``X-Hub-Signature-256`` header against ``body``."""
    _check_sha256_header(GITHUB_HEADER, header, sign(secret, body))


def verify_generic(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: datetime, tolerance: int
) -> None:
    """Check our generic scheme: ``X-Signature-256`` over the body, or over
    ``<X-Timestamp>.<body>`` when the timestamp header is present (then within tolerance)."""
    lowered = _lower(headers)
    timestamp = lowered.get(GENERIC_TIMESTAMP.lower())
    if timestamp is None:
        _check_sha256_header(
            GENERIC_HEADER, lowered.get(GENERIC_HEADER.lower(), ""), sign(secret, body)
        )
        return
    if not _UNIX_SECONDS.fullmatch(timestamp):
        raise SignatureError(f"{GENERIC_TIMESTAMP} must be a Unix time in seconds")
    expected = sign(secret, timestamp.encode("ascii") + b"." + body)
    _check_sha256_header(GENERIC_HEADER, lowered.get(GENERIC_HEADER.lower(), ""), expected)
    _check_tolerance(timestamp, now=now, tolerance=tolerance)


def verify(
    source: WebhookSource, headers: Mapping[str, str], body: bytes, *, now: datetime
) -> None:
    """Check a request against its source's scheme; :class:`SignatureError` if it is not
    authentic. ``headers`` are matched case-insensitively; ``now`` must be timezone-aware."""
    secret = source.secret.get_secret_value()
    if not secret:
        raise SignatureError("the source has no secret configured")
    lowered = _lower(headers)
    tolerance = source.tolerance_seconds
    if source.kind == "stripe":
        header = lowered.get(STRIPE_HEADER.lower(), "")
        verify_stripe(secret, header, body, now=now, tolerance=tolerance)
    elif source.kind == "github":
        verify_github(secret, lowered.get(GITHUB_HEADER.lower(), ""), body)
    else:
        verify_generic(secret, lowered, body, now=now, tolerance=tolerance)


def _check_sha256_header(name: str, header: str, expected: str) -> None:
    if not header:
        raise SignatureError(f"missing {name} header")
    scheme, sep, candidate = header.strip().partition("=")
    if not sep or scheme != "sha256":
        raise SignatureError(f"{name} must look like sha256=<hex>")
    if not _hex_equal(expected, candidate):
        raise SignatureError("the signature does not match the payload")


def _hex_equal(expected: str, candidate: str) -> bool:
    """Constant-time comparison of a computed hex digest with one a sender gave. The shape
    check first keeps non-ASCII text away from :func:`hmac.compare_digest` (which refuses
    it); it says nothing about the secret."""
    if not _HEX_SHA256.fullmatch(candidate):
        return False
    return hmac.compare_digest(expected, candidate.lower())


def _check_tolerance(timestamp: str, *, now: datetime, tolerance: int) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if tolerance < 1:
        raise ValueError("tolerance must be at least one second")
    if abs(now.timestamp() - int(timestamp)) > tolerance:
        raise SignatureError("timestamp outside the tolerance")


# Parsing -------------------------------------------------------------------------------------


def parse_delivery(
    source: str, kind: WebhookKind, headers: Mapping[str, str], body: bytes
) -> WebhookDelivery:
    """What a (verified) request says; :class:`PayloadError` if it cannot be used."""
    lowered = _lower(headers)
    if len(body) > MAX_BODY:
        raise PayloadError(f"the body is larger than {MAX_BODY} bytes")
    form = kind == "github" and _media_type(lowered.get("content-type", "")) == FORM_TYPE
    payload = _json_object(_form_payload(body) if form else _utf8(body))
    if kind == "stripe":
        delivery_id = _delivery_id(payload.get("id"), "the event's id")
        event_type = _event_type(payload.get("type"), "the event's type")
        replay_key = delivery_id
    elif kind == "github":
        delivery_id = _delivery_id(lowered.get("x-github-delivery"), "X-GitHub-Delivery")
        event_type = _event_type(lowered.get("x-github-event"), "X-GitHub-Event")
        replay_key = "sha256:" + hashlib.sha256(event_type.encode() + b"\n" + body).hexdigest()
    else:
        sent_id = lowered.get("x-webhook-id") or lowered.get("webhook-id")
        delivery_id = (
            _delivery_id(sent_id, "X-Webhook-Id") if sent_id else hashlib.sha256(body).hexdigest()
        )
        named = payload.get("type")
        sent_type = lowered.get("x-webhook-event") or (named if isinstance(named, str) else "")
        sent_type = sent_type or "event"
        event_type = _event_type(sent_type, "the event type")
        stamp = lowered.get(GENERIC_TIMESTAMP.lower(), "")
        signed = (stamp.encode("ascii", "replace") + b"." if stamp else b"") + body
        replay_key = "sha256:" + hashlib.sha256(signed).hexdigest()
    return WebhookDelivery(
        source=source,
        kind=kind,
        delivery_id=delivery_id,
        event_type=event_type,
        payload=payload,
        replay_key=replay_key,
    )


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("the body is not UTF-8") from exc


def _form_payload(body: bytes) -> str:
    try:
        fields = parse_qs(
            _utf8(body),
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=20,
        )
    except ValueError as exc:  # bad field syntax, bad percent-encoding, too many fields
        raise PayloadError("the form-encoded body cannot be read") from exc
    values = fields.get("payload", [])
    if len(values) != 1:
        raise PayloadError("the form-encoded body needs exactly one payload field")
    return values[0]


def _refuse_constant(name: str) -> Any:
    raise PayloadError(f"the body holds {name}, which JSON does not allow")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise PayloadError(f"the JSON is nested deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise PayloadError(f"the body is not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(value, dict):
        raise PayloadError(f"the body must be a JSON object, not {type(value).__name__}")
    _check_json(value, depth=1)
    return value


def _check_json(value: Any, *, depth: int) -> None:
    """Refuse what the log could store but not read back the same."""
    if isinstance(value, dict | list):
        if depth > MAX_DEPTH:
            raise PayloadError(f"the JSON is nested deeper than {MAX_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                _check_text(key)
            _check_json(item, depth=depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError("the body holds a number too large for a float")
    elif isinstance(value, str):
        _check_text(value)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (\ud800) from a JSON escape
        raise PayloadError("the body holds an unpaired UTF-16 surrogate") from exc


def _delivery_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise PayloadError(f"missing {what}")
    if not _DELIVERY_ID.fullmatch(value):
        raise PayloadError(f"{what} must be 1-{MAX_ID} visible ASCII characters")
    return value


def _event_type(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise PayloadError(f"missing {what}")
    if len(value) > MAX_ID or not value.isprintable():
        raise PayloadError(f"{what} must be printable text of at most {MAX_ID} characters")
    return value
