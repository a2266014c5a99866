"""Approval policy: which proposals need a tap, which go through, which are refused.

Rules come from settings, per action kind (``connector.action``); the default for every kind
is to ask. A rule may auto-approve a trusted recipient or an amount below a threshold, approve
everything, or refuse everything. Every automatic decision is an event naming the rule and
the reason, so the trace says why nothing was asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from config.settings import ApprovalRule

Verdict = Literal["ask", "auto", "never"]

# A job input key naming why its requester cannot be verified (an email's From header is
# whatever the sender typed): no rule approves that job's proposals without a tap, or a
# forged From of a trusted contact would get an automatic reply.
UNVERIFIED = "unverified_requester"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    rule: str
    reason: str


def evaluate(
    rules: Mapping[str, ApprovalRule], connector: str, action: str, params: Mapping[str, Any]
) -> Decision:
    kind = f"{connector}.{action}"
    rule = rules.get(kind)
    if rule is None:
        return Decision(
            "ask", "default", "every action that leaves the workspace is asked by default"
        )
    if rule.mode == "never":
        return Decision("never", kind, "the rule refuses this kind of action")
    if rule.mode == "auto":
        return Decision("auto", kind, "the rule approves this kind of action")
    recipient = str(params.get("to", "")).lower()
    if recipient and recipient in {c.lower() for c in rule.trusted_contacts}:
        return Decision("auto", kind, f"{recipient} is a trusted contact")
    amount = params.get("amount")
    if (
        rule.below_amount is not None
        and isinstance(amount, int | float)
        and amount < rule.below_amount
    ):
        return Decision("auto", kind, f"amount {amount} is below {rule.below_amount}")
    return Decision("ask", kind, "the rule asks")


def unverified(decision: Decision, job_input: Mapping[str, Any]) -> Decision:
    """``decision``, asked instead of auto-approved when the job's requester is unverified."""
    why = job_input.get(UNVERIFIED)
    if decision.verdict != "auto" or not why:
        return decision
    return Decision("ask", decision.rule, f"rule {decision.rule} would approve this, but {why}")
