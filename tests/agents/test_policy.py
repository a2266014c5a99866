"""Approval policy: a tap by default, none for a trusted contact, never for a refused kind."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.policy import UNVERIFIED, evaluate, unverified
from bot.dispatch import Dispatcher
from bot.messages import InboundMessage
from config import Settings
from config.settings import ApprovalRule
from jobs.runtime import Runtime, build_runtime
from jobs.service import JobService
from store import queries

LEAD = "/lead Jane Doe <jane@acme.example> wants a website audit"


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def serve(data_dir: Path, rules: dict[str, ApprovalRule]) -> Iterator[tuple[Runtime, Dispatcher]]:
    settings = Settings(data_dir=data_dir, approval_rules=rules)
    runtime = build_runtime(settings, with_worker=True)
    try:
        yield (
            runtime,
            Dispatcher(settings=settings, service=JobService(runtime), log=runtime.store.log),
        )
    finally:
        runtime.close()


def lead(dispatcher: Dispatcher) -> None:
    dispatcher.handle_message(InboundMessage("console", "local", "local", LEAD))


def test_by_default_every_email_waits_for_a_tap() -> None:
    decision = evaluate({}, "email", "send_email", {"to": "jane@acme.example"})
    assert decision.verdict == "ask" and decision.rule == "default"


def test_amount_rules_approve_below_the_threshold_only() -> None:
    rules = {"finance.invoice": ApprovalRule(below_amount=100)}
    assert evaluate(rules, "finance", "invoice", {"amount": 99}).verdict == "auto"
    assert evaluate(rules, "finance", "invoice", {"amount": 100}).verdict == "ask"
    assert evaluate(rules, "finance", "invoice", {"amount": "99"}).verdict == "ask"


def test_a_trusted_contact_is_sent_without_a_tap_and_the_rule_is_on_record(data_dir: Path) -> None:
    rules = {"email.send_email": ApprovalRule(trusted_contacts=("Jane@Acme.example",))}
    for runtime, dispatcher in serve(data_dir, rules):
        lead(dispatcher)
        [job] = wait_for(lambda: [j for j in queries.list_jobs() if j.status == "done"])
        assert len(list(runtime.settings.outbox_dir.glob("*.eml"))) == 1
        decided = [
            e.data
            for e in runtime.store.log.read_correlated(job.job_id)
            if e.type == "ApprovalDecided"
        ]
        assert decided[0].decided_by.startswith(
            "policy:email.send_email (jane@acme.example is a trusted contact)"
        )
        assert queries.pending_approvals() == []


def test_a_refused_kind_is_never_sent(data_dir: Path) -> None:
    for runtime, dispatcher in serve(data_dir, {"email.send_email": ApprovalRule(mode="never")}):
        lead(dispatcher)
        [job] = wait_for(lambda: [j for j in queries.list_jobs() if j.status == "done"])
        assert [a.status for a in queries.actions_for_job(job.job_id)] == ["rejected"]
        assert not list(runtime.settings.outbox_dir.glob("*.eml"))


def test_an_untrusted_recipient_still_waits(data_dir: Path) -> None:
    rules = {
        "email.send_email": ApprovalRule(trusted_contacts=("bob@acme.example",), expires_hours=1)
    }
    for _runtime, dispatcher in serve(data_dir, rules):
        lead(dispatcher)
        [approval] = wait_for(queries.pending_approvals)
        assert (approval.expires_at - approval.requested_at).total_seconds() == pytest.approx(
            3600, abs=5
        )


def test_no_rule_approves_for_a_requester_who_cannot_be_verified() -> None:
    rules = {"email.send_email": ApprovalRule(trusted_contacts=("bob@client.example",))}
    params = {"to": "bob@client.example", "subject": "Re", "body": "Hi"}
    by_rule = evaluate(rules, "email", "send_email", params)
    assert by_rule.verdict == "auto"
    assert unverified(by_rule, {"sender": "bob@client.example"}) is by_rule
    asked = unverified(by_rule, {UNVERIFIED: "it came by email"})
    assert (asked.verdict, asked.rule) == ("ask", "email.send_email")
    assert asked.reason == "rule email.send_email would approve this, but it came by email"
    refused = evaluate({"email.send_email": ApprovalRule(mode="never")}, "email", "send_email", {})
    assert unverified(refused, {UNVERIFIED: "email"}) is refused  # never stays never
