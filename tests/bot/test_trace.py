"""/trace and `opcore trace`: the decision story of a job, from its events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot import trace_story
from bot.cli import main
from bot.dispatch import Dispatcher
from bot.messages import InboundMessage
from bot.render import describe
from config import Settings
from jobs.runtime import Runtime, build_runtime
from jobs.service import JobService
from store import queries
from tests.jobs.test_flows import wait_for

LEAD = "/lead Jane Doe <jane@acme.example> wants a website audit"


def say(dispatcher: Dispatcher, text: str) -> str:
    replies = dispatcher.handle_message(InboundMessage("console", "local", "local", text))
    return "\n".join(r.text for r in replies)


def test_the_story_says_what_was_asked_decided_by_whom_and_sent(
    dispatcher: Dispatcher, runtime: Runtime
) -> None:
    say(dispatcher, LEAD)
    [approval] = wait_for(queries.pending_approvals)
    waiting = say(dispatcher, f"/trace {approval.job_id[:6]}")
    assert "Asked: /lead Jane Doe" in waiting and "waiting for you" in waiting
    assert "Model: 2 call(s)" in waiting or "Model: 1 call(s)" in waiting
    JobService(runtime).decide(
        approval.token, approve=True, decided_by="console:local", channel="console"
    )
    wait_for(lambda: queries.get_action(approval.action_id).status == "executed")
    story = say(dispatcher, f"/trace {approval.job_id[:6]}")
    assert "\u2705 Send email to jane@acme.example" in story
    assert "approved by console:local (tap in console)" in story
    assert "email.send_email: Written to" in story and " ms" in story
    assert f"Full tree: opcore trace {approval.job_id[:6]}" in story
    # An action's id finds its job, with that action first.
    by_action = say(dispatcher, f"/trace {approval.action_id[:8]}")
    assert by_action.splitlines()[0] == story.splitlines()[0]
    assert len(story.splitlines()) <= 16  # a phone screen, not a dump


def test_a_policy_decision_names_its_rule(data_dir: Path) -> None:
    settings = Settings(
        data_dir=data_dir,
        operators=("console:local",),
        approval_rules={"email.send_email": {"mode": "auto"}},  # type: ignore[dict-item]
    )
    runtime = build_runtime(settings, with_worker=True)
    try:
        dispatcher = Dispatcher(
            settings=settings, service=JobService(runtime), log=runtime.store.log
        )
        say(dispatcher, "/lead Bob <bob@beta.example> wants a quote")
        [job] = wait_for(queries.list_jobs)
        wait_for(lambda: queries.get_job(job.job_id).status == "done")
        trace = trace_story.build(job, runtime.store.log.read_correlated(job.job_id))
        story = trace_story.story(trace)
        assert "by rule" in story or "waiting for you" in story  # first message: asks
    finally:
        runtime.close()


def test_opcore_trace_prints_the_tree_and_json(
    dispatcher: Dispatcher,
    runtime: Runtime,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    say(dispatcher, LEAD)
    [approval] = wait_for(queries.pending_approvals)
    job = queries.get_job(approval.job_id)
    trace = trace_story.build(job, runtime.store.log.read_correlated(job.job_id))
    tree = trace_story.tree(trace, describe)
    assert tree.startswith(f"Trace of job {job.short_id}")
    assert "\u2514\u2500 action" in tree and "ApprovalRequested" in tree
    data = trace_story.as_json(trace)
    assert data["actions"][0]["what"] == "email.send_email"
    assert data["actions"][0]["status"] == "pending"
    assert json.dumps(data)  # serialisable as is
    monkeypatch.setenv("OPCORE_DATA_DIR", str(settings.data_dir))
    assert main(["trace", "nothex!"]) == 1
    assert "no job or action" in capsys.readouterr().err
