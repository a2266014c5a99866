"""A provider for tests: answers from a script, in order, and records what it was asked.

Each step of the script is a text answer, a full :class:`ModelResponse`, or a
:class:`ProviderError` to raise (to exercise retries and failure paths without a server).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from agents.errors import ProviderError, ProviderRequestError
from agents.providers.base import ModelProvider, ModelRequest, ModelResponse, Usage
from agents.providers.offline import estimate_tokens

Step = str | ModelResponse | ProviderError


class ScriptedProvider(ModelProvider):
    """Returns or raises the scripted steps in order; exhausted, it raises ProviderRequestError."""

    name = "scripted"

    def __init__(self, steps: Iterable[Step], *, model: str = "scripted-model") -> None:
        self._steps: deque[Step] = deque(steps)
        self._model = model
        self._lock = threading.Lock()
        self.requests: list[ModelRequest] = []

    @property
    def model(self) -> str:
        return self._model

    @property
    def remaining(self) -> int:
        """How many scripted steps have not been used yet."""
        with self._lock:
            return len(self._steps)

    def complete(self, request: ModelRequest) -> ModelResponse:
        with self._lock:
            self.requests.append(request)
            if not self._steps:
                raise ProviderRequestError(
                    f"the scripted provider ran out of answers at request {len(self.requests)} "
                    f"(task {request.task!r})"
                )
            step = self._steps.popleft()
        if isinstance(step, ProviderError):
            raise step
        if isinstance(step, ModelResponse):
            return step
        prompt = "".join(m.content for m in request.messages)
        return ModelResponse(
            text=step,
            model=self._model,
            provider=self.name,
            usage=Usage(
                prompt_tokens=estimate_tokens(prompt), completion_tokens=estimate_tokens(step)
            ),
            latency_s=0.0,
        )
