"""Questions to the operator: an outcome nobody knows, work that failed for good.

A question is asked with :func:`ask` (an event appended with the failure it is about) and
answered with :func:`answer`: the first answer wins, like an approval, and its consequence
(retry, discard, mark as done) is appended in the same transaction.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from typing import Literal

from store import events as ev
from store import queries
from store.errors import ConcurrencyError, NotFoundError
from store.log import EventLog
from store.queries import QuestionView

Kind = Literal["action_unknown", "action_failed", "job_failed"]

CHOICES: dict[Kind, list[str]] = {
    "action_unknown": ["done", "retry", "discard"],
    "action_failed": ["retry", "discard"],
    "job_failed": ["retry", "discard"],
}
LABELS = {"done": "It happened", "retry": "Retry", "discard": "Discard"}


def ask(kind: Kind, *, job_id: str, text: str, action_id: str | None = None) -> ev.QuestionAsked:
    return ev.QuestionAsked(
        token=secrets.token_urlsafe(9),
        kind=kind,
        job_id=job_id,
        action_id=action_id,
        text=text,
        choices=CHOICES[kind],
    )


class Answer(enum.Enum):
    ACCEPTED = "accepted"
    ALREADY_ANSWERED = "already_answered"
    UNKNOWN = "unknown"
    INVALID = "invalid"


@dataclass(frozen=True)
class AnswerResult:
    answer: Answer
    question: QuestionView | None = None
    requeue_job: str | None = None
    requeue_action: str | None = None


def answer(log: EventLog, token: str, choice: str, *, by: str, channel: str) -> AnswerResult:
    try:
        question = queries.get_question(token)
    except NotFoundError:
        return AnswerResult(Answer.UNKNOWN)
    if choice not in question.choices:
        return AnswerResult(Answer.INVALID, question)
    stream = (
        ev.action_stream(question.action_id)
        if question.action_id
        else ev.job_stream(question.job_id)
    )
    version = log.stream_version(stream)
    question = queries.get_question(token)  # after the version: see jobs/effects.py
    if question.status != "pending":
        return AnswerResult(Answer.ALREADY_ANSWERED, question)

    events: list[ev.EventData | ev.NewEvent] = [
        ev.NewEvent(
            ev.QuestionAnswered(token=token, choice=choice, answered_by=by, channel=channel),
            idempotency_key=f"answer:{token}",
        )
    ]
    requeue_job = requeue_action = None
    if question.kind == "job_failed" and choice == "retry":
        events.append(ev.JobRetried(job_id=question.job_id, by=by))
        requeue_job = question.job_id
    elif question.action_id is not None:
        if choice == "retry":
            events.append(ev.ActionRetried(action_id=question.action_id, by=by))
            requeue_action = question.action_id
        elif choice == "discard":
            events.append(ev.ActionDiscarded(action_id=question.action_id, by=by))
        elif choice == "done":
            events.append(
                ev.ActionExecuted(
                    action_id=question.action_id,
                    summary=f"Marked as done by {by}",
                    details={"manual": True},
                )
            )
    try:
        result = log.append(
            stream,
            events,
            metadata=ev.Metadata(actor=by, correlation_id=question.job_id),
            expected_version=version,
        )
    except ConcurrencyError:
        return AnswerResult(Answer.ALREADY_ANSWERED, queries.get_question(token))
    if result.duplicate:
        return AnswerResult(Answer.ALREADY_ANSWERED, queries.get_question(token))
    return AnswerResult(Answer.ACCEPTED, queries.get_question(token), requeue_job, requeue_action)
