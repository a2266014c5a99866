"""Durable execution with real processes: kill -9 at every interesting point, flush Redis,
deliver twice; every job finishes and every email exists exactly once.

The kills come from the failure-injection hook (``OPCORE_FAULTS``), which ends the process
with ``os._exit(137)`` exactly where a ``kill -9`` would hurt most, once per data directory.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

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
KILLED = 137


def emails(data: Path) -> list[Path]:
    return sorted((data / "outbox").glob("*.eml")) if (data / "outbox").exists() else []


def assert_replay_converges(env: dict[str, str], cwd: Path) -> None:
    verify = opcore(["replay", "--verify"], env, cwd=cwd)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "match" in verify.stdout


@pytest.mark.parametrize("point", ["before_agent", "after_draft"])
def test_killing_opcore_run_before_the_proposal_resumes_the_job_on_restart(
    tmp_path: Path, point: str
) -> None:
    data = tmp_path / "data"
    env = opcore_env(data, faults=point)
    first = opcore(["console"], env, stdin=f"{LEAD}\n", cwd=tmp_path)
    assert first.returncode == KILLED, first.stderr
    job = job_id_in(first.stdout)
    second = opcore(["console"], env, stdin="1\n", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resumed 1 job(s)" in second.stderr
    assert "Sent to jane@acme.example." in second.stdout
    types = event_types(job, env, tmp_path)
    assert types.count("ModelCalled") == 1
    assert types.count("ActionExecuted") == 1
    assert len(emails(data)) == 1
    assert_replay_converges(env, tmp_path)


@pytest.mark.parametrize("point", ["after_action_started", "after_effect", "after_action_executed"])
def test_killing_opcore_run_around_the_send_sends_exactly_once(tmp_path: Path, point: str) -> None:
    data = tmp_path / "data"
    env = opcore_env(data, faults=point)
    first = opcore(["console"], env, stdin=f"{LEAD}\n1\n", cwd=tmp_path)
    assert first.returncode == KILLED, first.stderr
    job = job_id_in(first.stdout)
    second = opcore(["console"], env, stdin="", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    types = event_types(job, env, tmp_path)
    assert types.count("ActionExecuted") == 1, types
    assert "ActionOutcomeUnknown" not in types  # the outbox tells for sure
    assert len(emails(data)) == 1
    assert "Sent to jane@acme.example." in first.stdout + second.stdout
    assert_replay_converges(env, tmp_path)


# Redis broker, separate worker processes ----------------------------------------------

FAST = {
    "job_lease_seconds": "2",
    "queue_lease_seconds": "2",
    "reconcile_interval_seconds": "0.5",
    "retry_min_backoff_ms": "100",
}


@pytest.fixture
def redis_env(tmp_path: Path, postgres_url: str, redis_url: str) -> dict[str, str]:
    return opcore_env(tmp_path / "data", database_url=postgres_url, broker_url=redis_url, **FAST)


class Workers:
    """Worker processes; a killed one is replaced, as a process supervisor would."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd
        self.procs: list[subprocess.Popen[str]] = []
        self.killed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True)

    def start(self) -> Workers:
        self.procs.append(start_opcore(["worker"], self.env, cwd=self.cwd))
        self._thread.start()
        return self

    def _supervise(self) -> None:
        while not self._stop.wait(0.1):
            current = self.procs[-1]
            if current.poll() is not None:
                if current.returncode == KILLED:
                    self.killed += 1
                self.procs.append(start_opcore(["worker"], self.env, cwd=self.cwd))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def workers(redis_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    supervisor = Workers(redis_env, tmp_path)
    try:
        yield supervisor
    finally:
        supervisor.stop()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize(
    "point",
    [
        "before_agent",
        "after_draft",
        "after_action_started",
        "after_effect",
        "after_action_executed",
    ],
)
def test_killing_a_worker_at_any_point_loses_nothing_and_sends_once(
    redis_env: dict[str, str], workers: Workers, tmp_path: Path, point: str
) -> None:
    env = {**redis_env, "OPCORE_FAULTS": point}
    workers.env = env
    workers.start()
    result = opcore(["console"], env, stdin=f"{LEAD}\n1\n", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert workers.killed == 1
    job = job_id_in(result.stdout)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "ActionExecuted" not in event_types(job, env, tmp_path):
        time.sleep(0.3)
    types = event_types(job, env, tmp_path)
    assert types.count("ActionExecuted") == 1, types
    assert types.count("ModelCalled") == 1, types
    assert len(emails(tmp_path / "data")) == 1
    assert_replay_converges(env, tmp_path)


@pytest.mark.postgres
@pytest.mark.redis
def test_a_flushed_redis_loses_no_job(
    redis_env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    env = {**redis_env, "OPCORE_CONSOLE_DRAIN_SECONDS": "0.5"}
    queued = opcore(
        ["console"], env, stdin=f"{LEAD}\n{LEAD.replace('jane', 'joe')}\n", cwd=tmp_path
    )
    assert queued.returncode == 0, queued.stderr
    redis.Redis.from_url(redis_url).flushall()
    supervisor = Workers(env, tmp_path).start()
    try:
        time.sleep(2.1)  # the queue lease
        reconciled = opcore(["reconcile"], env, cwd=tmp_path)
        assert "re-sent 2 job(s)" in reconciled.stdout, reconciled.stdout + reconciled.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the drafts are ready before we press their buttons
            jobs = json_lines(opcore(["jobs", "--json"], env, cwd=tmp_path).stdout)
            if [j["status"] for j in jobs] == ["awaiting_approval"] * 2:
                break
            time.sleep(0.3)
        approve = opcore(
            ["console"],
            {**env, "OPCORE_CONSOLE_DRAIN_SECONDS": "30"},
            stdin="1\n4\n",
            cwd=tmp_path,
            timeout=90,
        )
        assert approve.stdout.count("Sent to j") == 2, approve.stdout
    finally:
        supervisor.stop()
    assert len(emails(tmp_path / "data")) == 2
    assert_replay_converges(env, tmp_path)
