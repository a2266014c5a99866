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


InputT = TypeVar("InputT", bound=BaseModel)
OutputT = TypeVar("OutputT", bound=BaseModel)


class Agent(ABC, Generic[InputT, OutputT]):
    """Base class of every agent. Subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str]
    description: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    input_model: ClassVar[type[BaseModel]]
    output_model: ClassVar[type[BaseModel]]

    @abstractmethod
    def run(self, ctx: AgentContext, payload: InputT) -> OutputT:
        """Do the work for one job. Raise an :class:`agents.errors.AgentError` on failure."""

    def summarize(self, payload: InputT, output: OutputT) -> str:
        """One line for the operator when the job finishes. Override for something better."""
        return f"{self.name} finished."
