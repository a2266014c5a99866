"""What the channels ask of the job machinery: request a job, decide an approval, report.

The job is appended to the log *before* it is enqueued (invariant 1): if the broker is down
or loses the message, the log still holds the job and the reconciler enqueues it again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import redis

from agents import questions
from agents.approvals import DecisionResult, Outcome, decide
from agents.questions import AnswerResult
from jobs.broker import queue_depth
from jobs.digest import DigestService, upcoming_from
from jobs.inbox_poll import InboxPoller
from jobs.reconciler import Reconciler
from jobs.runtime import Runtime, advance_flows
from jobs.slo import SloReport, measure_all, pause_agent
from store import events as ev
from store import queries
from store.errors import NotFoundError, StoreError
from store.log import utcnow
from store.memory.service import Memory, MemoryStatus
from store.queries import ApprovalView, ContactView, JobView

logger = logging.getLogger(__name__)

IN_FLIGHT_JOB = {"queued", "running", "retrying"}
EDIT_WINDOW = timedelta(hours=1)
IN_FLIGHT_ACTION = {"approved", "running", "retrying"}


@dataclass(frozen=True)
class JobRequest:
    agent: str
    input: dict[str, Any]
    text: str
    channel: str
    chat_id: str
    requested_by: str
    inbound_key: str | None = None


@dataclass(frozen=True)
class Submitted:
    job: JobView
    duplicate: bool
    enqueued: bool
    paused: bool = False


@dataclass(frozen=True)
class StatusReport:
    counts: dict[str, int]
    broker_depth: int | None
    broker: str
    last_error: JobView | None
    pending_approvals: int
    memory: MemoryStatus | None = None
    slos: tuple[SloReport, ...] = ()


class JobService:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def submit(self, request: JobRequest) -> Submitted:
        self._rt.registry.get(request.agent)  # unknown agent: fail before writing anything
        job_id = uuid.uuid4().hex
        result = self._rt.store.log.append(
            ev.job_stream(job_id),
            [
                ev.NewEvent(
                    ev.JobRequested(
                        job_id=job_id,
                        agent=request.agent,
                        input=request.input,
                        text=request.text,
                        channel=request.channel,
                        chat_id=request.chat_id,
                        requested_by=request.requested_by,
                    ),
                    idempotency_key=f"inbound:{request.inbound_key}"
                    if request.inbound_key
                    else None,
                )
            ],
            metadata=ev.Metadata(actor=request.requested_by, correlation_id=job_id),
            expected_version=0,
        )
        first = result.events[0].data
        assert isinstance(first, ev.JobRequested)
        job = queries.get_job(first.job_id)
        if result.duplicate:
            return Submitted(job, duplicate=True, enqueued=False)
        if queries.agent_paused(request.agent):
            return Submitted(job, duplicate=False, enqueued=False, paused=True)
        return Submitted(job, duplicate=False, enqueued=self.send_job(job.job_id))

    def decide(self, token: str, *, approve: bool, decided_by: str, channel: str) -> DecisionResult:
        result = decide(
            self._rt.store.log, token, approve=approve, decided_by=decided_by, channel=channel
        )
        if result.outcome is Outcome.APPROVED and result.action is not None:
            self.send_action(result.action.action_id)
        return result

    # Edits -----------------------------------------------------------------------------

    def request_edit(
        self, token: str, *, by: str, channel: str, chat_id: str
    ) -> ApprovalView | None:
        """Mark the approval as being edited from this chat; None if it is not pending."""
        try:
            approval = queries.get_approval(token)
        except NotFoundError:
            return None
        if approval.status != "pending":
            return None
        self._rt.store.log.append(
            ev.action_stream(approval.action_id),
            [
                ev.EditRequested(
                    action_id=approval.action_id,
                    token=token,
                    channel=channel,
                    chat_id=chat_id,
                    by=by,
                )
            ],
            metadata=ev.Metadata(actor=by, correlation_id=approval.job_id),
        )
        return approval

    def pending_edit(self, channel: str, chat_id: str) -> ApprovalView | None:
        """The proposal this chat's next plain message corrects (Edit pressed < 1 h ago)."""
        return queries.pending_edit(channel, chat_id, since=utcnow() - EDIT_WINDOW)

    def revise(
        self,
        approval: ApprovalView,
        correction: str,
        *,
        by: str,
        channel: str,
        chat_id: str,
        inbound_key: str | None = None,
    ) -> Submitted:
        """Send the correction to a revision job; the draft stays pending until replaced."""
        submitted = self.submit(
            JobRequest(
                agent="revise",
                input={"action_id": approval.action_id, "correction": correction},
                text=correction,
                channel=channel,
                chat_id=chat_id,
                requested_by=by,
                inbound_key=inbound_key,
            )
        )
        if not submitted.duplicate:
            self._rt.store.log.append(
                ev.action_stream(approval.action_id),
                [
                    ev.EditSubmitted(
                        action_id=approval.action_id,
                        token=approval.token,
                        job_id=submitted.job.job_id,
                        correction=correction,
                    )
                ],
                metadata=ev.Metadata(actor=by, correlation_id=approval.job_id),
            )
        return submitted

    # Contacts --------------------------------------------------------------------------

    def update_contact(self, email: str, changes: dict[str, str], *, by: str) -> ContactView:
        """Correct a contact (name, email, company). Pending proposals bound to the old value
        ask again when approved."""
        contact = queries.contact_by_email(email)
        if contact is None:
            raise NotFoundError(f"no contact with the address {email}")
        new_email = changes.get("email")
        if new_email and new_email.lower() != contact.email and queries.contact_by_email(new_email):
            raise ValueError(f"{new_email} is already another contact's address")
        self._rt.store.log.append(
            ev.contact_stream(contact.contact_id),
            [
                ev.ContactUpdated(
                    contact_id=contact.contact_id,
                    name=changes.get("name"),
                    email=new_email.lower() if new_email else None,
                    company=changes.get("company"),
                    previous_email=contact.email if new_email else None,
                )
            ],
            metadata=ev.Metadata(actor=by),
        )
        return queries.get_contact(contact.contact_id)

    def answer(self, token: str, choice: str, *, by: str, channel: str) -> AnswerResult:
        result = questions.answer(self._rt.store.log, token, choice, by=by, channel=channel)
        if result.requeue_job:
            self.send_job(result.requeue_job)
        if result.requeue_action:
            self.send_action(result.requeue_action)
        return result

    # Lifecycle -------------------------------------------------------------------------

    def pause(self, agent: str, *, by: str) -> bool:
        """Pause an agent: its new and queued jobs wait in the log. False if already paused."""
        self._rt.registry.get(agent)
        return pause_agent(self._rt.store.log, agent, by=by)

    def resume(self, agent: str, *, by: str) -> list[str] | None:
        """Resume an agent and send its waiting jobs. None if it was not paused."""
        self._rt.registry.get(agent)
        if not queries.agent_paused(agent):
            return None
        self._rt.store.log.append(
            ev.agent_stream(agent),
            [ev.AgentResumed(agent=agent, by=by)],
            metadata=ev.Metadata(actor=by),
        )
        waiting = [
            j.job_id
            for j in queries.list_jobs(limit=10_000, statuses=["queued"])
            if j.agent == agent
        ]
        for job_id in waiting:
            self.send_job(job_id)
        return waiting

    def cancel(self, job: JobView, *, by: str) -> bool:
        """Cancel a job that has not finished; its pending approvals expire. False if finished."""
        if job.status in {"done", "failed", "cancelled"}:
            return False
        log = self._rt.store.log
        log.append(
            ev.job_stream(job.job_id),
            [ev.JobCancelled(job_id=job.job_id, by=by)],
            metadata=ev.Metadata(actor=by, correlation_id=job.job_id),
        )
        for approval in queries.pending_approvals(limit=10_000):
            if approval.job_id == job.job_id:
                decide(
                    log,
                    approval.token,
                    approve=False,
                    decided_by=by,
                    channel="cancel",
                    now=_far_future(),
                )
        for action in queries.actions_for_job(job.job_id):
            if action.status in {
                "approved",
                "retrying",
            }:  # approved but not started: never start it
                try:
                    log.append(
                        ev.action_stream(action.action_id),
                        [ev.ActionDiscarded(action_id=action.action_id, by=by)],
                        metadata=ev.Metadata(actor=by, correlation_id=job.job_id),
                    )
                except StoreError:
                    logger.warning(
                        "could not discard action %s of cancelled job %s",
                        action.action_id,
                        job.job_id,
                    )
        return True

    def undo(self, action_id: str, *, by: str) -> str:
        return self._rt.effects.compensate(action_id, reason=f"/undo by {by}", by=by)

    def reconciler(self) -> Reconciler:
        """The reconciler with every periodic hook; it reads the inbox when ``imap_url`` or
        ``maildir`` is set (raises :class:`~jobs.errors.InboxSetupError` if they cannot work)."""
        settings = self._rt.settings
        inbox = InboxPoller.from_settings(settings, log=self._rt.store.log)
        return Reconciler(
            log=self._rt.store.log,
            send_job=self.send_job,
            send_action=self.send_action,
            queue_lease=timedelta(seconds=settings.queue_lease_seconds),
            run_lease=timedelta(seconds=settings.job_lease_seconds),
            remind_after=timedelta(hours=settings.approval_reminder_hours)
            if settings.approval_reminder_hours
            else None,
            purge_forgotten=self._rt.memory.purge_expired,
            capture_sent=self._rt.memory.capture_sent,
            daily_digest=self.digests().send_daily_if_due,
            advance_flows=lambda now: advance_flows(
                self._rt.conductor, self._rt.reactions, now=now
            ),
            poll_inbox=inbox,
            inbox_every=timedelta(seconds=settings.inbox_poll_seconds),
            check_slos=self._rt.slos.check if self._rt.slos is not None else None,
        )

    def digests(self) -> DigestService:
        return DigestService.from_settings(
            self._rt.settings,
            log=self._rt.store.log,
            budget_lines=self.budget_lines,
            upcoming=upcoming_from(self._rt.connectors),
            slos=lambda now: self.slo_reports(now=now),
        )

    def advance_flows(self) -> int:
        """Move flows on now (after /won, /paid) instead of at the scheduler's next tick."""
        return advance_flows(self._rt.conductor, self._rt.reactions)

    def send_job(self, job_id: str) -> bool:
        return self._send(self._rt.actors.run_job, job_id)

    def send_action(self, action_id: str) -> bool:
        return self._send(self._rt.actors.execute_action, action_id)

    def _send(self, actor: dramatiq.Actor[Any, Any], ident: str) -> bool:
        try:
            actor.send(ident)
        except (dramatiq.errors.DramatiqError, redis.RedisError, OSError) as exc:
            # The log holds the job; the reconciler will enqueue it again.
            logger.error("could not enqueue %s(%s): %s", actor.actor_name, ident, exc)
            return False
        return True

    def in_flight(self, job_ids: list[str]) -> list[str]:
        """Which of these jobs still have work under way (not waiting for a person)."""
        busy = []
        for job_id in job_ids:
            job = queries.get_job(job_id)
            if job.status in IN_FLIGHT_JOB or any(
                a.status in IN_FLIGHT_ACTION for a in queries.actions_for_job(job_id)
            ):
                busy.append(job_id)
        return busy

    def budget_lines(self) -> list[tuple[str, str, float, float]]:
        """(scope, period, spent, limit) for every budget that applies now."""
        budgets = self._rt.runner.budgets
        if budgets is None:
            return []
        lines = []
        now = utcnow()
        for agent in ["", *self._rt.registry.names()]:
            for limit in budgets.limits(agent, now):
                if agent and limit.scope == "workspace":
                    continue
                lines.append(
                    (
                        limit.scope,
                        limit.period,
                        queries.spent(limit.scope, limit.period)[0],
                        limit.usd,
                    )
                )
        return lines

    def status(self) -> StatusReport:
        return StatusReport(
            counts=queries.count_jobs_by_status(),
            broker_depth=queue_depth(self._rt.broker),
            broker="in-process" if self._rt.settings.in_process_broker else "redis",
            last_error=queries.last_error(),
            pending_approvals=len(queries.pending_approvals(limit=1000)),
            memory=self._rt.memory.status(),
            slos=tuple(self.slo_reports()),
        )

    def slo_reports(self, *, now: datetime | None = None) -> list[SloReport]:
        """Every objective of the settings over its window, from the log."""
        return measure_all(self._rt.store.log, self._rt.settings.slos, now=now)

    @property
    def memory(self) -> Memory:
        return self._rt.memory


def _far_future() -> datetime:
    """A moment after every expiry: deciding "now" at it expires the approval."""
    return datetime(9999, 1, 1, tzinfo=UTC)
