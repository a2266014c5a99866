"""The composition root: settings in, a running opcore (store, agents, broker, workers) out."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import dramatiq
from dramatiq import Broker

from agents.base import Agent
from agents.budget import Budgets
from agents.cache import ModelCache
from agents.content import PostDraftAgent
from agents.errors import AgentError
from agents.invoice import (
    InvoiceAgent,
    InvoiceEmailAgent,
    PaymentReminderAgent,
    Seller,
    ThankYouAgent,
)
from agents.lead import LeadAgent
from agents.milestones import MilestonesAgent
from agents.proposal import ProposalAgent
from agents.providers.base import ModelProvider
from agents.providers.offline import OfflineProvider
from agents.providers.openai import OpenAIChatProvider
from agents.providers.router import ModelRouter
from agents.registry import AgentRegistry
from agents.release_flow import ReleasePublishAgent
from agents.release_notes import ReleaseNotesAgent
from agents.retry import RetryPolicy
from agents.revise import ReviseAgent
from agents.runner import JobRunner
from agents.triage import TriageAgent
from config import ConfigError, Settings
from config.flows import load_templates
from config.logs import correlated
from connectors.base import Connector
from connectors.calendar import calendar_connector_from
from connectors.documents import DocumentsConnector
from connectors.email import email_connector_from, parse_sender
from connectors.errors import ConnectorError
from connectors.invoice import Party
from connectors.outgoing import OutgoingWebhookConnector
from jobs.actors import Actors, declare_actors
from jobs.broker import check_broker, make_broker, start_worker
from jobs.effects import Effects
from jobs.faults import FaultInjector
from jobs.flows import Conductor, stable_id
from jobs.reactions import Reactions
from jobs.slo import SloMonitor, pause_agent
from store import Store, open_store, queries
from store import events as ev
from store.errors import NotFoundError, StoreError
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


def seller_of(settings: Settings) -> Seller:
    return Seller(
        name=settings.business_name or settings.operator_name or "Your business",
        email=parse_sender(settings.email_from).addr_spec,
        address=settings.business_address,
    )


def make_connectors(settings: Settings) -> dict[str, Connector]:
    documents_dir = settings.documents_path
    try:
        email = email_connector_from(
            smtp_url=settings.smtp_url,
            outbox_dir=settings.outbox_dir,
            sender=settings.email_from,
            smtp_timeout=settings.smtp_timeout,
            documents_dir=documents_dir,
        )
    except ValueError as exc:
        raise ConfigError(f"email settings (OPCORE_SMTP_URL / OPCORE_EMAIL_FROM): {exc}") from exc
    try:
        calendar = calendar_connector_from(
            caldav_url=settings.caldav_url,
            username=settings.caldav_username,
            password=settings.caldav_password.get_secret_value(),
            ics_path=documents_dir / "calendar.ics",
            timeout=settings.smtp_timeout,
        )
    except (ValueError, ConnectorError) as exc:
        raise ConfigError(f"calendar settings (OPCORE_CALDAV_URL): {exc}") from exc
    try:
        webhook = OutgoingWebhookConnector(
            {
                name: (target.url, target.secret.get_secret_value())
                for name, target in settings.outgoing_webhooks.items()
            }
        )
    except (ValueError, ConnectorError) as exc:
        raise ConfigError(f"outgoing webhooks (OPCORE_OUTGOING_WEBHOOKS): {exc}") from exc
    seller = seller_of(settings)
    documents = DocumentsConnector(
        documents_dir, seller=Party(name=seller.name, email=seller.email, address=seller.address)
    )
    return {"email": email, "calendar": calendar, "documents": documents, "webhook": webhook}


def make_agents(settings: Settings) -> list[Agent[Any, Any]]:
    signature = settings.business_name or settings.operator_name
    return [
        LeadAgent(),
        ProposalAgent(),
        TriageAgent(),
        ReleaseNotesAgent(),
        ReviseAgent(),
        MilestonesAgent(zone=settings.zone),
        InvoiceAgent(
            seller=seller_of(settings),
            currency=settings.invoice_currency,
            due_days=settings.invoice_due_days,
            tax_rate=Decimal(str(settings.invoice_tax_rate)),
        ),
        InvoiceEmailAgent(signature=signature),
        PaymentReminderAgent(signature=signature),
        ThankYouAgent(signature=signature),
        ReleasePublishAgent(
            webhook_target=settings.release_webhook
            if settings.release_webhook in settings.outgoing_webhooks
            else "",
            email_to=settings.release_email_to,
            zone=settings.zone,
        ),
        PostDraftAgent(
            webhook_target=settings.content_webhook
            if settings.content_webhook in settings.outgoing_webhooks
            else "",
            zone=settings.zone,
        ),
    ]


def advance_flows(
    conductor: Conductor | None, reactions: Reactions | None = None, *, now: datetime | None = None
) -> int:
    """Run the reactions, start triggered flows and move open ones on. A failure here never
    fails the work that called it: it is logged, and the scheduler's next tick tries again."""
    try:
        if reactions is not None:
            reactions.run_once()
        if conductor is None:
            return 0
        conductor.start_from_triggers(now=now)
        return conductor.tick(now=now)
    except (StoreError, ConnectorError, AgentError) as exc:
        logger.error("advancing flows failed (the next tick retries): %s", exc)
        return 0


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
    conductor: Conductor | None = None
    reactions: Reactions | None = None
    slos: SloMonitor | None = None
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
    agents = make_agents(settings)
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

    templates = load_templates(settings.flows, workspace_dir=settings.flows_dir)
    for template in templates.values():
        for agent_name in template.agents():
            registry.get(agent_name)  # an unknown agent in a template fails at start-up

    def send_job(job_id: str) -> bool:
        actors.run_job.send(job_id)
        return True

    conductor = (
        Conductor(
            log=store.log,
            templates=templates,
            send_job=send_job,
            compensate=effects.compensate,
            compensable=lambda a: connectors[a.connector].spec(a.action).compensation is not None,
            zone=settings.zone,
            home_channel=settings.home_channel,
        )
        if templates
        else None
    )

    if conductor is not None:
        conductor.start_from_triggers()  # the first start sets its cursor: flows start from now

    def request_job(agent: str, job_input: dict[str, Any], *, key: str, text: str) -> str:
        """A job requested by a reaction (not a person): once per ``key``."""
        job_id = stable_id(key)
        home_channel, _, home_chat = settings.home_channel.partition(":")
        store.log.append(
            ev.job_stream(job_id),
            [
                ev.NewEvent(
                    ev.JobRequested(
                        job_id=job_id,
                        agent=agent,
                        input=job_input,
                        text=text,
                        channel=home_channel or "console",
                        chat_id=home_chat or "local",
                        requested_by=f"reaction:{agent}",
                    ),
                    idempotency_key=key,
                )
            ],
            metadata=ev.Metadata(actor="reactions", correlation_id=job_id),
        )
        actors.run_job.send(job_id)
        return job_id

    reactions = Reactions(
        log=store.log,
        request_job=request_job,
        remember=lambda text, **kw: memory.remember(text, **kw),
        ticket_events=settings.ticket_events,
        email_tickets=settings.email_tickets,
    )
    reactions.run_once()  # the first run sets its cursor

    def run_job(job_id: str) -> None:
        with correlated(job_id):
            runner.run(job_id)
            for action in queries.actions_for_job(job_id):  # approved by policy: no tap
                if action.status == "approved":
                    actors.execute_action.send(action.action_id)
            advance_flows(conductor, reactions)

    def execute_action(action_id: str) -> None:
        try:
            job_id = queries.get_action(action_id).job_id
        except NotFoundError:
            job_id = action_id  # effects.execute logs and drops it
        with correlated(job_id):
            effects.execute(action_id)
            advance_flows(conductor, reactions)

    actors = declare_actors(broker, run_job=run_job, execute_action=execute_action)
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
        conductor=conductor,
        reactions=reactions,
        slos=SloMonitor(
            log=store.log,
            slos=settings.slos,
            compensate=effects.compensate,
            compensable=lambda a: connectors[a.connector].spec(a.action).compensation is not None,
            pause=lambda agent, *, by: pause_agent(store.log, agent, by=by),
        )
        if settings.slos
        else None,
    )
    if with_worker:
        runtime.start_worker()
    return runtime
