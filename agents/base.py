"""The agent interface: declared powers, typed input and output, one method.

An agent never touches a connector directly: it proposes actions through its
:class:`~agents.context.AgentContext`, which refuses any action the agent did not declare in
``capabilities`` and turns every write into a proposal that waits for approval.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from agents.context import AgentContext


@dataclass(frozen=True, order=True)
class Capability:
    """Permission to use one connector action, for reading or for writing."""

    connector: str
    action: str
    mode: Literal["read", "write"]

    def __str__(self) -> str:
        return f"{self.connector}.{self.action} ({self.mode})"


TaskClass = Literal["parse", "classify", "draft", "plan"]


@dataclass(frozen=True)
class AgentBudget:
    """What an agent declares it may spend, in USD; ``None`` = no limit of that kind.

    ``OPCORE_AGENT_BUDGETS`` overrides the daily and monthly figures per agent; the workspace
    budgets apply on top. ``per_job_usd`` stops a runaway job (a loop of calls) on its own."""

    per_job_usd: float | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None


InputT = TypeVar("InputT", bound=BaseModel)
OutputT = TypeVar("OutputT", bound=BaseModel)


class Agent(ABC, Generic[InputT, OutputT]):
    """Base class of every agent. Subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str]
    description: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    input_model: ClassVar[type[BaseModel]]
    output_model: ClassVar[type[BaseModel]]
    model_tier: ClassVar[TaskClass] = "draft"
    """The task class (hence the model route) of requests that do not name their own."""
    budget: ClassVar[AgentBudget] = AgentBudget()
    untrusted_fields: ClassVar[frozenset[str]] = frozenset()
    """Input fields written by third parties (a ticket's body, a forwarded email): they go to the
    model as data, and recipients, amounts or links found only there are highlighted in the
    approval. Every other input field is the operator's own word."""

    @abstractmethod
    def run(self, ctx: AgentContext, payload: InputT) -> OutputT:
        """Do the work for one job. Raise an :class:`agents.errors.AgentError` on failure."""

    def summarize(self, payload: InputT, output: OutputT) -> str:
        """One line for the operator when the job finishes. Override for something better."""
        return f"{self.name} finished."
