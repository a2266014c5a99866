"""The walking skeleton, end to end: a lead travels from a console line to a sent email.

These tests run the real ``opcore`` command line as a subprocess with piped input, the way
``printf '/lead …\\n1\\n' | opcore console`` does, on the embedded defaults and on
PostgreSQL + Redis with a separate ``opcore worker`` process.
"""

from __future__ import annotations

import email.parser
import email.policy
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e_helpers import (
    LEAD,
    event_types,
    job_id_in,
    json_lines,
    opcore,
    opcore_env,
    start_opcore,
)

pytestmark = pytest.mark.e2e

HAPPY_PATH = [
    "JobRequested",
    "JobStarted",
    "ContactCreated",
    "StepCompleted",
    "ModelCalled",
    "StepCompleted",
    "ActionProposed",
    "ApprovalRequested",
    "JobCompleted",
    "ApprovalDecided",
    "ActionStarted",
    "ActionExecuted",
]


def assert_sent_once(outbox: Path) -> None:
    files = list(outbox.glob("*.eml"))
    assert len(files) == 1, files
    message = email.parser.BytesParser(policy=email.policy.default).parse(files[0].open("rb"))
    assert message["To"] == "jane@acme.example"
    assert message["Subject"] == "Website audit for Acme"
    assert "Hi Jane" in message.get_content()


def run_scenario(env: dict[str, str], cwd: Path, data_dir: Path) -> None:
    result = opcore(["console"], env, stdin=f"{LEAD}\n1\n1\n/status\n", cwd=cwd)
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "New lead: Jane Doe (Acme). Drafted a reply" in out
    assert "To: jane@acme.example  Subject: Website audit for Acme" in out
    assert "[1] Approve and send   [2] Edit   [3] Reject" in out
    assert "Sent to jane@acme.example." in out
    assert "Already decided: approved by console:local" in out
    job = job_id_in(out)
    assert event_types(job, env, cwd) == HAPPY_PATH
    trace = opcore(["trace", job], env, cwd=cwd)
    assert (
        trace.returncode == 0
        and "ActionExecuted" in trace.stdout
        and f"Trace of job {job}" in trace.stdout
    )
    assert_sent_once(data_dir / "outbox")


def test_a_lead_goes_from_the_console_to_an_outbox_email_on_the_embedded_defaults(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = opcore_env(data)
    run_scenario(env, tmp_path, data)
    jobs = json_lines(opcore(["jobs", "--json"], env, cwd=tmp_path).stdout)
    assert [j["status"] for j in jobs] == ["done"]
    assert opcore(["approvals"], env, cwd=tmp_path).stdout.strip() == "No approvals waiting."


def test_reject_sends_nothing_and_the_trace_shows_why(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = opcore_env(data)
    result = opcore(["console"], env, stdin=f"{LEAD}\n3\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Rejected: nothing sent" in result.stdout
    job = job_id_in(result.stdout)
    assert event_types(job, env, tmp_path)[-2:] == ["ApprovalDecided", "ActionRejected"]
    assert not list((data / "outbox").glob("*.eml"))


def test_an_approval_left_open_survives_a_restart_and_can_be_decided_later(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = opcore_env(data)
    first = opcore(["console"], env, stdin=f"{LEAD}\n", cwd=tmp_path)
    assert "[1] Approve and send" in first.stdout
    pending = json_lines(opcore(["approvals", "--json"], env, cwd=tmp_path).stdout)
    assert len(pending) == 1
    second = opcore(["console"], env, stdin="/approvals\n1\n", cwd=tmp_path)
    assert "1 waiting for you:" in second.stdout
    assert "Sent to jane@acme.example." in second.stdout
    assert_sent_once(data / "outbox")


def test_bad_input_gets_hints_and_queues_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = opcore_env(data)
    lines = ["/nope", "/lead", "/lead Jane without address", "hello there", "/trace zzzz", "7", ""]
    result = opcore(["console"], env, stdin="\n".join(lines) + "\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Unknown command /nope. Try /help." in out
    assert "Usage: /lead" in out
    assert "email address" in out
    assert "Try /help" in out
    assert "There is no choice [7]" in out
    assert json_lines(opcore(["jobs", "--json"], env, cwd=tmp_path).stdout) == []


def test_a_bad_setting_stops_opcore_with_the_variable_named(tmp_path: Path) -> None:
    env = opcore_env(tmp_path / "data", broker_url="amqp://nope")
    result = opcore(["jobs"], env, cwd=tmp_path)
    assert result.returncode == 2
    assert "OPCORE_BROKER_URL" in result.stderr


@pytest.fixture
def worker(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[dict[str, str]]:
    env = opcore_env(tmp_path / "data", database_url=postgres_url, broker_url=redis_url)
    proc = start_opcore(["worker"], env, cwd=tmp_path)
    try:
        yield env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


@pytest.mark.postgres
@pytest.mark.redis
def test_the_same_scenario_runs_on_postgres_and_redis_with_a_separate_worker(
    worker: dict[str, str], tmp_path: Path
) -> None:
    run_scenario(worker, tmp_path, tmp_path / "data")
