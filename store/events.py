"""Event types: the vocabulary of the log.

Every event is a frozen pydantic model registered under its type name. The log stores the
name and the JSON of the model; reading validates it back into the model, so a typo in an
event's data fails at append time, not months later in a projection.

Streams: ``job-<id>`` (a job's life), ``action-<id>`` (a proposed effect and its approval),
``contact-<id>``. Every event of a job's story carries the job id as its correlation id, so
the trace of a job is one query.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from store.errors import EventSchemaError

JSONDict = dict[str, Any]


class EventData(BaseModel):
    """Base of every event payload. Non-finite numbers (NaN, infinities) are refused, in
    float fields and inside JSON fields alike: JSON cannot hold them, so an event carrying one
    could be appended but never read back the same."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    type_name: ClassVar[str] = ""

    @model_validator(mode="after")
    def _finite(self) -> EventData:
        for name in type(self).model_fields:
            if not _all_finite(getattr(self, name)):
                raise ValueError(f"{name} holds a non-finite number (NaN or infinity)")
        return self


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_all_finite(v) for v in value)
    return True


EVENT_TYPES: dict[str, type[EventData]] = {}
E = TypeVar("E", bound=type[EventData])


def event_type(name: str) -> Any:
    """Register an event model under ``name`` (refused twice)."""

    def register(cls: E) -> E:
        if name in EVENT_TYPES:
            raise EventSchemaError(f"event type {name!r} is registered twice")
        cls.type_name = name
        EVENT_TYPES[name] = cls
        return cls

    return register


def parse_event(type_name: str, data: Mapping[str, Any] | str) -> EventData:
    """Validate stored event data (a mapping, or the JSON text itself) into its model."""
    try:
        model = EVENT_TYPES[type_name]
    except KeyError:
        raise EventSchemaError(f"unknown event type {type_name!r}") from None
    try:
        if isinstance(data, str):
            return model.model_validate_json(data)
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise EventSchemaError(f"{type_name}: {exc}") from exc


class Metadata(BaseModel):
    """Who and what caused an event. ``correlation_id`` groups a job's whole story."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    actor: str
    correlation_id: str | None = None
    causation_id: str | None = None


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended, with an optional idempotency key (unique in the log)."""

    data: EventData
    idempotency_key: str | None = None


@dataclass(frozen=True)
class RecordedEvent:
    """An event as the log holds it."""

    position: int
    event_id: str
    stream_id: str
    version: int
    data: EventData
    metadata: Metadata
    idempotency_key: str | None
    recorded_at: datetime

    @property
    def type(self) -> str:
        return self.data.type_name


# Jobs ----------------------------------------------------------------------------------


@event_type("JobRequested")
class JobRequested(EventData):
    job_id: str
    agent: str
    input: JSONDict
    text: str
    channel: str
    chat_id: str
    requested_by: str


@event_type("JobStarted")
class JobStarted(EventData):
    job_id: str
    worker: str
    attempt: int


@event_type("JobCompleted")
class JobCompleted(EventData):
    job_id: str
    summary: str
    proposals: int


@event_type("JobFailed")
class JobFailed(EventData):
    """Final: permanent error, or the last retry of a transient one (dead-lettered)."""

    job_id: str
    error_type: str
    error: str
    transient: bool = False
    attempts: int = 1


@event_type("JobAttemptFailed")
class JobAttemptFailed(EventData):
    """A transient failure; the job will be tried again after ``retry_in_s``."""

    job_id: str
    attempt: int
    error_type: str
    error: str
    retry_in_s: float


@event_type("JobRequeued")
class JobRequeued(EventData):
    """The reconciler (or the operator) put the job back on the queue."""

    job_id: str
    reason: str


@event_type("JobRetried")
class JobRetried(EventData):
    """The operator asked to run a failed job again."""

    job_id: str
    by: str


@event_type("JobCancelled")
class JobCancelled(EventData):
    job_id: str
    by: str


@event_type("StepCompleted")
class StepCompleted(EventData):
    """A checkpoint: the step's result, so a resumed job does not repeat it."""

    job_id: str
    step: str
    result: JSONDict


@event_type("ModelCalled")
class ModelCalled(EventData):
    job_id: str
    task: str
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    offline: bool
    agent: str = ""
    estimated_usd: float = 0.0  # priced before the call
    cost_usd: float = 0.0  # priced after, with the real usage
    contact_id: str | None = None
    cached: bool = False  # answered from the cache: nothing was spent


@event_type("BudgetBlocked")
class BudgetBlocked(EventData):
    """A model call was not made: it would have crossed a budget. The job waits for the operator."""

    job_id: str
    agent: str
    scope: str  # "workspace" or "agent:<name>"
    period: str  # "day:2026-11-25" or "month:2026-11"
    limit_usd: float
    spent_usd: float
    estimate_usd: float


@event_type("BudgetWarning")
class BudgetWarning(EventData):
    """Spend crossed 80 % of a budget (once per budget and period)."""

    job_id: str
    scope: str
    period: str
    limit_usd: float
    spent_usd: float


@event_type("BudgetOverride")
class BudgetOverride(EventData):
    """The operator let one job spend past a budget, once, by this much."""

    job_id: str
    usd: float
    by: str


# Contacts ------------------------------------------------------------------------------


@event_type("ContactCreated")
class ContactCreated(EventData):
    contact_id: str
    name: str
    email: str
    company: str


@event_type("ContactRecalled")
class ContactRecalled(EventData):
    """A job found an existing contact instead of creating one."""

    contact_id: str
    job_id: str


# Actions and approvals -----------------------------------------------------------------


@event_type("ActionProposed")
class ActionProposed(EventData):
    action_id: str
    job_id: str
    connector: str
    action: str
    params: JSONDict
    idempotency_key: str
    summary: str
    contact_id: str | None = None
    # What the operator must look at twice: a recipient, amount or link that came neither from
    # the operator nor from the store, a first message to an address (see agents/provenance.py).
    flags: list[str] = Field(default_factory=list)
    # Params bound to a fact in the store ({"to": "contact:<id>.email"}): if the fact changes
    # before the decision, approving asks again with the new value (agents/approvals.py).
    bindings: dict[str, str] = Field(default_factory=dict)
    revises: str | None = None  # the action this one replaces (an edit or a re-approval)
    # A quick draft shown at once while a better one is written; the better one replaces it
    # (and its message, edited in place) unless the operator decided on it first.
    preliminary: bool = False


@event_type("ActionSuperseded")
class ActionSuperseded(EventData):
    """A pending proposal was replaced by another (revised on request, or its inputs changed);
    it will never run."""

    action_id: str
    token: str  # its approval, which closes as "superseded"
    by_action_id: str
    reason: str


@event_type("EditRequested")
class EditRequested(EventData):
    """The operator pressed Edit on a pending proposal: their next plain message in this chat
    is the correction."""

    action_id: str
    token: str
    channel: str
    chat_id: str
    by: str


@event_type("EditSubmitted")
class EditSubmitted(EventData):
    """The operator's correction of a pending proposal went to a revision job."""

    action_id: str
    token: str
    job_id: str
    correction: str


@event_type("ApprovalsReminded")
class ApprovalsReminded(EventData):
    """One reminder, to one chat, listed these pending approvals."""

    tokens: list[str]
    oldest_requested_at: datetime
    channel: str
    chat_id: str


REMINDER_STREAM = "reminders"


@event_type("ContactUpdated")
class ContactUpdated(EventData):
    """The operator corrected a contact; only the fields given change."""

    contact_id: str
    name: str | None = None
    email: str | None = None
    company: str | None = None
    previous_email: str | None = None


@event_type("ApprovalRequested")
class ApprovalRequested(EventData):
    action_id: str
    job_id: str
    token: str
    expires_at: datetime


@event_type("ApprovalDecided")
class ApprovalDecided(EventData):
    action_id: str
    token: str
    decision: Literal["approved", "rejected"]
    decided_by: str
    channel: str


@event_type("ApprovalExpired")
class ApprovalExpired(EventData):
    action_id: str
    token: str


@event_type("ActionStarted")
class ActionStarted(EventData):
    action_id: str
    attempt: int
    worker: str


@event_type("ActionExecuted")
class ActionExecuted(EventData):
    action_id: str
    summary: str
    details: JSONDict


@event_type("ActionFailed")
class ActionFailed(EventData):
    action_id: str
    error_type: str
    error: str
    transient: bool = False


@event_type("ActionRejected")
class ActionRejected(EventData):
    action_id: str
    decided_by: str


@event_type("ActionAttemptFailed")
class ActionAttemptFailed(EventData):
    """The connector failed without effect, transiently; the action will be tried again."""

    action_id: str
    attempt: int
    error_type: str
    error: str
    retry_in_s: float


@event_type("ActionOutcomeUnknown")
class ActionOutcomeUnknown(EventData):
    """The action was started but its result never recorded, and the connector cannot tell."""

    action_id: str
    reason: str


@event_type("ActionRequeued")
class ActionRequeued(EventData):
    """The reconciler sent the action to the broker again."""

    action_id: str
    reason: str


@event_type("ActionRetried")
class ActionRetried(EventData):
    """The operator asked to try a failed or unknown action again (same idempotency key)."""

    action_id: str
    by: str


@event_type("ActionDiscarded")
class ActionDiscarded(EventData):
    action_id: str
    by: str


@event_type("ActionCompensated")
class ActionCompensated(EventData):
    """The action's effect was undone by its compensating action."""

    action_id: str
    compensation: str
    summary: str
    reason: str


@event_type("ActionCompensationFailed")
class ActionCompensationFailed(EventData):
    action_id: str
    compensation: str
    error_type: str
    error: str


# Questions to the operator -------------------------------------------------------------


@event_type("QuestionAsked")
class QuestionAsked(EventData):
    """The system needs the operator to choose (an unknown outcome, a dead-lettered job)."""

    token: str
    kind: Literal[
        "action_unknown",
        "action_failed",
        "job_failed",
        "budget",
        "flow_failed",
        "flow_reply",
        "slo_burn",
    ]
    job_id: str
    action_id: str | None = None
    text: str
    choices: list[str]


@event_type("QuestionAnswered")
class QuestionAnswered(EventData):
    token: str
    choice: str
    answered_by: str
    channel: str


@event_type("ApprovalsBundled")
class ApprovalsBundled(EventData):
    """One "Approve all N" button was offered for these pending approvals of one kind."""

    token: str
    kind: str
    approval_tokens: list[str]


BUNDLE_STREAM = "bundles"


# Pairing -------------------------------------------------------------------------------


@event_type("PairingCodeIssued")
class PairingCodeIssued(EventData):
    """`opcore pair <channel>` printed a one-time code (only its hash is logged)."""

    code_hash: str
    channel: str
    expires_at: datetime


@event_type("OperatorPaired")
class OperatorPaired(EventData):
    """Someone sent a valid pairing code from a chat and became an operator."""

    code_hash: str
    channel: str
    user_id: str
    chat_id: str


# Agents --------------------------------------------------------------------------------


@event_type("AgentPaused")
class AgentPaused(EventData):
    agent: str
    by: str


@event_type("AgentResumed")
class AgentResumed(EventData):
    agent: str
    by: str


# Memory --------------------------------------------------------------------------------


@event_type("MemoryStored")
class MemoryStored(EventData):
    """A semantic memory: a note, a draft, a deliverable... (its id is a digest of its text
    and contact, so the same memory written twice is one)."""

    memory_id: str
    kind: str
    text: str
    contact_id: str | None = None
    job_id: str | None = None
    source: str  # how it came: "/remember", "lead agent", "import"...
    by: str  # the operator's id or "agent:<name>"


@event_type("MemoryForgotten")
class MemoryForgotten(EventData):
    """Hidden from recall at once; restorable until the undo window ends, then purged."""

    memory_id: str
    by: str


@event_type("MemoryRestored")
class MemoryRestored(EventData):
    memory_id: str
    by: str


@event_type("MemoryPurged")
class MemoryPurged(EventData):
    """The undo window of a forgotten memory ended: its text leaves the read model and the
    recall index (the log keeps its original event)."""

    memory_id: str


@event_type("FactAsserted")
class FactAsserted(EventData):
    """A canonical fact: ``subject`` is ``contact:<id>`` or ``workspace``. A new value for a
    single-valued key supersedes the current one, which stays in the history."""

    subject: str
    key: str
    value: str
    source: str
    by: str
    job_id: str | None = None


@event_type("FactRetracted")
class FactRetracted(EventData):
    fact_id: str
    by: str


@event_type("FactRestored")
class FactRestored(EventData):
    fact_id: str
    by: str


@event_type("MemoryRecalled")
class MemoryRecalled(EventData):
    """Working memory: what a job recalled (memories and facts), recorded in its trace."""

    job_id: str | None = None
    query: str
    mode: str  # "hybrid" or "keyword"
    filters: dict[str, str] = Field(default_factory=dict)
    hits: list[dict[str, Any]] = Field(default_factory=list)  # memory_id, kind, score, preview
    facts: list[dict[str, str]] = Field(default_factory=list)  # fact_id, key, value
    cached: bool = False


# Business: inbound edges, flows, invoices, payments, the board, the digest ---------------


@event_type("WebhookReceived")
class WebhookReceived(EventData):
    """An inbound webhook delivery whose signature verified. Appended with the idempotency key
    ``webhook:<source>:<delivery_id>``, so a redelivery is acknowledged and dropped."""

    source: str  # the configured source's name
    kind: str  # stripe | github | generic
    delivery_id: str
    event_type: str  # "invoice.paid", "push", "release", ...
    payload: JSONDict


@event_type("EmailReceived")
class EmailReceived(EventData):
    """A message read from the inbox (key ``email:<message_id>``). Its text is untrusted data."""

    message_id: str
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)
    from_address: str
    from_name: str = ""
    subject: str = ""
    text: str = ""  # the new part of the message, quotes and signature removed
    answers_action: str | None = None  # the sent action (ours) it replies to
    contact_id: str | None = None
    auto_submitted: bool = False


@event_type("InboxPolled")
class InboxPolled(EventData):
    """The inbox was read up to ``cursor`` (opaque to the store)."""

    inbox: str
    cursor: str
    count: int


@event_type("ContactWon")
class ContactWon(EventData):
    """The client accepted: by reply (``email:<message id>``) or ``/won`` (the operator)."""

    contact_id: str
    by: str
    evidence: str = ""


@event_type("FlowStarted")
class FlowStarted(EventData):
    flow_id: str
    template: str
    trigger: str  # what started it: "job:<id>", "webhook:<source>:<id>", "schedule:<date>"...
    contact_id: str | None = None
    context: JSONDict = Field(default_factory=dict)
    steps: list[str] = Field(default_factory=list)  # the template's steps when it started


@event_type("FlowStepStarted")
class FlowStepStarted(EventData):
    flow_id: str
    step: str
    job_id: str | None = None


@event_type("FlowStepCompleted")
class FlowStepCompleted(EventData):
    """A checkpoint: the step's result is recorded, a resumed flow continues after it."""

    flow_id: str
    step: str
    result: JSONDict = Field(default_factory=dict)


@event_type("FlowWaiting")
class FlowWaiting(EventData):
    flow_id: str
    step: str
    waiting_for: str  # "reply", "won", "payment", "approval"
    until: datetime | None = None  # then the step's timeout path runs


@event_type("FlowFailed")
class FlowFailed(EventData):
    flow_id: str
    step: str
    reason: str
    job_id: str | None = None
    compensations: list[str] = Field(default_factory=list)  # executed actions that can be undone
    token: str = ""  # the alert's question (Undo / Retry / Leave)


@event_type("FlowCompleted")
class FlowCompleted(EventData):
    flow_id: str
    outcome: str  # "done", "stopped: <why>", "cancelled"


@event_type("InvoiceDrafted")
class InvoiceDrafted(EventData):
    """An invoice number is taken (gap-free per year: appended at the invoices stream's
    expected version); the invoice itself goes out through an approved action."""

    invoice_id: str
    number: str
    contact_id: str | None = None
    flow_id: str | None = None
    job_id: str | None = None
    currency: str
    total: str  # Decimal as text
    issue_date: str  # ISO date
    due_date: str
    lines: list[dict[str, str]] = Field(default_factory=list)


@event_type("PaymentRecorded")
class PaymentRecorded(EventData):
    """A finance event from a webhook (key ``payment:<source>:<external_id>:<status>``)."""

    source: str
    external_id: str
    status: Literal["succeeded", "failed", "refunded"]
    amount: str  # Decimal as text, in the currency's main unit
    currency: str
    invoice_number: str | None = None
    contact_id: str | None = None
    email: str = ""
    description: str = ""


@event_type("BoardPosted")
class BoardPosted(EventData):
    """Blackboard: an agent (or the operator) posts a fact others may react to."""

    post_id: str
    topic: str  # "customer_blocked", "feature_request", "release_published", ...
    subject: str  # what it is about: a contact, a version, a product area
    text: str
    data: JSONDict = Field(default_factory=dict)
    by: str
    job_id: str | None = None


@event_type("DigestSent")
class DigestSent(EventData):
    """The daily digest (key ``digest:<local date>``: once a day, across restarts)."""

    day: str  # the operator's local date, ISO
    kind: Literal["daily", "on_demand"]
    text: str
    since: datetime | None = None
    counts: dict[str, int] = Field(default_factory=dict)


@event_type("SloBurning")
class SloBurning(EventData):
    """An objective's error budget burns fast: one alert (``token``) until it recovers."""

    slo: str
    burn_rate: float  # how many times faster than the target allows, over the fast window
    missed: list[str] = Field(default_factory=list)  # actions or jobs that missed, newest first
    job_id: str  # the job the alert's question hangs on (the newest miss)
    token: str
    compensations: list[str] = Field(default_factory=list)  # what Undo would roll back
    agents: list[str] = Field(default_factory=list)  # what Pause would pause


@event_type("SloAlertHandled")
class SloAlertHandled(EventData):
    """The operator's answer to a burn alert, carried out."""

    slo: str
    token: str
    choice: str
    by: str
    outcome: str


@event_type("SloRecovered")
class SloRecovered(EventData):
    """The fast window is back within the objective: a new burn gets a new alert."""

    slo: str
    burn_rate: float


def slo_stream(name: str) -> str:
    return f"slo-{name}"


def flow_stream(flow_id: str) -> str:
    return f"flow-{flow_id}"


INVOICES_STREAM = "invoices"
BOARD_STREAM = "board"
DIGEST_STREAM = "digest"


def memory_stream(memory_id: str) -> str:
    return f"memory:{memory_id}"


def facts_stream(subject: str) -> str:
    return f"facts:{subject}"


def job_stream(job_id: str) -> str:
    return f"job-{job_id}"


def action_stream(action_id: str) -> str:
    return f"action-{action_id}"


def contact_stream(contact_id: str) -> str:
    return f"contact-{contact_id}"


def agent_stream(agent: str) -> str:
    return f"agent-{agent}"


PAIRING_STREAM = "pairing"
