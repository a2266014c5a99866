"""Proposal drafting: parsing, the template, the operator's terms kept, runs end to end."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from agents.errors import AgentInputError
from agents.proposal import (
    DRAFT_TASK,
    SYSTEM_PROMPT,
    ProposalAgent,
    ProposalDraft,
    ProposalInput,
    missing_terms,
    offline_draft,
    parse_proposal,
    subject_for,
)
from agents.providers.base import ModelProvider
from agents.providers.offline import OfflineProvider
from agents.providers.scripted import ScriptedProvider
from agents.registry import AgentRegistry
from agents.runner import JobRunner, RunOutcome
from connectors.email import EmailConnector, OutboxDelivery
from store import Store, queries
from tests.builders import create_contact, request_job

EXAMPLE = (
    "jane@acme.example website audit: 3 pages review, accessibility report; price 2400 EUR; 2 weeks"
)


def run_proposal(
    store: Store, tmp_path: Path, model: ModelProvider, text: str = EXAMPLE
) -> RunOutcome:
    request_job(store, "j1", agent="proposal", payload=parse_proposal(text).model_dump())
    connectors = {
        "email": EmailConnector(sender="me@example.com", delivery=OutboxDelivery(tmp_path))
    }
    return JobRunner(
        log=store.log,
        registry=AgentRegistry.with_agents(connectors, [ProposalAgent()]),
        model=model,
        approval_ttl=timedelta(hours=1),
        operator_name="Sam",
    ).run("j1")


def facts_of(proposal: ProposalInput, *, name: str = "Jane") -> dict[str, str]:
    return {
        "name": name,
        "email": proposal.email,
        "company": proposal.company,
        "title": proposal.title,
        "scope": "\n".join(proposal.scope),
        "price": proposal.price,
        "timeline": proposal.timeline,
        "operator": "Sam",
        "subject": subject_for(proposal),
    }


# Parsing ------------------------------------------------------------------------------


def test_the_example_line_gives_recipient_title_scope_price_and_timeline() -> None:
    proposal = parse_proposal(EXAMPLE)
    assert (proposal.name, proposal.email, proposal.company) == (
        "Jane",
        "jane@acme.example",
        "Acme",
    )
    assert proposal.title == "website audit"
    assert proposal.scope == ["3 pages review", "accessibility report"]
    assert (proposal.price_amount, proposal.currency, proposal.price) == ("2400", "EUR", "2400 EUR")
    assert proposal.timeline == "2 weeks"
    assert subject_for(proposal) == "Proposal: Website audit for Acme"


def test_a_name_a_symbol_a_price_note_and_labelled_terms_are_read_as_typed() -> None:
    proposal = parse_proposal(
        "Jane Doe <jane@acme.example>: the website audit: review; price €2,400 excl. VAT; "
        "timeline: by 30 June; workshop, report"
    )
    assert proposal.name == "Jane Doe"
    assert proposal.title == "the website audit"
    assert proposal.scope == ["review", "workshop", "report"]
    assert proposal.price == "2,400 EUR excl. VAT"
    assert proposal.timeline == "by 30 June"
    assert subject_for(proposal) == "Proposal: Website audit for Acme"


def test_price_and_timeline_are_optional_and_a_scope_item_starting_with_cost_stays_scope() -> None:
    proposal = parse_proposal("bob@gmail.com logo: 3 concepts; cost review")
    assert proposal.scope == ["3 concepts", "cost review"]
    assert (proposal.price, proposal.timeline, proposal.company) == ("", "", "")
    assert subject_for(proposal) == "Proposal: Logo"


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("", "usage: /proposal"),
        ("website audit: review; price 2400 EUR", "recipient's email address"),
        ("jane@acme.c audit: review", "does not look like an address"),
        ("jane@acme.example website audit", "give a title, then ':'"),
        ("jane@acme.example : review", "give a title, then ':'"),
        ("jane@acme.example audit: price 2400 EUR; 2 weeks", "at least one scope item"),
        ("jane@acme.example audit: review; price 2400", "give an amount and a currency"),
        ("jane@acme.example audit: review; price soon", "could not read the price"),
        ("jane@acme.example audit: review; price 1 EUR; price 2 EUR", "one price only"),
        ("jane@acme.example audit: review; 2 weeks; 3 weeks", "one timeline only"),
        ("jane@acme.example audit: " + "x" * 4000, "longer than 4000 characters"),
    ],
)
def test_bad_input_is_refused_with_a_clear_hint(text: str, hint: str) -> None:
    with pytest.raises(AgentInputError, match=hint):
        parse_proposal(text)


# The template and the terms check ------------------------------------------------------


def test_the_offline_draft_states_every_term_verbatim_and_is_deterministic() -> None:
    proposal = parse_proposal(EXAMPLE)
    first = offline_draft(facts_of(proposal))
    assert first == offline_draft(facts_of(proposal))
    draft = ProposalDraft.model_validate(json.loads(first))
    assert draft.subject == "Proposal: Website audit for Acme"
    assert draft.body.startswith("Hi Jane,\n")
    assert "proposal for the website audit for Acme" in draft.body
    assert "- 3 pages review\n- accessibility report\n" in draft.body
    assert "Price: 2400 EUR\nTimeline: 2 weeks" in draft.body
    assert draft.body.rstrip().endswith("Best regards,\nSam")
    assert missing_terms(draft.body, proposal) == []


def test_without_a_price_the_template_promises_one_later_and_states_no_amount() -> None:
    proposal = parse_proposal("info@acme.example logo: 3 concepts")
    draft = ProposalDraft.model_validate_json(offline_draft(facts_of(proposal, name="Info")))
    assert draft.body.startswith("Hello,\n")  # a shared mailbox gets no first name
    assert "I will confirm the price as soon as we have agreed the scope" in draft.body
    assert "Timeline: to be agreed together" in draft.body
    assert missing_terms(draft.body, proposal) == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("3 pages review. 2400 EUR, 2 weeks.", "scope item 'accessibility report'"),
        ("3 pages review, accessibility report: 2,400 EUR in 2 weeks", "the price '2400 EUR'"),
        ("3 pages review, accessibility report: 2400 EUR in 3 weeks", "the timeline '2 weeks'"),
        (
            "3 pages review, accessibility report: 2400 EUR plus 456 EUR VAT, 2 weeks",
            "an amount other than the price you gave",
        ),
    ],
)
def test_a_draft_that_drops_or_changes_a_term_is_caught(body: str, problem: str) -> None:
    assert problem in missing_terms(body, parse_proposal(EXAMPLE))


def test_a_price_in_a_draft_when_the_operator_gave_none_is_caught() -> None:
    proposal = parse_proposal("jane@acme.example audit: review")
    assert missing_terms("review for about $1,000", proposal) == ["a price although you gave none"]
    assert missing_terms("review: price to follow", proposal) == []


# Runs ----------------------------------------------------------------------------------


def test_an_offline_run_records_the_contact_and_proposes_the_proposal_email(
    store: Store, tmp_path: Path
) -> None:
    outcome = run_proposal(store, tmp_path, OfflineProvider())
    assert outcome.status == "awaiting_approval"
    [action] = queries.actions_for_job("j1")
    assert (action.connector, action.action) == ("email", "send_email")
    assert action.params["to"] == "jane@acme.example"
    assert action.params["subject"] == "Proposal: Website audit for Acme"
    body = action.params["body"]
    assert "- 3 pages review" in body and "Price: 2400 EUR" in body and "2 weeks" in body
    assert not [f for f in action.flags if f.startswith("⚠")]
    contact = queries.contact_by_email("jane@acme.example")
    assert contact is not None and action.contact_id == contact.contact_id
    assert (contact.name, contact.company) == ("Jane", "Acme")
    assert outcome.summary.startswith(
        "Drafted a proposal for Jane (Acme): 2 scope items, 2400 EUR, 2 weeks. (offline"
    )


def test_a_returning_contact_is_greeted_by_the_name_on_record(store: Store, tmp_path: Path) -> None:
    create_contact(store, contact_id="c1", email="jane@acme.example", name="Jane Doe")
    run_proposal(store, tmp_path, OfflineProvider())
    [action] = queries.actions_for_job("j1")
    assert action.contact_id == "c1"
    assert action.params["body"].startswith("Hi Jane,")
    assert queries.get_job("j1").summary.startswith("Drafted a proposal for Jane (Acme)")


def model_draft(body: str, subject: str = "Your website audit proposal") -> str:
    return json.dumps({"subject": subject, "body": body})


FAITHFUL = (
    "Hi Jane,\n\nAs discussed, here is what I propose:\n- 3 pages review\n- accessibility "
    "report\n\nPrice: 2400 EUR. Timeline: 2 weeks.\n\nBest regards,\nSam"
)


def test_a_faithful_model_draft_is_proposed_as_written(store: Store, tmp_path: Path) -> None:
    model = ScriptedProvider([model_draft(FAITHFUL)])
    outcome = run_proposal(store, tmp_path, model)
    [request] = model.requests
    assert request.task == DRAFT_TASK and request.task_class == "draft"
    assert request.messages[0].content == SYSTEM_PROMPT
    sent = json.loads(request.messages[1].content)["proposal"]
    assert sent["price"] == "2400 EUR" and sent["timeline"] == "2 weeks"
    assert sent["scope"] == "3 pages review\naccessibility report"
    [action] = queries.actions_for_job("j1")
    assert action.params == {
        "to": "jane@acme.example",
        "subject": "Your website audit proposal",
        "body": FAITHFUL,
        "cc": [],
        "reply_to": None,
    }
    assert "template draft used" not in outcome.summary and "offline" not in outcome.summary


def test_invalid_json_from_the_model_gets_one_repair(store: Store, tmp_path: Path) -> None:
    model = ScriptedProvider(["Sure! Here is the proposal: Hi Jane…", model_draft(FAITHFUL)])
    outcome = run_proposal(store, tmp_path, model)
    assert outcome.status == "awaiting_approval"
    first, repair = model.requests
    assert (first.task, repair.task) == (DRAFT_TASK, f"{DRAFT_TASK}.repair")
    assert repair.messages[-2].content.startswith("Sure! Here is the proposal")
    assert "does not match the required JSON schema" in repair.messages[-1].content
    [action] = queries.actions_for_job("j1")
    assert action.params["body"] == FAITHFUL


def test_a_model_draft_inventing_an_amount_is_replaced_by_the_template(
    store: Store, tmp_path: Path
) -> None:
    invented = FAITHFUL.replace("2400 EUR.", "2400 EUR, with a 50 EUR rush fee.")
    model = ScriptedProvider([model_draft(invented)])
    outcome = run_proposal(store, tmp_path, model)
    [action] = queries.actions_for_job("j1")
    assert "rush fee" not in action.params["body"]
    assert "Price: 2400 EUR\nTimeline: 2 weeks" in action.params["body"]
    assert action.params["subject"] == "Proposal: Website audit for Acme"
    assert "template draft used" in outcome.summary
    assert "an amount other than the price you gave" in outcome.summary
    assert model.remaining == 0 and len(model.requests) == 1


def test_scope_items_that_start_like_a_label_stay_scope_in_the_first_segment() -> None:
    proposal = parse_proposal(
        "a@b.example research: price comparison, deadline tracking; price 900 EUR; deadline: 1 May"
    )
    assert proposal.scope == ["price comparison", "deadline tracking"]
    assert (proposal.price, proposal.timeline) == ("900 EUR", "1 May")
