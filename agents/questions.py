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

Kind = Literal[
    "action_unknown",
    "action_failed",
    "job_failed",
    "budget",
    "flow_failed",
    "flow_reply",
    "slo_burn",
]

CHOICES: dict[Kind, list[str]] = {
    "action_unknown": ["done", "retry", "discard"],
    "action_failed": ["retry", "discard"],
    "job_failed": ["retry", "discard"],
    "budget": ["raise", "skip", "pause"],
    # Answered here, acted on by the conductor (jobs/flows.py) on its next tick.
    "flow_failed": ["retry", "undo", "leave"],
    "flow_reply": ["won", "lost", "wait"],
    # Answered here, acted on by the SLO monitor (jobs/slo.py) on its next pass.
    "slo_burn": ["rollback", "pause", "leave"],
}
LABELS = {
    "done": "It happened",
    "retry": "Retry",
    "discard": "Discard",
    "raise": "Raise budget once",
    "skip": "Skip this job",
    "pause": "Pause agent",
    "undo": "Undo the flow",
    "rollback": "Roll back",
    "leave": "Leave it",
    "won": "Won",
    "lost": "Lost",
    "wait": "Not yet",
}
BUDGET_MARGIN = 1.5  # a one-off raise covers the refused call half again


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
    if question.kind == "budget":
        history = log.read_stream(stream)
        blocked = [e.data for e in history if isinstance(e.data, ev.BudgetBlocked)]
        if choice == "raise" and blocked:
            last = blocked[-1]
            needed = max(last.spent_usd + last.estimate_usd - last.limit_usd, 0.0) * BUDGET_MARGIN
            events += [
                ev.BudgetOverride(job_id=question.job_id, usd=round(needed + 0.0001, 6), by=by),
                ev.JobRetried(job_id=question.job_id, by=by),
            ]
            requeue_job = question.job_id
        elif choice == "skip":
            events.append(ev.JobCancelled(job_id=question.job_id, by=by))
        elif choice == "pause" and blocked:
            agent = blocked[-1].agent
            if not queries.agent_paused(agent):
                log.append(
                    ev.agent_stream(agent),
                    [ev.AgentPaused(agent=agent, by=by)],
                    metadata=ev.Metadata(actor=by),
                )
            events.append(
                ev.JobRetried(job_id=question.job_id, by=by)
            )  # waits in the log until /resume
    elif question.kind == "job_failed" and choice == "retry":
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
