"""Button data: short opaque tokens, resolved in the store (never state in the button).

``ap:<token>:y|n|e``  approve / reject / edit (correct in plain words) a proposed action
``q:<token>:d|r|x``   answer a question: it happened / retry / discard (b|s|p for budgets,
                      u|l for a failed flow's undo / leave, w|o|t for a reply: won / lost / wait)
``ab:<token>:y``      approve every pending approval of a bundle offered by /approvals
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.questions import LABELS
from bot.messages import Button

APPROVAL = "ap"
QUESTION = "q"
BUNDLE = "ab"
_CHOICE_CODES = {
    "done": "d",
    "retry": "r",
    "discard": "x",
    "raise": "b",
    "skip": "s",
    "pause": "p",
    "undo": "u",  # a failed flow: roll back its executed actions
    "leave": "l",
    "won": "w",  # a client's reply to a proposal
    "lost": "o",
    "wait": "t",
    "rollback": "k",  # an objective burning fast: undo what the missed work did
}
_CODE_CHOICES = {code: choice for choice, code in _CHOICE_CODES.items()}


@dataclass(frozen=True)
class ApprovalChoice:
    token: str
    approve: bool


@dataclass(frozen=True)
class EditChoice:
    token: str


@dataclass(frozen=True)
class BundleChoice:
    token: str


@dataclass(frozen=True)
class QuestionChoice:
    token: str
    choice: str


def approval_buttons(
    token: str, *, approve_label: str, editable: bool = False
) -> tuple[Button, ...]:
    edit = (Button("Edit", f"{APPROVAL}:{token}:e"),) if editable else ()
    return (
        Button(approve_label, f"{APPROVAL}:{token}:y"),
        *edit,
        Button("Reject", f"{APPROVAL}:{token}:n"),
    )


def bundle_button(token: str, count: int) -> Button:
    return Button(f"Approve all {count}", f"{BUNDLE}:{token}:y")


def question_buttons(
    token: str, choices: list[str], *, labels: dict[str, str] | None = None
) -> tuple[Button, ...]:
    names = {**LABELS, **(labels or {})}
    return tuple(Button(names.get(c, c), f"{QUESTION}:{token}:{_CHOICE_CODES[c]}") for c in choices)


def _valid_token(token: str) -> bool:
    return bool(token) and len(token) <= 32 and all(c.isalnum() or c in "-_" for c in token)


def parse_button(
    data: str,
) -> ApprovalChoice | QuestionChoice | BundleChoice | EditChoice | None:
    """Pure: the choice a button's data encodes, or ``None`` if it is not ours."""
    parts = data.split(":")
    if len(parts) != 3 or not _valid_token(parts[1]):
        return None
    kind, token, code = parts
    if kind == APPROVAL and code in {"y", "n"}:
        return ApprovalChoice(token=token, approve=code == "y")
    if kind == APPROVAL and code == "e":
        return EditChoice(token=token)
    if kind == BUNDLE and code == "y":
        return BundleChoice(token=token)
    if kind == QUESTION and code in _CODE_CHOICES:
        return QuestionChoice(token=token, choice=_CODE_CHOICES[code])
    return None
