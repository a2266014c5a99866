from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from agents.base import Agent, Capability
from agents.context import AgentContext
from agents.errors import ProviderUnavailableError
from agents.lead import LeadAgent, parse_lead
from agents.providers.base import ModelProvider, ModelRequest, ModelResponse
from agents.providers.offline import OfflineProvider
from agents.registry import AgentRegistry
from agents.retry import RetryPolicy
from agents.runner import JobRunner
from agents.signals import RetryLater
from connectors.email import EmailConnector, OutboxDelivery
from store import Store, queries
from store import events as ev
from store.errors import DatabaseError
from tests.builders import request_job


class Nothing(BaseModel):
    pass


class Overreacher(Agent[Nothing, Nothing]):
    """Declares nothing, then tries to send an email."""

    name = "overreacher"
    description = "test"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    input_model = Nothing
    output_model = Nothing

    def run(self, ctx: AgentContext, payload: Nothing) -> Nothing:
        ctx.propose(
            "email", "send_email", {"to": "x@y.example", "subject": "s", "body": "b"}, summary="s"
        )
        return Nothing()


class DownProvider(ModelProvider):
    name = "down"

    def complete(self, request: ModelRequest) -> ModelResponse:
        raise ProviderUnavailableError("HTTP 503 from the model server")


def make_runner(
    store: Store, tmp_path: Path, model: ModelProvider | None = None, *, max_retries: int = 2
) -> JobRunner:
    connectors = {
        "email": EmailConnector(sender="me@example.com", delivery=OutboxDelivery(tmp_path))
    }
    registry = AgentRegistry.with_agents(connectors, [LeadAgent(), Overreacher()])
    return JobRunner(
        log=store.log,
        registry=registry,
        model=model or OfflineProvider(),
        approval_ttl=timedelta(hours=1),
        operator_name="Sam",
        retry=RetryPolicy(max_retries=max_retries, min_backoff_ms=100, max_backoff_ms=1000),
    )


def request(store: Store, agent: str = "lead", payload: dict[str, Any] | None = None) -> str:
    if payload is None:
        payload = parse_lead("Jane Doe <jane@acme.example> wants an audit").model_dump()
    return request_job(store, "j1", agent=agent, payload=payload)


def types(store: Store) -> list[str]:
    return [e.type for e in store.log.read_correlated("j1")]


def test_a_lead_job_records_every_step_and_waits_for_approval(store: Store, tmp_path: Path) -> None:
    outcome = make_runner(store, tmp_path).run(request(store))
    assert outcome.status == "awaiting_approval"
    assert types(store) == LEAD_STEPS


LEAD_STEPS = [
    "JobRequested",
    "JobStarted",
    "ContactCreated",
    "StepCompleted",
    "ModelCalled",
    "StepCompleted",
    "ActionProposed",
    "ApprovalRequested",
    "JobCompleted",
]


def test_a_redelivered_job_runs_once(store: Store, tmp_path: Path) -> None:
    runner = make_runner(store, tmp_path)
    job = request(store)
    runner.run(job)
    runner.run(job)
    assert types(store).count("JobStarted") == 1
    assert len(queries.actions_for_job(job)) == 1


class DatabaseDropsOnce(ModelProvider):
    """The database fails under the first model call (a restart); then all is well."""

    name = "flaky-db"

    def __init__(self) -> None:
        self.calls = 0
        self._offline = OfflineProvider()

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        if self.calls == 1:
            raise DatabaseError("server closed the connection unexpectedly")
        return self._offline.complete(request)


def test_a_job_the_database_failed_under_is_taken_back_by_its_retry_at_once(
    store: Store, tmp_path: Path
) -> None:
    runner = make_runner(store, tmp_path, DatabaseDropsOnce())
    job = request(store)
    with pytest.raises(RetryLater):
        runner.run(job)
    assert queries.get_job(job).status == "running"  # its lease has not run out
    # Another worker (another process) still keeps off a job running within its lease…
    assert make_runner(store, tmp_path).run(job).status == "claimed-elsewhere"
    # …but the retry in the process that gave it up takes it back at once, instead of
    # leaving it to the reconciler after the lease (10 minutes by default).
    outcome = runner.run(job)
    assert outcome.status == "awaiting_approval"
    assert types(store).count("JobStarted") == 2


def test_workers_racing_for_one_job_start_it_once(store: Store, tmp_path: Path) -> None:
    runner = make_runner(store, tmp_path)
    job = request(store)
    barrier = threading.Barrier(3)

    def work() -> None:
        barrier.wait()
        runner.run(job)
        store.db.close()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert types(store).count("JobStarted") == 1
    assert types(store).count("ActionProposed") == 1


def test_a_second_lead_from_the_same_address_recalls_the_contact(
    store: Store, tmp_path: Path
) -> None:
    runner = make_runner(store, tmp_path)
    runner.run(request(store))
    request_job(store, "j2", payload=parse_lead("Jane Doe <JANE@acme.example> again").model_dump())
    outcome = runner.run("j2")
    assert outcome.summary.startswith("Returning contact: Jane Doe (Acme)")
    assert "ContactRecalled" in [e.type for e in store.log.read_correlated("j2")]


def test_an_agent_using_a_power_it_did_not_declare_fails_and_nothing_is_proposed(
    store: Store, tmp_path: Path
) -> None:
    outcome = make_runner(store, tmp_path).run(request(store, "overreacher", {}))
    assert outcome.status == "failed"
    assert "did not declare email.send_email" in (queries.get_job("j1").error or "")
    assert queries.actions_for_job("j1") == []


def test_a_model_outage_is_retried_with_backoff_then_fails_with_one_question(
    store: Store, tmp_path: Path
) -> None:
    runner = make_runner(store, tmp_path, DownProvider(), max_retries=2)
    job = request(store)
    delays = []
    for _ in range(2):
        with pytest.raises(RetryLater) as signal:
            runner.run(job)
        delays.append(signal.value.delay_ms)
        assert queries.get_job(job).status == "retrying"
    outcome = runner.run(job)
    assert outcome.status == "failed"
    assert 50 <= delays[0] <= 100 and 100 <= delays[1] <= 200  # doubling, with jitter
    assert types(store).count("JobAttemptFailed") == 2
    [failed] = [e.data for e in store.log.read_correlated("j1") if isinstance(e.data, ev.JobFailed)]
    assert failed.transient and failed.attempts == 3 and "503" in failed.error
    [question] = queries.pending_questions()
    assert question.kind == "job_failed" and question.choices == ["retry", "discard"]


def test_a_job_resumed_after_a_crash_does_not_repeat_its_completed_steps(
    store: Store, tmp_path: Path
) -> None:
    class CountingOffline(OfflineProvider):
        calls = 0

        def complete(self, request: ModelRequest) -> ModelResponse:
            CountingOffline.calls += 1
            return super().complete(request)

    job = request(store)
    crashing = make_runner(store, tmp_path, CountingOffline())

    class Crash(BaseException):  # like a kill: not an error the runner may catch
        pass

    def crash_after_draft(point: str) -> None:
        if point == "after_draft":
            raise Crash

    crashing._on_checkpoint = crash_after_draft
    with pytest.raises(Crash):
        crashing.run(job)
    resumed = make_runner(store, tmp_path, CountingOffline())
    resumed._lease = timedelta(0)  # the first worker is gone
    assert resumed.run(job).status == "awaiting_approval"
    assert CountingOffline.calls == 1
    assert types(store).count("ModelCalled") == 1
    assert types(store).count("JobStarted") == 2


def test_input_that_does_not_fit_the_agent_fails_cleanly(store: Store, tmp_path: Path) -> None:
    outcome = make_runner(store, tmp_path).run(request(store, "lead", {"name": ""}))
    assert outcome.status == "failed"
    assert "AgentInputError" in (queries.get_job("j1").error or "")
