"""What a flow's step hands its agent: the flow, its trigger's input and the earlier results."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agents.errors import AgentInputError


class FlowContext(BaseModel):
    model_config = ConfigDict(frozen=True)
    flow_id: str
    template: str
    step: str
    contact_id: str | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    results: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def proposal_terms(self) -> dict[str, Any]:
        """The operator's own terms of the proposal that started the flow."""
        terms = self.results.get("proposal", {}).get("input")
        if not isinstance(terms, dict) or not terms.get("title"):
            raise AgentInputError(
                f"flow {self.flow_id[:8]}: no proposal terms to work from (step {self.step})"
            )
        return terms

    def require_contact(self) -> str:
        if not self.contact_id:
            raise AgentInputError(f"flow {self.flow_id[:8]} has no contact yet")
        return self.contact_id


class FlowJobInput(BaseModel):
    """The input of every flow-step agent: ``{"flow": {...}}``, written by the conductor."""

    model_config = ConfigDict(frozen=True)
    flow: FlowContext
