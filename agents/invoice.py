"""Invoicing: a numbered invoice from the accepted proposal, emailed, and reminded when late.

Three flow-step agents, each proposing one kind of action to approve:

- ``invoice`` takes the next number (gap-free per year: ``InvoiceDrafted`` is appended at the
  invoices stream's expected version, so two jobs can never take the same one) and proposes
  ``documents.publish_invoice`` (HTML + PDF in the documents folder; undone by voiding it).
  The amount is the proposal's price exactly as the operator typed it; no model is involved.
- ``invoice_email`` proposes emailing it with its PDF attached.
- ``payment_reminder`` proposes a polite reminder when the due date has passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel

from agents.base import Agent, AgentBudget, Capability
from agents.context import AgentContext
from agents.errors import AgentInputError
from agents.flow_input import FlowJobInput
from store import business, queries
from store import events as ev
from store.errors import ConcurrencyError
from store.log import utcnow

CENT = Decimal("0.01")


def parse_amount(text: str) -> Decimal:
    """``2400``, ``2,400``, ``2 400.50``, ``2.400,50`` -> Decimal. Raises AgentInputError."""
    raw = re.sub(r"[\s\u00a0'_]", "", text or "")
    if re.fullmatch(r"\d{1,3}(\.\d{3})+(,\d{1,2})?", raw):  # 2.400,50
        raw = raw.replace(".", "").replace(",", ".")
    elif re.fullmatch(r"\d+,\d{1,2}", raw):  # 2400,50
        raw = raw.replace(",", ".")
    else:
        raw = raw.replace(",", "")
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        raise AgentInputError(f"cannot read the amount {text!r} as a number") from None
    if not amount.is_finite() or amount <= 0:
        raise AgentInputError(f"the amount {text!r} must be a positive number")
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def money(amount: Decimal, currency: str) -> str:
    return f"{currency} {amount:,.2f}"


@dataclass(frozen=True)
class Seller:
    name: str
    email: str
    address: str = ""


class InvoiceOutput(BaseModel):
    number: str
    total: str
    currency: str
    action_id: str


class InvoiceAgent(Agent[FlowJobInput, InvoiceOutput]):
    name = "invoice"
    description = "Issues a numbered invoice (HTML + PDF) for an accepted proposal, to approve."
    capabilities = frozenset({Capability("documents", "publish_invoice", "write")})
    input_model = FlowJobInput
    output_model = InvoiceOutput
    budget = AgentBudget(per_job_usd=0.0)

    def __init__(
        self,
        *,
        seller: Seller,
        currency: str = "EUR",
        due_days: int = 14,
        tax_rate: Decimal = Decimal(0),
    ) -> None:
        self._seller = seller
        self._currency = currency
        self._due_days = due_days
        self._tax_rate = tax_rate

    def run(self, ctx: AgentContext, payload: FlowJobInput) -> InvoiceOutput:
        flow = payload.flow
        terms = flow.proposal_terms()
        contact = queries.get_contact(flow.require_contact())
        ctx.contact_id = contact.contact_id
        amount = parse_amount(str(terms.get("price_amount") or ""))
        currency = str(terms.get("currency") or self._currency).upper()
        drafted = ctx.step(
            "number",
            lambda: self._take_number(
                ctx, flow.flow_id, contact.contact_id, amount, currency, terms
            ),
        )
        scope = ", ".join(str(s) for s in terms.get("scope") or [])
        line = f"{terms['title']}" + (f": {scope}" if scope else "")
        params: dict[str, Any] = {
            "number": drafted["number"],
            "issue_date": drafted["issue_date"],
            "due_date": drafted["due_date"],
            "seller": {
                "name": self._seller.name,
                "email": self._seller.email,
                "address": self._seller.address,
            },
            "client": {"name": contact.name, "email": contact.email, "company": contact.company},
            "lines": [{"description": line[:300], "quantity": "1", "unit_price": str(amount)}],
            "currency": currency,
            "tax_rate": str(self._tax_rate),
        }
        total = Decimal(drafted["total"])
        proposal = ctx.propose(
            "documents",
            "publish_invoice",
            params,
            summary=(
                f"Issue invoice {drafted['number']} to {contact.company or contact.name}: "
                f"{money(total, currency)}, due {drafted['due_date']}"
            ),
            contact_id=contact.contact_id,
            # Your own settings (the seller, the tax rate) and the one line the proposal's
            # price makes: nothing here comes from a model or a third party.
            trusted={
                "amount": str(total),
                "price": str(amount),
                "seller": params["seller"],
                "quantity": "1",
                "tax_rate": params["tax_rate"],
            },
        )
        return InvoiceOutput(
            number=drafted["number"],
            total=str(total),
            currency=currency,
            action_id=proposal.action_id,
        )

    def _take_number(
        self,
        ctx: AgentContext,
        flow_id: str,
        contact_id: str,
        amount: Decimal,
        currency: str,
        terms: dict[str, Any],
    ) -> dict[str, Any]:
        today = utcnow().date()
        tax = (amount * self._tax_rate).quantize(CENT, rounding=ROUND_HALF_UP)
        total = amount + tax
        for _ in range(20):  # another job may take a number between our read and our append
            history = ctx.stream(ev.INVOICES_STREAM)
            taken = sum(
                1
                for e in history
                if isinstance(e.data, ev.InvoiceDrafted)
                and e.data.number.startswith(f"{today.year}-")
            )
            number = f"{today.year}-{taken + 1:04d}"
            try:
                data = ctx.record(
                    ev.INVOICES_STREAM,
                    ev.InvoiceDrafted(
                        invoice_id=number,
                        number=number,
                        contact_id=contact_id,
                        flow_id=flow_id,
                        job_id=ctx.job_id,
                        currency=currency,
                        total=str(total),
                        issue_date=today.isoformat(),
                        due_date=(today + timedelta(days=self._due_days)).isoformat(),
                        lines=[
                            {
                                "description": str(terms["title"]),
                                "quantity": "1",
                                "unit_price": str(amount),
                            }
                        ],
                    ),
                    key=f"invoice:{ctx.job_id}",
                    expected_version=history[-1].version if history else 0,
                )
            except ConcurrencyError:
                continue
            assert isinstance(data, ev.InvoiceDrafted)
            return {
                "number": data.number,
                "issue_date": data.issue_date,
                "due_date": data.due_date,
                "total": data.total,
            }
        raise AgentInputError("could not take an invoice number: too much contention")

    def summarize(self, payload: FlowJobInput, output: InvoiceOutput) -> str:
        return f"Invoice {output.number} ({money(Decimal(output.total), output.currency)}) is ready to issue."


class InvoiceEmailOutput(BaseModel):
    number: str
    action_id: str


def _invoice(flow_id: str) -> business.InvoiceView:
    invoice = business.invoice_for_flow(flow_id)
    if invoice is None:
        raise AgentInputError(f"flow {flow_id[:8]} has no invoice")
    return invoice


class InvoiceEmailAgent(Agent[FlowJobInput, InvoiceEmailOutput]):
    name = "invoice_email"
    description = "Emails an issued invoice with its PDF attached, to approve."
    capabilities = frozenset({Capability("email", "send_email", "write")})
    input_model = FlowJobInput
    output_model = InvoiceEmailOutput
    budget = AgentBudget(per_job_usd=0.0)

    def __init__(self, *, signature: str = "") -> None:
        self._signature = signature

    def run(self, ctx: AgentContext, payload: FlowJobInput) -> InvoiceEmailOutput:
        invoice = _invoice(payload.flow.flow_id)
        contact = queries.get_contact(payload.flow.require_contact())
        ctx.contact_id = contact.contact_id
        first = contact.name.split()[0] if contact.name else "there"
        body = (
            f"Hi {first},\n\nplease find attached invoice {invoice.number} for "
            f"{money(invoice.total, invoice.currency)}, due on {invoice.due_date:%d %B %Y}.\n\n"
            f"Thank you for your business!\n\n{self._signature}".rstrip()
            + "\n"
        )
        proposal = ctx.propose(
            "email",
            "send_email",
            {
                "to": contact.email,
                "subject": f"Invoice {invoice.number}",
                "body": body,
                "attachments": [f"invoices/{invoice.number}.pdf"],
            },
            summary=f"Email invoice {invoice.number} to {contact.email} ({money(invoice.total, invoice.currency)})",
            contact_id=contact.contact_id,
            # The attachment is the PDF the flow's invoice step wrote.
            trusted={
                "amount": str(invoice.total),
                "number": invoice.number,
                "attachment": f"invoices/{invoice.number}.pdf",
            },
        )
        return InvoiceEmailOutput(number=invoice.number, action_id=proposal.action_id)

    def summarize(self, payload: FlowJobInput, output: InvoiceEmailOutput) -> str:
        return f"Invoice {output.number} is ready to email."


class ReminderOutput(BaseModel):
    number: str
    days_overdue: int
    action_id: str


class PaymentReminderAgent(Agent[FlowJobInput, ReminderOutput]):
    name = "payment_reminder"
    description = "Drafts a polite reminder for an overdue invoice, to approve."
    capabilities = frozenset({Capability("email", "send_email", "write")})
    input_model = FlowJobInput
    output_model = ReminderOutput
    budget = AgentBudget(per_job_usd=0.0)

    def __init__(self, *, signature: str = "") -> None:
        self._signature = signature

    def run(self, ctx: AgentContext, payload: FlowJobInput) -> ReminderOutput:
        invoice = _invoice(payload.flow.flow_id)
        contact = queries.get_contact(payload.flow.require_contact())
        ctx.contact_id = contact.contact_id
        today = ctx.step("today", lambda: {"date": utcnow().date().isoformat()})
        late = max((date.fromisoformat(today["date"]) - invoice.due_date).days, 0)
        first = contact.name.split()[0] if contact.name else "there"
        body = (
            f"Hi {first},\n\na friendly reminder: invoice {invoice.number} for "
            f"{money(invoice.total, invoice.currency)} was due on {invoice.due_date:%d %B %Y}. "
            "If it is already on its way, please ignore this message.\n\n"
            f"Thank you!\n\n{self._signature}".rstrip()
            + "\n"
        )
        proposal = ctx.propose(
            "email",
            "send_email",
            {"to": contact.email, "subject": f"Reminder: invoice {invoice.number}", "body": body},
            summary=f"Remind {contact.email} of invoice {invoice.number} ({late} days overdue)",
            contact_id=contact.contact_id,
            trusted={"amount": str(invoice.total), "number": invoice.number},
        )
        return ReminderOutput(
            number=invoice.number, days_overdue=late, action_id=proposal.action_id
        )

    def summarize(self, payload: FlowJobInput, output: ReminderOutput) -> str:
        return (
            f"Invoice {output.number} is {output.days_overdue} days overdue: a reminder is ready."
        )


class ThankYouInput(BaseModel):
    invoice_number: str


class ThankYouOutput(BaseModel):
    action_id: str


class ThankYouAgent(Agent[ThankYouInput, ThankYouOutput]):
    """Reacts to a paid invoice (choreography: jobs/reactions.py requests it)."""

    name = "thank_you"
    description = "Drafts a thank-you email when an invoice is paid, to approve."
    capabilities = frozenset({Capability("email", "send_email", "write")})
    input_model = ThankYouInput
    output_model = ThankYouOutput
    budget = AgentBudget(per_job_usd=0.0)

    def __init__(self, *, signature: str = "") -> None:
        self._signature = signature

    def run(self, ctx: AgentContext, payload: ThankYouInput) -> ThankYouOutput:
        invoice = business.get_invoice(payload.invoice_number)
        if invoice.contact_id is None:
            raise AgentInputError(f"invoice {invoice.number} has no contact to thank")
        contact = queries.get_contact(invoice.contact_id)
        ctx.contact_id = contact.contact_id
        first = contact.name.split()[0] if contact.name else "there"
        body = (
            f"Hi {first},\n\nthank you: payment for invoice {invoice.number} "
            f"({money(invoice.total, invoice.currency)}) has arrived. It was a pleasure "
            f"working with you.\n\n{self._signature}".rstrip()
            + "\n"
        )
        proposal = ctx.propose(
            "email",
            "send_email",
            {"to": contact.email, "subject": f"Thank you (invoice {invoice.number})", "body": body},
            summary=f"Thank {contact.email} for paying invoice {invoice.number}",
            contact_id=contact.contact_id,
            trusted={"amount": str(invoice.total), "number": invoice.number},
        )
        return ThankYouOutput(action_id=proposal.action_id)

    def summarize(self, payload: ThankYouInput, output: ThankYouOutput) -> str:
        return f"Invoice {payload.invoice_number} is paid: a thank-you is ready to send."
