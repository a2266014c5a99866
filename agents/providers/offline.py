"""The offline provider: deterministic, template-based answers, no network.

Agents register a renderer per task (``register_offline_task``); the provider answers a
request by rendering its task's template from the request's facts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from agents.errors import ProviderRequestError
from agents.providers.base import ModelProvider, ModelRequest, ModelResponse, Usage

Renderer = Callable[[Mapping[str, str]], str]
_TASKS: dict[str, Renderer] = {}


def register_offline_task(task: str, render: Renderer) -> None:
    if task in _TASKS:
        raise ValueError(f"offline task {task!r} is registered twice")
    _TASKS[task] = render


class OfflineProvider(ModelProvider):
    name = "offline"

    @property
    def model(self) -> str:
        return "offline-template"

    def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        render = _TASKS.get(request.task)
        if render is None:
            raise ProviderRequestError(
                f"the offline provider has no template for task {request.task!r}; known: {sorted(_TASKS)}"
            )
        text = render(request.facts)
        prompt = sum(len(m.content) for m in request.messages)
        return ModelResponse(
            text=text,
            model="offline-template",
            provider=self.name,
            usage=Usage(prompt_tokens=prompt // 4, completion_tokens=len(text) // 4),
            latency_s=time.perf_counter() - started,
            offline=True,
        )
