"""The connector contract: one semantic interface to every outside system.

A connector names the actions it offers (:class:`ActionSpec`, each ``read`` or ``write``) and
executes them with the idempotency key the store gave the action when it was proposed. A
connector that can tell whether an earlier attempt already took effect implements
:meth:`Connector.lookup`; the job runner asks it before repeating an action whose outcome is
unknown.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ValidationError

from connectors.errors import InvalidParamsError, UnknownActionError

JSONValue = str | int | float | bool | None


@dataclass(frozen=True)
class ActionSpec:
    """One action a connector offers."""

    name: str
    mode: Literal["read", "write"]
    description: str
    params: type[BaseModel]
    # The action that undoes this one, called with this action's params plus its result's
    # details, and the idempotency key + ":undo". None: the effect cannot be undone.
    compensation: str | None = None
    # Params naming who or what the effect reaches (recipients, amounts, destinations): their
    # values must come from the operator or the store, or the approval highlights them.
    sensitive: tuple[str, ...] = ()
    # Free-text params (a body) scanned for links, addresses and amounts nobody gave.
    free_text: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActionResult:
    """What an executed action did, in words and in a few stable facts."""

    summary: str
    details: Mapping[str, JSONValue] = field(default_factory=dict)


class Connector(ABC):
    """Base class of every connector. Subclasses set ``name`` and ``actions``."""

    name: ClassVar[str]
    actions: ClassVar[Mapping[str, ActionSpec]]

    def spec(self, action: str) -> ActionSpec:
        try:
            return self.actions[action]
        except KeyError:
            raise UnknownActionError(
                f"connector {self.name!r} has no action {action!r}; it offers {sorted(self.actions)}"
            ) from None

    def validate(self, action: str, params: Mapping[str, Any]) -> BaseModel:
        spec = self.spec(action)
        try:
            return spec.params.model_validate(dict(params))
        except ValidationError as exc:
            raise InvalidParamsError(f"{self.name}.{action}: {exc}") from exc

    @abstractmethod
    def execute(
        self, action: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> ActionResult:
        """Perform ``action`` once. The same key must never cause a second effect where the
        remote side can prevent it."""

    def lookup(
        self, action: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> ActionResult | None:
        """Return the result of an earlier attempt with this key if the connector can see it,
        ``None`` if it sees none. The default sees nothing."""
        return None

    @property
    def lookup_is_definitive(self) -> bool:
        """Whether ``lookup`` returning ``None`` proves no earlier attempt took effect (so the
        action may safely be executed again). The default cannot tell."""
        return False
