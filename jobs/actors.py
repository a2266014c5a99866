"""The Dramatiq actors. Thin: they carry ids only and call into the runtime.

Handlers record every outcome in the log themselves. A :class:`RetryLater` signal becomes a
Dramatiq ``Retry`` with the delay the handler chose (and logged); any other exception (a
crash of the database, a bug) is retried a few times with Dramatiq's own backoff, which is
safe because both handlers are idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq import Broker

from agents.signals import RetryLater
from jobs.broker import QUEUE

RUN_JOB = "opcore.run_job"
EXECUTE_ACTION = "opcore.execute_action"
UNEXPECTED_RETRIES = 3


@dataclass(frozen=True)
class Actors:
    run_job: dramatiq.Actor[Any, Any]
    execute_action: dramatiq.Actor[Any, Any]


def _retry_when(retries: int, exc: Exception) -> bool:
    if isinstance(exc, dramatiq.Retry):
        return True  # the handler decided, and counts attempts in the log
    return retries < UNEXPECTED_RETRIES


def declare_actors(
    broker: Broker,
    *,
    run_job: Callable[[str], object],
    execute_action: Callable[[str], object],
) -> Actors:
    """Declare the actors on ``broker``; each calls the given handler with one id."""

    def _run_job(job_id: str) -> None:
        try:
            run_job(job_id)
        except RetryLater as signal:
            raise dramatiq.Retry(str(signal), delay=signal.delay_ms) from None

    def _execute_action(action_id: str) -> None:
        try:
            execute_action(action_id)
        except RetryLater as signal:
            raise dramatiq.Retry(str(signal), delay=signal.delay_ms) from None

    options: dict[str, Any] = {
        "retry_when": _retry_when,
        "min_backoff": 1_000,
        "max_backoff": 60_000,
    }
    declare = dramatiq.actor
    return Actors(
        run_job=declare(actor_name=RUN_JOB, queue_name=QUEUE, broker=broker, **options)(_run_job),
        execute_action=declare(
            actor_name=EXECUTE_ACTION, queue_name=QUEUE, broker=broker, **options
        )(_execute_action),
    )
