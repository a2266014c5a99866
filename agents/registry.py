"""The agent registry: which agents exist, checked against the connectors at start-up."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agents.base import Agent
from agents.errors import RegistryError
from connectors.base import Connector
from connectors.errors import UnknownActionError


class AgentRegistry:
    """Agents by name. Registration fails early, with a hint, on anything it cannot honour."""

    def __init__(self, connectors: Mapping[str, Connector]) -> None:
        self._connectors = dict(connectors)
        self._agents: dict[str, Agent[Any, Any]] = {}

    def register(self, agent: Agent[Any, Any]) -> None:
        if agent.name in self._agents:
            raise RegistryError(f"agent {agent.name!r} is registered twice")
        for cap in sorted(agent.capabilities):
            connector = self._connectors.get(cap.connector)
            if connector is None:
                raise RegistryError(
                    f"agent {agent.name!r} needs connector {cap.connector!r}, which is not "
                    f"configured; known connectors: {sorted(self._connectors)}"
                )
            try:
                spec = connector.spec(cap.action)
            except UnknownActionError as exc:
                raise RegistryError(f"agent {agent.name!r}: {exc}") from exc
            if cap.mode == "write" and spec.mode != "write":
                raise RegistryError(f"agent {agent.name!r}: {cap} but that action only reads")
        self._agents[agent.name] = agent

    def get(self, name: str) -> Agent[Any, Any]:
        try:
            return self._agents[name]
        except KeyError:
            raise RegistryError(
                f"unknown agent {name!r}; known agents: {sorted(self._agents)}"
            ) from None

    def connector(self, name: str) -> Connector:
        try:
            return self._connectors[name]
        except KeyError:
            raise RegistryError(f"unknown connector {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._agents)

    @classmethod
    def with_agents(
        cls, connectors: Mapping[str, Connector], agents: Iterable[Agent[Any, Any]]
    ) -> AgentRegistry:
        registry = cls(connectors)
        for agent in agents:
            registry.register(agent)
        return registry
