"""The composition root: settings in, a running opcore (store, agents, broker, workers) out."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dramatiq
from dramatiq import Broker

from agents.base import Agent
from agents.budget import Budgets
from agents.cache import ModelCache
from agents.lead import LeadAgent
from agents.proposal import ProposalAgent
from agents.providers.base import ModelProvider
from agents.providers.offline import OfflineProvider
from agents.providers.openai import OpenAIChatProvider
from agents.providers.router import ModelRouter
from agents.registry import AgentRegistry
from agents.release_notes import ReleaseNotesAgent
from agents.retry import RetryPolicy
from agents.revise import ReviseAgent
from agents.runner import JobRunner
from agents.triage import TriageAgent
from config import ConfigError, Settings
from connectors.base import Connector
from connectors.email import email_connector_from
from jobs.actors import Actors, declare_actors
from jobs.broker import check_broker, make_broker, start_worker
from jobs.effects import Effects
from jobs.faults import FaultInjector
from store import Store, open_store, queries
from store.errors import StoreError
from store.memory import open_memory
from store.memory.service import Memory

logger = logging.getLogger(__name__)


def make_model(settings: Settings) -> ModelProvider:
    if settings.llm_base_url:
        provider: ModelProvider = OpenAIChatProvider(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key.get_secret_value(),
            model=settings.llm_model,
            timeout=settings.llm_timeout,
        )
        return ModelRouter(provider, settings.model_routes)
    return OfflineProvider()


def make_connectors(settings: Settings) -> dict[str, Connector]:
    try:
        email = email_connector_from(
            smtp_url=settings.smtp_url,
            outbox_dir=settings.outbox_dir,
            sender=settings.email_from,
            smtp_timeout=settings.smtp_timeout,
        )
    except ValueError as exc:
        raise ConfigError(f"email settings (OPCORE_SMTP_URL / OPCORE_EMAIL_FROM): {exc}") from exc
    return {"email": email}


@dataclass
class Runtime:
    settings: Settings
    store: Store
    registry: AgentRegistry
    model: ModelProvider
    runner: JobRunner
    effects: Effects
    broker: Broker
    actors: Actors
    connectors: dict[str, Connector]
    memory: Memory
    worker: dramatiq.Worker | None = field(default=None)

    def start_worker(self) -> None:
        if self.worker is None:
            self.worker = start_worker(self.broker, threads=self.settings.worker_threads)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop(timeout=10_000)
            self.worker = None
        self.broker.close()
        self.model.close()
        self.memory.index.close()
        self.store.close()


def build_runtime(settings: Settings, *, with_worker: bool = False) -> Runtime:
    """Open everything ``settings`` describe. ``with_worker`` starts worker threads here."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.resolved_database_url)
    connectors = make_connectors(settings)
    try:
        memory = open_memory(settings, store)
    except StoreError as exc:
        raise ConfigError(
            f"memory settings (OPCORE_EMBEDDINGS / OPCORE_WEAVIATE_URL): {exc}"
        ) from exc
    agents: list[Agent[Any, Any]] = [
        LeadAgent(),
        ProposalAgent(),
        TriageAgent(),
        ReleaseNotesAgent(),
        ReviseAgent(),
    ]
    registry = AgentRegistry.with_agents(connectors, agents)
    model = make_model(settings)
    faults = FaultInjector(settings.faults, marker_dir=settings.data_dir)
    retry = RetryPolicy(
        max_retries=settings.max_retries,
        min_backoff_ms=settings.retry_min_backoff_ms,
        max_backoff_ms=settings.retry_max_backoff_ms,
    )
    lease = timedelta(seconds=settings.job_lease_seconds)
    runner = JobRunner(
        log=store.log,
        registry=registry,
        model=model,
        approval_ttl=timedelta(hours=settings.approval_ttl_hours),
        operator_name=settings.operator_name,
        lease=lease,
        retry=retry,
        on_checkpoint=faults,
        budgets=Budgets.declared(
            agents,
            overrides=settings.agent_budgets,
            prices=settings.model_prices,
            default_price=settings.default_model_price,
            daily_usd=settings.budget_daily_usd,
            monthly_usd=settings.budget_monthly_usd,
        ),
        cache=ModelCache(ttl=timedelta(seconds=settings.model_cache_ttl_seconds)),
        rules=settings.approval_rules,
        memory=memory,
    )
    effects = Effects(
        log=store.log, connectors=connectors, lease=lease, retry=retry, on_checkpoint=faults
    )
    broker = make_broker(settings.broker_url)
    check_broker(broker)

    def run_job(job_id: str) -> None:
        runner.run(job_id)
        for action in queries.actions_for_job(job_id):  # approved by policy: no tap to wait for
            if action.status == "approved":
                actors.execute_action.send(action.action_id)

    actors = declare_actors(broker, run_job=run_job, execute_action=effects.execute)
    runtime = Runtime(
        settings=settings,
        store=store,
        registry=registry,
        model=model,
        runner=runner,
        effects=effects,
        broker=broker,
        actors=actors,
        connectors=connectors,
        memory=memory,
    )
    if with_worker:
        runtime.start_worker()
    return runtime
