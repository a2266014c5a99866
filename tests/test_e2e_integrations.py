"""End to end with the real outside-world protocols: an OpenAI-compatible model server and
an SMTP server, both local, driven through the console exactly as a user would."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e_helpers import LEAD, event_types, job_id_in, opcore, opcore_env
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.smtp_server import Recorder

pytestmark = pytest.mark.e2e

DRAFT = {
    "subject": "Your website audit",
    "body": "Hi Jane,\n\nHappy to help with the audit.\n\nSam",
}


def test_with_a_model_endpoint_the_draft_comes_from_the_model_and_smtp_delivers_it(
    tmp_path: Path, openai_server: FakeOpenAI, smtp_server: Callable[..., int]
) -> None:
    openai_server.reply(json.dumps(DRAFT))
    handler = Recorder()
    port = smtp_server(handler)
    env = opcore_env(
        tmp_path / "data",
        llm_base_url=openai_server.base_url,
        llm_api_key="sk-local",
        llm_model="test-model",
        smtp_url=f"smtp://127.0.0.1:{port}",
        email_from="Sam <sam@rivera.example>",
    )
    result = opcore(["console"], env, stdin=f"{LEAD}\n1\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Subject: Your website audit" in out
    assert "offline template" not in out
    assert "Sent to jane@acme.example." in out

    [request] = openai_server.requests
    assert request.body["model"] == "test-model"
    assert request.headers["Authorization"] == "Bearer sk-local"
    user = json.loads(request.body["messages"][1]["content"])
    assert user["lead"]["email"] == "jane@acme.example"

    [envelope] = handler.envelopes
    assert envelope.rcpt_tos == ["jane@acme.example"]
    assert b"Subject: Your website audit" in envelope.original_content
    assert not (tmp_path / "data" / "outbox").exists() or not list(
        (tmp_path / "data" / "outbox").iterdir()
    )

    job = job_id_in(out)
    trace = opcore(["trace", job], env, cwd=tmp_path).stdout
    assert "openai/test-model" in trace and "12+34 tokens" in trace


def test_a_model_failure_tells_the_operator_and_sends_nothing(
    tmp_path: Path, openai_server: FakeOpenAI
) -> None:
    openai_server.status(500)
    openai_server.status(502)
    env = opcore_env(
        tmp_path / "data",
        llm_base_url=openai_server.base_url,
        max_retries="1",
        retry_min_backoff_ms="50",
    )
    result = opcore(["console"], env, stdin=f"{LEAD}\n/status\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(lead) failed: ProviderUnavailableError: HTTP 502" in result.stdout
    assert "after 2 attempts" in result.stdout
    assert "[1] Retry   [2] Discard" in result.stdout
    job = job_id_in(result.stdout)
    types = event_types(job, env, tmp_path)
    assert types.count("JobAttemptFailed") == 1
    assert types[-2:] == ["JobFailed", "QuestionAsked"]
    assert len(openai_server.requests) == 2


def test_an_invalid_draft_gets_one_repair_attempt(
    tmp_path: Path, openai_server: FakeOpenAI
) -> None:
    openai_server.reply("Sure! Here is a draft: Hi Jane…")
    openai_server.reply(json.dumps(DRAFT))
    env = opcore_env(tmp_path / "data", llm_base_url=openai_server.base_url)
    result = opcore(["console"], env, stdin=f"{LEAD}\n", cwd=tmp_path)
    assert "Subject: Your website audit" in result.stdout
    _first, repair = openai_server.requests
    assert repair.body["messages"][-2] == {
        "role": "assistant",
        "content": "Sure! Here is a draft: Hi Jane…",
    }
    assert "does not match the required JSON schema" in repair.body["messages"][-1]["content"]
    assert event_types(job_id_in(result.stdout), env, tmp_path).count("ModelCalled") == 2


def test_a_draft_still_invalid_after_the_repair_fails_the_job_clearly(
    tmp_path: Path, openai_server: FakeOpenAI
) -> None:
    openai_server.reply("Sure! Here is a draft: Hi Jane…")
    openai_server.reply('{"subject": ""}')
    env = opcore_env(tmp_path / "data", llm_base_url=openai_server.base_url)
    result = opcore(["console"], env, stdin=f"{LEAD}\n", cwd=tmp_path)
    assert "still not valid JSON for LeadDraft after one repair attempt" in result.stdout
    assert "[1] Retry   [2] Discard" in result.stdout


def test_an_smtp_rejection_is_reported_with_the_trace(
    tmp_path: Path, smtp_server: Callable[..., int]
) -> None:
    port = smtp_server(Recorder(reply="550 5.7.1 Relaying denied"))
    env = opcore_env(tmp_path / "data", smtp_url=f"smtp://127.0.0.1:{port}")
    result = opcore(["console"], env, stdin=f"{LEAD}\n1\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Failed: Send email to jane@acme.example" in result.stdout
    assert "PermanentConnectorError" in result.stdout
    job = job_id_in(result.stdout)
    assert event_types(job, env, tmp_path)[-2:] == ["ActionFailed", "QuestionAsked"]


def test_the_same_prompt_twice_is_answered_from_the_cache_and_costs_nothing(
    tmp_path: Path, openai_server: FakeOpenAI
) -> None:
    openai_server.reply(json.dumps(DRAFT))
    env = opcore_env(
        tmp_path / "data", llm_base_url=openai_server.base_url, llm_model="gpt-4o-mini"
    )
    first = opcore(["console"], env, stdin=f"{LEAD}\n", cwd=tmp_path)
    second = opcore(["console"], env, stdin=f"{LEAD}\n", cwd=tmp_path)
    assert (
        "Subject: Your website audit" in first.stdout
        and "Subject: Your website audit" in second.stdout
    )
    assert len(openai_server.requests) == 1
    jobs = [job_id_in(first.stdout), job_id_in(second.stdout)]
    traces = [opcore(["trace", j], env, cwd=tmp_path).stdout for j in jobs]
    assert sum("cache hit: nothing spent" in t for t in traces) == 1
