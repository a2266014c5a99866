"""Tiered routing: a task class (parse, classify, draft, plan) picks a list of models; a
transient failure of one falls back to the next.

Routes come from settings (``OPCORE_MODEL_ROUTES``, e.g. ``{"draft": ["gpt-4o", "gpt-4o-mini"]}``);
a task class without a route uses the provider's own model. Permanent failures (a bad request)
are not retried on another model: they would fail the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

from agents.errors import ProviderError
from agents.providers.base import ModelProvider, ModelRequest, ModelResponse

logger = logging.getLogger(__name__)


class ModelRouter(ModelProvider):
    name = "router"

    def __init__(self, provider: ModelProvider, routes: Mapping[str, Sequence[str]]) -> None:
        self._provider = provider
        self._routes = {k: list(v) for k, v in routes.items() if v}

    @property
    def model(self) -> str:
        return self._provider.model

    def models_for(self, task_class: str | None) -> list[str]:
        return self._routes.get(task_class or "draft", [self._provider.model])

    def model_for(self, request: ModelRequest) -> str:
        """The first model a request would go to (to price it before the call)."""
        return request.model or self.models_for(request.task_class)[0]

    def complete(self, request: ModelRequest) -> ModelResponse:
        if request.model is not None:
            return self._provider.complete(request)
        models = self.models_for(request.task_class)
        last: ProviderError | None = None
        for i, model in enumerate(models):
            try:
                return self._provider.complete(replace(request, model=model))
            except ProviderError as exc:
                if not exc.transient or i == len(models) - 1:
                    raise
                logger.warning(
                    "model %s failed (%s); falling back to %s", model, exc, models[i + 1]
                )
                last = exc
        raise last or ProviderError(
            "no model to route to"
        )  # pragma: no cover - models is never empty

    def close(self) -> None:
        self._provider.close()
