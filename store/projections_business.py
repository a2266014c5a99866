"""Read models of the business layer: flow runs, invoices, payments and the blackboard.

Registered on the same :func:`store.projections.handles` registry as the core read models and
applied in the same transaction as the append. An invoice's ``invoice_id`` is its number: the
number is what every document, email and payment refers to.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from store import events as ev
from store.models import ActionRow, BoardRow, FlowRow, InvoiceRow, PaymentRow
from store.projections import Rows, handles

INVOICE_ACTION = ("documents", "publish_invoice")
SEND_ACTION = ("email", "send_email")


def _flow(rows: Rows, flow_id: str, at: datetime, **fields: Any) -> None:
    rows.update(FlowRow, flow_id, updated_at=at, **fields)


@handles(ev.FlowStarted)
def _flow_started(d: ev.FlowStarted, at: datetime, rows: Rows) -> None:
    rows.insert(
        FlowRow,
        {
            "flow_id": d.flow_id,
            "template": d.template,
            "status": "running",
            "step": "",
            "contact_id": d.contact_id,
            "trigger": d.trigger[:300],
            "context": json.dumps({"input": d.context, "steps": {}}, sort_keys=True),
            "started_at": at,
            "updated_at": at,
        },
    )


@handles(ev.FlowStepStarted)
def _flow_step_started(d: ev.FlowStepStarted, at: datetime, rows: Rows) -> None:
    _flow(
        rows,
        d.flow_id,
        at,
        status="running",
        step=d.step,
        job_id=d.job_id,
        waiting_for=None,
        until=None,
        last_error=None,
    )


@handles(ev.FlowStepCompleted)
def _flow_step_completed(d: ev.FlowStepCompleted, at: datetime, rows: Rows) -> None:
    row = rows.get(FlowRow, d.flow_id)
    if row is None:
        return
    context = json.loads(row["context"])
    context["steps"][d.step] = d.result
    contact = d.result.get("contact_id")
    _flow(
        rows,
        d.flow_id,
        at,
        contact_id=row["contact_id"] or (contact if isinstance(contact, str) else None),
        context=json.dumps(context, sort_keys=True),
        steps_done=row["steps_done"] + 1,
        waiting_for=None,
        until=None,
    )


@handles(ev.FlowWaiting)
def _flow_waiting(d: ev.FlowWaiting, at: datetime, rows: Rows) -> None:
    until = d.until.replace(tzinfo=None) if d.until is not None else None
    _flow(
        rows, d.flow_id, at, status="waiting", step=d.step, waiting_for=d.waiting_for, until=until
    )


@handles(ev.FlowFailed)
def _flow_failed(d: ev.FlowFailed, at: datetime, rows: Rows) -> None:
    _flow(rows, d.flow_id, at, status="failed", step=d.step, last_error=d.reason)


@handles(ev.FlowCompleted)
def _flow_completed(d: ev.FlowCompleted, at: datetime, rows: Rows) -> None:
    status = (
        d.outcome.split(":", 1)[0] if d.outcome.startswith(("stopped", "cancelled")) else "done"
    )
    _flow(rows, d.flow_id, at, status=status, waiting_for=None, until=None)


@handles(ev.InvoiceDrafted)
def _invoice_drafted(d: ev.InvoiceDrafted, at: datetime, rows: Rows) -> None:
    rows.insert(
        InvoiceRow,
        {
            "invoice_id": d.number,
            "number": d.number,
            "contact_id": d.contact_id,
            "flow_id": d.flow_id,
            "job_id": d.job_id,
            "currency": d.currency,
            "total": d.total,
            "issue_date": d.issue_date,
            "due_date": d.due_date,
            "status": "drafted",
            "created_at": at,
        },
    )


def _invoice_number(action: dict[str, Any]) -> str | None:
    params = json.loads(action["params"])
    kind = (action["connector"], action["action"])
    if kind == INVOICE_ACTION:
        number = params.get("number")
        return number if isinstance(number, str) else None
    if kind == SEND_ACTION:
        for path in params.get("attachments") or ():
            if isinstance(path, str) and path.startswith("invoices/") and path.endswith(".pdf"):
                return path.removeprefix("invoices/").removesuffix(".pdf")
    return None


@handles(ev.ActionExecuted)
def _invoice_published_or_sent(d: ev.ActionExecuted, at: datetime, rows: Rows) -> None:
    action = rows.get(ActionRow, d.action_id)
    if action is None or (action["connector"], action["action"]) not in (
        INVOICE_ACTION,
        SEND_ACTION,
    ):
        return
    number = _invoice_number(action)
    invoice = rows.get(InvoiceRow, number) if number else None
    if invoice is None or invoice["status"] in {"paid", "void"}:
        return
    status = "issued" if (action["connector"], action["action"]) == INVOICE_ACTION else "sent"
    if status == "issued" and invoice["status"] == "sent":
        return
    rows.update(InvoiceRow, invoice["invoice_id"], status=status)


@handles(ev.ActionCompensated)
def _invoice_voided(d: ev.ActionCompensated, at: datetime, rows: Rows) -> None:
    action = rows.get(ActionRow, d.action_id)
    if action is None or (action["connector"], action["action"]) != INVOICE_ACTION:
        return
    number = _invoice_number(action)
    if number and rows.get(InvoiceRow, number) is not None:
        rows.update(InvoiceRow, number, status="void")


@handles(ev.PaymentRecorded)
def _payment_recorded(d: ev.PaymentRecorded, at: datetime, rows: Rows) -> None:
    key = f"{d.source}:{d.external_id}:{d.status}"
    rows.upsert(
        PaymentRow,
        key,
        {
            "payment_key": key,
            "source": d.source,
            "external_id": d.external_id,
            "status": d.status,
            "amount": d.amount,
            "currency": d.currency,
            "invoice_number": d.invoice_number,
            "contact_id": d.contact_id,
            "recorded_at": at,
        },
    )
    if d.invoice_number and d.status == "succeeded":
        invoice = rows.get(InvoiceRow, d.invoice_number)
        if invoice is not None and invoice["status"] != "void":
            rows.update(InvoiceRow, d.invoice_number, status="paid", paid_at=at)


@handles(ev.BoardPosted)
def _board_posted(d: ev.BoardPosted, at: datetime, rows: Rows) -> None:
    rows.insert(
        BoardRow,
        {
            "post_id": d.post_id,
            "topic": d.topic,
            "subject": d.subject[:200],
            "text": d.text,
            "data": json.dumps(d.data, sort_keys=True),
            "by": d.by,
            "job_id": d.job_id,
            "posted_at": at,
        },
    )
