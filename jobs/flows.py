"""The conductor: runs business flows, one checkpointed step after another.

A flow's stream (``flow-<id>``) is its whole state: ``FlowStarted``, then per step
``FlowStepStarted`` (an agent step names the job it runs), ``FlowWaiting`` (a wait step and
its deadline), ``FlowStepCompleted`` (the checkpoint: the step's result), and at the end
``FlowCompleted`` or, on trouble, ``FlowFailed`` with one alert to the operator.

The conductor is *level-triggered*: :meth:`Conductor.tick` looks at every open flow and at the
read models it depends on (its job and actions, the contact's stream, the invoice) and appends
what follows. Nothing is remembered in memory between ticks, so a crash at any point resumes
on the next tick, in this process or another; every append is made at the flow stream's
expected version, and job requests and questions carry idempotency keys, so two conductors
racing never start a step twice.

Flows start from triggers (:meth:`Conductor.start_from_triggers`): a job of the agent a template
names (``agent:proposal``: every proposal starts a consultant flow, with that job as its first
step), or a verified webhook (``webhook:github:release``).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from config.flows import FlowStep, FlowTemplate, schedule_slot
from store import business, queries
from store import events as ev
from store.errors import ConcurrencyError, NotFoundError
from store.log import EventLog, utcnow
from store.queries import ActionView

logger = logging.getLogger(__name__)

TRIGGER_CURSOR = "conductor:triggers"
OPEN = ("running", "waiting", "failed")
ACTOR = "conductor"


def flow_token(*parts: str) -> str:
    """A question token derived from what it is about, so a re-run asks the same question."""
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return base64.urlsafe_b64encode(digest)[:12].decode()


def stable_id(key: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"opcore:{key}").hex


@dataclass
class FlowState:
    """A flow folded from its stream."""

    flow_id: str
    template: str
    contact_id: str | None
    input: dict[str, Any]
    version: int = 0
    step: str = ""
    job_id: str | None = None
    step_position: int = 0  # the log position where the current step started
    status: str = "running"
    waiting_until: datetime | None = None
    runs: dict[str, int] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_token: str = ""
    compensations: list[str] = field(default_factory=list)
    # The current step's checkpoint is written, the next step not begun yet (a crash or
    # another conductor came between the two appends): resume by beginning the next step.
    step_done: bool = False


def fold(history: list[ev.RecordedEvent]) -> FlowState | None:
    state: FlowState | None = None
    for event in history:
        data = event.data
        if isinstance(data, ev.FlowStarted):
            state = FlowState(data.flow_id, data.template, data.contact_id, dict(data.context))
        if state is None:
            continue
        state.version = event.version
        match data:
            case ev.FlowStepStarted():
                if data.step != state.step or data.job_id != state.job_id:  # not a retry
                    state.runs[data.step] = state.runs.get(data.step, 0) + 1
                state.step, state.job_id, state.status = data.step, data.job_id, "running"
                state.step_position, state.waiting_until = event.position, None
                state.step_done = False
            case ev.FlowWaiting():
                if data.step != state.step:
                    state.runs[data.step] = state.runs.get(data.step, 0) + 1
                    state.step_position = event.position
                state.step, state.job_id, state.status = data.step, None, "waiting"
                state.waiting_until = data.until
                state.step_done = False
            case ev.FlowStepCompleted():
                state.results[data.step] = dict(data.result)
                state.step_done = data.step == state.step
                contact = data.result.get("contact_id")
                if state.contact_id is None and isinstance(contact, str):
                    state.contact_id = contact
            case ev.FlowFailed():
                state.status, state.failed_token = "failed", data.token
                state.compensations = list(data.compensations)
            case ev.FlowCompleted():
                state.status = "done"
    return state


@dataclass
class Conductor:
    log: EventLog
    templates: Mapping[str, FlowTemplate]
    send_job: Callable[[str], bool]
    # Runs the compensation of one executed action (jobs.effects.Effects.compensate).
    compensate: Callable[..., str]
    # Whether an executed action can be undone (its connector declares a compensation).
    compensable: Callable[[ActionView], bool]
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    # Where a flow no person started (a webhook, a schedule) asks for approvals.
    home_channel: str = "console:local"

    # Starting -----------------------------------------------------------------------------

    def start_from_triggers(self, *, now: datetime | None = None) -> int:
        """Start the flows whose trigger appeared in the log since the last call, and the
        scheduled ones whose time has come."""
        if not self.templates:
            return 0
        position = queries.cursor(TRIGGER_CURSOR)
        if position is None:  # first run: flows start from what happens from now on
            queries.save_cursor(TRIGGER_CURSOR, self.log.head())
            return 0
        started = self._start_scheduled(now or utcnow())
        types = (ev.JobRequested.type_name, ev.WebhookReceived.type_name)
        while batch := self.log.read_all(after=position, limit=200, types=types):
            for event in batch:
                started += self._start_for(event)
                position = event.position
            queries.save_cursor(TRIGGER_CURSOR, position)
        return started

    def _start_for(self, event: ev.RecordedEvent) -> int:
        data = event.data
        started = 0
        for template in self.templates.values():
            if isinstance(data, ev.JobRequested):
                if "flow" in data.input or template.trigger != f"agent:{data.agent}":
                    continue
                context: dict[str, Any] = {
                    "channel": data.channel,
                    "chat_id": data.chat_id,
                    "requested_by": data.requested_by,
                    "text": data.text,
                }
                self.start(
                    template, trigger=f"job:{data.job_id}", context=context, job_id=data.job_id
                )
                started += 1
            elif isinstance(data, ev.WebhookReceived):
                if not template.trigger.startswith("webhook:"):
                    continue
                _, source, pattern = template.trigger.split(":", 2)
                if source != data.source:
                    continue
                if not fnmatch.fnmatchcase(data.event_type, pattern):
                    continue
                if not template.matches(data.payload):
                    continue
                context = {
                    "source": data.source,
                    "event_type": data.event_type,
                    "delivery_id": data.delivery_id,
                    "payload": data.payload,
                }
                self.start(
                    template, trigger=f"webhook:{data.source}:{data.delivery_id}", context=context
                )
                started += 1
        return started

    def _start_scheduled(self, now: datetime) -> int:
        """Start each scheduled template once per slot (the slot is the trigger, so a restart
        or a second conductor starts nothing twice). A slot missed by more than half its
        period (opcore was down) is skipped rather than run late."""
        started = 0
        for template in self.templates.values():
            if not template.trigger.startswith("schedule:"):
                continue
            slot, period = schedule_slot(template.trigger, now, self.zone)
            if now - slot > period / 2:
                continue
            _, new = self._start(
                template,
                trigger=f"schedule:{slot.isoformat()}",
                context={"slot": slot.isoformat(), "period_days": period.days},
            )
            started += int(new)
        return started

    def start(
        self,
        template: FlowTemplate,
        *,
        trigger: str,
        context: Mapping[str, Any],
        job_id: str | None = None,
        contact_id: str | None = None,
    ) -> str:
        """Start ``template`` once per trigger; with ``job_id``, that job is its first step."""
        return self._start(
            template, trigger=trigger, context=context, job_id=job_id, contact_id=contact_id
        )[0]

    def _start(
        self,
        template: FlowTemplate,
        *,
        trigger: str,
        context: Mapping[str, Any],
        job_id: str | None = None,
        contact_id: str | None = None,
    ) -> tuple[str, bool]:
        """The flow's id, and whether this call started it (False: it had started before)."""
        key = f"flow-start:{template.name}:{trigger}"
        flow_id = stable_id(key)
        events: list[ev.EventData | ev.NewEvent] = [
            ev.NewEvent(
                ev.FlowStarted(
                    flow_id=flow_id,
                    template=template.name,
                    trigger=trigger,
                    contact_id=contact_id,
                    context=dict(context),
                    steps=[s.name for s in template.steps],
                ),
                idempotency_key=key,
            )
        ]
        if job_id is not None:
            events.append(
                ev.FlowStepStarted(flow_id=flow_id, step=template.steps[0].name, job_id=job_id)
            )
        result = self.log.append(ev.flow_stream(flow_id), events, metadata=self._meta(flow_id))
        return flow_id, not result.duplicate

    # Advancing ----------------------------------------------------------------------------

    def tick(self, *, now: datetime | None = None) -> int:
        """Advance every open flow as far as it can go now. Returns how many moved."""
        moment = now or utcnow()
        moved = 0
        for flow in business.list_flows(statuses=OPEN, limit=1000):
            try:
                moved += self.advance(flow.flow_id, now=moment)
            except ConcurrencyError:
                continue  # another conductor moved it; the next tick looks again
        return moved

    def advance(self, flow_id: str, *, now: datetime) -> int:
        moved = 0
        for _ in range(len(self.templates.get(self._template_of(flow_id), _EMPTY).steps) * 2 + 2):
            if not self._advance_once(flow_id, now=now):
                break
            moved = 1
        return moved

    def _template_of(self, flow_id: str) -> str:
        try:
            return business.get_flow(flow_id).template
        except NotFoundError:
            return ""

    def _advance_once(self, flow_id: str, *, now: datetime) -> bool:
        state = fold(self.log.read_stream(ev.flow_stream(flow_id)))
        if state is None or state.status == "done":
            return False
        template = self.templates.get(state.template)
        if template is None:
            logger.warning(
                "flow %s uses template %r, which is not enabled", flow_id, state.template
            )
            return False
        if state.status == "failed":
            return self._after_failure(state, template, now=now)
        if not state.step:
            return self._begin(state, template, template.steps[0], now=now)
        step = template.step(state.step)
        if state.step_done:
            following = template.after(step.name)
            if following is None:
                return self._stop(state, "done")
            return self._begin(state, template, following, now=now)
        if step.kind == "agent":
            return self._agent_step(state, template, step, now=now)
        if state.status != "waiting":
            return self._begin(state, template, step, now=now, rerun=False)
        if step.wait_for == "won":
            return self._wait_won(state, template, step, now=now)
        return self._wait_payment(state, template, step, now=now)

    def _begin(
        self,
        state: FlowState,
        template: FlowTemplate,
        step: FlowStep,
        *,
        now: datetime,
        rerun: bool = True,
    ) -> bool:
        run = state.runs.get(step.name, 0) + (1 if rerun or state.step != step.name else 0)
        if step.kind == "agent" and run > step.max_runs:
            return self._fail(state, step, f"{step.name} already ran {step.max_runs} time(s)")
        if step.kind == "wait":
            until = self._deadline(state, step, now=now)
            if step.wait_for == "payment" and self._invoice(state) is None:
                return self._fail(state, step, "no invoice to wait for: the invoice step made none")
            self._append(
                state,
                [
                    ev.FlowWaiting(
                        flow_id=state.flow_id,
                        step=step.name,
                        waiting_for=step.wait_for,
                        until=until,
                    )
                ],
            )
            return True
        key = f"flow-job:{state.flow_id}:{step.name}:{run}"
        job_id = stable_id(key)
        home_channel, _, home_chat = self.home_channel.partition(":")
        flow_input = {
            "flow_id": state.flow_id,
            "template": state.template,
            "step": step.name,
            "contact_id": state.contact_id,
            "input": state.input,
            "results": state.results,
        }
        self.log.append(
            ev.job_stream(job_id),
            [
                ev.NewEvent(
                    ev.JobRequested(
                        job_id=job_id,
                        agent=step.agent,
                        input={"flow": flow_input},
                        text=f"{template.name} flow: {step.description or step.name}",
                        channel=str(state.input.get("channel") or home_channel or "console"),
                        chat_id=str(state.input.get("chat_id") or home_chat or "local"),
                        requested_by=f"flow:{state.flow_id}",
                    ),
                    idempotency_key=key,
                )
            ],
            metadata=self._meta(state.flow_id),
        )
        self._append(
            state, [ev.FlowStepStarted(flow_id=state.flow_id, step=step.name, job_id=job_id)]
        )
        self.send_job(job_id)
        return True

    def _next(
        self,
        state: FlowState,
        template: FlowTemplate,
        step: FlowStep,
        result: dict[str, Any],
        *,
        now: datetime,
    ) -> bool:
        following = template.after(step.name)
        events: list[ev.EventData | ev.NewEvent] = [
            ev.FlowStepCompleted(flow_id=state.flow_id, step=step.name, result=result)
        ]
        if following is None:
            events.append(ev.FlowCompleted(flow_id=state.flow_id, outcome="done"))
        self._append(state, events)
        if following is not None:
            state = fold(self.log.read_stream(ev.flow_stream(state.flow_id))) or state
            return self._begin(state, template, following, now=now)
        return True

    def _stop(self, state: FlowState, outcome: str) -> bool:
        self._append(state, [ev.FlowCompleted(flow_id=state.flow_id, outcome=outcome)])
        return True

    # Agent steps ---------------------------------------------------------------------------

    def _agent_step(
        self, state: FlowState, template: FlowTemplate, step: FlowStep, *, now: datetime
    ) -> bool:
        if state.job_id is None:
            return self._begin(state, template, step, now=now)
        try:
            job = queries.get_job(state.job_id)
        except NotFoundError:
            return self._begin(state, template, step, now=now, rerun=False)
        actions = [a for a in queries.actions_for_job(job.job_id) if a.status != "superseded"]
        if job.status == "failed" and not any(a.status == "failed" for a in actions):
            return self._fail(state, step, job.error or "the job failed")
        if job.status == "cancelled":
            return self._stop(state, f"cancelled: the {step.name} job was cancelled")
        for action in actions:
            if action.status in {"rejected", "expired"}:
                return self._stop(state, f"stopped: {action.summary} was {action.status}")
            if action.status == "discarded":
                if action.error:
                    return self._fail(state, step, f"{action.summary} failed: {action.error}")
                return self._stop(state, f"stopped: {action.summary} was discarded")
            if action.status == "compensated":
                return self._stop(state, f"stopped: {action.summary} was undone")
        if job.status != "done" or any(a.status != "executed" for a in actions):
            return False  # still working, or waiting for a tap: nothing to do yet
        result: dict[str, Any] = {
            "job_id": job.job_id,
            "agent": job.agent,
            "summary": job.summary,
            "input": _job_input(self.log, job.job_id),
            "actions": [
                {
                    "action_id": a.action_id,
                    "connector": a.connector,
                    "action": a.action,
                    "summary": a.summary,
                }
                for a in actions
            ],
        }
        contact = next((a.contact_id for a in actions if a.contact_id), None)
        if contact:
            result["contact_id"] = contact
        return self._next(state, template, step, result, now=now)

    # Wait steps ----------------------------------------------------------------------------

    def _deadline(self, state: FlowState, step: FlowStep, *, now: datetime) -> datetime | None:
        if step.wait_for == "payment":
            invoice = self._invoice(state)
            if invoice is None:
                return None
            end_of_due = datetime.combine(invoice.due_date + timedelta(days=1), time(9), self.zone)
            deadline = end_of_due.astimezone(now.tzinfo)
            if step.on_timeout != "stop" and state.runs.get(step.on_timeout):
                # A reminder went out: give the client this long before the next one.
                deadline = now + timedelta(days=step.timeout_days or 7)
            return deadline
        return now + timedelta(days=step.timeout_days) if step.timeout_days else None

    def _timed_out(
        self,
        state: FlowState,
        template: FlowTemplate,
        step: FlowStep,
        reason: str,
        *,
        now: datetime,
    ) -> bool:
        if step.on_timeout == "stop":
            return self._stop(state, f"stopped: {reason}")
        return self._begin(state, template, template.step(step.on_timeout), now=now)

    def _wait_won(
        self, state: FlowState, template: FlowTemplate, step: FlowStep, *, now: datetime
    ) -> bool:
        if state.contact_id is None:
            return self._fail(state, step, "no contact to wait for")
        since = [
            e
            for e in self.log.read_stream(ev.contact_stream(state.contact_id))
            if e.position > state.step_position
        ]
        for event in since:
            if isinstance(event.data, ev.ContactWon):
                return self._next(
                    state,
                    template,
                    step,
                    {"won_by": event.data.by, "evidence": event.data.evidence},
                    now=now,
                )
        ours = {a.action_id for a in self._flow_actions(state)}
        for event in since:
            data = event.data
            if not isinstance(data, ev.EmailReceived) or data.auto_submitted:
                continue
            if data.answers_action is not None and data.answers_action not in ours:
                continue  # it answers another email of ours (an older thread), not this flow's
            token = flow_token(state.flow_id, step.name, data.message_id)
            try:
                question = queries.get_question(token)
            except NotFoundError:
                self._ask_about_reply(state, data, token)
                continue
            if question.answer == "won":
                self.log.append(
                    ev.contact_stream(state.contact_id),
                    [
                        ev.NewEvent(
                            ev.ContactWon(
                                contact_id=state.contact_id,
                                by=question.answered_by or "operator",
                                evidence=f"email:{data.message_id}",
                            ),
                            idempotency_key=f"won:{state.flow_id}",
                        )
                    ],
                    metadata=ev.Metadata(
                        actor=question.answered_by or ACTOR, correlation_id=state.flow_id
                    ),
                )
                return True
            if question.answer == "lost":
                return self._stop(state, f"stopped: lost ({question.answered_by} read the reply)")
        if state.waiting_until is not None and now >= state.waiting_until:
            return self._timed_out(
                state, template, step, f"no acceptance by {state.waiting_until:%Y-%m-%d}", now=now
            )
        return False

    def _ask_about_reply(self, state: FlowState, email: ev.EmailReceived, token: str) -> None:
        job_id = state.results.get("proposal", {}).get("job_id") or _last_job(state)
        if job_id is None:
            return
        preview = " ".join(email.text.split())[:300]
        who = email.from_name or email.from_address
        self.log.append(
            ev.job_stream(job_id),
            [
                ev.NewEvent(
                    ev.QuestionAsked(
                        token=token,
                        kind="flow_reply",
                        job_id=job_id,
                        text=f"{who} replied to your proposal: \u201c{preview}\u201d Did they accept?",
                        choices=["won", "lost", "wait"],
                    ),
                    idempotency_key=f"flow-reply:{token}",
                )
            ],
            metadata=self._meta(state.flow_id),
        )

    def _invoice(self, state: FlowState) -> business.InvoiceView | None:
        return business.invoice_for_flow(state.flow_id)

    def _wait_payment(
        self, state: FlowState, template: FlowTemplate, step: FlowStep, *, now: datetime
    ) -> bool:
        invoice = self._invoice(state)
        if invoice is None:
            return self._fail(state, step, "the invoice this flow waits for is gone")
        if invoice.status == "paid":
            paid = invoice.paid_at.isoformat() if invoice.paid_at else ""
            return self._next(
                state, template, step, {"number": invoice.number, "paid_at": paid}, now=now
            )
        if invoice.status == "void":
            return self._stop(state, f"stopped: invoice {invoice.number} was voided")
        if state.waiting_until is not None and now >= state.waiting_until:
            return self._timed_out(
                state, template, step, f"invoice {invoice.number} unpaid", now=now
            )
        return False

    # Failure -------------------------------------------------------------------------------

    def _flow_actions(self, state: FlowState) -> list[ActionView]:
        jobs = [r["job_id"] for r in state.results.values() if isinstance(r.get("job_id"), str)]
        if state.job_id and state.job_id not in jobs:
            jobs.append(state.job_id)
        return [a for job_id in jobs for a in queries.actions_for_job(job_id)]

    def _fail(self, state: FlowState, step: FlowStep, reason: str) -> bool:
        undo = [
            a for a in self._flow_actions(state) if a.status == "executed" and self.compensable(a)
        ]
        job_id = state.job_id or _last_job(state)
        token = flow_token(state.flow_id, "failed", step.name, str(state.version))
        rollback = "; ".join(a.summary for a in reversed(undo)) or "nothing (no step can be undone)"
        text = (
            f"The {state.template} flow stopped at \u201c{step.name}\u201d: {reason}. "
            f"Undo would roll back: {rollback}."
        )
        self._append(
            state,
            [
                ev.FlowFailed(
                    flow_id=state.flow_id,
                    step=step.name,
                    reason=reason,
                    job_id=job_id,
                    compensations=[a.action_id for a in reversed(undo)],
                    token=token,
                )
            ],
        )
        if job_id is not None:
            self.log.append(
                ev.job_stream(job_id),
                [
                    ev.NewEvent(
                        ev.QuestionAsked(
                            token=token,
                            kind="flow_failed",
                            job_id=job_id,
                            text=text,
                            choices=["retry", "undo", "leave"],
                        ),
                        idempotency_key=f"flow-alert:{token}",
                    )
                ],
                metadata=self._meta(state.flow_id),
            )
        logger.warning("flow %s failed at %s: %s", state.flow_id, step.name, reason)
        return True

    def _after_failure(self, state: FlowState, template: FlowTemplate, *, now: datetime) -> bool:
        try:
            question = queries.get_question(state.failed_token)
        except NotFoundError:
            return False
        if question.status == "pending" or question.answer is None:
            return False
        by = question.answered_by or "operator"
        step = template.step(state.step)
        if question.answer == "retry":
            job = queries.get_job(state.job_id) if state.job_id else None
            if job is not None and job.status == "failed":
                self.log.append(
                    ev.job_stream(job.job_id),
                    [
                        ev.NewEvent(
                            ev.JobRetried(job_id=job.job_id, by=by),
                            idempotency_key=f"flow-retry:{state.failed_token}",
                        )
                    ],
                    metadata=ev.Metadata(actor=by, correlation_id=job.job_id),
                )
                self._append(
                    state,
                    [ev.FlowStepStarted(flow_id=state.flow_id, step=step.name, job_id=job.job_id)],
                )
                self.send_job(job.job_id)
                return True
            return self._begin(state, template, step, now=now)
        if question.answer == "undo":
            for action_id in state.compensations:
                status = self.compensate(
                    action_id, reason=f"flow {state.flow_id[:8]} undone by {by}", by=by
                )
                logger.info("flow %s: undo of %s -> %s", state.flow_id, action_id, status)
            return self._stop(state, f"cancelled: undone by {by}")
        return self._stop(state, f"stopped: failed at {step.name}, left as is by {by}")

    # Helpers -------------------------------------------------------------------------------

    def _append(self, state: FlowState, events: list[ev.EventData | ev.NewEvent]) -> None:
        self.log.append(
            ev.flow_stream(state.flow_id),
            events,
            metadata=self._meta(state.flow_id),
            expected_version=state.version,
        )

    @staticmethod
    def _meta(flow_id: str) -> ev.Metadata:
        return ev.Metadata(actor=ACTOR, correlation_id=flow_id)


_EMPTY = FlowTemplate.model_construct(name="", description="", trigger="", steps=[])


def _last_job(state: FlowState) -> str | None:
    for result in reversed(list(state.results.values())):
        if isinstance(result.get("job_id"), str):
            return str(result["job_id"])
    return None


def _job_input(log: EventLog, job_id: str) -> dict[str, Any]:
    history = log.read_stream(ev.job_stream(job_id))
    first = history[0].data if history else None
    if isinstance(first, ev.JobRequested):
        return {k: v for k, v in first.input.items() if k != "flow"}
    return {}


def due_date_for(issue: date, days: int) -> date:
    return issue + timedelta(days=days)
