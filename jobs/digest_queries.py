"""The digest's reads: what the read models hold that the store's query modules do not ask.

Plain functions over the projections (and, where a read model keeps no history, the log's
events): approvals waiting at a moment, actions executed since, jobs done or failed since,
payments that failed or were refunded since, the alert of a failed flow, the last daily digest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from store import business, queries
from store import events as ev
from store.business import InvoiceView, PaymentView
from store.errors import NotFoundError
from store.log import to_recorded
from store.models import ActionRow, ApprovalRow, EventRecord, JobRow
from store.queries import ActionView, ApprovalView, JobView

# Split out of jobs/digest.py: its records keep the logger name they always had.
logger = logging.getLogger("jobs.digest")

PAYMENT_PROBLEMS = ("failed", "refunded")


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def waiting_approvals(at: datetime) -> list[ApprovalView]:
    """Approvals that were waiting for a decision at ``at``, oldest first: requested by then,
    not decided, expired or superseded before it, and not past their expiry. The digest lists
    these at composition; the notifier asks again at delivery to put buttons on the same ones."""
    moment = _naive(at)
    query = (
        ApprovalRow.select(ApprovalRow.token)
        .where(
            (ApprovalRow.requested_at <= moment)
            & (ApprovalRow.expires_at > moment)
            & (ApprovalRow.decided_at.is_null() | (ApprovalRow.decided_at > moment))
        )
        .order_by(ApprovalRow.requested_at, ApprovalRow.token)
        .limit(100)
    )
    return [queries.get_approval(row.token) for row in query]


def executed_since(since: datetime) -> list[ActionView]:
    """Actions whose ``ActionExecuted`` was recorded at or after ``since``, in log order."""
    rows = (
        EventRecord.select()
        .where(
            (EventRecord.type == ev.ActionExecuted.type_name)
            & (EventRecord.recorded_at >= _naive(since))
        )
        .order_by(EventRecord.position)
        .limit(1000)
    )
    out: list[ActionView] = []
    for row in rows:
        data = to_recorded(row).data
        if not isinstance(data, ev.ActionExecuted):
            continue
        try:
            out.append(queries.get_action(data.action_id))
        except NotFoundError:
            logger.warning("digest: executed action %s has no read model row", data.action_id)
    return out


def jobs_done_since(since: datetime) -> int:
    return int(
        JobRow.select()
        .where((JobRow.status == "done") & (JobRow.finished_at >= _naive(since)))
        .count()
    )


def failed_jobs_since(since: datetime, *, limit: int = 50) -> list[JobView]:
    rows = (
        JobRow.select(JobRow.job_id)
        .where((JobRow.status == "failed") & (JobRow.finished_at >= _naive(since)))
        .order_by(JobRow.finished_at)
        .limit(limit)
    )
    return [queries.get_job(row.job_id) for row in rows]


def actions_in(
    statuses: Sequence[str], *, since: datetime | None, limit: int = 50
) -> list[ActionView]:
    """Actions in one of ``statuses`` (changed at or after ``since``, if given), oldest first."""
    where = ActionRow.status.in_(list(statuses))
    if since is not None:
        where = where & (ActionRow.updated_at >= _naive(since))
    rows = ActionRow.select(ActionRow.action_id).where(where).order_by(ActionRow.updated_at)
    return [queries.get_action(row.action_id) for row in rows.limit(limit)]


def last_daily() -> ev.RecordedEvent | None:
    """The most recent daily ``DigestSent`` in the digest stream."""
    rows = (
        EventRecord.select()
        .where(
            (EventRecord.stream_id == ev.DIGEST_STREAM)
            & (EventRecord.type == ev.DigestSent.type_name)
        )
        .order_by(EventRecord.version.desc())
    )
    for row in rows.iterator():
        event = to_recorded(row)
        if isinstance(event.data, ev.DigestSent) and event.data.kind == "daily":
            return event
    return None


def _invoice(number: str | None) -> InvoiceView | None:
    if number is None:
        return None
    try:
        return business.get_invoice(number)
    except NotFoundError:
        return None


def payment_problems_since(since: datetime) -> list[PaymentView]:
    """Payments that failed or were refunded, recorded at or after ``since``, oldest first.
    A failed attempt at an invoice that is paid by now is left out (it needs nothing more);
    a payment without a contact takes its invoice's."""
    out: list[PaymentView] = []
    for payment in business.payments_since(since):
        if payment.status not in PAYMENT_PROBLEMS:
            continue
        invoice = _invoice(payment.invoice_number)
        if payment.status == "failed" and invoice is not None and invoice.status == "paid":
            continue
        if payment.contact_id is None and invoice is not None:
            payment = replace(payment, contact_id=invoice.contact_id)
        out.append(payment)
    return out


def flow_alert_token(flow_id: str) -> str | None:
    """The token of the question the flow's latest ``FlowFailed`` asked (its alert)."""
    row = (
        EventRecord.select()
        .where(
            (EventRecord.stream_id == ev.flow_stream(flow_id))
            & (EventRecord.type == ev.FlowFailed.type_name)
        )
        .order_by(EventRecord.version.desc())
        .first()
    )
    data = to_recorded(row).data if row is not None else None
    if not isinstance(data, ev.FlowFailed) or not data.token:
        return None
    return data.token


def pending_questions(kinds: Sequence[str], *, exclude: bool = False) -> list[queries.QuestionView]:
    """Pending questions of one of ``kinds`` (or, with ``exclude``, of any other kind)."""
    return [q for q in queries.pending_questions() if (q.kind in kinds) != exclude]
