"""/triage from chat: a ticket becomes a classified job and a reply waiting for approval."""

from __future__ import annotations

from bot.dispatch import Dispatcher
from store import queries
from tests.bot.test_dispatch import msg, wait_for


def test_a_ticket_is_triaged_and_its_reply_waits_for_approval(dispatcher: Dispatcher) -> None:
    [ack] = dispatcher.handle_message(
        msg("/triage bob@client.example: The export gives a 500 error, we are blocked!")
    )
    assert ack.text.startswith("On it: triaging the ticket from bob@client.example")
    wait_for(lambda: bool(queries.pending_approvals()))
    [approval] = queries.pending_approvals()
    job = queries.get_job(approval.job_id)
    wait_for(lambda: queries.get_job(approval.job_id).summary != "")
    job = queries.get_job(approval.job_id)
    assert job.summary.startswith("Ticket from bob@client.example: bug, urgent.")
    action = queries.get_action(approval.action_id)
    assert action.params["to"] == "bob@client.example"
    assert action.params["subject"].startswith("Re: The export gives a 500 error")
    assert "within the hour" in action.params["body"]
    assert not [f for f in action.flags if f.startswith("⚠")]


def test_triage_without_an_address_gets_the_usage(dispatcher: Dispatcher) -> None:
    [reply] = dispatcher.handle_message(msg("/triage the export fails"))
    assert "start with the customer's email address" in reply.text
    assert queries.list_jobs() == []


def test_a_proposal_from_chat_waits_for_approval_with_the_operators_terms(
    dispatcher: Dispatcher,
) -> None:
    [ack] = dispatcher.handle_message(
        msg(
            "/proposal jane@acme.example website audit: 3 pages review, accessibility report; "
            "price 2400 EUR; 2 weeks"
        )
    )
    assert ack.text.startswith("On it: drafting the proposal to jane@acme.example")
    wait_for(lambda: bool(queries.pending_approvals()))
    [approval] = queries.pending_approvals()
    action = queries.get_action(approval.action_id)
    assert action.params["to"] == "jane@acme.example"
    body = action.params["body"]
    assert "3 pages review" in body and "accessibility report" in body and "2 weeks" in body
    assert not [f for f in action.flags if f.startswith("⚠")]  # every amount is the operator's


def test_release_notes_from_chat_leave_out_internal_changes(dispatcher: Dispatcher) -> None:
    [ack] = dispatcher.handle_message(
        msg(
            "/release v1.4.0 to customers@list.example: fix: export 500 on large files; "
            "feat: dark mode; chore: bump deps"
        )
    )
    assert ack.text.startswith("On it: drafting the notes for v1.4.0")
    wait_for(lambda: bool(queries.pending_approvals()))
    [approval] = queries.pending_approvals()
    action = queries.get_action(approval.action_id)
    assert action.params["to"] == "customers@list.example"
    assert "Dark mode" in action.params["body"] and "bump deps" not in action.params["body"]
    [usage] = dispatcher.handle_message(msg("/release v1.5.0 to customers@list.example: chore: x"))
    assert "On it" not in usage.text
