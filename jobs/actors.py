"""The Dramatiq actors. Thin: they carry ids only and call into the runtime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq import Broker

from jobs.broker import QUEUE

RUN_JOB = "opcore.run_job"
EXECUTE_ACTION = "opcore.execute_action"


@dataclass(frozen=True)
class Actors:
    run_job: dramatiq.Actor[Any, Any]
    execute_action: dramatiq.Actor[Any, Any]


def declare_actors(
    broker: Broker,
    *,
    run_job: Callable[[str], object],
    execute_action: Callable[[str], object],
) -> Actors:
    """Declare the actors on ``broker``; each calls the given handler with one id."""

    def _run_job(job_id: str) -> None:
        run_job(job_id)

    def _execute_action(action_id: str) -> None:
        execute_action(action_id)

    # Handlers record failures in the log themselves; a retry here covers crashes of the
    # process or the database, and is safe because both handlers are idempotent.
    options: dict[str, Any] = {"max_retries": 3, "min_backoff": 1_000, "max_backoff": 30_000}
    declare = dramatiq.actor
    return Actors(
        run_job=declare(actor_name=RUN_JOB, queue_name=QUEUE, broker=broker, **options)(_run_job),
        execute_action=declare(
            actor_name=EXECUTE_ACTION, queue_name=QUEUE, broker=broker, **options
        )(_execute_action),
    )
