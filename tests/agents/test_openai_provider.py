"""The OpenAI-compatible provider against a real local server speaking the wire format."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from agents.errors import (
    ProviderError,
    ProviderRequestError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from agents.providers.base import ChatMessage, ModelRequest
from agents.providers.openai import OpenAIChatProvider
from tests.fakes.openai_server import FakeOpenAI

KEY = "sk-test-secret-123"
REQUEST = ModelRequest(
    task="t", messages=(ChatMessage("system", "be brief"), ChatMessage("user", "hi"))
)


def provider(
    server: FakeOpenAI, *, key: str = KEY, timeout: float = 5.0, base_url: str | None = None
) -> OpenAIChatProvider:
    return OpenAIChatProvider(
        base_url=base_url or server.base_url, api_key=key, model="gpt-test", timeout=timeout
    )


def completion(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- success ------------------------------------------------------------------------------


def test_a_completion_returns_text_model_and_usage(openai_server: FakeOpenAI) -> None:
    openai_server.reply("Hello Jane")
    p = provider(openai_server)
    answer = p.complete(REQUEST)
    p.close()
    assert (answer.text, answer.model, answer.provider) == ("Hello Jane", "gpt-test", "openai")
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (12, 34)
    assert answer.latency_s > 0 and not answer.offline
    [sent] = openai_server.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "gpt-test"
    assert sent.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert sent.body["temperature"] == 0.2
    assert "max_tokens" not in sent.body and "response_format" not in sent.body
    assert sent.header("Authorization") == f"Bearer {KEY}"
    assert sent.header("User-Agent") == "opcore"


def test_max_tokens_and_temperature_are_sent_when_set(openai_server: FakeOpenAI) -> None:
    request = ModelRequest(task="t", messages=REQUEST.messages, temperature=0.7, max_tokens=99)
    provider(openai_server).complete(request)
    sent = openai_server.requests[0].body
    assert (sent["temperature"], sent["max_tokens"]) == (0.7, 99)


def test_a_schema_asks_for_structured_json_output(openai_server: FakeOpenAI) -> None:
    schema = {"type": "object", "properties": {"subject": {"type": "string"}}}
    draft = json.dumps({"subject": "x", "body": "y"})
    openai_server.reply(draft)
    request = ModelRequest(
        task="t", messages=REQUEST.messages, json_schema=schema, schema_name="draft"
    )
    answer = provider(openai_server).complete(request)
    assert json.loads(answer.text) == {"subject": "x", "body": "y"}
    assert openai_server.requests[0].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "draft", "schema": schema, "strict": False},
    }


def test_no_key_sends_no_authorization_header(openai_server: FakeOpenAI) -> None:
    provider(openai_server, key="").complete(REQUEST)
    assert openai_server.requests[0].header("Authorization") is None


def test_a_trailing_slash_in_the_base_url_is_harmless(openai_server: FakeOpenAI) -> None:
    provider(openai_server, base_url=openai_server.base_url + "/").complete(REQUEST)
    assert openai_server.requests[0].path == "/v1/chat/completions"


def test_missing_usage_counts_as_zero_tokens_and_the_configured_model_is_named(
    openai_server: FakeOpenAI,
) -> None:
    openai_server.raw(completion(choices=[{"message": {"content": "ok"}}]))
    answer = provider(openai_server).complete(REQUEST)
    assert (answer.text, answer.model) == ("ok", "gpt-test")
    assert answer.usage.total_tokens == 0


def test_the_answer_names_the_model_the_server_used(openai_server: FakeOpenAI) -> None:
    openai_server.raw(
        completion(model="gpt-test-2024", choices=[{"message": {"content": "ok"}}], usage={})
    )
    assert provider(openai_server).complete(REQUEST).model == "gpt-test-2024"


# -- transient failures -------------------------------------------------------------------


@pytest.mark.parametrize("code", [500, 502, 503])
def test_a_5xx_is_a_transient_unavailable_error(openai_server: FakeOpenAI, code: int) -> None:
    openai_server.status(code, body=b'{"error": {"message": "overloaded"}}')
    with pytest.raises(ProviderUnavailableError, match=f"HTTP {code}.*overloaded") as info:
        provider(openai_server).complete(REQUEST)
    assert info.value.transient and info.value.retry_after is None


def test_a_429_carries_the_retry_after(openai_server: FakeOpenAI) -> None:
    openai_server.status(429, headers={"Retry-After": "7"})
    with pytest.raises(ProviderUnavailableError, match=r"HTTP 429 .*retry after 7s") as info:
        provider(openai_server).complete(REQUEST)
    assert info.value.retry_after == 7.0 and info.value.transient


def test_a_retry_after_given_as_a_date_becomes_seconds(openai_server: FakeOpenAI) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    openai_server.status(503, headers={"Retry-After": format_datetime(when, usegmt=True)})
    with pytest.raises(ProviderUnavailableError) as info:
        provider(openai_server).complete(REQUEST)
    assert info.value.retry_after is not None and 25 <= info.value.retry_after <= 31


def test_a_slow_server_is_a_timeout(openai_server: FakeOpenAI) -> None:
    openai_server.delay(3.0)
    with pytest.raises(ProviderTimeoutError, match="did not answer within the timeout") as info:
        provider(openai_server, timeout=0.3).complete(REQUEST)
    assert info.value.transient
    assert isinstance(info.value.__cause__, httpx.TimeoutException)


def test_a_closed_port_is_unavailable() -> None:
    p = OpenAIChatProvider(
        base_url=f"http://127.0.0.1:{closed_port()}/v1", api_key=KEY, model="m", timeout=2
    )
    with pytest.raises(ProviderUnavailableError, match="cannot reach") as info:
        p.complete(REQUEST)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


# -- permanent failures -------------------------------------------------------------------


@pytest.mark.parametrize("code", [400, 401, 404, 422])
def test_another_4xx_is_a_permanent_request_error(openai_server: FakeOpenAI, code: int) -> None:
    openai_server.status(code, body=b'{"error": {"message": "bad model"}}')
    with pytest.raises(ProviderRequestError, match=f"HTTP {code}.*bad model") as info:
        provider(openai_server).complete(REQUEST)
    assert not info.value.transient


def test_a_redirect_is_a_request_error_about_the_base_url(openai_server: FakeOpenAI) -> None:
    openai_server.status(301, body=b"", headers={"Location": "https://elsewhere.example/v1"})
    with pytest.raises(ProviderRequestError, match=r"elsewhere\.example.*base URL"):
        provider(openai_server).complete(REQUEST)


def test_malformed_json_is_a_response_error(openai_server: FakeOpenAI) -> None:
    openai_server.raw(b'{"choices": [')
    with pytest.raises(ProviderResponseError, match="not JSON") as info:
        provider(openai_server).complete(REQUEST)
    assert not info.value.transient


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"choices": []}',
        b'{"choices": [{}]}',
        b'{"choices": [{"message": {}}]}',
        b'{"choices": [{"message": "text"}]}',
        b"[1, 2]",
    ],
)
def test_an_answer_without_choices_or_content_is_a_response_error(
    openai_server: FakeOpenAI, body: bytes
) -> None:
    openai_server.raw(body)
    with pytest.raises(ProviderResponseError):
        provider(openai_server).complete(REQUEST)


def test_null_content_is_a_response_error_that_quotes_a_refusal(
    openai_server: FakeOpenAI,
) -> None:
    openai_server.raw(
        completion(choices=[{"message": {"content": None, "refusal": "I cannot help"}}])
    )
    with pytest.raises(ProviderResponseError, match="null, not text; refusal: I cannot help"):
        provider(openai_server).complete(REQUEST)


# -- secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        lambda s: s.status(401, body=json.dumps({"error": f"invalid key {KEY}"})),
        lambda s: s.status(500, body=f"upstream rejected {KEY}"),
        lambda s: s.raw(f"<html>{KEY}</html>".encode()),
        lambda s: s.raw(completion(choices=[{"message": {"content": None, "refusal": KEY}}])),
    ],
    ids=["401", "500", "not-json", "refusal"],
)
def test_the_api_key_never_appears_in_an_error(
    openai_server: FakeOpenAI, script: Callable[[FakeOpenAI], None]
) -> None:
    script(openai_server)
    with pytest.raises(ProviderError) as info:
        provider(openai_server).complete(REQUEST)
    assert KEY not in str(info.value) and "***" in str(info.value)


def test_the_api_key_never_appears_in_a_transport_error() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError(f"connection reset while sending {request.headers['Authorization']}")

    p = OpenAIChatProvider(
        base_url="http://127.0.0.1:9/v1",
        api_key=KEY,
        model="m",
        timeout=1,
        transport=httpx.MockTransport(fail),
    )
    with pytest.raises(ProviderUnavailableError) as info:
        p.complete(REQUEST)
    assert KEY not in str(info.value)
