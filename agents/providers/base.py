"""The model provider contract: one call, one typed answer.

A request carries the chat messages for a real model *and* the task name and facts it was
built from, so that the offline provider can produce a deterministic, template-based answer
without a model. When ``json_schema`` is set, the answer's ``text`` is a JSON document meant to
match it; validating it is the caller's job (with pydantic).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ModelRequest:
    task: str
    messages: tuple[ChatMessage, ...]
    facts: Mapping[str, str] = field(default_factory=dict)
    json_schema: Mapping[str, Any] | None = None
    schema_name: str = "answer"
    temperature: float = 0.2
    max_tokens: int | None = None
    task_class: str | None = None  # parse, classify, draft or plan: picks the model (see
    # ModelRouter); None = the agent's declared model tier
    model: str | None = None  # set by the router; None = the provider's own model


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ModelResponse:
    text: str
    model: str
    provider: str
    usage: Usage
    latency_s: float
    offline: bool = False


class ModelProvider(ABC):
    """Base class of the model providers."""

    name: str = "provider"

    @property
    def model(self) -> str:
        """The model this provider calls (to price a call before it is made)."""
        return "unknown"

    def model_for(self, request: ModelRequest) -> str:
        """The model ``request`` would go to."""
        return request.model or self.model

    @abstractmethod
    def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer one request or raise a :class:`agents.errors.ProviderError`."""

    def close(self) -> None:
        """Release connections. The default holds none."""
