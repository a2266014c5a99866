"""The golden provider: record a provider's answers to a file, replay them, explain a miss."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from agents.errors import ProviderRequestError
from agents.providers.base import ChatMessage, ModelRequest, ModelResponse, Usage
from agents.providers.golden import GoldenProvider, Recording, RecordingError, request_digest
from agents.providers.scripted import ScriptedProvider

SCHEMA = {"type": "object", "properties": {"subject": {"type": "string"}}}


def ask(user: str = '{"lead": {"name": "Jane"}}', task: str = "lead.draft_reply") -> ModelRequest:
    return ModelRequest(
        task=task,
        messages=(ChatMessage("system", "You draft replies."), ChatMessage("user", user)),
        facts={"name": "Jane"},
        json_schema=SCHEMA,
        schema_name="lead_reply",
    )


ANSWER = ModelResponse(
    text='{"subject": "Hello Jane"}',
    model="gpt-4o-mini-2024-07-18",
    provider="openai",
    usage=Usage(prompt_tokens=120, completion_tokens=30),
    latency_s=1.5,
)


def recorded(tmp_path: Path, *answers: ModelResponse, requests: list[ModelRequest]) -> Path:
    inner = ScriptedProvider(list(answers) or [ANSWER], model="gpt-4o-mini")
    recorder = GoldenProvider.record(inner, flow="lead-demo", recorded_with={"endpoint": "x"})
    for request in requests:
        recorder.complete(request)
    path = tmp_path / "lead-demo.json"
    recorder.save(path, expected={"subject": "Hello Jane"})
    return path


def test_recording_passes_answers_through_and_writes_a_readable_file(tmp_path: Path) -> None:
    inner = ScriptedProvider([ANSWER], model="gpt-4o-mini")
    recorder = GoldenProvider.record(inner, flow="lead-demo", recorded_with={"endpoint": "x"})
    assert (recorder.mode, recorder.model) == ("record", "gpt-4o-mini")
    assert recorder.complete(ask()) is ANSWER
    path = tmp_path / "sub" / "lead-demo.json"
    recorder.save(path, expected={"subject": "Hello Jane"})

    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    header = data["header"]
    assert header["flow"] == "lead-demo"
    assert header["recorded_with"] == {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "endpoint": "x",
    }
    assert header["recorded_at"].endswith("+00:00")
    [exchange] = data["exchanges"]
    assert exchange["task"] == "lead.draft_reply"
    assert exchange["digest"] == request_digest(ask())
    assert exchange["request"]["messages"][1] == {
        "role": "user",
        "content": '{"lead": {"name": "Jane"}}',
    }
    assert exchange["answer"] == {
        "text": '{"subject": "Hello Jane"}',
        "model": "gpt-4o-mini-2024-07-18",
        "provider": "openai",
        "offline": False,
        "usage": {"prompt_tokens": 120, "completion_tokens": 30},
    }
    assert data["expected"] == {"subject": "Hello Jane"}
    assert not list(path.parent.glob(".*"))  # no partial file left behind


def test_a_recording_replays_the_same_answer(tmp_path: Path) -> None:
    player = GoldenProvider.replay(recorded(tmp_path, requests=[ask()]))
    assert (player.mode, player.model) == ("replay", "gpt-4o-mini")
    assert len(player.unused()) == 1

    answer = player.complete(ask())

    assert answer.text == ANSWER.text
    assert (answer.model, answer.provider, answer.usage) == (
        "gpt-4o-mini-2024-07-18",
        "golden",
        Usage(120, 30),
    )
    assert player.unused() == [] and player.misses == []
    assert player.recording.expected == {"subject": "Hello Jane"}


def test_facts_and_the_routed_model_do_not_change_the_match(tmp_path: Path) -> None:
    player = GoldenProvider.replay(recorded(tmp_path, requests=[ask()]))
    answer = player.complete(replace(ask(), facts={"name": "Other"}, model="gpt-4o"))
    assert answer.text == ANSWER.text


def test_identical_requests_are_answered_in_recorded_order(tmp_path: Path) -> None:
    second = replace(ANSWER, text='{"subject": "Second"}')
    player = GoldenProvider.replay(recorded(tmp_path, ANSWER, second, requests=[ask(), ask()]))
    assert [player.complete(ask()).text for _ in range(2)] == [ANSWER.text, second.text]
    with pytest.raises(ProviderRequestError, match="makes more model calls than when it was"):
        player.complete(ask())


def test_a_changed_prompt_is_a_request_error_with_a_diff_and_the_way_to_re_record(
    tmp_path: Path,
) -> None:
    player = GoldenProvider.replay(recorded(tmp_path, requests=[ask()]))
    with pytest.raises(ProviderRequestError) as miss:
        player.complete(ask('{"lead": {"name": "Janet"}}'))
    message = str(miss.value)
    assert "the prompt of task 'lead.draft_reply' changed" in message
    assert "python -m tests.golden record --flow lead-demo" in message
    assert "OPCORE_LLM_BASE_URL" in message and "--offline" in message
    assert '-    "name": "Jane"' in message and '+    "name": "Janet"' in message
    assert player.misses == [message]
    assert len(player.unused()) == 1  # the recorded exchange is still there to be asked for


def test_a_changed_schema_or_temperature_is_a_miss_too(tmp_path: Path) -> None:
    player = GoldenProvider.replay(recorded(tmp_path, requests=[ask()]))
    with pytest.raises(ProviderRequestError, match="changed"):
        player.complete(replace(ask(), temperature=0.7))
    with pytest.raises(ProviderRequestError, match="changed"):
        player.complete(replace(ask(), json_schema={"type": "object"}))


def test_a_task_the_recording_never_saw_names_the_recorded_tasks(tmp_path: Path) -> None:
    player = GoldenProvider.replay(recorded(tmp_path, requests=[ask()]))
    with pytest.raises(
        ProviderRequestError, match=r"no request for task 'triage\.classify'.*lead\.draft_reply"
    ):
        player.complete(ask(task="triage.classify"))


def test_a_request_edited_by_hand_in_the_file_is_refused(tmp_path: Path) -> None:
    path = recorded(tmp_path, requests=[ask()])
    data = json.loads(path.read_text(encoding="utf-8"))
    data["exchanges"][0]["request"]["messages"][0]["content"] = "You draft shorter replies."
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RecordingError, match="edited by hand"):
        GoldenProvider.replay(path)


def test_a_missing_or_malformed_recording_says_so(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"no golden recording at .*record it first"):
        GoldenProvider.replay(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"header": {"format": 1}}', encoding="utf-8")
    with pytest.raises(RecordingError, match="not in the expected shape"):
        Recording.load(bad)
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(RecordingError, match="cannot read"):
        Recording.load(bad)


def test_only_a_recording_provider_saves(tmp_path: Path) -> None:
    player = GoldenProvider.replay(recorded(tmp_path, requests=[ask()]))
    with pytest.raises(RecordingError, match="only a recording GoldenProvider can save"):
        player.save(tmp_path / "other.json", expected={})


def test_a_failing_provider_records_nothing(tmp_path: Path) -> None:
    inner = ScriptedProvider([ProviderRequestError("HTTP 400")], model="m")
    recorder = GoldenProvider.record(inner, flow="f")
    with pytest.raises(ProviderRequestError, match="HTTP 400"):
        recorder.complete(ask())
    assert recorder.recording.exchanges == []
