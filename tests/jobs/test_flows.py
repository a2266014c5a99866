"""The consultant flow end to end: proposal, acceptance, calendar, invoice, payment, reminder.

Driven through the console dispatcher with the offline model, real connectors (outbox email,
the local .ics calendar, the documents folder) and in-process workers. The conductor's ticks
are called by the workers after each job and action; the test calls ``tick`` itself only to
move the clock (deadlines) or to resume after a simulated crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.dispatch import Dispatcher
from bot.messages import InboundMessage
from config import Settings
from jobs.flows import Conductor, fold
from jobs.runtime import Runtime, build_runtime
from jobs.service import JobService
from store import business, queries
from store import events as ev
from store.log import utcnow
from store.models import MemoryRow

PROPOSAL = "/proposal Jane Doe <jane@acme.example> website audit: 3 pages review, accessibility report; price 2400 EUR; 2 weeks"


def wait_for(check: Callable[[], Any], *, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {check}")


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        operators=("console:local",),
        flows=("consultant",),
        operator_name="Sam Consultant",
        email_from="Sam <sam@studio.example>",
        reconcile_interval_seconds=3600,
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = build_runtime(settings, with_worker=True)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def service(runtime: Runtime) -> JobService:
    return JobService(runtime)


@pytest.fixture
def dispatcher(settings: Settings, runtime: Runtime, service: JobService) -> Dispatcher:
    return Dispatcher(settings=settings, service=service, log=runtime.store.log)


def conductor(runtime: Runtime) -> Conductor:
    assert runtime.conductor is not None
    return runtime.conductor


def the_flow() -> business.FlowView:
    flows = business.list_flows()
    assert len(flows) == 1
    return flows[0]


def approve_all(service: JobService, job_id: str) -> list[str]:
    """Approve every pending proposal of a job, as one tap each; returns their action ids."""
    wait_for(lambda: queries.get_job(job_id).status in {"awaiting_approval", "done"})
    approved = []
    for action in queries.actions_for_job(job_id):
        approval = queries.approval_for_action(action.action_id)
        if approval.status == "pending":
            service.decide(
                approval.token, approve=True, decided_by="console:local", channel="console"
            )
            approved.append(action.action_id)
    for action_id in approved:
        wait_for(lambda a=action_id: queries.get_action(a).status == "executed")
    return approved


def step_job(step: str) -> str:
    flow = wait_for(lambda: (f := the_flow()).step == step and f.job_id and f)
    return str(flow.job_id)


def reply_from_jane(runtime: Runtime, flow: business.FlowView, text: str) -> None:
    assert flow.contact_id is not None
    runtime.store.log.append(
        ev.contact_stream(flow.contact_id),
        [
            ev.NewEvent(
                ev.EmailReceived(
                    message_id="reply-1@acme.example",
                    from_address="jane@acme.example",
                    from_name="Jane Doe",
                    subject="Re: Proposal",
                    text=text,
                    contact_id=flow.contact_id,
                ),
                idempotency_key="email:reply-1@acme.example",
            )
        ],
        metadata=ev.Metadata(actor="inbox"),
    )


def test_a_proposal_becomes_a_paid_invoice_through_the_consultant_flow(
    runtime: Runtime, service: JobService, dispatcher: Dispatcher, settings: Settings
) -> None:
    dispatcher.handle_message(InboundMessage("console", "local", "local", PROPOSAL))
    first = wait_for(lambda: business.list_flows())
    assert first[0].template == "consultant" and first[0].step == "proposal"
    approve_all(service, str(first[0].job_id))

    flow = wait_for(lambda: (f := the_flow()).status == "waiting" and f)
    assert flow.step == "accepted" and flow.waiting_for == "won" and flow.contact_id

    reply_from_jane(runtime, flow, "Sounds great, let's go ahead!")
    conductor(runtime).tick()
    question = wait_for(lambda: [q for q in queries.pending_questions() if q.kind == "flow_reply"])[
        0
    ]
    assert "Jane Doe replied" in question.text and "let's go ahead" in question.text
    service.answer(question.token, "won", by="console:local", channel="console")
    conductor(runtime).tick()

    calendar = approve_all(service, step_job("milestones"))
    assert len(calendar) == 2
    ics = (settings.documents_path / "calendar.ics").read_text()
    assert "Kick-off: website audit (Jane Doe)" in ics or "Kick-off: website audit" in ics

    invoice_job = step_job("invoice")
    approve_all(service, invoice_job)
    invoice = wait_for(lambda: business.invoice_for_flow(the_flow().flow_id))
    assert invoice.total == 2400 and invoice.currency == "EUR"
    assert (settings.documents_path / "invoices" / f"{invoice.number}.pdf").read_bytes()[
        :4
    ] == b"%PDF"

    send_job = step_job("send_invoice")
    approve_all(service, send_job)
    # Every value in the invoice and its email traces back to the proposal, the contact or
    # the settings, leaf by leaf (client.email, lines.unit_price): no warning to look at.
    for job in (invoice_job, send_job):
        for action in queries.actions_for_job(job):
            assert not [f for f in action.flags if f.startswith("\u26a0")], action.flags
    sent = list(settings.outbox_dir.glob("*.eml"))
    assert any(f"{invoice.number}.pdf" in p.read_text(errors="replace") for p in sent)
    flow = wait_for(lambda: (f := the_flow()).step == "payment" and f.status == "waiting" and f)
    assert business.get_invoice(invoice.number).status == "sent"

    # Past the due date: a reminder is drafted, and after it the flow waits again.
    late = utcnow() + timedelta(days=settings.invoice_due_days + 3)
    conductor(runtime).tick(now=late)
    approve_all(service, step_job("reminder"))
    waiting = wait_for(lambda: (f := the_flow()).step == "payment" and f.status == "waiting" and f)
    assert waiting.until is not None and waiting.until > utcnow() + timedelta(days=6)

    runtime.store.log.append(
        "payments-stripe",
        [
            ev.PaymentRecorded(
                source="stripe",
                external_id="pi_1",
                status="succeeded",
                amount="2400.00",
                currency="EUR",
                invoice_number=invoice.number,
            )
        ],
        metadata=ev.Metadata(actor="webhook:stripe"),
    )
    conductor(runtime).tick()
    done = wait_for(lambda: (f := the_flow()).status == "done" and f)
    checkpoints = [
        e.data.step
        for e in runtime.store.log.read_stream(ev.flow_stream(done.flow_id))
        if isinstance(e.data, ev.FlowStepCompleted)
    ]
    assert checkpoints == [
        "proposal",
        "accepted",
        "milestones",
        "invoice",
        "send_invoice",
        "reminder",
        "payment",
    ]
    assert business.get_invoice(invoice.number).status == "paid"


def test_a_rejected_proposal_stops_the_flow(
    runtime: Runtime, service: JobService, dispatcher: Dispatcher
) -> None:
    dispatcher.handle_message(InboundMessage("console", "local", "local", PROPOSAL))
    flow = wait_for(lambda: business.list_flows())[0]
    wait_for(lambda: queries.get_job(str(flow.job_id)).status == "awaiting_approval")
    action = queries.actions_for_job(str(flow.job_id))[0]
    approval = queries.approval_for_action(action.action_id)
    service.decide(approval.token, approve=False, decided_by="console:local", channel="console")
    conductor(runtime).tick()
    stopped = wait_for(lambda: (f := the_flow()).status == "stopped" and f)
    assert stopped.step == "proposal"


def test_a_crashed_conductor_resumes_from_the_log_without_repeating_a_step(
    runtime: Runtime, service: JobService, dispatcher: Dispatcher
) -> None:
    dispatcher.handle_message(InboundMessage("console", "local", "local", PROPOSAL))
    flow = wait_for(lambda: business.list_flows())[0]
    approve_all(service, str(flow.job_id))
    flow = wait_for(lambda: (f := the_flow()).status == "waiting" and f)
    assert flow.contact_id is not None
    runtime.store.log.append(
        ev.contact_stream(flow.contact_id),
        [ev.ContactWon(contact_id=flow.contact_id, by="console:local")],
        metadata=ev.Metadata(actor="console:local"),
    )
    # Two conductors (two processes after a restart) tick the same flow at once: one step.
    twin = Conductor(
        log=runtime.store.log,
        templates=conductor(runtime).templates,
        send_job=conductor(runtime).send_job,
        compensate=conductor(runtime).compensate,
        compensable=conductor(runtime).compensable,
    )
    conductor(runtime).tick()
    twin.tick()
    history = runtime.store.log.read_stream(ev.flow_stream(flow.flow_id))
    starts = [
        e.data
        for e in history
        if isinstance(e.data, ev.FlowStepStarted) and e.data.step == "milestones"
    ]
    assert len(starts) == 1
    state = fold(history)
    assert state is not None and state.step == "milestones" and state.runs["milestones"] == 1


def test_a_conductor_stopped_between_a_checkpoint_and_the_next_step_does_not_repeat_it(
    runtime: Runtime, service: JobService, dispatcher: Dispatcher
) -> None:
    dispatcher.handle_message(InboundMessage("console", "local", "local", PROPOSAL))
    flow = wait_for(lambda: business.list_flows())[0]
    approve_all(service, str(flow.job_id))
    flow = wait_for(lambda: (f := the_flow()).status == "waiting" and f)
    # The checkpoint of "accepted" was written; the process died (or another conductor read
    # the stream) before the next step began.
    state = fold(runtime.store.log.read_stream(ev.flow_stream(flow.flow_id)))
    assert state is not None
    runtime.store.log.append(
        ev.flow_stream(flow.flow_id),
        [ev.FlowStepCompleted(flow_id=flow.flow_id, step="accepted", result={"won_by": "t"})],
        metadata=ev.Metadata(actor="conductor"),
        expected_version=state.version,
    )
    conductor(runtime).tick()
    history = runtime.store.log.read_stream(ev.flow_stream(flow.flow_id))
    checkpoints = [e.data.step for e in history if isinstance(e.data, ev.FlowStepCompleted)]
    assert checkpoints == ["proposal", "accepted"]
    assert (resumed := fold(history)) is not None and resumed.step == "milestones"


def test_a_failed_step_sends_one_alert_whose_undo_rolls_the_flow_back(
    runtime: Runtime, service: JobService, dispatcher: Dispatcher, settings: Settings
) -> None:
    bad = PROPOSAL.replace("; price 2400 EUR", "")  # no price: nothing to invoice
    dispatcher.handle_message(InboundMessage("console", "local", "local", bad))
    flow = wait_for(lambda: business.list_flows())[0]
    approve_all(service, str(flow.job_id))
    flow = wait_for(lambda: (f := the_flow()).status == "waiting" and f)
    assert flow.contact_id is not None
    runtime.store.log.append(
        ev.contact_stream(flow.contact_id),
        [ev.ContactWon(contact_id=flow.contact_id, by="console:local")],
        metadata=ev.Metadata(actor="console:local"),
    )
    conductor(runtime).tick()
    approve_all(service, step_job("milestones"))
    # The invoice agent has no amount to invoice: the step fails for good.
    failed = wait_for(lambda: (f := the_flow()).status == "failed" and f)
    assert failed.step == "invoice"
    alerts = [q for q in queries.pending_questions() if q.kind in {"flow_failed", "job_failed"}]
    assert [q.kind for q in alerts] == ["flow_failed"]
    assert "Undo would roll back" in alerts[0].text and "kick-off" in alerts[0].text.lower()
    service.answer(alerts[0].token, "undo", by="console:local", channel="console")
    conductor(runtime).tick()
    cancelled = wait_for(lambda: (f := the_flow()).status == "cancelled" and f)
    assert cancelled.flow_id == flow.flow_id
    ics = (settings.documents_path / "calendar.ics").read_text()
    assert "Kick-off" not in ics


def test_a_stripe_payment_marks_the_invoice_paid_and_a_thank_you_is_drafted(
    runtime: Runtime, service: JobService, dispatcher: Dispatcher
) -> None:
    """Choreography: a verified Stripe delivery becomes a payment, the invoice is paid, the
    flow finishes, and the thank-you and the bookkeeping note follow without a conductor."""
    dispatcher.handle_message(InboundMessage("console", "local", "local", PROPOSAL))
    flow = wait_for(lambda: business.list_flows())[0]
    approve_all(service, str(flow.job_id))
    flow = wait_for(lambda: (f := the_flow()).status == "waiting" and f)
    assert flow.contact_id is not None
    runtime.store.log.append(
        ev.contact_stream(flow.contact_id),
        [ev.ContactWon(contact_id=flow.contact_id, by="console:local")],
        metadata=ev.Metadata(actor="console:local"),
    )
    conductor(runtime).tick()
    for step in ("milestones", "invoice", "send_invoice"):
        approve_all(service, step_job(step))
    invoice = wait_for(lambda: business.invoice_for_flow(flow.flow_id))
    delivery = ev.WebhookReceived(
        source="stripe",
        kind="stripe",
        delivery_id="evt_1",
        event_type="payment_intent.succeeded",
        payload={
            "id": "evt_1",
            "type": "payment_intent.succeeded",
            "data": {
                "object": {
                    "id": "pi_1",
                    "amount_received": 240000,
                    "currency": "eur",
                    "receipt_email": "jane@acme.example",
                    "description": "Website audit",
                }
            },
        },
    )
    for _ in range(2):  # a redelivery is dropped by its key
        runtime.store.log.append(
            "webhook-stripe",
            [ev.NewEvent(delivery, idempotency_key="webhook:stripe:evt_1")],
            metadata=ev.Metadata(actor="webhook:stripe"),
        )
    assert runtime.reactions is not None
    runtime.reactions.run_once()
    runtime.reactions.run_once()
    assert business.get_invoice(invoice.number).status == "paid"
    thanks = wait_for(
        lambda: [
            j
            for j in queries.list_jobs()
            if j.agent == "thank_you" and j.status == "awaiting_approval"
        ]
    )
    assert len(thanks) == 1
    conductor(runtime).tick()
    assert wait_for(lambda: (f := the_flow()).status == "done" and f)
    notes = MemoryRow.select().where(MemoryRow.text.contains(f"invoice {invoice.number} paid"))
    assert [n.contact_id for n in notes] == [flow.contact_id]


def test_won_moves_the_flow_on_and_flows_and_paid_answer_in_chat(
    runtime: Runtime, service: JobService, dispatcher: Dispatcher
) -> None:
    def say(text: str) -> str:
        return "\n".join(
            r.text
            for r in dispatcher.handle_message(InboundMessage("console", "local", "local", text))
        )

    assert "No business flow is open" in say("/flows")
    say(PROPOSAL)
    flow = wait_for(lambda: business.list_flows())[0]
    approve_all(service, str(flow.job_id))
    wait_for(lambda: the_flow().status == "waiting")
    assert "accepted (waiting for won" in say("/flows")
    assert "Usage: /won" in say("/won nobody@nowhere.example")
    assert "moves on" in say("/won jane@acme.example")
    assert "Already recorded" in say("/won jane@acme.example")
    for step in ("milestones", "invoice", "send_invoice"):
        approve_all(service, step_job(step))
    invoice = wait_for(lambda: business.invoice_for_flow(flow.flow_id))
    assert "marked paid" in say(f"/paid {invoice.number}")
    assert "already paid" in say(f"/paid {invoice.number}")
    assert wait_for(lambda: (f := the_flow()).status == "done" and f)
