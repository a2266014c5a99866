"""OpenAI-compatible chat completions over httpx: hosted APIs, Ollama, vLLM, llama.cpp server.

One ``POST {base_url}/chat/completions`` per request. Failures are translated into the
provider errors of :mod:`agents.errors`, transient (timeouts, 429, 5xx, connection errors)
or permanent (other 4xx, answers that break the protocol). The API key is sent as a Bearer
token and never appears in an error message.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from agents.errors import (
    ProviderRequestError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from agents.providers.base import ModelProvider, ModelRequest, ModelResponse, Usage

SNIPPET = 300


class OpenAIChatProvider(ModelProvider):
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
            base_url=base_url.rstrip("/") + "/",
            timeout=timeout,
            headers=headers,
            transport=transport,
        )

    @property
    def model(self) -> str:
        return self._model

    def complete(self, request: ModelRequest) -> ModelResponse:
        body: dict[str, Any] = {
            "model": self._model,
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
        started = time.perf_counter()
        try:
            response = self._client.post("chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise ProviderTimeoutError(
                f"the model did not answer within the timeout ({self._where()})"
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailableError(
                f"cannot reach the model at {self._where()}: {self._clean(str(exc))}"
            ) from exc
        latency = time.perf_counter() - started
        self._check_status(response)
        return self._parse(response, latency)

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        snippet = self._clean(response.text[:SNIPPET])
        if status == 429 or status >= 500:
            error = ProviderUnavailableError(
                f"HTTP {status} from the model at {self._where()}: {snippet}"
            )
            error.retry_after = _retry_after(response)
            raise error
        raise ProviderRequestError(f"HTTP {status} from the model at {self._where()}: {snippet}")

    def _parse(self, response: httpx.Response, latency: float) -> ModelResponse:
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProviderResponseError(
                f"the model's answer is not JSON: {self._clean(response.text[:SNIPPET])!r}"
            ) from exc
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ProviderResponseError(
                f"the model's answer has no choices[0].message.content: {self._clean(str(payload)[:SNIPPET])}"
            ) from exc
        if not isinstance(content, str):
            raise ProviderResponseError(
                f"the model's message content is {type(content).__name__}, not text"
            )
        usage = payload.get("usage") if isinstance(payload, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        model = payload.get("model") if isinstance(payload.get("model"), str) else self._model
        return ModelResponse(
            text=content,
            model=model,
            provider=self.name,
            usage=Usage(
                prompt_tokens=_int(usage.get("prompt_tokens")),
                completion_tokens=_int(usage.get("completion_tokens")),
            ),
            latency_s=latency,
        )

    def _where(self) -> str:
        return str(self._client.base_url)

    def _clean(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def close(self) -> None:
        self._client.close()


def _int(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
