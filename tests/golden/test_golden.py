"""Golden runs: each business-critical flow, replayed from its recording through the real runner.

A failure here means a flow now behaves differently from when it was recorded: a changed prompt
(the message says how), a different proposal (diffed), a model call more or fewer. If the change
is intended, re-record: ``python -m tests.golden record --flow NAME`` (see tests/golden/__init__).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agents.providers.golden import GoldenProvider
from agents.providers.offline import OfflineProvider
from store import Store
from tests.fakes.openai_server import FakeOpenAI
from tests.golden import RECORDINGS, GoldenFlow, compare, proposal_diff, run_flow
from tests.golden import __main__ as golden_cli
from tests.golden.flows import FLOWS


@pytest.mark.parametrize("flow", FLOWS, ids=[f.name for f in FLOWS])
def test_the_flow_replays_as_recorded(flow: GoldenFlow, store: Store, tmp_path: Path) -> None:
    model = GoldenProvider.replay(flow.recording)
    recording = model.recording
    assert recording.flow == flow.name
    assert recording.exchanges, "a golden flow without a model call tests nothing of the model"

    run = run_flow(flow, model, store, tmp_path)

    assert not run.misses, "\n\n".join(run.misses)
    assert run.status == recording.expected["status"] == flow.expect.status, run.error
    assert run.proposals == recording.expected["proposals"], proposal_diff(
        recording.expected["proposals"], run.proposals
    )
    for proposal in run.proposals:
        assert (proposal["connector"], proposal["action"]) == (
            flow.expect.connector,
            flow.expect.action,
        )
        assert proposal["params"]["to"] == flow.expect.recipient
    assert model.unused() == [], "recorded model exchanges the flow no longer asks for"
    assert [(c.task, c.model, c.provider) for c in run.model_calls] == [
        (x.task, x.model, "golden") for x in recording.exchanges
    ]
    assert compare(flow, recording, run, model) == ""


def test_every_recording_belongs_to_a_flow() -> None:
    names = {f.name for f in FLOWS}
    assert len(names) == len(FLOWS), "two golden flows share a name"
    stray = [p.name for p in RECORDINGS.glob("*.json") if p.stem not in names]
    assert stray == [], "recordings of no flow in tests/golden/flows.py: delete or re-add them"


def test_the_recordings_say_how_they_were_made() -> None:
    for flow in FLOWS:
        recording = GoldenProvider.replay(flow.recording).recording
        header = recording.recorded_with
        assert header["provider"] and header["model"], flow.name
        assert recording.recorded_at, flow.name
        if any(x.offline for x in recording.exchanges):  # offline answers say so in the header
            assert "--offline" in header.get("note", ""), flow.name


def test_a_changed_proposal_is_reported_with_a_diff(store: Store, tmp_path: Path) -> None:
    """The comparison the tests and ``check`` rely on does catch a difference."""
    flow = FLOWS[0]
    model = GoldenProvider.replay(flow.recording)
    run = run_flow(flow, model, store, tmp_path)
    model.recording.expected["proposals"][0]["params"]["subject"] = "Something else"
    changed = compare(flow, model.recording, run, model)
    assert "the proposals differ from the recording" in changed
    assert '-  subject: "Something else"' in changed


def test_a_changed_prompt_fails_the_flow_and_says_how_to_re_record(
    store: Store, tmp_path: Path
) -> None:
    flow = FLOWS[0]
    changed = replace(flow, command=flow.command.replace("website audit", "website redesign"))
    model = GoldenProvider.replay(flow.recording)
    run = run_flow(changed, model, store, tmp_path)
    assert run.status == "failed" and run.proposals == []
    [miss] = run.misses
    assert f"python -m tests.golden record --flow {flow.name}" in miss
    assert "redesign" in miss  # the prompt diff shows what changed
    assert "the model was asked something not recorded" in compare(
        changed, model.recording, run, model
    )


LEAD_REPLY = (
    '{"subject": "Your website audit", "body": "Hi Jane,\\n\\nHappy to look at the site. '
    'What prompted the audit?\\n\\nBest,\\nSam"}'
)


def test_recording_against_a_model_server_writes_a_recording_that_checks(
    openai_server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPCORE_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("OPCORE_LLM_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPCORE_LLM_API_KEY", "sk-secret")
    monkeypatch.setenv("OPCORE_LLM_MODEL", "gpt-4o-mini")
    openai_server.reply(LEAD_REPLY, prompt_tokens=210, completion_tokens=40)
    flow = replace(FLOWS[0], directory=tmp_path)
    found = golden_cli.real_model()
    assert not isinstance(found, str), found
    inner, header = found

    assert golden_cli.record_flow(flow, inner, header) == ""

    recording = GoldenProvider.replay(flow.recording).recording
    assert recording.recorded_with == {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "endpoint": openai_server.base_url.rstrip("/"),
    }
    assert "sk-secret" not in flow.recording.read_text(encoding="utf-8")
    [exchange] = recording.exchanges
    assert (exchange.model, exchange.usage.prompt_tokens) == ("gpt-4o-mini", 210)
    [proposal] = recording.expected["proposals"]
    assert proposal["params"]["subject"] == "Your website audit"
    assert proposal["params"]["body"].startswith("Hi Jane,\n\nHappy to look at the site.")
    assert golden_cli.check_flow(flow) == ""
    assert [p.name for p in tmp_path.glob("*.json")] == [flow.recording.name]


def test_recording_refuses_without_a_model_unless_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPCORE_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("OPCORE_LLM_BASE_URL", "")
    assert golden_cli.main(["record", "--flow", FLOWS[0].name]) == 2
    assert "OPCORE_LLM_BASE_URL is empty" in capsys.readouterr().err
    assert golden_cli.main(["record", "--flow", "no-such-flow"]) == 2
    assert "known flows: lead-new-with-budget" in capsys.readouterr().err


def test_a_recording_that_breaks_the_flow_s_invariants_is_not_saved(tmp_path: Path) -> None:
    flow = replace(
        FLOWS[0],
        directory=tmp_path,
        expect=replace(FLOWS[0].expect, recipient="someone@else.example"),
    )
    problem = golden_cli.record_flow(flow, OfflineProvider(), {"note": "test"})
    assert problem.startswith("not saved: proposal 1 goes to 'jane@acme.example'")
    assert list(tmp_path.glob("*.json")) == []
