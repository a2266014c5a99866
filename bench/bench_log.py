"""Benchmarks of the event log, each beside a baseline measured in the same process.

- append: one ``EventLog.append`` (validation, idempotency check, version check, insert,
  projection) against a bare Peewee insert of the same row into a table with no checks.
- message -> job queued: ``Dispatcher.handle_message`` for a ``/lead`` (parse, allowlist,
  JobRequested appended, Dramatiq message sent) against a bare Dramatiq ``send`` of an id.

Run with ``make bench``. Prints medians (µs per operation) and the ratio to the baseline.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dramatiq
import peewee
from dramatiq.brokers.stub import StubBroker

from bench.common import row, write_results
from bot.dispatch import Dispatcher
from bot.messages import InboundMessage
from config import Settings
from jobs.runtime import build_runtime
from jobs.service import JobService
from store import events as ev
from store import open_store

ROUNDS = 7
PER_ROUND = 200


def median_us(fn: Callable[[], None]) -> float:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(PER_ROUND):
            fn()
        samples.append((time.perf_counter() - start) / PER_ROUND * 1e6)
    return statistics.median(samples)


def bench_append(tmp: Path) -> tuple[float, float]:
    store = open_store(f"sqlite:///{tmp / 'append.db'}")
    meta = ev.Metadata(actor="bench")

    def ours() -> None:
        job = uuid.uuid4().hex
        store.log.append(
            ev.job_stream(job),
            [
                ev.JobRequested(
                    job_id=job,
                    agent="lead",
                    input={},
                    text="t",
                    channel="c",
                    chat_id="c",
                    requested_by="b",
                )
            ],
            metadata=meta,
            expected_version=0,
        )

    raw_db = peewee.SqliteDatabase(
        str(tmp / "raw.db"), pragmas={"journal_mode": "wal", "synchronous": "normal"}
    )

    class Raw(peewee.Model):
        stream_id = peewee.CharField()
        data = peewee.TextField()
        at = peewee.DateTimeField()

        class Meta:
            database = raw_db

    raw_db.create_tables([Raw])

    def baseline() -> None:
        with raw_db.atomic():
            Raw.create(
                stream_id=uuid.uuid4().hex, data=json.dumps({"t": "x"}), at=datetime.now(UTC)
            )

    return median_us(ours), median_us(baseline)


def bench_message_to_queue(tmp: Path) -> tuple[float, float]:
    settings = Settings(data_dir=tmp / "data")
    runtime = build_runtime(settings, with_worker=False)  # measure the enqueue, not the work
    dispatcher = Dispatcher(settings=settings, service=JobService(runtime), log=runtime.store.log)
    text = "/lead Jane Doe <jane@acme.example> wants a website audit, budget 3k"

    def ours() -> None:
        dispatcher.handle_message(InboundMessage("console", "local", "local", text))

    broker = StubBroker()
    noop = dramatiq.actor(actor_name="noop", broker=broker)(lambda job_id: None)

    def baseline() -> None:
        noop.send(uuid.uuid4().hex)

    result = median_us(ours), median_us(baseline)
    runtime.close()
    return result


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        ours, base = bench_append(path)
        rows.append(("event append (SQLite)", ours, "bare Peewee insert", base))
        ours, base = bench_message_to_queue(path)
        rows.append(("/lead message -> job queued", ours, "bare Dramatiq send", base))
    print(f"{'figure':<30} {'ours µs':>10} {'baseline':<22} {'base µs':>10} {'ratio':>7}")
    results = []
    for name, ours, base_name, base in rows:
        print(f"{name:<30} {ours:>10.1f} {base_name:<22} {base:>10.1f} {ours / base:>7.2f}")
        results.append(
            {"figure": name, "ours_us": ours, "baseline": base_name, "baseline_us": base}
        )
    common = [
        row(
            f"{name}, mean of {PER_ROUND} calls",
            ours,
            "µs",
            baseline=base,
            baseline_name=base_name,
            note=f"median of {ROUNDS} rounds",
        )
        for name, ours, base_name, base in rows
    ]
    write_results("bench_log", {"results": results, "rows": common})
    return 0


if __name__ == "__main__":
    sys.exit(main())
