"""Typed settings for opcore.

Nothing outside this package reads the environment: the CLI calls :func:`load_settings`
once and passes the resulting :class:`Settings` inward.

Sources, highest priority first: keyword arguments, ``OPCORE_*`` environment variables,
``opcore.toml`` (in the working directory, or the file named by ``OPCORE_CONFIG``), defaults.
"""

from __future__ import annotations

import os
import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from config.errors import ConfigError

CONSOLE_OPERATOR = "console:local"

# Where the reliability tests may kill a process (os._exit, as kill -9 would). Settings only:
# nothing in chat can reach them.
FAULT_POINTS = frozenset(
    {
        "before_agent",  # the worker claimed the job, the agent has not run
        "after_draft",  # the agent checkpointed its draft, no proposal yet
        "after_action_started",  # ActionStarted is in the log, the connector was not called
        "after_effect",  # the connector did its work, ActionExecuted is not in the log
        "after_action_executed",  # ActionExecuted is in the log, the message is not acked
    }
)


def parse_clock(value: str) -> time | None:
    """``"08:30"`` -> 08:30; ``None`` when it is not a time of day."""
    hour, sep, minute = value.strip().partition(":")
    if not sep or not (hour.isdigit() and minute.isdigit()) or len(minute) != 2:
        return None
    if not (0 <= int(hour) < 24 and 0 <= int(minute) < 60):
        return None
    return time(int(hour), int(minute))


class ApprovalRule(BaseModel):
    """How one kind of action (``connector.action``) is approved."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    mode: Literal["ask", "auto", "never"] = "ask"
    trusted_contacts: tuple[str, ...] = ()  # recipients that need no tap (lower case)
    below_amount: float | None = None  # auto-approve when params["amount"] is below this
    expires_hours: float | None = None  # overrides approval_ttl_hours for this kind


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


class WebhookSource(BaseModel):
    """One inbound webhook sender, served at ``/webhooks/<name>`` (``OPCORE_WEBHOOK_SOURCES``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["stripe", "github", "generic"]
    secret: SecretStr
    tolerance_seconds: int = Field(default=300, ge=1, le=86_400)  # Stripe/generic timestamps


class Slo(BaseModel):
    """A service level objective for a critical flow (``OPCORE_SLOS`` / ``[slos.<name>]``).

    ``kind = "action"``: actions ``action`` (``connector.action``), of jobs of ``agent`` when
    set, carried out within ``within_minutes`` of their approval. ``kind = "job"``: jobs of
    ``agent`` (every agent when empty) that end done rather than failed. ``target`` of them over
    the last ``window_days``; the rest is the error budget. When the last ``fast_hours`` burn
    the budget ``fast_burn`` times faster than the target allows, one alert."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    description: str = ""
    kind: Literal["action", "job"] = "action"
    action: str = ""
    agent: str = ""
    within_minutes: float = Field(default=60.0, gt=0)
    target: float = Field(default=0.99, gt=0, lt=1)
    window_days: float = Field(default=28.0, gt=0, le=366)
    fast_hours: float = Field(default=1.0, gt=0)
    fast_burn: float = Field(default=14.4, gt=1)
    min_bad: int = Field(default=1, ge=1)  # misses in the fast window before an alert

    @field_validator("action")
    @classmethod
    def _action_named(cls, value: str) -> str:
        if value and value.count(".") != 1:
            raise ValueError("action must be connector.action, e.g. email.send_email")
        return value

    def label(self) -> str:
        if self.description:
            return self.description
        what = self.action or "actions"
        if self.kind == "job":
            return f"{self.agent or 'all'} jobs succeed"
        whose = f" of {self.agent}" if self.agent else ""
        return f"{what}{whose} within {self.within_minutes:g} min of approval"


DEFAULT_SLOS = {
    "invoices_sent": Slo(
        description="invoices sent within 1 h of approval",
        action="email.send_email",
        agent="invoice_email",
        within_minutes=60,
        target=0.99,
    ),
    "proposals_sent": Slo(
        description="proposals sent within 1 h of approval",
        action="email.send_email",
        agent="proposal",
        within_minutes=60,
        target=0.99,
    ),
    "jobs_succeed": Slo(
        description="jobs end done, not failed",
        kind="job",
        target=0.95,
        min_bad=3,
    ),
}


class OutgoingTarget(BaseModel):
    """A named outgoing webhook (``OPCORE_OUTGOING_WEBHOOKS``): agents name the target, never
    the URL."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    url: str
    secret: SecretStr = SecretStr("")


class Settings(BaseSettings):
    """Every knob of opcore. The README's settings table documents each field."""

    model_config = SettingsConfigDict(
        env_prefix="OPCORE_",
        extra="ignore",
        frozen=True,
        toml_file="opcore.toml",
    )

    data_dir: Path = Field(
        default=Path("data"), description="Where the embedded defaults keep files."
    )
    database_url: str = Field(
        default="",
        description="sqlite:///path or postgresql://user@host:port/db; empty = SQLite in data_dir.",
    )
    broker_url: str = Field(
        default="memory://",
        description="memory:// (in-process broker and worker threads) or redis://host:port/db.",
    )
    operators: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(CONSOLE_OPERATOR,),
        description="Who may command the bot: comma-separated channel:user ids.",
    )
    operator_name: str = Field(default="", description="Your name, used to sign drafts.")
    email_from: str = Field(
        default="opcore@localhost.localdomain", description="From address of sent email."
    )
    llm_base_url: str = Field(default="", description="OpenAI-compatible API base URL.")
    llm_api_key: SecretStr = Field(default=SecretStr(""), description="API key for the model.")
    llm_model: str = Field(default="gpt-4o-mini", description="Model name for drafts.")
    llm_timeout: float = Field(default=60.0, gt=0, description="Seconds per model call.")
    model_cache_ttl_seconds: float = Field(
        default=86_400.0,
        ge=0,
        description="Reuse a model's answer to the same prompt for this long; 0 = off.",
    )
    model_routes: dict[str, list[str]] = Field(
        default={},
        description='Task class -> models to try in order (JSON), e.g. {"draft": ["gpt-4o", "gpt-4o-mini"]}.',
    )
    model_prices: dict[str, tuple[float, float]] = Field(
        default={
            "gpt-4o-mini": (0.15, 0.60),
            "gpt-4o": (2.50, 10.00),
            "gpt-4.1-mini": (0.40, 1.60),
            "offline-template": (0.0, 0.0),
        },
        description="USD per million input and output tokens, by model (JSON).",
    )
    default_model_price: tuple[float, float] = Field(
        default=(5.0, 15.0),
        description="USD per million input/output tokens for a model missing from model_prices (deliberately high).",
    )
    budget_daily_usd: float = Field(
        default=5.0, ge=0, description="Workspace model spend limit per UTC day."
    )
    budget_monthly_usd: float = Field(
        default=50.0, ge=0, description="Workspace model spend limit per month."
    )
    agent_budgets: dict[str, dict[str, float]] = Field(
        default={},
        description='Per-agent limits, JSON like {"lead": {"daily": 1, "monthly": 10}}.',
    )
    smtp_url: str = Field(
        default="",
        description="smtp://user:pass@host:port (STARTTLS if offered) or smtps://…; "
        "empty = write .eml files to data_dir/outbox.",
    )
    smtp_timeout: float = Field(default=30.0, gt=0, description="Seconds per SMTP session.")
    worker_threads: int = Field(default=4, ge=1, le=64, description="Worker threads per process.")
    approval_rules: dict[str, ApprovalRule] = Field(
        default={},
        description='Per action kind, JSON: {"email.send_email": {"trusted_contacts": ["jane@acme.example"]}}; '
        "the default for every kind is to ask.",
    )
    approval_ttl_hours: float = Field(
        default=24.0,
        gt=0,
        description="How long a proposal waits for a decision before it expires unexecuted "
        "(per kind: expires_hours in OPCORE_APPROVAL_RULES).",
    )
    approval_reminder_hours: float = Field(
        default=4.0,
        ge=0,
        description="Remind the operator of decisions waiting longer than this, once per "
        "period per chat; 0 = no reminders.",
    )
    console_drain_seconds: float = Field(
        default=60.0,
        ge=0,
        description="At end of piped input, how long to wait for jobs in flight.",
    )
    log_level: str = Field(default="WARNING", description="Python logging level.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as text, or one JSON object per line."
    )
    home_channel: str = Field(
        default="",
        description="Where job notifications go, as channel:chat (e.g. telegram:12345, slack:C0123); "
        "empty = the chat the job came from.",
    )
    telegram_token: SecretStr = Field(
        default=SecretStr(""), description="Bot token from @BotFather."
    )
    telegram_api_url: str = Field(
        default="https://api.telegram.org/bot",
        description="Bot API base URL (a self-hosted Bot API server, or a local test server).",
    )
    telegram_webhook_url: str = Field(
        default="", description="Public HTTPS URL for webhook mode; empty = long polling."
    )
    telegram_webhook_secret: SecretStr = Field(
        default=SecretStr(""),
        description="Secret Telegram echoes in X-Telegram-Bot-Api-Secret-Token.",
    )
    telegram_webhook_listen: str = Field(
        default="127.0.0.1:8443", description="host:port the webhook server listens on."
    )
    slack_bot_token: SecretStr = Field(
        default=SecretStr(""), description="Slack bot token (xoxb-…)."
    )
    slack_app_token: SecretStr = Field(
        default=SecretStr(""), description="Slack app-level token (xapp-…) for Socket Mode."
    )
    slack_signing_secret: SecretStr = Field(
        default=SecretStr(""), description="Slack signing secret, for HTTP mode."
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/",
        description="Slack Web API base URL (tests point it at a local server).",
    )
    slack_http_listen: str = Field(
        default="127.0.0.1:3000", description="host:port the Slack HTTP-mode server listens on."
    )
    job_lease_seconds: float = Field(
        default=600.0,
        gt=0,
        description="A started job or action with no result after this long is presumed orphaned.",
    )
    queue_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A queued job or approved action not started after this long is enqueued again.",
    )
    reconcile_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often `opcore run` looks for orphaned jobs and actions.",
    )
    max_retries: int = Field(
        default=4, ge=0, le=20, description="Retries of a transient failure before dead-lettering."
    )
    retry_min_backoff_ms: int = Field(
        default=2_000, ge=10, description="First retry delay (doubles each time, with jitter)."
    )
    retry_max_backoff_ms: int = Field(default=300_000, ge=10, description="Longest retry delay.")
    snapshot_every: int = Field(
        default=10_000,
        ge=100,
        description="Snapshot the read models every this many events (rebuilds replay the tail).",
    )
    workspace: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="This workspace's name (the Weaviate tenant).",
    )
    embeddings: Literal["none", "openai", "local"] = Field(
        default="none",
        description="Embedding model for recall: none (keyword-only), openai (an "
        "OpenAI-compatible /embeddings endpoint) or local (the local-embeddings extra).",
    )
    embeddings_base_url: str = Field(
        default="",
        description="Base URL of the /embeddings endpoint (default: OPCORE_LLM_BASE_URL).",
    )
    embeddings_api_key: SecretStr = Field(
        default=SecretStr(""), description="API key for embeddings (default: OPCORE_LLM_API_KEY)."
    )
    embeddings_model: str = Field(
        default="text-embedding-3-small", description="Embedding model name (openai)."
    )
    memory_index_path: Path | None = Field(
        default=None, description="The embedded recall index file (default: <data dir>/recall.db)."
    )
    weaviate_url: str = Field(
        default="", description="Weaviate URL; when set, recall uses Weaviate instead of SQLite."
    )
    weaviate_api_key: SecretStr = Field(default=SecretStr(""), description="Weaviate API key.")
    recall_cache_ttl_seconds: float = Field(
        default=300.0, ge=0, description="Reuse a recall result this long (0: never)."
    )
    forget_undo_days: float = Field(
        default=7.0, ge=0, description="A forgotten memory or fact can be restored this long."
    )
    flows: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Business flows to run, comma-separated: consultant, micro-saas, content "
        "(templates in config/flows, your copies in <data dir>/flows).",
    )
    timezone: str = Field(
        default="UTC",
        description="Your time zone (IANA name, e.g. Europe/Berlin): digest and quiet hours.",
    )
    digest_time: str = Field(
        default="",
        description="Local time of the daily digest, HH:MM (opcore init sets 08:00); empty = none.",
    )
    quiet_hours: str = Field(
        default="",
        description="Local hours without the daily digest or flow reminders, e.g. 22:00-07:00.",
    )
    webhook_listen: str = Field(
        default="",
        description="host:port of the inbound webhook endpoint (/webhooks/<source>); empty = off.",
    )
    webhook_sources: dict[str, WebhookSource] = Field(
        default_factory=dict,
        description='Inbound webhook senders, e.g. {"stripe": {"kind": "stripe", "secret": "whsec_..."}}.',
    )
    outgoing_webhooks: dict[str, OutgoingTarget] = Field(
        default_factory=dict,
        description='Named outgoing webhooks, e.g. {"site": {"url": "https://...", "secret": "..."}}.',
    )
    slos: dict[str, Slo] = Field(
        default_factory=lambda: dict(DEFAULT_SLOS),
        description="Objectives for critical flows, shown in /status and the digest; "
        'e.g. {"invoices_sent": {"action": "email.send_email", "agent": "invoice_email", '
        '"within_minutes": 60, "target": 0.99}}. {} turns them off.',
    )
    documents_dir: Path | None = Field(
        default=None,
        description="Where invoices, the changelog and the feed are written (default: <data dir>/documents).",
    )
    caldav_url: str = Field(
        default="", description="CalDAV calendar collection URL; empty = a local .ics file."
    )
    caldav_username: str = Field(default="", description="CalDAV user name.")
    caldav_password: SecretStr = Field(default=SecretStr(""), description="CalDAV password.")
    imap_url: SecretStr = Field(
        default=SecretStr(""),
        description="Mailbox to read replies from: imaps://user:password@host/INBOX.",
    )
    maildir: Path | None = Field(
        default=None, description="A Maildir to read replies from (instead of IMAP)."
    )
    inbox_poll_seconds: float = Field(
        default=60.0, gt=0, description="How often the inbox is read for replies."
    )
    business_name: str = Field(
        default="", description="Your business's name on invoices (default: operator name)."
    )
    business_address: str = Field(default="", description="Your address on invoices.")
    invoice_currency: str = Field(
        default="EUR", pattern=r"^[A-Z]{3}$", description="Currency of invoices."
    )
    invoice_due_days: int = Field(
        default=14, ge=0, le=365, description="Days from issue to the invoice's due date."
    )
    invoice_tax_rate: float = Field(
        default=0.0, ge=0, lt=1, description="Tax rate on invoices (0.2 = 20 %)."
    )
    release_webhook: str = Field(
        default="releases",
        description="Outgoing webhook (by name) a published release is posted to, if configured.",
    )
    release_email_to: str = Field(
        default="",
        description="Where release notes are emailed on a release (a customer list); empty: no email.",
    )
    content_webhook: str = Field(
        default="posts",
        description="Outgoing webhook (by name) a published post is sent to, if configured.",
    )
    ticket_events: str = Field(
        default="",
        description="Webhook event types (glob) that are support tickets, e.g. ticket.*; empty: none.",
    )
    email_tickets: bool = Field(
        default=False,
        description="Treat new inbound email threads (not replies to opcore's mail) as support tickets.",
    )
    faults: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Failure injection for the reliability tests only (kill points); never set in production.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("OPCORE_CONFIG", "opcore.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
        )

    @field_validator("operators", "faults", "flows", mode="before")
    @classmethod
    def _split_operators(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("operators")
    @classmethod
    def _check_operators(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            channel, sep, user = entry.partition(":")
            if not sep or not channel or not user:
                raise ValueError(
                    f"operator {entry!r} must look like channel:user (e.g. telegram:12345)"
                )
        return value

    @field_validator("agent_budgets")
    @classmethod
    def _check_agent_budgets(
        cls, value: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, float]]:
        for agent, limits in value.items():
            unknown = set(limits) - {"daily", "monthly"}
            if unknown or any(v < 0 for v in limits.values()):
                raise ValueError(
                    f"agent {agent!r}: give non-negative 'daily' and/or 'monthly' limits in USD"
                )
        return value

    @field_validator("release_email_to")
    @classmethod
    def _check_release_email(cls, value: str) -> str:
        value = value.strip()
        if value and not _EMAIL.fullmatch(value):
            raise ValueError(f"{value!r} is not an email address (e.g. customers@list.example)")
        return value

    @field_validator("home_channel")
    @classmethod
    def _check_home(cls, value: str) -> str:
        if value and value != "console" and ":" not in value:
            raise ValueError("home_channel must look like telegram:12345, slack:C0123 or console")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name like Europe/Berlin"
            ) from exc
        return value

    @field_validator("digest_time")
    @classmethod
    def _check_digest_time(cls, value: str) -> str:
        if value and parse_clock(value) is None:
            raise ValueError("digest_time must look like 08:00 (or be empty)")
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _check_quiet_hours(cls, value: str) -> str:
        if value:
            start, sep, end = value.partition("-")
            if not sep or parse_clock(start) is None or parse_clock(end) is None:
                raise ValueError("quiet_hours must look like 22:00-07:00 (or be empty)")
        return value

    @field_validator("webhook_listen")
    @classmethod
    def _check_optional_listen(cls, value: str) -> str:
        return cls._check_listen(value) if value else value

    @field_validator("telegram_webhook_listen", "slack_http_listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("must look like host:port, e.g. 127.0.0.1:8443")
        return value

    @field_validator("faults")
    @classmethod
    def _check_faults(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(value) - FAULT_POINTS
        if unknown:
            raise ValueError(
                f"unknown fault points {sorted(unknown)}; known: {sorted(FAULT_POINTS)}"
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://")):
            raise ValueError("broker_url must start with memory://, redis:// or rediss://")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("database_url must start with sqlite:// or postgresql://")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp(cls, value: str) -> str:
        if value and not value.startswith(("smtp://", "smtps://")):
            raise ValueError("smtp_url must start with smtp:// or smtps://")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value.upper()

    # Derived values -----------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        """The database URL, with the embedded default filled in."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'opcore.db').resolve()}"

    @property
    def recall_index_path(self) -> Path:
        return self.memory_index_path or self.data_dir / "recall.db"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def flows_dir(self) -> Path:
        """The workspace's own flow templates (copies of config/flows, edited)."""
        return self.data_dir / "flows"

    @property
    def documents_path(self) -> Path:
        return self.documents_dir or self.data_dir / "documents"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def telegram_enabled(self) -> bool:
        return bool(self.telegram_token.get_secret_value())

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token.get_secret_value())

    @property
    def in_process_broker(self) -> bool:
        return self.broker_url.startswith("memory://")

    def is_operator(self, channel: str, user_id: str) -> bool:
        return f"{channel}:{user_id}" in self.operators


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; a bad value raises :class:`ConfigError` naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"OPCORE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
