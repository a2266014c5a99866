"""Read-side queries over the business read models: flows, invoices, payments, the board."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from store.errors import NotFoundError
from store.models import BoardRow, FlowRow, InvoiceRow, MemoryRow, PaymentRow
from store.queries import _aware, short_id

OPEN_FLOWS = ("running", "waiting", "failed")


@dataclass(frozen=True)
class FlowView:
    flow_id: str
    template: str
    status: str
    step: str
    job_id: str | None
    waiting_for: str | None
    until: datetime | None
    contact_id: str | None
    trigger: str
    input: dict[str, Any]
    results: dict[str, dict[str, Any]]
    steps_done: int
    last_error: str | None
    started_at: datetime
    updated_at: datetime

    @property
    def short_id(self) -> str:
        return short_id(self.flow_id)


def _flow(row: FlowRow) -> FlowView:
    context = json.loads(row.context)
    return FlowView(
        flow_id=row.flow_id,
        template=row.template,
        status=row.status,
        step=row.step,
        job_id=row.job_id,
        waiting_for=row.waiting_for,
        until=_aware(row.until),
        contact_id=row.contact_id,
        trigger=row.trigger,
        input=context.get("input", {}),
        results=context.get("steps", {}),
        steps_done=row.steps_done,
        last_error=row.last_error,
        started_at=_aware(row.started_at) or datetime.min,
        updated_at=_aware(row.updated_at) or datetime.min,
    )


def get_flow(flow_id: str) -> FlowView:
    row = FlowRow.get_or_none(FlowRow.flow_id == flow_id)
    if row is None:
        raise NotFoundError(f"no flow {flow_id}")
    return _flow(row)


def find_flow(prefix: str) -> FlowView:
    rows = list(FlowRow.select().where(FlowRow.flow_id.startswith(prefix)).limit(2))
    if len(rows) != 1:
        raise NotFoundError(f"no single flow starts with {prefix!r}")
    return _flow(rows[0])


def flow_for_job(job_id: str) -> FlowView | None:
    row = FlowRow.get_or_none(FlowRow.job_id == job_id)
    return _flow(row) if row is not None else None


def list_flows(*, statuses: tuple[str, ...] = (), limit: int = 50) -> list[FlowView]:
    query = FlowRow.select().order_by(FlowRow.updated_at.desc()).limit(limit)
    if statuses:
        query = query.where(FlowRow.status.in_(statuses))
    return [_flow(r) for r in query]


def open_flows_for_contact(contact_id: str) -> list[FlowView]:
    query = FlowRow.select().where(
        (FlowRow.contact_id == contact_id) & FlowRow.status.in_(OPEN_FLOWS)
    )
    return [_flow(r) for r in query.order_by(FlowRow.started_at)]


def flow_health(*, since: datetime) -> dict[str, dict[str, int]]:
    """Per template: flows by status among those active since ``since``."""
    out: dict[str, dict[str, int]] = {}
    query = FlowRow.select(FlowRow.template, FlowRow.status).where(
        FlowRow.updated_at >= since.replace(tzinfo=None)
    )
    for row in query:
        counts = out.setdefault(row.template, {})
        counts[row.status] = counts.get(row.status, 0) + 1
    return out


@dataclass(frozen=True)
class InvoiceView:
    number: str
    contact_id: str | None
    flow_id: str | None
    job_id: str | None
    currency: str
    total: Decimal
    issue_date: date
    due_date: date
    status: str  # drafted, issued, sent, paid, void
    paid_at: datetime | None

    def overdue(self, today: date) -> bool:
        return self.status in {"issued", "sent"} and self.due_date < today


def _invoice(row: InvoiceRow) -> InvoiceView:
    return InvoiceView(
        number=row.number,
        contact_id=row.contact_id,
        flow_id=row.flow_id,
        job_id=row.job_id,
        currency=row.currency,
        total=Decimal(row.total),
        issue_date=date.fromisoformat(row.issue_date),
        due_date=date.fromisoformat(row.due_date),
        status=row.status,
        paid_at=_aware(row.paid_at),
    )


def get_invoice(number: str) -> InvoiceView:
    row = InvoiceRow.get_or_none(InvoiceRow.number == number)
    if row is None:
        raise NotFoundError(f"no invoice {number}")
    return _invoice(row)


def invoice_for_flow(flow_id: str) -> InvoiceView | None:
    """The flow's latest invoice that is not void (a void one was replaced or undone)."""
    row = (
        InvoiceRow.select()
        .where((InvoiceRow.flow_id == flow_id) & (InvoiceRow.status != "void"))
        .order_by(InvoiceRow.created_at.desc())
        .first()
    )
    return _invoice(row) if row is not None else None


def invoice_for_job(job_id: str) -> InvoiceView | None:
    row = InvoiceRow.get_or_none(InvoiceRow.job_id == job_id)
    return _invoice(row) if row is not None else None


def list_invoices(*, statuses: tuple[str, ...] = (), limit: int = 50) -> list[InvoiceView]:
    query = InvoiceRow.select().order_by(InvoiceRow.number.desc()).limit(limit)
    if statuses:
        query = query.where(InvoiceRow.status.in_(statuses))
    return [_invoice(r) for r in query]


def overdue_invoices(today: date) -> list[InvoiceView]:
    query = InvoiceRow.select().where(
        InvoiceRow.status.in_(("issued", "sent")) & (InvoiceRow.due_date < today.isoformat())
    )
    return [_invoice(r) for r in query.order_by(InvoiceRow.due_date)]


def is_paying(contact_id: str) -> bool:
    """Whether the contact has paid at least one invoice (a paying customer)."""
    return (
        InvoiceRow.select()
        .where((InvoiceRow.contact_id == contact_id) & (InvoiceRow.status == "paid"))
        .exists()
    )


@dataclass(frozen=True)
class MemoryNote:
    memory_id: str
    kind: str
    text: str
    contact_id: str | None
    created_at: datetime


def memories_since(since: datetime, *, kinds: tuple[str, ...], limit: int = 50) -> list[MemoryNote]:
    """Active memories of ``kinds`` stored after ``since``, oldest first."""
    query = (
        MemoryRow.select()
        .where(
            (MemoryRow.status == "active")
            & MemoryRow.kind.in_(kinds)
            & (MemoryRow.created_at > _naive_utc(since))
        )
        .order_by(MemoryRow.created_at, MemoryRow.memory_id)
        .limit(limit)
    )
    return [
        MemoryNote(r.memory_id, r.kind, r.text, r.contact_id, _aware(r.created_at) or since)
        for r in query
    ]


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def open_invoice_for(contact_id: str, amount: Decimal, currency: str) -> InvoiceView | None:
    """The oldest unpaid invoice of ``contact_id`` for exactly this amount (payment matching)."""
    for row in (
        InvoiceRow.select()
        .where(
            (InvoiceRow.contact_id == contact_id)
            & InvoiceRow.status.in_(("issued", "sent"))
            & (InvoiceRow.currency == currency)
        )
        .order_by(InvoiceRow.number)
    ):
        if Decimal(row.total) == amount:
            return _invoice(row)
    return None


@dataclass(frozen=True)
class PaymentView:
    source: str
    external_id: str
    status: str
    amount: Decimal
    currency: str
    invoice_number: str | None
    contact_id: str | None
    recorded_at: datetime


def payments_since(since: datetime) -> list[PaymentView]:
    query = PaymentRow.select().where(PaymentRow.recorded_at >= since.replace(tzinfo=None))
    return [
        PaymentView(
            source=r.source,
            external_id=r.external_id,
            status=r.status,
            amount=Decimal(r.amount),
            currency=r.currency,
            invoice_number=r.invoice_number,
            contact_id=r.contact_id,
            recorded_at=_aware(r.recorded_at) or datetime.min,
        )
        for r in query.order_by(PaymentRow.recorded_at)
    ]


@dataclass(frozen=True)
class BoardPost:
    post_id: str
    topic: str
    subject: str
    text: str
    data: dict[str, Any]
    by: str
    job_id: str | None
    posted_at: datetime


def board(*, topics: tuple[str, ...] = (), limit: int = 100) -> list[BoardPost]:
    query = BoardRow.select().order_by(BoardRow.posted_at.desc()).limit(limit)
    if topics:
        query = query.where(BoardRow.topic.in_(topics))
    return [
        BoardPost(
            post_id=r.post_id,
            topic=r.topic,
            subject=r.subject,
            text=r.text,
            data=json.loads(r.data),
            by=r.by,
            job_id=r.job_id,
            posted_at=_aware(r.posted_at) or datetime.min,
        )
        for r in query
    ]
