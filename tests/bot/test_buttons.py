import pytest

from bot.buttons import ApprovalChoice, approval_buttons, parse_button
from bot.messages import Button


def test_approval_buttons_round_trip_through_their_data() -> None:
    approve, reject = approval_buttons("tok_en-1", approve_label="Approve and send")
    assert parse_button(approve.data) == ApprovalChoice("tok_en-1", True)
    assert parse_button(reject.data) == ApprovalChoice("tok_en-1", False)


def test_button_data_fits_in_telegrams_64_bytes() -> None:
    for button in approval_buttons("x" * 32, approve_label="Approve"):
        assert len(button.data.encode()) <= 64
    with pytest.raises(ValueError):
        Button("too long", "x" * 65)


@pytest.mark.parametrize(
    "data",
    [
        "",
        "ap",
        "ap::y",
        "ap:tok:maybe",
        "xx:tok:y",
        "ap:to k:y",
        "ap:a:b:y",
        "ap:" + "t" * 40 + ":y",
        "ap:tok;DROP:y",
    ],
)
def test_malformed_button_data_is_not_ours(data: str) -> None:
    assert parse_button(data) is None


def test_every_question_kind_gets_buttons_that_round_trip() -> None:
    """Every choice any question offers has a button code (a missing one would stop the
    notifier on that question, and every message after it)."""
    from agents.questions import CHOICES, LABELS
    from bot.buttons import QuestionChoice, question_buttons

    offered = {c for choices in CHOICES.values() for c in choices} | {
        "retry",
        "undo",
        "leave",
        "won",
        "lost",
        "wait",
    }
    for choice in offered:
        [button] = question_buttons("tok", [choice])
        assert parse_button(button.data) == QuestionChoice("tok", choice)
        assert button.label == LABELS[choice]
