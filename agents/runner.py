"""Running one job: claim it in the log, run its agent, record how it ended.

Dramatiq delivers at least once, so ``run_job`` is safe to call twice for the same job: a
job that already finished is left alone, a job another worker started within its lease is
left to that worker, and a second worker racing for the same job loses the
optimistic-concurrency check on ``JobStarted`` and steps back.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from agents.context import AgentContext
from agents.errors import AgentError, AgentInputError, ProviderError
from agents.providers.base import ModelProvider
from agents.registry import AgentRegistry
from connectors.errors import ConnectorError
from store import events as ev
from store import queries
from store.errors import ConcurrencyError, NotFoundError
from store.log import EventLog, utcnow

logger = logging.getLogger(__name__)

FINISHED = {"done", "failed", "awaiting_approval", "cancelled"}
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
# A job started less than this long ago belongs to the worker that started it; after that the
# worker is presumed dead and a redelivered message runs the job again (its steps are idempotent).
JOB_LEASE = timedelta(minutes=10)


@dataclass(frozen=True)
class RunOutcome:
    job_id: str
    status: str
    summary: str


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
    ) -> None:
        self._lease = lease
        self._log = log
        self._registry = registry
        self._model = model
        self._approval_ttl = approval_ttl
        self._operator_name = operator_name

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

        if (
            job.status == "running"
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

        requested = self._log.read_stream(stream)[0].data
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
            )
            output: Any = agent.run(ctx, payload)
            summary = agent.summarize(payload, output)
        except (AgentError, ConnectorError) as exc:
            transient = isinstance(exc, ProviderError) and exc.transient
            self._log.append(
                stream,
                [
                    ev.JobFailed(
                        job_id=job_id,
                        error_type=type(exc).__name__,
                        error=str(exc)[:2000],
                        transient=transient,
                    )
                ],
                metadata=meta,
            )
            logger.warning("job %s failed: %s", job_id, exc)
            return RunOutcome(job_id, "failed", str(exc))
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
