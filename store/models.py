"""Peewee models: the event table and the read models (projections) built from it.

The schema is created and changed only by the versioned migrations in ``store/migrations``;
these classes describe the current shape for queries.
"""

from __future__ import annotations

import peewee

from store.db import database_proxy


class BaseModel(peewee.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class EventRecord(BaseModel):
    """One row per event. ``position`` is the global order; (stream_id, version) is unique."""

    position = peewee.BigAutoField()
    event_id = peewee.CharField(max_length=36, unique=True)
    stream_id = peewee.CharField(max_length=200)
    version = peewee.IntegerField()
    type = peewee.CharField(max_length=100, index=True)
    data = peewee.TextField()
    metadata = peewee.TextField()
    correlation_id = peewee.CharField(max_length=64, null=True, index=True)
    idempotency_key = peewee.CharField(max_length=255, null=True, unique=True)
    recorded_at = peewee.DateTimeField()

    class Meta:
        table_name = "events"
        indexes = ((("stream_id", "version"), True),)


class JobRow(BaseModel):
    job_id = peewee.CharField(max_length=32, primary_key=True)
    agent = peewee.CharField(max_length=100)
    status = peewee.CharField(max_length=32, index=True)
    text = peewee.TextField()
    channel = peewee.CharField(max_length=32)
    chat_id = peewee.CharField(max_length=128)
    requested_by = peewee.CharField(max_length=200)
    requested_at = peewee.DateTimeField()
    started_at = peewee.DateTimeField(null=True)
    finished_at = peewee.DateTimeField(null=True)
    updated_at = peewee.DateTimeField()
    attempts = peewee.IntegerField(default=0)
    open_actions = peewee.IntegerField(default=0)
    model_calls = peewee.IntegerField(default=0)
    tokens = peewee.IntegerField(default=0)
    summary = peewee.TextField(default="")
    error = peewee.TextField(null=True)
    next_attempt_at = peewee.DateTimeField(null=True)
    cost_usd = peewee.DoubleField(default=0.0)

    class Meta:
        table_name = "jobs"


class ActionRow(BaseModel):
    action_id = peewee.CharField(max_length=32, primary_key=True)
    job_id = peewee.CharField(max_length=32, index=True)
    connector = peewee.CharField(max_length=64)
    action = peewee.CharField(max_length=64)
    params = peewee.TextField()
    idempotency_key = peewee.CharField(max_length=255, unique=True)
    summary = peewee.TextField()
    contact_id = peewee.CharField(max_length=32, null=True)
    status = peewee.CharField(max_length=32, index=True)
    attempts = peewee.IntegerField(default=0)
    result = peewee.TextField(default="")
    error = peewee.TextField(null=True)
    updated_at = peewee.DateTimeField()
    started_at = peewee.DateTimeField(null=True)
    next_attempt_at = peewee.DateTimeField(null=True)
    flags = peewee.TextField(default="[]")
    bindings = peewee.TextField(default="{}")
    revises = peewee.CharField(max_length=32, null=True)
    preliminary = peewee.BooleanField(default=False)

    class Meta:
        table_name = "actions"


class ApprovalRow(BaseModel):
    token = peewee.CharField(max_length=32, primary_key=True)
    action_id = peewee.CharField(max_length=32, index=True)
    job_id = peewee.CharField(max_length=32, index=True)
    status = peewee.CharField(max_length=32, index=True)
    requested_at = peewee.DateTimeField()
    expires_at = peewee.DateTimeField()
    decided_by = peewee.CharField(max_length=200, null=True)
    decided_at = peewee.DateTimeField(null=True)
    reminded_at = peewee.DateTimeField(null=True)
    edit_chat = peewee.CharField(max_length=300, null=True)  # "<channel>:<chat id>"
    edit_requested_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "approvals"


class ContactRow(BaseModel):
    contact_id = peewee.CharField(max_length=32, primary_key=True)
    name = peewee.CharField(max_length=200)
    email = peewee.CharField(max_length=320, unique=True)
    company = peewee.CharField(max_length=200)
    created_at = peewee.DateTimeField()
    jobs = peewee.IntegerField(default=0)

    class Meta:
        table_name = "contacts"


class QuestionRow(BaseModel):
    """A question put to the operator, with buttons (unknown outcome, dead-lettered work)."""

    token = peewee.CharField(max_length=32, primary_key=True)
    kind = peewee.CharField(max_length=32)
    job_id = peewee.CharField(max_length=32, index=True)
    action_id = peewee.CharField(max_length=32, null=True, index=True)
    text = peewee.TextField()
    choices = peewee.TextField()
    status = peewee.CharField(max_length=32, index=True)
    asked_at = peewee.DateTimeField()
    answer = peewee.CharField(max_length=32, null=True)
    answered_by = peewee.CharField(max_length=200, null=True)
    answered_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "questions"


class AgentStateRow(BaseModel):
    agent = peewee.CharField(max_length=100, primary_key=True)
    paused = peewee.BooleanField(default=False)
    by = peewee.CharField(max_length=200)
    updated_at = peewee.DateTimeField()

    class Meta:
        table_name = "agent_states"


class InboundRow(BaseModel):
    """Platform message ids seen (Telegram update_id, Slack event_id): redeliveries are dropped."""

    key = peewee.CharField(max_length=255, primary_key=True)
    seen_at = peewee.DateTimeField()

    class Meta:
        table_name = "inbound"


class SnapshotRow(BaseModel):
    """Every read model's rows at one log position (JSON), to rebuild from the tail only."""

    id = peewee.AutoField()
    position = peewee.BigIntegerField(index=True)
    created_at = peewee.DateTimeField()
    data = peewee.TextField()

    class Meta:
        table_name = "snapshots"


class PairingCodeRow(BaseModel):
    """A one-time pairing code (only its hash is kept)."""

    code_hash = peewee.CharField(max_length=64, primary_key=True)
    channel = peewee.CharField(max_length=32)
    expires_at = peewee.DateTimeField()
    used_by = peewee.CharField(max_length=200, null=True)

    class Meta:
        table_name = "pairing_codes"


class PairedOperatorRow(BaseModel):
    """An operator who claimed the bot with a pairing code (``channel:user``)."""

    operator = peewee.CharField(max_length=200, primary_key=True)
    chat_id = peewee.CharField(max_length=128)
    paired_at = peewee.DateTimeField()

    class Meta:
        table_name = "paired_operators"


class SpendRow(BaseModel):
    """Model spend of one budget scope ("workspace", "agent:lead") in one period."""

    key = peewee.CharField(max_length=200, primary_key=True)  # "<scope>|<period>"
    scope = peewee.CharField(max_length=120)
    period = peewee.CharField(max_length=40)
    usd = peewee.DoubleField(default=0.0)
    calls = peewee.IntegerField(default=0)
    warned = peewee.BooleanField(default=False)

    class Meta:
        table_name = "spend"


class ModelCacheRow(BaseModel):
    """A model's answer to one exact prompt, reused within its TTL (process state, not events)."""

    key = peewee.CharField(max_length=64, primary_key=True)
    model = peewee.CharField(max_length=200)
    provider = peewee.CharField(max_length=64)
    text = peewee.TextField()
    prompt_tokens = peewee.IntegerField()
    completion_tokens = peewee.IntegerField()
    created_at = peewee.DateTimeField(index=True)

    class Meta:
        table_name = "model_cache"


class MemoryRow(BaseModel):
    """A semantic memory (status: active, forgotten, purged). The recall index is built
    from these rows' events; this table is the truth the index is checked against."""

    memory_id = peewee.CharField(max_length=32, primary_key=True)
    kind = peewee.CharField(max_length=32, index=True)
    text = peewee.TextField()
    contact_id = peewee.CharField(max_length=32, null=True, index=True)
    job_id = peewee.CharField(max_length=32, null=True)
    source = peewee.CharField(max_length=200)
    by = peewee.CharField(max_length=200)
    status = peewee.CharField(max_length=16, default="active", index=True)
    event_id = peewee.CharField(max_length=36)
    created_at = peewee.DateTimeField()
    forgotten_at = peewee.DateTimeField(null=True)
    forgotten_by = peewee.CharField(max_length=200, null=True)

    class Meta:
        table_name = "memories"


class FactRow(BaseModel):
    """A fact, current or past (status: current, superseded, retracted), with the event
    that established it."""

    fact_id = peewee.CharField(max_length=32, primary_key=True)
    subject = peewee.CharField(max_length=100, index=True)
    key = peewee.CharField(max_length=100)
    value = peewee.TextField()
    slot = peewee.CharField(max_length=300, index=True)
    status = peewee.CharField(max_length=16, default="current")
    source = peewee.CharField(max_length=200)
    by = peewee.CharField(max_length=200)
    job_id = peewee.CharField(max_length=32, null=True)
    event_id = peewee.CharField(max_length=36)
    event_type = peewee.CharField(max_length=100)
    asserted_at = peewee.DateTimeField()
    ended_at = peewee.DateTimeField(null=True)
    replaced_by = peewee.CharField(max_length=32, null=True)
    replaces = peewee.CharField(max_length=32, null=True)

    class Meta:
        table_name = "facts"


class FactSlotRow(BaseModel):
    """Which fact currently holds a slot (``subject|key`` for single-valued keys,
    ``subject|key|digest`` for multi-valued ones such as rules); ``fact_id`` null: none."""

    slot = peewee.CharField(max_length=300, primary_key=True)
    fact_id = peewee.CharField(max_length=32, null=True)

    class Meta:
        table_name = "fact_slots"


class FlowRow(BaseModel):
    """A business flow run (status: running, waiting, failed, done, cancelled) with the
    results its steps recorded (``context``, JSON)."""

    flow_id = peewee.CharField(max_length=32, primary_key=True)
    template = peewee.CharField(max_length=64, index=True)
    status = peewee.CharField(max_length=16, index=True)
    step = peewee.CharField(max_length=64, default="")
    job_id = peewee.CharField(max_length=32, null=True, index=True)
    waiting_for = peewee.CharField(max_length=32, null=True)
    until = peewee.DateTimeField(null=True)
    contact_id = peewee.CharField(max_length=32, null=True, index=True)
    trigger = peewee.CharField(max_length=300)
    context = peewee.TextField(default="{}")
    steps_done = peewee.IntegerField(default=0)
    last_error = peewee.TextField(null=True)
    started_at = peewee.DateTimeField()
    updated_at = peewee.DateTimeField()

    class Meta:
        table_name = "flows"


class InvoiceRow(BaseModel):
    """An invoice: drafted (number taken), issued (published), sent, paid or void."""

    invoice_id = peewee.CharField(max_length=32, primary_key=True)
    number = peewee.CharField(max_length=32, unique=True)
    contact_id = peewee.CharField(max_length=32, null=True, index=True)
    flow_id = peewee.CharField(max_length=32, null=True)
    job_id = peewee.CharField(max_length=32, null=True)
    currency = peewee.CharField(max_length=3)
    total = peewee.CharField(max_length=32)
    issue_date = peewee.CharField(max_length=10)
    due_date = peewee.CharField(max_length=10, index=True)
    status = peewee.CharField(max_length=16, index=True, default="drafted")
    paid_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "invoices"


class PaymentRow(BaseModel):
    payment_key = peewee.CharField(max_length=255, primary_key=True)
    source = peewee.CharField(max_length=64)
    external_id = peewee.CharField(max_length=200)
    status = peewee.CharField(max_length=16)
    amount = peewee.CharField(max_length=32)
    currency = peewee.CharField(max_length=3)
    invoice_number = peewee.CharField(max_length=32, null=True, index=True)
    contact_id = peewee.CharField(max_length=32, null=True)
    recorded_at = peewee.DateTimeField(index=True)

    class Meta:
        table_name = "payments"


class BoardRow(BaseModel):
    """The blackboard: facts agents post for others to pick up."""

    post_id = peewee.CharField(max_length=32, primary_key=True)
    topic = peewee.CharField(max_length=64, index=True)
    subject = peewee.CharField(max_length=200)
    text = peewee.TextField()
    data = peewee.TextField(default="{}")
    by = peewee.CharField(max_length=200)
    job_id = peewee.CharField(max_length=32, null=True)
    posted_at = peewee.DateTimeField(index=True)

    class Meta:
        table_name = "board"


class CursorRow(BaseModel):
    """Where a log follower (e.g. a channel's notifier) has read up to. Process state, not truth."""

    name = peewee.CharField(max_length=100, primary_key=True)
    position = peewee.BigIntegerField()

    class Meta:
        table_name = "cursors"


PROJECTION_MODELS: tuple[type[BaseModel], ...] = (
    JobRow,
    ActionRow,
    ApprovalRow,
    ContactRow,
    QuestionRow,
    AgentStateRow,
    PairingCodeRow,
    PairedOperatorRow,
    SpendRow,
    MemoryRow,
    FactRow,
    FactSlotRow,
    FlowRow,
    InvoiceRow,
    PaymentRow,
    BoardRow,
)
ALL_MODELS: tuple[type[BaseModel], ...] = (
    EventRecord,
    *PROJECTION_MODELS,
    CursorRow,
    InboundRow,
    SnapshotRow,
    ModelCacheRow,
)
