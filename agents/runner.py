"""Running one job: claim it in the log, run its agent, record how it ended.

Dramatiq delivers at least once, so ``run`` is safe to call twice for the same job: a job
that already finished is left alone, a job another worker started within its lease is left
to that worker, and a second worker racing for the same job loses the
optimistic-concurrency check on ``JobStarted`` and steps back. A paused agent's jobs stay
queued in the log. Completed steps are checkpointed (:meth:`AgentContext.step`), so a
resumed job continues where it stopped.

Transient failures (model timeouts, 429, 5xx; connector outages) are recorded as
``JobAttemptFailed`` and signalled with :class:`RetryLater` (exponential backoff with
jitter); after the last retry, or on a permanent failure, the job fails for good with one
question to the operator: Retry or Discard.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from agents import questions
from agents.budget import Budgets
from agents.cache import ModelCache
from agents.context import AgentContext
from agents.errors import AgentError, AgentInputError, ProviderError
from agents.providers.base import ModelProvider
from agents.registry import AgentRegistry
from agents.retry import RetryPolicy, failures_since_retry
from agents.signals import BudgetExceeded, RetryLater
from config.settings import ApprovalRule
from connectors.errors import ConnectorError, TransientConnectorError
from store import events as ev
from store import queries
from store.errors import ConcurrencyError, NotFoundError, StoreError
from store.log import EventLog, utcnow
from store.memory.service import Memory

logger = logging.getLogger(__name__)

FINISHED = {"done", "failed", "awaiting_approval", "cancelled", "blocked"}
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
# A job started less than this long ago belongs to the worker that started it; after that the
# worker is presumed dead and a redelivered message runs the job again (its steps are idempotent).
JOB_LEASE = timedelta(minutes=10)


@dataclass(frozen=True)
class RunOutcome:
    job_id: str
    status: str
    summary: str


def is_transient(exc: Exception) -> bool:
    return (isinstance(exc, ProviderError) and exc.transient) or isinstance(
        exc, TransientConnectorError
    )


class JobRunner:
    def __init__(
        self,
        *,
        log: EventLog,
        registry: AgentRegistry,
        model: ModelProvider,
        approval_ttl: timedelta,
        operator_name: str,
        lease: timedelta = JOB_LEASE,
        retry: RetryPolicy | None = None,
        on_checkpoint: Callable[[str], None] = lambda point: None,
        budgets: Budgets | None = None,
        cache: ModelCache | None = None,
        rules: Mapping[str, ApprovalRule] | None = None,
        memory: Memory | None = None,
    ) -> None:
        self._rules = rules or {}
        self._memory = memory
        self._budgets = budgets
        self._cache = cache
        self._lease = lease
        self._log = log
        self._registry = registry
        self._model = model
        self._approval_ttl = approval_ttl
        self._operator_name = operator_name
        self._retry = retry or RetryPolicy()
        self._on_checkpoint = on_checkpoint
        # Jobs this process started and gave up on because the database failed under them:
        # their retry here may take them back at once instead of waiting out their lease.
        self._abandoned: set[str] = set()
        self._abandoned_lock = threading.Lock()

    @property
    def budgets(self) -> Budgets | None:
        return self._budgets

    def run(self, job_id: str) -> RunOutcome:
        stream = ev.job_stream(job_id)
        version = self._log.stream_version(stream)  # before the status: see jobs/effects.py
        try:
            job = queries.get_job(job_id)
        except NotFoundError:
            logger.error("job %s is not in the log; dropping the message", job_id)
            return RunOutcome(job_id, "missing", "not in the log")
        if job.status in FINISHED:
            logger.info("job %s is already %s; nothing to do", job_id, job.status)
            return RunOutcome(job_id, job.status, job.summary)
        if queries.agent_paused(job.agent):
            logger.info("agent %s is paused; job %s waits in the log", job.agent, job_id)
            return RunOutcome(job_id, "paused", "")
        with self._abandoned_lock:
            ours = job_id in self._abandoned
            self._abandoned.discard(job_id)
        if (
            not ours
            and job.status == "running"
            and job.started_at is not None
            and utcnow() - job.started_at < self._lease
        ):
            logger.info(
                "job %s is running on another worker (lease until %s)",
                job_id,
                job.started_at + self._lease,
            )
            return RunOutcome(job_id, "claimed-elsewhere", "")

        meta = ev.Metadata(actor=f"worker:{WORKER_ID}", correlation_id=job_id)
        try:
            self._log.append(
                stream,
                [ev.JobStarted(job_id=job_id, worker=WORKER_ID, attempt=job.attempts + 1)],
                metadata=meta,
                expected_version=version,
            )
        except ConcurrencyError:
            logger.info("job %s was claimed by another worker", job_id)
            return RunOutcome(job_id, "claimed-elsewhere", "")
        self._on_checkpoint("before_agent")

        history = self._log.read_stream(stream)
        requested = history[0].data
        assert isinstance(requested, ev.JobRequested)
        try:
            agent = self._registry.get(requested.agent)
            try:
                payload = agent.input_model.model_validate(requested.input)
            except ValidationError as exc:
                raise AgentInputError(
                    f"job input does not fit agent {agent.name!r}: {exc}"
                ) from exc
            ctx = AgentContext(
                job_id=job_id,
                agent=agent,
                log=self._log,
                model=self._model,
                connectors={
                    name: self._registry.connector(name)
                    for name in {c.connector for c in agent.capabilities}
                },
                approval_ttl=self._approval_ttl,
                operator_name=self._operator_name,
                on_checkpoint=self._on_checkpoint,
                budgets=self._budgets,
                cache=self._cache,
                rules=self._rules,
                memory=self._memory,
            )
            output: Any = agent.run(ctx, payload)
            summary = agent.summarize(payload, output)
        except BudgetExceeded as signal:
            self._log.append(
                stream,
                [
                    signal.blocked,
                    questions.ask("budget", job_id=job_id, text=f"Not spent: {signal}."),
                ],
                metadata=meta,
            )
            logger.warning("job %s stopped before a model call: %s", job_id, signal)
            return RunOutcome(job_id, "blocked", str(signal))
        except (AgentError, ConnectorError) as exc:
            return self._failed(
                job_id,
                exc,
                failures_before=failures_since_retry(
                    history, failed=ev.JobAttemptFailed, reset=ev.JobRetried
                ),
                meta=meta,
            )
        except StoreError as exc:  # the database itself: transient, Dramatiq retries the message
            with self._abandoned_lock:
                self._abandoned.add(job_id)  # nobody runs it now: the retry may take it back
            raise RetryLater(self._retry.delay_ms(1), str(exc)) from exc
        except Exception as exc:  # a bug: fail the job on record rather than leave it "running"
            logger.exception("job %s: unexpected error in agent %s", job_id, requested.agent)
            return self._failed(job_id, exc, failures_before=self._retry.max_retries, meta=meta)
        self._log.append(
            stream,
            [
                ev.JobCompleted(
                    job_id=job_id, summary=summary, proposals=len(queries.actions_for_job(job_id))
                )
            ],
            metadata=meta,
        )
        return RunOutcome(job_id, queries.get_job(job_id).status, summary)

    def _failed(
        self, job_id: str, exc: Exception, *, failures_before: int, meta: ev.Metadata
    ) -> RunOutcome:
        stream = ev.job_stream(job_id)
        attempt = failures_before + 1
        error = str(exc)[:2000]
        transient = is_transient(exc)
        if transient and not self._retry.exhausted(attempt):
            delay = self._retry.delay_ms(attempt, at_least_s=getattr(exc, "retry_after", None))
            self._log.append(
                stream,
                [
                    ev.JobAttemptFailed(
                        job_id=job_id,
                        attempt=attempt,
                        error_type=type(exc).__name__,
                        error=error,
                        retry_in_s=delay / 1000,
                    )
                ],
                metadata=meta,
            )
            logger.warning(
                "job %s attempt %d failed (%s); retrying in %d ms", job_id, attempt, exc, delay
            )
            raise RetryLater(delay, error)
        why = f"after {attempt} attempts" if transient else "(not retried: the error is permanent)"
        failed: list[ev.EventData] = [
            ev.JobFailed(
                job_id=job_id,
                error_type=type(exc).__name__,
                error=error,
                transient=transient,
                attempts=attempt,
            )
        ]
        if not _in_flow(
            self._log, job_id
        ):  # the flow's conductor sends one alert with its rollback
            failed.append(
                questions.ask(
                    "job_failed", job_id=job_id, text=f"{type(exc).__name__}: {error} {why}"
                )
            )
        self._log.append(stream, failed, metadata=meta)
        logger.warning("job %s failed for good: %s", job_id, exc)
        return RunOutcome(job_id, "failed", error)


def _in_flow(log: EventLog, job_id: str) -> bool:
    """Whether the job is a step of a business flow (the conductor requested it)."""
    history = log.read_stream(ev.job_stream(job_id))
    first = history[0].data if history else None
    return isinstance(first, ev.JobRequested) and "flow" in first.input
