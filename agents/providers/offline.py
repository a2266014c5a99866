"""The offline provider: deterministic, template-based answers, no network.

Agents register a renderer per task at import time (``register_offline_task``); the provider
answers a request by rendering its task's template from the request's facts. The same facts
always give the same text, so a job run without a model endpoint is reproducible.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from agents.errors import ProviderRequestError
from agents.providers.base import ModelProvider, ModelRequest, ModelResponse, Usage

Renderer = Callable[[Mapping[str, str]], str]
"""Turns a request's facts into the answer text (a JSON document for schema tasks)."""

OFFLINE_MODEL = "offline-template"

_TASKS: dict[str, Renderer] = {}


def register_offline_task(task: str, render: Renderer) -> None:
    """Register the template of ``task``; registering the same task twice is a start-up error."""
    if task in _TASKS:
        raise ValueError(
            f"offline task {task!r} is registered twice "
            f"(first by {getattr(_TASKS[task], '__qualname__', _TASKS[task])!s})"
        )
    _TASKS[task] = render


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token), for usage and pricing."""
    return len(text) // 4


class OfflineProvider(ModelProvider):
    """Answers from the registered templates; ``tasks`` replaces the global registry (tests)."""

    name = "offline"

    def __init__(self, *, tasks: Mapping[str, Renderer] | None = None) -> None:
        self._tasks = tasks

    @property
    def model(self) -> str:
        return OFFLINE_MODEL

    def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        tasks = _TASKS if self._tasks is None else self._tasks
        render = tasks.get(request.task)
        if render is None:
            known = ", ".join(sorted(tasks)) or "none"
            raise ProviderRequestError(
                f"the offline provider has no template for task {request.task!r} "
                f"(known tasks: {known})"
            )
        try:
            text = render(request.facts)
        except KeyError as exc:
            raise ProviderRequestError(
                f"the offline template of task {request.task!r} needs the fact {exc}"
            ) from exc
        prompt = "".join(m.content for m in request.messages)
        return ModelResponse(
            text=text,
            model=OFFLINE_MODEL,
            provider=self.name,
            usage=Usage(
                prompt_tokens=estimate_tokens(prompt), completion_tokens=estimate_tokens(text)
            ),
            latency_s=time.perf_counter() - started,
            offline=True,
        )
