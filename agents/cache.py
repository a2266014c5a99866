"""A cache of model answers: the same prompt to the same model within the TTL is not paid twice.

The key is a digest of the model and everything that shapes the answer (messages, schema,
temperature, answer length). A hit is recorded like any call, marked ``cached`` and costing
nothing, so the trace and the spend report show it. Offline template answers are not cached
(they cost nothing to make).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta

from agents.providers.base import ModelRequest, ModelResponse, Usage
from store.log import utcnow
from store.models import ModelCacheRow


def digest(model: str, request: ModelRequest) -> str:
    shape = {
        "model": model,
        "messages": [[m.role, m.content] for m in request.messages],
        "schema": request.json_schema,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class ModelCache:
    ttl: timedelta

    @property
    def enabled(self) -> bool:
        return self.ttl > timedelta(0)

    def get(self, key: str) -> ModelResponse | None:
        if not self.enabled:
            return None
        row = ModelCacheRow.get_or_none(ModelCacheRow.key == key)
        if row is None or row.created_at < (utcnow() - self.ttl).replace(tzinfo=None):
            return None
        return ModelResponse(
            text=row.text,
            model=row.model,
            provider=row.provider,
            usage=Usage(row.prompt_tokens, row.completion_tokens),
            latency_s=0.0,
        )

    def put(self, key: str, response: ModelResponse) -> None:
        if not self.enabled or response.offline:
            return
        values = {
            "model": response.model,
            "provider": response.provider,
            "text": response.text,
            "prompt_tokens": response.usage.prompt_tokens,
            "completion_tokens": response.usage.completion_tokens,
            "created_at": utcnow().replace(tzinfo=None),
        }
        (
            ModelCacheRow.insert(key=key, **values)
            .on_conflict(conflict_target=[ModelCacheRow.key], update=values)
            .execute()
        )

    def evict(self, key: str) -> None:
        """Forget an answer (e.g. one that failed validation: a retry should not get it again)."""
        ModelCacheRow.delete().where(ModelCacheRow.key == key).execute()
