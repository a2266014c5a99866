from __future__ import annotations

import pytest

from agents.errors import ProviderRequestError, ProviderUnavailableError
from agents.providers.base import ChatMessage, ModelRequest
from agents.providers.openai import OpenAIChatProvider
from agents.providers.router import ModelRouter
from tests.fakes.openai_server import FakeOpenAI

ROUTES = {"draft": ["big-model", "small-model"], "classify": ["tiny-model"]}


def router(server: FakeOpenAI) -> ModelRouter:
    provider = OpenAIChatProvider(
        base_url=server.base_url, api_key="", model="default-model", timeout=5
    )
    return ModelRouter(provider, ROUTES)


def request(task_class: str) -> ModelRequest:
    return ModelRequest(task="t", messages=(ChatMessage("user", "hi"),), task_class=task_class)


def test_the_task_class_picks_the_model(openai_server: FakeOpenAI) -> None:
    r = router(openai_server)
    r.complete(request("classify"))
    r.complete(request("plan"))  # no route: the provider's own model
    assert [q.body["model"] for q in openai_server.requests] == ["tiny-model", "default-model"]
    assert r.model_for(request("draft")) == "big-model"


def test_a_transient_failure_falls_back_to_the_next_model(openai_server: FakeOpenAI) -> None:
    openai_server.status(503)
    answer = router(openai_server).complete(request("draft"))
    assert answer.model == "small-model"
    assert [q.body["model"] for q in openai_server.requests] == ["big-model", "small-model"]


def test_a_permanent_failure_does_not_fall_back(openai_server: FakeOpenAI) -> None:
    openai_server.status(400)
    with pytest.raises(ProviderRequestError):
        router(openai_server).complete(request("draft"))
    assert len(openai_server.requests) == 1


def test_when_every_model_fails_the_last_error_is_raised(openai_server: FakeOpenAI) -> None:
    openai_server.status(503)
    openai_server.status(429, headers={"Retry-After": "3"})
    with pytest.raises(ProviderUnavailableError) as info:
        router(openai_server).complete(request("draft"))
    assert info.value.retry_after == 3.0
