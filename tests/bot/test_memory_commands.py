"""The memory commands through the dispatcher, as the operator types them."""

from __future__ import annotations

import re

from bot.dispatch import REFUSAL, Dispatcher
from bot.memory_commands import parse_recall, parse_remember
from bot.messages import InboundMessage
from jobs.runtime import Runtime
from tests.builders import create_contact


def say(dispatcher: Dispatcher, text: str, *, sender: str = "local") -> str:
    replies = dispatcher.handle_message(InboundMessage("console", sender, "chat", text))
    return "\n".join(r.text for r in replies)


def _id(prefix: str, text: str) -> str:
    found = re.search(rf"\b({prefix}[0-9a-f]{{11}})\b", text)
    assert found, text
    return found.group(1)


def test_parse_remember_tells_rules_facts_and_notes_apart() -> None:
    assert parse_remember("rule: never email on Sundays").kind == "rule"
    fact = parse_remember("jane@acme.example rate: 120 EUR/h")
    assert (fact.kind, fact.who, fact.key, fact.text) == (
        "fact",
        "jane@acme.example",
        "rate",
        "120 EUR/h",
    )
    assert parse_remember("Acme prefers calls in the morning").kind == "note"


def test_parse_recall_takes_filters_out_of_the_query() -> None:
    assert parse_recall("audit report contact:jane@acme.example kind:proposal") == (
        "audit report",
        "jane@acme.example",
        frozenset({"proposal"}),
    )


def test_remember_then_recall_shows_the_note_with_its_source(dispatcher: Dispatcher) -> None:
    stored = say(dispatcher, "/remember Acme wants the audit report before the board meeting")
    memory_id = _id("m", stored)
    answer = say(dispatcher, "/recall audit report for Acme")
    assert "Acme wants the audit report" in answer and memory_id in answer
    assert "/remember" in answer and "keyword-only" in answer
    assert "Already remembered" in say(
        dispatcher, "/remember Acme wants the audit report before the board meeting"
    )


def test_a_fact_about_a_contact_and_its_correction_keep_the_history(
    dispatcher: Dispatcher, runtime: Runtime
) -> None:
    create_contact(runtime.store, email="jane@acme.example", name="Jane")
    first = say(dispatcher, "/remember jane@acme.example rate: 100 EUR/h")
    assert "Noted: jane@acme.example rate = 100 EUR/h" in first
    second = say(dispatcher, "/remember jane@acme.example rate: 120 EUR/h")
    assert "replaces '100 EUR/h'" in second
    facts = say(dispatcher, "/facts jane@acme.example")
    assert "rate: 120 EUR/h" in facts and "100 EUR/h" not in facts
    assert "email: jane@acme.example" in facts and "contact created" in facts
    history = say(dispatcher, "/facts jane@acme.example all")
    assert "100 EUR/h [superseded]" in history
    why = say(dispatcher, "/why jane@acme.example rate")
    assert "rate = 120 EUR/h (current)" in why and "replaced '100 EUR/h'" in why
    assert "FactAsserted" in why


def test_a_rule_is_a_workspace_fact(dispatcher: Dispatcher) -> None:
    assert "Rule noted" in say(dispatcher, "/remember rule: never email on Sundays")
    assert "Already a rule" in say(dispatcher, "/remember rule: Never email on Sundays")
    assert "rule: never email on Sundays" in say(dispatcher, "/facts workspace")


def test_forget_and_unforget_a_note(dispatcher: Dispatcher) -> None:
    memory_id = _id("m", say(dispatcher, "/remember Globex pays invoices late"))
    forgotten = say(dispatcher, f"/forget {memory_id}")
    assert "no longer comes up" in forgotten and "/unforget" in forgotten
    assert "Nothing remembered matches" in say(dispatcher, "/recall Globex invoices")
    assert "Restored" in say(dispatcher, f"/unforget {memory_id}")
    assert memory_id in say(dispatcher, "/recall Globex invoices")


def test_bad_memory_commands_get_a_clear_answer(dispatcher: Dispatcher) -> None:
    assert "no contact with the address" in say(dispatcher, "/facts nobody@nowhere.example")
    assert "not a memory id" in say(dispatcher, "/forget hello")
    assert "nothing remembered under" in say(dispatcher, "/why mffffffffff").lower()
    assert "Unknown kind" in say(dispatcher, "/recall audit kind:gossip")
    assert say(dispatcher, "/recall").startswith("Usage: /recall")


def test_a_stranger_cannot_read_or_write_memory(dispatcher: Dispatcher) -> None:
    assert say(dispatcher, "/recall anything", sender="mallory") == REFUSAL
    assert say(dispatcher, "/remember evil plan", sender="eve") == REFUSAL
    assert "Nothing remembered" in say(dispatcher, "/recall evil plan")


def test_status_says_recall_is_keyword_only_without_embeddings(dispatcher: Dispatcher) -> None:
    status = say(dispatcher, "/status")
    assert "Memory (sqlite, keyword-only)" in status and "OPCORE_EMBEDDINGS" in status


def test_a_proposal_recalls_past_work_and_the_sent_proposal_becomes_memory(
    dispatcher: Dispatcher, runtime: Runtime
) -> None:
    from store import events as ev
    from store import queries
    from tests.bot.test_dispatch import msg, press, wait_for

    runtime.memory.remember(
        "Case study: website audit for Initech, crawl and speed report cut load time by half",
        kind="case_study",
        source="/remember",
        by="op",
    )
    dispatcher.handle_message(
        msg("/proposal jane@acme.example website audit: crawl and speed report; price 2400 EUR")
    )
    wait_for(lambda: len(queries.pending_approvals()) == 1)
    [approval] = queries.pending_approvals()
    recalled = [
        e.data
        for e in runtime.store.log.read_correlated(approval.job_id)
        if isinstance(e.data, ev.MemoryRecalled)
    ]
    assert len(recalled) == 1 and "Initech" in recalled[0].hits[0]["preview"]
    trace = say(dispatcher, f"/trace {approval.job_id}")
    assert "Recalled 1 memory" in trace and "Initech" in trace
    dispatcher.handle_button(press(f"ap:{approval.token}:y"))
    wait_for(lambda: len(list(runtime.settings.outbox_dir.glob("*.eml"))) == 1)
    wait_for(lambda: queries.get_action(approval.action_id).status == "executed")
    answer = say(dispatcher, "/recall proposal website audit contact:jane@acme.example")
    assert "sent by the proposal agent" in answer and "proposal ·" in answer


def test_history_tells_what_happened_with_a_contact(dispatcher: Dispatcher) -> None:
    from store import queries
    from tests.bot.test_dispatch import LEAD, msg, press, wait_for

    dispatcher.handle_message(msg(LEAD))
    wait_for(lambda: len(queries.pending_approvals()) == 1)
    [approval] = queries.pending_approvals()
    dispatcher.handle_button(press(f"ap:{approval.token}:y"))
    wait_for(lambda: queries.get_action(approval.action_id).status == "executed")
    say(dispatcher, "/remember jane@acme.example rate: 90 EUR/h")
    history = say(dispatcher, "/history jane@acme.example")
    assert history.startswith("With jane@acme.example, last 30 days")
    for step in ("JobRequested", "ContactCreated", "ActionProposed", "ApprovalDecided"):
        assert step in history
    assert "ActionExecuted" in history and "FactAsserted" in history
    assert say(dispatcher, "/history Jane Doe 7").startswith("With jane@acme.example, last 7 days")
    assert "no contact named 'Jane'" in say(dispatcher, "/history Jane")
    assert "no contact" in say(dispatcher, "/history nobody@nowhere.example")


def test_a_returning_lead_recalls_what_was_sent_to_them_before(
    dispatcher: Dispatcher, runtime: Runtime
) -> None:
    from store import events as ev
    from store import queries
    from tests.bot.test_dispatch import LEAD, msg, press, wait_for

    dispatcher.handle_message(msg(LEAD))
    wait_for(lambda: len(queries.pending_approvals()) == 1)
    [first] = queries.pending_approvals()
    first_events = runtime.store.log.read_correlated(first.job_id)
    assert not any(isinstance(e.data, ev.MemoryRecalled) for e in first_events)  # new contact
    dispatcher.handle_button(press(f"ap:{first.token}:y"))
    wait_for(lambda: queries.get_action(first.action_id).status == "executed")
    dispatcher.handle_message(msg("/lead Jane Doe <jane@acme.example> now wants a website audit"))
    wait_for(lambda: len(queries.pending_approvals()) == 1)
    [second] = queries.pending_approvals()
    [recalled] = [
        e.data
        for e in runtime.store.log.read_correlated(second.job_id)
        if isinstance(e.data, ev.MemoryRecalled)
    ]
    sent = queries.get_action(first.action_id).params["subject"]
    assert recalled.hits and recalled.hits[0]["preview"].startswith(sent)
