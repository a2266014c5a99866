"""Approval tap -> connector call started, beside a bare Dramatiq send -> actor start.

The runtime is built the way the tests build it (SQLite log, in-process Dramatiq broker with
its worker threads, offline model, outbox email). ``/lead`` jobs are run until each waits
for its approval; then, one tap at a time, ``JobService.decide(token, approve=True)`` is
timed until the email connector's ``execute`` starts (the connector is wrapped to stamp the
moment). That covers recording ``ApprovalDecided``, sending the Dramatiq message, a worker
thread picking it up, and ``ActionStarted`` appended at the stream's expected version before
the call. Each tap waits for the previous email to be written and recorded, so taps do not
overlap.

Baseline, interleaved with the taps: on the same broker, queue and worker threads, a bare
Dramatiq actor that only records when it starts, timed from ``send`` to that start.

Run ``python -m bench.bench_approval [--taps 200]``; writes ``bench/results/bench_approval.json``.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import dramatiq

from bench.common import percentile, row, write_results
from bot.dispatch import Dispatcher
from bot.messages import InboundMessage
from config import Settings
from connectors.base import ActionResult
from jobs.broker import QUEUE
from jobs.runtime import Runtime, build_runtime
from jobs.service import JobService
from store import queries

WARMUP = 10
TIMEOUT = 60.0


def wait_for(check: Callable[[], bool], what: str, *, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.0005)


def executed(action_id: str) -> bool:
    return queries.get_action(action_id).status == "executed"


def summary(samples: list[float]) -> dict[str, float]:
    ms = [s * 1e3 for s in samples]
    return {
        "p50_ms": statistics.median(ms),
        "p99_ms": percentile(ms, 0.99),
        "mean_ms": statistics.fmean(ms),
        "min_ms": min(ms),
    }


def pending_leads(runtime: Runtime, count: int) -> list[str]:
    """Run ``count`` /lead jobs to their approval; the approval tokens, oldest first."""
    settings = runtime.settings
    dispatcher = Dispatcher(settings=settings, service=JobService(runtime), log=runtime.store.log)
    for i in range(count):
        text = f"/lead Jane Doe <jane{i}@acme{i}.example> wants a website audit, budget 3k"
        dispatcher.handle_message(InboundMessage("console", "local", "local", text))
    wait_for(
        lambda: len(queries.pending_approvals(limit=count + 1)) >= count,
        f"{count} approvals",
        timeout=TIMEOUT + count * 0.5,
    )
    return [a.token for a in reversed(queries.pending_approvals(limit=count))]


def measure(runtime: Runtime, tokens: list[str]) -> tuple[list[float], list[float]]:
    service = JobService(runtime)
    connector = runtime.connectors["email"]
    original = connector.execute
    started: queue.Queue[float] = queue.Queue()

    def stamped(action: str, params: Mapping[str, Any], *, idempotency_key: str) -> ActionResult:
        started.put(time.perf_counter())
        return original(action, params, idempotency_key=idempotency_key)

    connector.execute = stamped  # type: ignore[method-assign]

    bare_started: queue.Queue[float] = queue.Queue()

    def record_start(n: int) -> None:
        bare_started.put(time.perf_counter())

    bare = dramatiq.actor(actor_name="bench.record_start", queue_name=QUEUE, broker=runtime.broker)(
        record_start
    )

    ours: list[float] = []
    base: list[float] = []
    for i, token in enumerate(tokens):
        start = time.perf_counter()
        result = service.decide(token, approve=True, decided_by="console:local", channel="console")
        at = started.get(timeout=TIMEOUT)
        ours.append(at - start)
        assert result.action is not None, result
        action_id = result.action.action_id
        wait_for(partial(executed, action_id), "the email")

        start = time.perf_counter()
        bare.send(i)
        base.append(bare_started.get(timeout=TIMEOUT) - start)
    return ours, base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--taps", type=int, default=200, help="approvals decided (timed)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            operators=("console:local",),
            reconcile_interval_seconds=3600,
        )
        runtime = build_runtime(settings, with_worker=True)
        try:
            start = time.perf_counter()
            tokens = pending_leads(runtime, args.taps + WARMUP)
            prepare_s = time.perf_counter() - start
            ours, base = measure(runtime, tokens)
            sent = len(list((settings.outbox_dir).glob("*.eml")))
        finally:
            runtime.close()
    ours, base = ours[WARMUP:], base[WARMUP:]
    report: dict[str, Any] = {
        "taps": len(ours),
        "worker_threads": settings.worker_threads,
        "emails_written": sent,
        "prepare_seconds": prepare_s,
        "ours": summary(ours),
        "baseline": summary(base),
    }
    o, b = report["ours"], report["baseline"]
    print(
        f"approval tap -> connector call started ({len(ours)} taps, {settings.worker_threads} "
        f"worker threads, in-process broker, SQLite)"
    )
    print(f"{'':<34} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    print(
        f"{'ours: decide -> execute starts':<34} {o['p50_ms']:>8.2f} {o['p99_ms']:>8.2f} {o['mean_ms']:>8.2f}"
    )
    print(
        f"{'bare Dramatiq send -> actor start':<34} {b['p50_ms']:>8.2f} {b['p99_ms']:>8.2f} {b['mean_ms']:>8.2f}"
    )
    print(f"ratio p50: {o['p50_ms'] / b['p50_ms']:.1f}x ({sent} emails written to the outbox)")
    report["rows"] = [
        row(
            "approval tap -> connector call started",
            o["p50_ms"],
            "ms",
            baseline=b["p50_ms"],
            baseline_name="bare Dramatiq send -> actor start, same broker",
            note=f"p99 {o['p99_ms']:.2f} vs {b['p99_ms']:.2f} ms; {len(ours)} taps, SQLite",
        )
    ]
    write_results("bench_approval", report)
    if sent != len(tokens):
        print(f"expected {len(tokens)} emails, found {sent}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
