from __future__ import annotations

from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from agents.base import Agent, Capability
from agents.context import AgentContext
from agents.errors import RegistryError
from agents.lead import LeadAgent
from agents.registry import AgentRegistry
from connectors.email import EmailConnector, OutboxDelivery


class Nothing(BaseModel):
    pass


def make_agent(name: str, caps: frozenset[Capability]) -> Agent[Any, Any]:
    class Custom(Agent[Nothing, Nothing]):
        capabilities: ClassVar[frozenset[Capability]] = caps
        input_model = Nothing
        output_model = Nothing

        def run(self, ctx: AgentContext, payload: Nothing) -> Nothing:
            return Nothing()

    Custom.name = name
    Custom.description = "test"
    return Custom()


@pytest.fixture
def connectors(tmp_path: Any) -> dict[str, Any]:
    return {"email": EmailConnector(sender="me@example.com", delivery=OutboxDelivery(tmp_path))}


def test_the_lead_agent_registers_against_the_email_connector(connectors: dict[str, Any]) -> None:
    registry = AgentRegistry.with_agents(connectors, [LeadAgent()])
    assert registry.names() == ["lead"]


def test_an_unknown_connector_is_refused_at_start_up(connectors: dict[str, Any]) -> None:
    agent = make_agent("x", frozenset({Capability("fax", "send", "write")}))
    with pytest.raises(RegistryError, match="connector 'fax'"):
        AgentRegistry.with_agents(connectors, [agent])


def test_an_unknown_action_is_refused_at_start_up(connectors: dict[str, Any]) -> None:
    agent = make_agent("x", frozenset({Capability("email", "delete_all", "write")}))
    with pytest.raises(RegistryError, match="delete_all"):
        AgentRegistry.with_agents(connectors, [agent])


def test_an_agent_registered_twice_or_unknown_is_an_error(connectors: dict[str, Any]) -> None:
    registry = AgentRegistry.with_agents(connectors, [LeadAgent()])
    with pytest.raises(RegistryError, match="twice"):
        registry.register(LeadAgent())
    with pytest.raises(RegistryError, match="unknown agent"):
        registry.get("invoice")
