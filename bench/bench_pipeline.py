"""End-to-end jobs/s through the whole pipeline on Redis with 2 worker processes, beside
raw Dramatiq no-op jobs on the same Redis with 2 worker processes.

Ours: the set-up of the separate-worker end-to-end test (``tests/test_e2e_console.py``):
PostgreSQL for the log (a fresh schema, dropped afterwards; a SQLite file if PostgreSQL is not
reachable) and Redis as the broker, with two ``opcore worker`` processes (default thread
count). This process takes ``/lead`` messages through the dispatcher (``JobRequested``
appended, Dramatiq message sent); the workers run the lead agent with the offline provider
(no model call: a template draft), which records the contact, the draft and the proposal and
leaves the job waiting for its approval. Timed from the first message to the last job
reaching ``awaiting_approval`` (or ``done``/``failed``) in the log.

Baseline: two ``bench.noop_worker`` processes (the same Dramatiq broker, middleware and
thread count) running an actor that only counts itself done; this process sends the messages,
timed until the count reaches them all.

Redis database 14 (``--redis``) is flushed before and after each half. Without Redis the
benchmark says so and writes a skipped result.

Run ``python -m bench.bench_pipeline [--jobs 1000] [--noop-jobs 5000]``; writes
``bench/results/bench_pipeline.json``.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import redis

from bench.common import row, write_results
from bench.noop_worker import DONE_KEY, declare_noop, make_broker
from bot.dispatch import Dispatcher
from bot.messages import InboundMessage
from config import Settings
from jobs.runtime import build_runtime
from jobs.service import JobService
from store.db import database_proxy
from store.models import JobRow

REDIS_URL = "redis://127.0.0.1:6379/14"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
WORKERS = 2
WARMUP = 20
FINISHED = ("awaiting_approval", "done", "failed", "cancelled", "blocked")
ROOT = Path(__file__).resolve().parent.parent


def wait_for(check: Callable[[], bool], what: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


class Workers:
    """Worker processes, each ready once it printed ``marker`` on stderr."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, marker: str) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.lines: queue.Queue[tuple[int, str]] = queue.Queue()
        self.output: list[str] = []
        for n in range(WORKERS):
            proc = subprocess.Popen(
                [sys.executable, *args],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(n, proc), daemon=True).start()
        ready: set[int] = set()
        deadline = time.monotonic() + 60
        while len(ready) < WORKERS:
            try:
                n, line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise TimeoutError(
                    "workers did not start:\n" + "".join(self.output[-20:])
                ) from None
            if marker in line:
                ready.add(n)
            elif not line:  # the process ended
                self.stop()
                raise RuntimeError("a worker exited at start:\n" + "".join(self.output[-20:]))

    def _read(self, n: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.output.append(line)
            self.lines.put((n, line))
        self.lines.put((n, ""))

    def stop(self) -> list[int | None]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            codes.append(proc.returncode)
        return codes


@contextmanager
def database(tmp: Path) -> Iterator[tuple[str, str]]:
    """A database URL for the run and its label: a fresh PostgreSQL schema, or SQLite."""
    import psycopg2

    try:
        admin = psycopg2.connect(PG_ADMIN, connect_timeout=2)
    except psycopg2.OperationalError as exc:
        print(f"PostgreSQL not reachable ({str(exc).strip()}): using a SQLite file")
        yield f"sqlite:///{tmp / 'opcore.db'}", "SQLite"
        return
    admin.autocommit = True
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_ADMIN}?options=-csearch_path%3D{schema}", "PostgreSQL"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


def opcore_env(data_dir: Path, database_url: str, broker_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPCORE_")}
    env.update(
        OPCORE_DATA_DIR=str(data_dir),
        OPCORE_DATABASE_URL=database_url,
        OPCORE_BROKER_URL=broker_url,
        OPCORE_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    return env


def finished() -> int:
    return int(JobRow.select().where(JobRow.status.in_(FINISHED)).count())


def run_ours(tmp: Path, client: redis.Redis, url: str, n: int) -> dict[str, Any]:
    with database(tmp) as (database_url, db_label):
        settings = Settings(
            data_dir=tmp / "data",
            database_url=database_url,
            broker_url=url,
            operators=("console:local",),
        )
        runtime = build_runtime(settings)  # migrates the schema before the workers start
        dispatcher = Dispatcher(
            settings=settings, service=JobService(runtime), log=runtime.store.log
        )
        env = opcore_env(tmp / "data", database_url, url)
        workers = Workers(["-m", "bot.cli", "worker"], env, tmp, "opcore worker:")
        try:

            def submit(first: int, count: int) -> None:
                for i in range(first, first + count):
                    text = f"/lead Jane Doe <jane{i}@acme{i}.example> wants a website audit"
                    dispatcher.handle_message(InboundMessage("console", "local", "local", text))

            submit(0, WARMUP)
            wait_for(lambda: finished() >= WARMUP, "the warm-up jobs", timeout=120)
            start = time.perf_counter()
            submit(WARMUP, n)
            submitted = time.perf_counter() - start
            wait_for(lambda: finished() >= WARMUP + n, f"{n} jobs", timeout=60 + n)
            elapsed = time.perf_counter() - start
            statuses = _status_counts()
        finally:
            codes = workers.stop()
            runtime.close()
            database_proxy.initialize(None)
    return {
        "jobs": n,
        "seconds": elapsed,
        "jobs_per_s": n / elapsed,
        "submit_seconds": submitted,
        "statuses": statuses,
        "database": db_label,
        "worker_threads": settings.worker_threads,
        "worker_exit_codes": codes,
    }


def _status_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in JobRow.select(JobRow.status):
        counts[job.status] = counts.get(job.status, 0) + 1
    return counts


def run_baseline(tmp: Path, client: redis.Redis, url: str, n: int, threads: int) -> dict[str, Any]:
    broker = make_broker(url)
    noop = declare_noop(broker)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPCORE_")}
    env["PYTHONPATH"] = str(ROOT)
    workers = Workers(
        ["-m", "bench.noop_worker", url, "--threads", str(threads)], env, tmp, "ready"
    )

    def done() -> int:
        return int(client.get(DONE_KEY) or 0)

    try:
        for i in range(WARMUP):
            noop.send(i)
        wait_for(lambda: done() >= WARMUP, "the warm-up jobs", timeout=60)
        start = time.perf_counter()
        for i in range(n):
            noop.send(i)
        submitted = time.perf_counter() - start
        wait_for(lambda: done() >= WARMUP + n, f"{n} no-op jobs", timeout=60 + n / 10)
        elapsed = time.perf_counter() - start
    finally:
        codes = workers.stop()
        broker.close()
    return {
        "jobs": n,
        "seconds": elapsed,
        "jobs_per_s": n / elapsed,
        "submit_seconds": submitted,
        "worker_threads": threads,
        "worker_exit_codes": codes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=1000, help="/lead jobs (timed)")
    parser.add_argument("--noop-jobs", type=int, help="baseline jobs (default 5 x --jobs)")
    parser.add_argument("--redis", default=REDIS_URL, help="a Redis database to flush and use")
    args = parser.parse_args(argv)
    noop_jobs = args.noop_jobs or 5 * args.jobs
    client = redis.Redis.from_url(args.redis, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis not reachable at {args.redis} ({exc}): pipeline benchmark skipped"
        print(reason)
        write_results("bench_pipeline", {"skipped": reason, "rows": []})
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        try:
            client.flushdb()
            ours = run_ours(Path(tmp), client, args.redis, args.jobs)
            client.flushdb()
            base = run_baseline(
                Path(tmp), client, args.redis, noop_jobs, threads=ours["worker_threads"]
            )
        finally:
            with suppress(redis.RedisError):
                client.flushdb()
            client.close()
    waiting = ours["statuses"].get("awaiting_approval", 0)
    print(
        f"end-to-end, Redis broker, {WORKERS} worker processes x {ours['worker_threads']} threads"
    )
    print(f"{'':<48} {'jobs':>6} {'seconds':>8} {'jobs/s':>8}")
    print(
        f"{'ours: /lead (offline model) -> awaiting approval':<48} {ours['jobs']:>6} "
        f"{ours['seconds']:>8.2f} {ours['jobs_per_s']:>8.1f}   ({ours['database']} log)"
    )
    print(
        f"{'baseline: Dramatiq no-op actor':<48} {base['jobs']:>6} {base['seconds']:>8.2f} "
        f"{base['jobs_per_s']:>8.1f}"
    )
    print(f"ratio: {base['jobs_per_s'] / ours['jobs_per_s']:.1f}x; job statuses {ours['statuses']}")
    report: dict[str, Any] = {
        "workers": WORKERS,
        "ours": ours,
        "baseline": base,
        "rows": [
            row(
                f"end-to-end /lead jobs, Redis + {WORKERS} worker processes ({ours['database']})",
                ours["jobs_per_s"],
                "jobs/s",
                baseline=base["jobs_per_s"],
                baseline_name=f"Dramatiq no-op actor, same Redis, {WORKERS} processes",
                better="higher",
                note=(
                    f"{ours['jobs']} jobs, offline model, to awaiting approval; "
                    f"{WORKERS} x {ours['worker_threads']} threads"
                ),
            )
        ],
    }
    write_results("bench_pipeline", report)
    failed = ours["jobs"] + WARMUP - waiting
    if failed or any(ours["worker_exit_codes"] + base["worker_exit_codes"]):
        print(
            f"{failed} job(s) did not reach their approval; worker exit codes {ours['worker_exit_codes']}"
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
