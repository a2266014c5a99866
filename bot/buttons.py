"""Button data: ``ap:<token>:y`` / ``ap:<token>:n``. The token is resolved in the store."""

from __future__ import annotations

from dataclasses import dataclass

from bot.messages import Button

PREFIX = "ap"


@dataclass(frozen=True)
class ApprovalChoice:
    token: str
    approve: bool


def approval_buttons(token: str, *, approve_label: str) -> tuple[Button, ...]:
    return (
        Button(approve_label, f"{PREFIX}:{token}:y"),
        Button("Reject", f"{PREFIX}:{token}:n"),
    )


def parse_button(data: str) -> ApprovalChoice | None:
    """Pure: the choice a button's data encodes, or ``None`` if it is not ours."""
    parts = data.split(":")
    if len(parts) != 3 or parts[0] != PREFIX or parts[2] not in {"y", "n"}:
        return None
    token = parts[1]
    if not token or len(token) > 32 or not all(c.isalnum() or c in "-_" for c in token):
        return None
    return ApprovalChoice(token=token, approve=parts[2] == "y")
