"""OpenAI-compatible chat completions over httpx: hosted APIs, Ollama, vLLM, llama.cpp server.

One ``POST {base_url}/chat/completions`` per request. Failures are translated at this boundary
into the provider errors of :mod:`agents.errors` (always ``raise X(...) from exc``):

- a timeout (connect, read, write or pool)          -> ``ProviderTimeoutError``     (transient)
- a refused connection or another transport failure -> ``ProviderUnavailableError`` (transient)
- HTTP 429 or 5xx (``retry_after`` from Retry-After) -> ``ProviderUnavailableError`` (transient)
- HTTP 3xx or another 4xx                           -> ``ProviderRequestError``     (permanent)
- a body that is not JSON or has no text content    -> ``ProviderResponseError``    (permanent)

The API key is sent as a Bearer token (only when one is configured) and is redacted from every
error message.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from agents.errors import (
    ProviderRequestError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from agents.providers.base import ModelProvider, ModelRequest, ModelResponse, Usage

SNIPPET = 300  # characters of a response body quoted in an error message


class OpenAIChatProvider(ModelProvider):
    """Calls an OpenAI-compatible ``/chat/completions`` endpoint through one ``httpx.Client``."""

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "opcore", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._api_key = api_key
        self._model = model
        self._client = httpx.Client(
            # the trailing slash makes the relative "chat/completions" land under /v1/
            base_url=base_url.rstrip("/") + "/",
            timeout=timeout,
            headers=headers,
            transport=transport,
        )

    @property
    def model(self) -> str:
        return self._model

    def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        try:
            response = self._client.post("chat/completions", json=self._body(request))
        except httpx.TimeoutException as exc:
            raise ProviderTimeoutError(
                self._clean(
                    f"the model at {self._where()} did not answer within the timeout "
                    f"({type(exc).__name__})"
                )
            ) from exc
        except httpx.DecodingError as exc:
            raise ProviderResponseError(
                self._clean(f"the model's answer from {self._where()} cannot be decoded: {exc}")
            ) from exc
        except httpx.HTTPError as exc:
            raise ProviderUnavailableError(
                self._clean(f"cannot reach the model at {self._where()}: {exc}")
            ) from exc
        latency = time.perf_counter() - started
        self._check_status(response)
        return self._parse(response, latency)

    def close(self) -> None:
        self._client.close()

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model or self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
        }
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": dict(request.json_schema),
                    "strict": False,
                },
            }
        return body

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 300:
            return
        where = f"HTTP {status} from the model at {self._where()}"
        snippet = _snippet(response.text)
        if status == 429 or status >= 500:
            retry_after = _retry_after(response)
            wait = "" if retry_after is None else f" (retry after {retry_after:g}s)"
            error = ProviderUnavailableError(self._clean(f"{where}{wait}: {snippet}"))
            error.retry_after = retry_after
            raise error
        if status < 400:
            location = response.headers.get("location", "?")
            raise ProviderRequestError(
                self._clean(f"{where}: redirected to {location}; check the base URL")
            )
        raise ProviderRequestError(self._clean(f"{where}: {snippet}"))

    def _parse(self, response: httpx.Response, latency: float) -> ModelResponse:
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProviderResponseError(
                self._clean(f"the model's answer is not JSON: {_snippet(response.text)!r}")
            ) from exc
        if not isinstance(payload, dict):
            raise ProviderResponseError(
                self._clean(f"the model's answer is not a JSON object: {_snippet(response.text)}")
            )
        try:
            message = payload["choices"][0]["message"]
            content = message["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ProviderResponseError(
                self._clean(
                    "the model's answer has no choices[0].message.content: "
                    f"{_snippet(response.text)}"
                )
            ) from exc
        if not isinstance(content, str):
            refusal = message.get("refusal") if isinstance(message, dict) else None
            detail = f"; refusal: {_snippet(str(refusal))}" if refusal else ""
            raise ProviderResponseError(
                self._clean(
                    f"the model's message content is {_json_type(content)}, not text{detail}"
                )
            )
        usage = payload.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        model = payload.get("model")
        return ModelResponse(
            text=content,
            model=model if isinstance(model, str) and model else self._model,
            provider=self.name,
            usage=Usage(
                prompt_tokens=_count(usage.get("prompt_tokens")),
                completion_tokens=_count(usage.get("completion_tokens")),
            ),
            latency_s=latency,
        )

    def _where(self) -> str:
        return str(self._client.base_url)

    def _clean(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET else flat[:SNIPPET] + "…"


def _json_type(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(value, 0)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)
