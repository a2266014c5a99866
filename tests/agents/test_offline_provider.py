"""The offline provider (deterministic templates) and the scripted provider used by tests."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

import pytest

from agents.errors import ProviderRequestError, ProviderUnavailableError
from agents.providers.base import ChatMessage, ModelRequest, ModelResponse, Usage
from agents.providers.offline import OfflineProvider, register_offline_task
from agents.providers.scripted import ScriptedProvider

MESSAGES = (ChatMessage("system", "s" * 40), ChatMessage("user", "u" * 40))


def greet(facts: Mapping[str, str]) -> str:
    return json.dumps({"subject": f"Hello {facts['name']}", "body": "Glad to help."})


def ask(task: str = "greet", **facts: str) -> ModelRequest:
    return ModelRequest(task=task, messages=MESSAGES, facts=facts)


# -- offline ------------------------------------------------------------------------------


def test_the_same_facts_always_give_the_same_answer() -> None:
    provider = OfflineProvider(tasks={"greet": greet})
    first, second = provider.complete(ask(name="Jane")), provider.complete(ask(name="Jane"))
    assert first.text == second.text == greet({"name": "Jane"})
    assert first.usage == second.usage
    assert provider.complete(ask(name="Ravi")).text != first.text


def test_an_offline_answer_says_it_is_offline_and_estimates_its_tokens() -> None:
    answer = OfflineProvider(tasks={"greet": greet}).complete(ask(name="Jane"))
    assert (answer.provider, answer.model, answer.offline) == ("offline", "offline-template", True)
    assert answer.usage == Usage(prompt_tokens=80 // 4, completion_tokens=len(answer.text) // 4)
    assert answer.latency_s >= 0
    assert OfflineProvider().model == "offline-template"


def test_a_registered_task_is_answered_by_the_default_provider() -> None:
    task = f"test-{uuid.uuid4().hex}"
    register_offline_task(task, lambda facts: f"fixed {facts.get('x', '-')}")
    assert OfflineProvider().complete(ask(task, x="1")).text == "fixed 1"


def test_an_unknown_task_is_a_request_error_naming_the_known_tasks() -> None:
    provider = OfflineProvider(tasks={"greet": greet, "summarise": greet})
    with pytest.raises(ProviderRequestError, match=r"'nope'.*known tasks: greet, summarise"):
        provider.complete(ask("nope"))


def test_a_missing_fact_is_a_request_error_naming_it() -> None:
    with pytest.raises(ProviderRequestError, match="needs the fact 'name'"):
        OfflineProvider(tasks={"greet": greet}).complete(ask())


def test_registering_a_task_twice_fails_early() -> None:
    task = f"test-{uuid.uuid4().hex}"
    register_offline_task(task, greet)
    with pytest.raises(ValueError, match="registered twice"):
        register_offline_task(task, greet)


# -- scripted -----------------------------------------------------------------------------


def test_a_scripted_provider_answers_in_order_and_records_the_requests() -> None:
    canned = ModelResponse(
        text="third", model="m", provider="scripted", usage=Usage(5, 6), latency_s=0.1
    )
    provider = ScriptedProvider(["first", "second", canned])
    texts = [provider.complete(ask(name=str(i))).text for i in range(3)]
    assert texts == ["first", "second", "third"]
    assert [r.facts["name"] for r in provider.requests] == ["0", "1", "2"]
    assert provider.remaining == 0
    assert provider.name == "scripted" and provider.model == "scripted-model"


def test_a_scripted_error_is_raised_in_its_turn() -> None:
    provider = ScriptedProvider([ProviderUnavailableError("HTTP 503"), "recovered"])
    with pytest.raises(ProviderUnavailableError, match="503"):
        provider.complete(ask())
    assert provider.complete(ask()).text == "recovered"


def test_an_exhausted_script_is_a_request_error() -> None:
    provider = ScriptedProvider(["only"])
    provider.complete(ask())
    with pytest.raises(ProviderRequestError, match="ran out of answers at request 2"):
        provider.complete(ask())
    assert len(provider.requests) == 2
