from __future__ import annotations

import json
import socket

import pytest

from agents.errors import (
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


def provider(server: FakeOpenAI, *, key: str = KEY, timeout: float = 5.0) -> OpenAIChatProvider:
    return OpenAIChatProvider(
        base_url=server.base_url, api_key=key, model="gpt-test", timeout=timeout
    )


def test_a_completion_returns_text_model_and_usage(openai_server: FakeOpenAI) -> None:
    openai_server.reply("Hello Jane")
    answer = provider(openai_server).complete(REQUEST)
    assert (answer.text, answer.model, answer.provider) == ("Hello Jane", "gpt-test", "openai")
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (12, 34)
    [sent] = openai_server.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "gpt-test"
    assert sent.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert "response_format" not in sent.body
    assert sent.headers["Authorization"] == f"Bearer {KEY}"


def test_a_schema_asks_for_structured_json_output(openai_server: FakeOpenAI) -> None:
    schema = {"type": "object", "properties": {"subject": {"type": "string"}}}
    openai_server.reply(json.dumps({"subject": "x"}))
    request = ModelRequest(
        task="t", messages=REQUEST.messages, json_schema=schema, schema_name="draft"
    )
    provider(openai_server).complete(request)
    fmt = openai_server.requests[0].body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "draft" and fmt["json_schema"]["schema"] == schema


def test_no_key_sends_no_authorization_header(openai_server: FakeOpenAI) -> None:
    provider(openai_server, key="").complete(REQUEST)
    assert "Authorization" not in openai_server.requests[0].headers


def test_a_500_is_a_transient_unavailable_error(openai_server: FakeOpenAI) -> None:
    openai_server.status(500)
    with pytest.raises(ProviderUnavailableError, match="HTTP 500") as info:
        provider(openai_server).complete(REQUEST)
    assert info.value.transient


def test_a_429_carries_the_retry_after(openai_server: FakeOpenAI) -> None:
    openai_server.status(429, headers={"Retry-After": "7"})
    with pytest.raises(ProviderUnavailableError) as info:
        provider(openai_server).complete(REQUEST)
    assert info.value.retry_after == 7.0


def test_a_400_is_a_permanent_request_error(openai_server: FakeOpenAI) -> None:
    openai_server.status(400, body=b'{"error": {"message": "bad model"}}')
    with pytest.raises(ProviderRequestError, match="bad model") as info:
        provider(openai_server).complete(REQUEST)
    assert not info.value.transient


def test_a_slow_server_is_a_timeout(openai_server: FakeOpenAI) -> None:
    openai_server.delay(1.0)
    with pytest.raises(ProviderTimeoutError):
        provider(openai_server, timeout=0.2).complete(REQUEST)


def test_malformed_json_is_a_response_error(openai_server: FakeOpenAI) -> None:
    openai_server.raw(b'{"choices": [')
    with pytest.raises(ProviderResponseError, match="not JSON"):
        provider(openai_server).complete(REQUEST)


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"choices": []}',
        b'{"choices": [{"message": {}}]}',
        b'{"choices": [{"message": {"content": null}}]}',
        b"[1, 2]",
    ],
)
def test_an_answer_without_content_is_a_response_error(
    openai_server: FakeOpenAI, body: bytes
) -> None:
    openai_server.raw(body)
    with pytest.raises(ProviderResponseError):
        provider(openai_server).complete(REQUEST)


def test_a_closed_port_is_unavailable() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    p = OpenAIChatProvider(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, model="m", timeout=2
    )
    with pytest.raises(ProviderUnavailableError, match="cannot reach"):
        p.complete(REQUEST)


def test_the_api_key_never_appears_in_an_error(openai_server: FakeOpenAI) -> None:
    openai_server.status(401, body=json.dumps({"error": f"invalid key {KEY}"}).encode())
    with pytest.raises(ProviderRequestError) as info:
        provider(openai_server).complete(REQUEST)
    assert KEY not in str(info.value)
