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
