"""Money: spend is bounded before it happens (invariant 7)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel

from agents import questions
from agents.base import Agent, AgentBudget, Capability
from agents.budget import Budgets
from agents.context import AgentContext
from agents.providers.base import ChatMessage, ModelProvider, ModelRequest, ModelResponse, Usage
from agents.registry import AgentRegistry
from agents.runner import JobRunner
from bot.dispatch import Dispatcher
from bot.messages import ButtonPress, InboundMessage
from config import Settings
from connectors.email import EmailConnector, OutboxDelivery
from jobs.runtime import build_runtime
from jobs.service import JobService
from store import Store, queries
from store import events as ev
from tests.builders import request_job

PRICE = {"m": (1_000.0, 1_000.0)}  # $0.001 a token: easy arithmetic


class Loop(BaseModel):
    calls: int = 50


class Looper(Agent[Loop, Loop]):
    """Calls the model again and again, as a runaway agent would."""

    name = "looper"
    description = "test"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    input_model = Loop
    output_model = Loop

    def run(self, ctx: AgentContext, payload: Loop) -> Loop:
        for _ in range(payload.calls):
            ctx.complete(
                ModelRequest(task="t", messages=(ChatMessage("user", "x" * 30),), max_tokens=10)
            )
        return payload


class Fixed(ModelProvider):
    """Answers with 10 prompt + 10 completion tokens: $0.02 a call at PRICE."""

    name = "fixed"
    calls = 0

    @property
    def model(self) -> str:
        return "m"

    def complete(self, request: ModelRequest) -> ModelResponse:
        Fixed.calls += 1
        return ModelResponse("ok", "m", self.name, Usage(10, 10), 0.0)


def budgets(
    daily: float = 1.0, monthly: float = 100.0, agents: dict[str, dict[str, float]] | None = None
) -> Budgets:
    return Budgets(
        prices=PRICE,
        default_price=(5.0, 15.0),
        daily_usd=daily,
        monthly_usd=monthly,
        agents=agents or {},
    )


def runner(store: Store, tmp_path: Path, b: Budgets) -> JobRunner:
    connectors = {
        "email": EmailConnector(sender="me@example.com", delivery=OutboxDelivery(tmp_path))
    }
    return JobRunner(
        log=store.log,
        registry=AgentRegistry.with_agents(connectors, [Looper()]),
        model=Fixed(),
        approval_ttl=timedelta(hours=1),
        operator_name="",
        budgets=b,
    )


def model_calls(store: Store, job: str = "j1") -> list[ev.ModelCalled]:
    return [e.data for e in store.log.read_correlated(job) if isinstance(e.data, ev.ModelCalled)]


def test_a_runaway_loop_is_stopped_before_it_crosses_the_budget(
    store: Store, tmp_path: Path
) -> None:
    Fixed.calls = 0
    request_job(store, agent="looper", payload={"calls": 200})
    outcome = runner(store, tmp_path, budgets(daily=1.0)).run("j1")
    assert outcome.status == "blocked"
    spent, _ = queries.spent("workspace", f"day:{time.strftime('%Y-%m-%d', time.gmtime())}")
    assert spent <= 1.0  # never crossed
    assert Fixed.calls == len(model_calls(store)) < 200
    [blocked] = [
        e.data for e in store.log.read_correlated("j1") if isinstance(e.data, ev.BudgetBlocked)
    ]
    assert blocked.spent_usd + blocked.estimate_usd > blocked.limit_usd
    [question] = queries.pending_questions()
    assert question.kind == "budget" and question.choices == ["raise", "skip", "pause"]
    assert queries.get_job("j1").status == "blocked"


def test_every_call_is_priced_before_and_after_and_attributed(store: Store, tmp_path: Path) -> None:
    request_job(store, agent="looper", payload={"calls": 3})
    runner(store, tmp_path, budgets()).run("j1")
    calls = model_calls(store)
    assert [c.cost_usd for c in calls] == [0.02, 0.02, 0.02]
    assert all(c.estimated_usd > 0 and c.agent == "looper" for c in calls)
    assert queries.get_job("j1").cost_usd == pytest.approx(0.06)
    day = f"day:{time.strftime('%Y-%m-%d', time.gmtime())}"
    assert queries.spent("agent:looper", day)[0] == pytest.approx(0.06)


def test_an_agent_budget_binds_before_the_workspace_one(store: Store, tmp_path: Path) -> None:
    request_job(store, agent="looper", payload={"calls": 50})
    runner(store, tmp_path, budgets(daily=100.0, agents={"looper": {"daily": 0.1}})).run("j1")
    [blocked] = [
        e.data for e in store.log.read_correlated("j1") if isinstance(e.data, ev.BudgetBlocked)
    ]
    assert blocked.scope == "agent:looper"


def test_crossing_80_percent_warns_once(store: Store, tmp_path: Path) -> None:
    request_job(store, agent="looper", payload={"calls": 45})
    runner(store, tmp_path, budgets(daily=1.0)).run("j1")
    warnings = [
        e.data for e in store.log.read_all(limit=10_000) if isinstance(e.data, ev.BudgetWarning)
    ]
    assert [w.scope for w in warnings] == ["workspace"]
    assert warnings[0].spent_usd >= 0.8


def test_raise_once_lets_the_blocked_job_finish(store: Store, tmp_path: Path) -> None:
    request_job(store, agent="looper", payload={"calls": 60})
    run = runner(store, tmp_path, budgets(daily=1.0))
    run.run("j1")
    [question] = queries.pending_questions()
    result = questions.answer(
        store.log, question.token, "raise", by="console:local", channel="console"
    )
    assert result.requeue_job == "j1"
    assert queries.get_job("j1").status == "queued"
    outcome = run.run(
        "j1"
    )  # a re-run: completed calls are not checkpointed here, so it calls again
    assert outcome.status in {"done", "blocked"}


def test_skip_cancels_and_pause_pauses_the_agent(store: Store, tmp_path: Path) -> None:
    request_job(store, agent="looper", payload={"calls": 60})
    run = runner(store, tmp_path, budgets(daily=0.1))
    run.run("j1")
    [question] = queries.pending_questions()
    questions.answer(store.log, question.token, "pause", by="console:local", channel="console")
    assert queries.agent_paused("looper")
    assert queries.get_job("j1").status == "queued"
    request_job(store, "j2", agent="looper", payload={"calls": 60})
    assert run.run("j2").status == "paused"


def test_the_budget_command_shows_spend_against_budgets(data_dir: Path) -> None:
    settings = Settings(
        data_dir=data_dir, budget_daily_usd=2.0, agent_budgets={"lead": {"monthly": 3.0}}
    )
    runtime = build_runtime(settings)
    try:
        dispatcher = Dispatcher(
            settings=settings, service=JobService(runtime), log=runtime.store.log
        )
        [reply] = dispatcher.handle_message(InboundMessage("console", "local", "local", "/budget"))
        assert "workspace" in reply.text and "of $2.00" in reply.text and "agent:lead" in reply.text
        assert dispatcher.handle_button(
            ButtonPress("console", "local", "local", "q:nosuch:b")
        ).text.startswith("That button is no longer valid")
    finally:
        runtime.close()


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    Fixed.calls = 0
    yield


class Capped(Looper):
    """The same loop, with a declared per-job budget and the cheap model tier."""

    name = "capped"
    model_tier = "classify"
    budget = AgentBudget(per_job_usd=0.05, daily_usd=0.5)


def test_an_agents_declared_per_job_budget_stops_its_loop(store: Store, tmp_path: Path) -> None:
    request_job(store, agent="capped", payload={"calls": 50})
    connectors = {
        "email": EmailConnector(sender="me@example.com", delivery=OutboxDelivery(tmp_path))
    }
    declared = Budgets.declared(
        [Capped()],
        overrides={},
        prices=PRICE,
        default_price=(5.0, 15.0),
        daily_usd=100.0,
        monthly_usd=100.0,
    )
    assert declared.agents["capped"] == {"daily": 0.5}
    outcome = JobRunner(
        log=store.log,
        registry=AgentRegistry.with_agents(connectors, [Capped()]),
        model=Fixed(),
        approval_ttl=timedelta(hours=1),
        operator_name="",
        budgets=declared,
    ).run("j1")
    assert outcome.status == "blocked"
    spent = sum(c.cost_usd for c in model_calls(store))
    [blocked] = [
        e.data for e in store.log.read_correlated("j1") if isinstance(e.data, ev.BudgetBlocked)
    ]
    assert blocked.scope == "job:capped" and blocked.limit_usd == 0.05
    assert 0 < spent <= 0.05 < spent + blocked.estimate_usd  # stopped before, not after


def test_settings_override_a_declared_agent_budget() -> None:
    declared = Budgets.declared(
        [Capped()],
        overrides={"capped": {"daily": 2.0}, "other": {"monthly": 3.0}},
        prices=PRICE,
        default_price=(5.0, 15.0),
        daily_usd=1.0,
        monthly_usd=1.0,
    )
    assert declared.agents == {"capped": {"daily": 2.0}, "other": {"monthly": 3.0}}
    assert declared.per_job == {"capped": 0.05}


def test_a_request_without_a_task_class_goes_to_the_agents_model_tier(
    store: Store, tmp_path: Path
) -> None:
    seen: list[str | None] = []

    class Recording(Fixed):
        def complete(self, request: ModelRequest) -> ModelResponse:
            seen.append(request.task_class)
            return super().complete(request)

    request_job(store, agent="capped", payload={"calls": 1})
    connectors = {
        "email": EmailConnector(sender="me@example.com", delivery=OutboxDelivery(tmp_path))
    }
    JobRunner(
        log=store.log,
        registry=AgentRegistry.with_agents(connectors, [Capped()]),
        model=Recording(),
        approval_ttl=timedelta(hours=1),
        operator_name="",
    ).run("j1")
    assert seen == ["classify"]


def test_budget_shows_what_the_cache_saved_and_the_costliest_contacts(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir)
    runtime = build_runtime(settings)
    try:
        log = runtime.store.log
        log.append(
            "contact-c1",
            [
                ev.ContactCreated(
                    contact_id="c1", name="Jane", email="jane@acme.example", company=""
                )
            ],
            metadata=ev.Metadata(actor="test"),
        )
        for cached in (False, True, True):
            log.append(
                "job-j1",
                [
                    ev.ModelCalled(
                        job_id="j1",
                        task="t",
                        provider="p",
                        model="m",
                        prompt_tokens=10,
                        completion_tokens=10,
                        latency_ms=1.0,
                        offline=False,
                        agent="lead",
                        estimated_usd=0.25,
                        cost_usd=0.0 if cached else 0.2,
                        contact_id="c1",
                        cached=cached,
                    )
                ],
                metadata=ev.Metadata(actor="test"),
            )
        dispatcher = Dispatcher(settings=settings, service=JobService(runtime), log=log)
        [reply] = dispatcher.handle_message(InboundMessage("console", "local", "local", "/budget"))
        assert "Cache: 2 answer(s) reused today ($0.5000 not spent)" in reply.text
        assert "jane@acme.example" in reply.text and "$0.2000 (3 call(s))" in reply.text
    finally:
        runtime.close()
