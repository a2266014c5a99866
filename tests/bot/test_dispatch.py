from __future__ import annotations

import time

from agents import questions
from agents.lead import parse_lead
from bot.dispatch import REFUSAL, Dispatcher
from bot.messages import ButtonPress, InboundMessage
from jobs.runtime import Runtime
from jobs.service import JobService
from store import events as ev
from store import queries
from tests.builders import approve, propose_action, request_job


def msg(
    text: str, *, sender: str = "local", channel: str = "console", platform_id: str | None = None
) -> InboundMessage:
    return InboundMessage(channel, sender, "chat", text, platform_id=platform_id)


def press(data: str, *, sender: str = "local") -> ButtonPress:
    return ButtonPress("console", sender, "chat", data)


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


LEAD = "/lead Jane Doe <jane@acme.example> wants a website audit, budget 3k"


def test_a_stranger_is_refused_politely_once_and_nothing_is_queued(dispatcher: Dispatcher) -> None:
    replies = dispatcher.handle_message(msg(LEAD, sender="mallory"))
    assert [r.text for r in replies] == [REFUSAL]
    assert dispatcher.handle_message(msg("/status", sender="mallory")) == []  # no spam back
    assert [r.text for r in dispatcher.handle_message(msg("/help", sender="eve"))] == [REFUSAL]
    assert queries.list_jobs() == []


def test_a_stranger_cannot_press_buttons(dispatcher: Dispatcher) -> None:
    assert dispatcher.handle_button(press("ap:tok:y", sender="mallory")).text == REFUSAL


def test_an_unknown_command_gets_a_hint_and_nothing_is_queued(dispatcher: Dispatcher) -> None:
    [reply] = dispatcher.handle_message(msg("/frobnicate now"))
    assert "Unknown command /frobnicate" in reply.text and "/help" in reply.text
    assert queries.list_jobs() == []


def test_a_missing_argument_gets_the_usage_line(dispatcher: Dispatcher) -> None:
    [reply] = dispatcher.handle_message(msg("/lead"))
    assert reply.text.startswith("Usage: /lead")
    [reply] = dispatcher.handle_message(msg("/trace"))
    assert reply.text.startswith("Usage: /trace")
    assert queries.list_jobs() == []


def test_a_lead_without_an_email_is_refused_with_a_hint(dispatcher: Dispatcher) -> None:
    [reply] = dispatcher.handle_message(msg("/lead Jane Doe wants an audit"))
    assert "email address" in reply.text
    assert queries.list_jobs() == []


def test_an_oversized_message_is_refused(dispatcher: Dispatcher) -> None:
    [reply] = dispatcher.handle_message(msg("/lead " + "x" * 5000))
    assert "limit" in reply.text
    assert queries.list_jobs() == []


def test_a_lead_becomes_a_job_in_the_log_with_a_short_id(dispatcher: Dispatcher) -> None:
    [reply] = dispatcher.handle_message(msg(LEAD))
    [job] = queries.list_jobs()
    assert f"[job {job.short_id}]" in reply.text
    assert job.agent == "lead" and job.requested_by == "console:local"


def test_a_redelivered_update_is_dropped(dispatcher: Dispatcher) -> None:
    assert dispatcher.handle_message(msg(LEAD, platform_id="update-1"))
    assert dispatcher.handle_message(msg(LEAD, platform_id="update-1")) == []
    assert len(queries.list_jobs()) == 1


def test_approve_sends_once_and_a_second_press_says_already_decided(dispatcher: Dispatcher) -> None:
    dispatcher.handle_message(msg(LEAD))
    wait_for(lambda: bool(queries.pending_approvals()))
    [approval] = queries.pending_approvals()
    first = dispatcher.handle_button(press(f"ap:{approval.token}:y"))
    assert first.text.startswith("Approved")
    second = dispatcher.handle_button(press(f"ap:{approval.token}:n"))
    assert second.text.startswith("Already decided: approved by console:local")
    wait_for(lambda: queries.get_action(approval.action_id).status == "executed")
    assert queries.get_job(approval.job_id).status == "done"


def test_reject_records_the_rejection_and_sends_nothing(
    dispatcher: Dispatcher, service: JobService
) -> None:
    dispatcher.handle_message(msg(LEAD))
    wait_for(lambda: bool(queries.pending_approvals()))
    [approval] = queries.pending_approvals()
    reply = dispatcher.handle_button(press(f"ap:{approval.token}:n"))
    assert reply.text.startswith("Rejected: nothing sent")
    assert queries.get_action(approval.action_id).status == "rejected"
    assert queries.get_job(approval.job_id).status == "done"


def test_an_unknown_token_or_foreign_data_is_answered_not_executed(dispatcher: Dispatcher) -> None:
    assert "no longer valid" in dispatcher.handle_button(press("ap:nosuchtoken:y")).text
    assert "not one of mine" in dispatcher.handle_button(press("garbage")).text


def test_status_trace_and_approvals_answer(dispatcher: Dispatcher) -> None:
    dispatcher.handle_message(msg(LEAD))
    wait_for(lambda: bool(queries.pending_approvals()))
    [job] = queries.list_jobs()
    [status] = dispatcher.handle_message(msg("/status"))
    assert "awaiting approval" in status.text and "Last error: none" in status.text
    [trace] = dispatcher.handle_message(msg(f"/trace {job.short_id}"))
    assert "Asked: /lead" in trace.text and "waiting for you" in trace.text
    header, proposal = dispatcher.handle_message(msg("/approvals"))
    assert header.text == "1 waiting for you:"
    assert [b.label for b in proposal.buttons] == ["Approve and send", "Edit", "Reject"]
    [missing] = dispatcher.handle_message(msg("/trace ffffff"))
    assert "no job or action" in missing.text


def test_the_same_dramatiq_message_delivered_three_times_sends_one_email(
    dispatcher: Dispatcher, runtime: Runtime
) -> None:
    dispatcher.handle_message(msg(LEAD))
    wait_for(lambda: bool(queries.pending_approvals()))
    [approval] = queries.pending_approvals()
    dispatcher.handle_button(press(f"ap:{approval.token}:y"))
    for _ in range(3):
        runtime.actors.execute_action.send(approval.action_id)
    runtime.actors.run_job.send(approval.job_id)
    wait_for(lambda: queries.get_action(approval.action_id).status == "executed")
    runtime.broker.join("opcore", fail_fast=True)
    assert len(list(runtime.settings.outbox_dir.glob("*.eml"))) == 1
    types = [e.type for e in runtime.store.log.read_correlated(approval.job_id)]
    assert types.count("ActionStarted") == 1 and types.count("JobStarted") == 1


def test_an_unknown_outcome_is_settled_by_one_tap_and_only_once(
    dispatcher: Dispatcher, runtime: Runtime
) -> None:
    request_job(runtime.store, "j1")
    propose_action(runtime.store)
    approve(runtime.store)
    question = questions.ask("action_unknown", job_id="j1", action_id="a1", text="Did this happen?")
    runtime.store.log.append(
        "action-a1",
        [
            ev.ActionStarted(action_id="a1", attempt=1, worker="dead"),
            ev.ActionOutcomeUnknown(action_id="a1", reason="r"),
            question,
        ],
        metadata=ev.Metadata(actor="test", correlation_id="j1"),
    )
    first = dispatcher.handle_button(press(f"q:{question.token}:d"))
    assert first.text.startswith("Recorded as done")
    again = dispatcher.handle_button(press(f"q:{question.token}:r"))
    assert again.text.startswith("Already answered: done by console:local")
    assert queries.get_action("a1").status == "executed"
    assert not list(runtime.settings.outbox_dir.glob("*.eml"))  # nothing was sent again


def test_retry_on_a_failed_job_runs_it_again(dispatcher: Dispatcher, runtime: Runtime) -> None:
    job_id = request_job(
        runtime.store, "0f" * 16, payload=parse_lead("Jane <jane@acme.example> audit").model_dump()
    )
    question = questions.ask("job_failed", job_id=job_id, text="ProviderTimeoutError: slow")
    runtime.store.log.append(
        f"job-{job_id}",
        [
            ev.JobFailed(
                job_id=job_id, error_type="ProviderTimeoutError", error="slow", transient=True
            ),
            question,
        ],
        metadata=ev.Metadata(actor="test", correlation_id=job_id),
    )
    reply = dispatcher.handle_button(press(f"q:{question.token}:r"))
    assert reply.text.startswith("Trying again")
    wait_for(lambda: queries.get_job(job_id).status == "awaiting_approval")


def test_a_paused_agent_keeps_its_jobs_in_the_log_until_resumed(dispatcher: Dispatcher) -> None:
    [paused] = dispatcher.handle_message(msg("/pause lead"))
    assert paused.text.startswith("Paused lead")
    [waiting] = dispatcher.handle_message(msg(LEAD))
    assert "paused" in waiting.text
    time.sleep(0.3)
    [job] = queries.list_jobs()
    assert job.status == "queued"
    [resumed] = dispatcher.handle_message(msg("/resume lead"))
    assert "1 waiting job(s)" in resumed.text
    wait_for(lambda: queries.get_job(job.job_id).status == "awaiting_approval")
    [unknown] = dispatcher.handle_message(msg("/pause invoices"))
    assert "unknown agent" in unknown.text


def test_cancel_stops_a_job_and_its_buttons(dispatcher: Dispatcher) -> None:
    dispatcher.handle_message(msg(LEAD))
    wait_for(lambda: bool(queries.pending_approvals()))
    [approval] = queries.pending_approvals()
    job = queries.get_job(approval.job_id)
    [cancelled] = dispatcher.handle_message(msg(f"/cancel {job.short_id}"))
    assert cancelled.text.startswith("Cancelled job")
    assert queries.get_job(job.job_id).status == "cancelled"
    assert "Already decided" in dispatcher.handle_button(press(f"ap:{approval.token}:y")).text
    [again] = dispatcher.handle_message(msg(f"/cancel {job.short_id}"))
    assert "already cancelled" in again.text


def test_undo_says_when_an_action_cannot_be_undone(dispatcher: Dispatcher) -> None:
    dispatcher.handle_message(msg(LEAD))
    wait_for(lambda: bool(queries.pending_approvals()))
    [approval] = queries.pending_approvals()
    dispatcher.handle_button(press(f"ap:{approval.token}:y"))
    wait_for(lambda: queries.get_action(approval.action_id).status == "executed")
    [reply] = dispatcher.handle_message(msg(f"/undo {approval.job_id[:6]}"))
    assert "Cannot be undone" in reply.text and "email.send_email has no undo" in reply.text


def test_budget_buttons_answer_without_crashing(dispatcher: Dispatcher, runtime: Runtime) -> None:
    job_id = request_job(
        runtime.store, "0e" * 16, payload=parse_lead("Jane <jane@acme.example> audit").model_dump()
    )
    question = questions.ask("budget", job_id=job_id, text="Not spent: …")
    runtime.store.log.append(
        f"job-{job_id}",
        [
            ev.BudgetBlocked(
                job_id=job_id,
                agent="lead",
                scope="workspace",
                period="day:2026-11-25",
                limit_usd=1.0,
                spent_usd=0.99,
                estimate_usd=0.05,
            ),
            question,
        ],
        metadata=ev.Metadata(actor="test", correlation_id=job_id),
    )
    assert dispatcher.handle_button(press(f"q:{question.token}:s")).text.startswith("Skipped")
    assert queries.get_job(job_id).status == "cancelled"
    assert dispatcher.handle_button(press(f"q:{question.token}:b")).text.startswith(
        "Already answered"
    )


def test_cancel_after_approval_stops_an_action_that_has_not_started(
    runtime: Runtime, service: JobService
) -> None:
    request_job(runtime.store, "j1")
    propose_action(runtime.store)
    approve(runtime.store)  # approved, but its message is not in the queue yet
    assert service.cancel(queries.get_job("j1"), by="console:local")
    assert queries.get_action("a1").status == "discarded"
    assert runtime.effects.execute("a1") == "discarded"
    assert not list(runtime.settings.outbox_dir.glob("*.eml"))


def test_control_characters_are_stripped_before_anything_is_stored(dispatcher: Dispatcher) -> None:
    [reply] = dispatcher.handle_message(
        msg("/lead Jane\x00 Doe <jane@acme.example> wants\x07 an audit")
    )
    assert reply.text.startswith("On it")
    [job] = queries.list_jobs()
    assert "\x00" not in job.text and "\x07" not in job.text


def test_a_lead_with_an_address_the_connector_would_refuse_is_refused_up_front(
    dispatcher: Dispatcher,
) -> None:
    [reply] = dispatcher.handle_message(msg("/lead Eve <eve..x@acme.example> wants things"))
    assert "does not look like an address" in reply.text
    assert queries.list_jobs() == []


def test_approve_all_sends_each_bundled_email_exactly_once(
    dispatcher: Dispatcher, runtime: Runtime
) -> None:
    for n in range(5):
        dispatcher.handle_message(msg(f"/lead Lead {n} <lead{n}@acme.example> wants an audit"))
    wait_for(lambda: len(queries.pending_approvals()) == 5)
    replies = dispatcher.handle_message(msg("/approvals"))
    [bundle] = [r for r in replies if r.buttons and r.buttons[0].label == "Approve all 5"]
    assert "lead0@acme.example" in bundle.text
    first = dispatcher.handle_button(press(bundle.buttons[0].data))
    assert first.text.startswith("Approved 5 of 5")
    again = dispatcher.handle_button(press(bundle.buttons[0].data))
    assert again.text.startswith("Approved 0 of 5 (5 already decided)")
    wait_for(lambda: len(list(runtime.settings.outbox_dir.glob("*.eml"))) == 5)
    time.sleep(0.3)
    assert len(list(runtime.settings.outbox_dir.glob("*.eml"))) == 5
    assert dispatcher.handle_button(press("ab:nosuchbundle:y")).text.startswith(
        "That button is no longer valid"
    )
