"""Outgoing webhooks: one write action, ``post``, that sends a signed JSON event to a target.

Targets are configured by name (``{name: (url, secret)}``); an action names a target and never
carries a URL, so a model cannot send data anywhere the operator did not set up. The body is
``{"id", "event", "created", "data"}``; ``id`` (also sent as ``Idempotency-Key``) depends only
on the action's idempotency key, so every attempt of one action carries the same id. Each
request is signed like Stripe's: ``X-Opcore-Signature: t=<unix>,v1=<hex>`` with
``hex = HMAC-SHA256(secret, f"{t}.{body}")``.

What a failure means:

- nothing was sent (connect refused or timed out): :class:`TransientConnectorError`;
- the receiver answered 408, 425, 429 or 5xx: :class:`TransientConnectorError`; a 5xx may
  come after the receiver acted, so a receiver **must** drop a repeated ``Idempotency-Key``;
- the request went out and no answer came (read timeout, connection lost):
  :class:`OutcomeUnknownError`, never retried blindly;
- any other 4xx, a redirect, or a broken TLS certificate: :class:`PermanentConnectorError`.

A webhook cannot be recalled: ``post`` has no compensation, and no lookup (the receiver is
not asked).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

from connectors.base import ActionResult, ActionSpec, Connector
from connectors.errors import (
    InvalidParamsError,
    OutcomeUnknownError,
    PermanentConnectorError,
    TransientConnectorError,
)

MAX_PAYLOAD = 64 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RETRYABLE = frozenset({408, 425, 429})


def _serialize(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _check_payload(payload: dict[str, JsonValue]) -> dict[str, JsonValue]:
    try:
        size = len(_serialize(payload))
    except ValueError as exc:  # NaN or infinity: not JSON
        raise ValueError(f"the payload is not JSON: {exc}") from exc
    if size > MAX_PAYLOAD:
        raise ValueError(f"the payload is {size} bytes as JSON; at most {MAX_PAYLOAD} are sent")
    return payload


class PostWebhook(BaseModel):
    """Parameters of ``post``: a configured target's name, an event name, a JSON object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: Annotated[str, Field(pattern=rf"^{_NAME.pattern}$")]
    event: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")]
    payload: Annotated[dict[str, JsonValue], AfterValidator(_check_payload)]


def delivery_id(idempotency_key: str) -> str:
    """The ``id`` (and ``Idempotency-Key``) every attempt of one action carries."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def signature(secret: str, body: bytes, *, timestamp: int) -> str:
    """The ``X-Opcore-Signature`` header value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):  # the chain is short: httpx -> httpcore -> ssl
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _check_target(name: str, url: str, secret: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"webhook target name {name!r}: 1-64 letters, digits, '_', '.', '-'")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValueError(
            f"webhook target {name!r}: plain http:// is only allowed to loopback; use https://"
        )
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError(f"webhook target {name!r}: expected an https:// URL, got {url!r}")
    if parts.username is not None or parts.fragment:
        raise ValueError(f"webhook target {name!r}: no credentials or fragment in the URL")
    if not secret:
        raise ValueError(f"webhook target {name!r}: the signing secret may not be empty")


class OutgoingWebhookConnector(Connector):
    """Posts signed JSON events to the operator's configured webhook targets."""

    name: ClassVar[str] = "webhook"
    actions: ClassVar[Mapping[str, ActionSpec]] = MappingProxyType(
        {
            "post": ActionSpec(
                name="post",
                mode="write",
                description=(
                    "Send a signed JSON event to a configured webhook target (by name). "
                    "Cannot be undone: no compensation. Receivers must drop a repeated "
                    "Idempotency-Key (a retry after a 5xx may repeat a delivery)."
                ),
                params=PostWebhook,
                sensitive=("target", "payload"),
            )
        }
    )

    def __init__(self, targets: Mapping[str, tuple[str, str]], *, timeout: float = 10.0) -> None:
        for target, (url, secret) in targets.items():
            _check_target(target, url, secret)  # fail at start-up, not at the first post
        if timeout <= 0:
            raise ValueError("the webhook timeout must be positive")
        self.targets: Mapping[str, tuple[str, str]] = MappingProxyType(dict(targets))
        self.timeout = timeout

    def validate(self, action: str, params: Mapping[str, Any]) -> BaseModel:
        validated = super().validate(action, params)
        if isinstance(validated, PostWebhook) and validated.target not in self.targets:
            raise InvalidParamsError(
                f"webhook.post: no target {validated.target!r}; configured: "
                f"{', '.join(sorted(self.targets)) or 'none'}"
            )
        return validated

    def execute(
        self, action: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> ActionResult:
        validated = self.validate(action, params)
        if not isinstance(validated, PostWebhook):
            raise TypeError(f"{action!r} is not validated by PostWebhook")
        if not idempotency_key:
            raise InvalidParamsError("webhook.post: the idempotency key may not be empty")
        url, secret = self.targets[validated.target]
        now = time.time()
        ident = delivery_id(idempotency_key)
        body = _serialize(
            {
                "id": ident,
                "event": validated.event,
                "created": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "data": validated.payload,
            }
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "opcore-webhook/1",
            "Idempotency-Key": ident,
            "X-Opcore-Event": validated.event,
            "X-Opcore-Signature": signature(secret, body, timestamp=int(now)),
        }
        where = f"webhook {validated.target!r}"
        response = self._send(url, body, headers, where=where)
        status = response.status_code
        if 200 <= status < 300:
            return ActionResult(
                summary=f"Posted {validated.event} to {validated.target} (HTTP {status})",
                details={
                    "target": validated.target,
                    "event": validated.event,
                    "id": ident,
                    "status": status,
                },
            )
        reply = f"{where} answered HTTP {status}: {response.text[:200]!r}"
        if status in _RETRYABLE or status >= 500:
            after = response.headers.get("Retry-After")
            raise TransientConnectorError(
                f"{reply}{f' (Retry-After: {after})' if after else ''}; a retry sends the same "
                f"Idempotency-Key {ident}, which the receiver must drop if it already acted"
            )
        if 300 <= status < 400:
            raise PermanentConnectorError(
                f"{reply}; redirects are not followed: configure the final URL"
            )
        raise PermanentConnectorError(reply)

    def _send(
        self, url: str, body: bytes, headers: dict[str, str], *, where: str
    ) -> httpx.Response:
        try:
            with httpx.Client(
                timeout=self.timeout, trust_env=False, follow_redirects=False
            ) as client:
                return client.post(url, content=body, headers=headers)
        except (
            httpx.ConnectTimeout,
            httpx.PoolTimeout,
            httpx.ConnectError,
            httpx.ProxyError,
        ) as exc:
            if _caused_by(exc, ssl.SSLCertVerificationError):
                raise PermanentConnectorError(f"{where}: TLS certificate refused: {exc}") from exc
            raise TransientConnectorError(
                f"cannot reach {where}; nothing was sent ({exc!r})"
            ) from exc
        except (
            httpx.ReadTimeout,
            httpx.WriteTimeout,
            httpx.ReadError,
            httpx.WriteError,
            httpx.RemoteProtocolError,
            httpx.DecodingError,
        ) as exc:
            raise OutcomeUnknownError(
                f"{where}: the request went out but no answer came ({exc!r}); the receiver may "
                "have acted"
            ) from exc
        except httpx.HTTPError as exc:  # unsupported protocol, a request httpx cannot send
            raise PermanentConnectorError(f"{where}: {exc!r}") from exc
