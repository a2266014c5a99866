"""Event log benchmarks: append (single and batched) and replay, beside raw baselines.

Each figure is measured next to a baseline run in the same process on the same database:
- single append: ``EventLog.append`` of one event to a new stream (validation, idempotency
  and version checks, insert, projection), against a bare Peewee insert of the same row into
  a table with the same columns and unique indexes, one transaction each.
- batched append: 100 ``ModelCalled`` events per call into one job's stream, against
  ``insert_many`` of the same rows in one transaction.
- replay: ``rebuild_projections(from_snapshot=False)`` over a realistic log (10 events per
  lead job), against reading the same rows with a plain SELECT and ``json.loads``.

Run ``python -m bench.bench_events [--scale 0.1] [--no-postgres]``. Prints medians and
p50/p99, the ratio to the baseline, the project's targets, and writes
``bench/results/bench_events.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import peewee

from bench.common import row, write_results
from store import Store, open_store
from store import events as ev
from store.db import database_proxy
from store.models import EventRecord

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn: Callable[[], None], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def raw_table(db: peewee.Database, name: str) -> type[peewee.Model]:
    """A table shaped like ``events`` (same columns, same unique indexes), with no checks."""

    class Raw(peewee.Model):
        position = peewee.BigAutoField()
        event_id = peewee.CharField(max_length=36, unique=True)
        stream_id = peewee.CharField(max_length=200)
        version = peewee.IntegerField()
        type = peewee.CharField(max_length=100, index=True)
        data = peewee.TextField()
        metadata = peewee.TextField()
        correlation_id = peewee.CharField(max_length=64, null=True, index=True)
        idempotency_key = peewee.CharField(max_length=255, null=True, unique=True)
        recorded_at = peewee.DateTimeField()

        class Meta:
            database = db
            table_name = name
            indexes = ((("stream_id", "version"), True),)

    db.create_tables([Raw])
    return Raw


def row_for(stream: str, version: int, data: ev.EventData, meta: ev.Metadata) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "stream_id": stream,
        "version": version,
        "type": data.type_name,
        "data": data.model_dump_json(),
        "metadata": meta.model_dump_json(),
        "correlation_id": meta.correlation_id,
        "idempotency_key": None,
        "recorded_at": datetime.now(UTC).replace(tzinfo=None),
    }


def requested(job: str) -> ev.JobRequested:
    return ev.JobRequested(
        job_id=job,
        agent="lead",
        input={},
        text="t",
        channel="console",
        chat_id="c",
        requested_by="b",
    )


def lead_history(job: str) -> list[tuple[str, ev.EventData]]:
    action, contact = f"a{job}", f"c{job}"
    return [
        (ev.job_stream(job), requested(job)),
        (ev.job_stream(job), ev.JobStarted(job_id=job, worker="w", attempt=1)),
        (
            ev.contact_stream(contact),
            ev.ContactCreated(contact_id=contact, name="N", email=f"{job}@x.example", company="X"),
        ),
        (
            ev.job_stream(job),
            ev.ModelCalled(
                job_id=job,
                task="t",
                provider="p",
                model="m",
                prompt_tokens=1,
                completion_tokens=1,
                latency_ms=1.0,
                offline=True,
            ),
        ),
        (
            ev.action_stream(action),
            ev.ActionProposed(
                action_id=action,
                job_id=job,
                connector="email",
                action="send_email",
                params={},
                idempotency_key=f"k{job}",
                summary="s",
            ),
        ),
        (
            ev.action_stream(action),
            ev.ApprovalRequested(
                action_id=action,
                job_id=job,
                token=f"t{job}",
                expires_at=datetime.now(UTC) + timedelta(days=3),
            ),
        ),
        (ev.job_stream(job), ev.JobCompleted(job_id=job, summary="s", proposals=1)),
        (
            ev.action_stream(action),
            ev.ApprovalDecided(
                action_id=action,
                token=f"t{job}",
                decision="approved",
                decided_by="o",
                channel="console",
            ),
        ),
        (ev.action_stream(action), ev.ActionStarted(action_id=action, attempt=1, worker="w")),
        (ev.action_stream(action), ev.ActionExecuted(action_id=action, summary="sent", details={})),
    ]


def bench_single(store: Store, n: int) -> dict[str, Any]:
    meta = ev.Metadata(actor="bench")
    raw = raw_table(store.db, f"raw_single_{uuid.uuid4().hex[:6]}")

    def ours() -> None:
        job = uuid.uuid4().hex
        store.log.append(ev.job_stream(job), [requested(job)], metadata=meta, expected_version=0)

    def baseline() -> None:
        job = uuid.uuid4().hex
        with store.db.atomic():
            raw.insert(row_for(ev.job_stream(job), 1, requested(job), meta)).execute()

    timed(ours, 20), timed(baseline, 20)  # warm up
    a, b = timed(ours, n), timed(baseline, n)
    return {
        "ours_per_s": 1 / statistics.median(a),
        "base_per_s": 1 / statistics.median(b),
        "ours_p50_ms": percentile(a, 0.5) * 1e3,
        "ours_p99_ms": percentile(a, 0.99) * 1e3,
        "base_p50_ms": percentile(b, 0.5) * 1e3,
        "base_p99_ms": percentile(b, 0.99) * 1e3,
    }


def bench_batch(store: Store, batches: int, size: int = 100) -> dict[str, Any]:
    meta = ev.Metadata(actor="bench")
    raw = raw_table(store.db, f"raw_batch_{uuid.uuid4().hex[:6]}")

    def calls(job: str) -> list[ev.EventData]:
        return [
            ev.ModelCalled(
                job_id=job,
                task="t",
                provider="p",
                model="m",
                prompt_tokens=i,
                completion_tokens=1,
                latency_ms=1.0,
                offline=True,
            )
            for i in range(size)
        ]

    def ours() -> None:
        job = uuid.uuid4().hex
        store.log.append(ev.job_stream(job), [requested(job)], metadata=meta)
        store.log.append(ev.job_stream(job), calls(job), metadata=meta)

    def baseline() -> None:
        job = uuid.uuid4().hex
        stream = ev.job_stream(job)
        with store.db.atomic():
            raw.insert(row_for(stream, 1, requested(job), meta)).execute()
            raw.insert_many(
                [row_for(stream, i + 2, d, meta) for i, d in enumerate(calls(job))]
            ).execute()

    a, b = timed(ours, batches), timed(baseline, batches)
    return {
        "ours_per_s": (size + 1) / statistics.median(a),
        "base_per_s": (size + 1) / statistics.median(b),
    }


def bench_replay(store: Store, jobs: int) -> dict[str, Any]:
    meta = ev.Metadata(actor="bench")
    rows = []
    versions: dict[str, int] = {}
    for j in range(jobs):
        job = f"{j:08x}"
        for stream, data in lead_history(job):
            versions[stream] = versions.get(stream, 0) + 1
            rows.append(
                row_for(
                    stream, versions[stream], data, meta.model_copy(update={"correlation_id": job})
                )
            )
    with store.db.atomic():
        for lo in range(0, len(rows), 500):
            EventRecord.insert_many(rows[lo : lo + 500]).execute()
    count = len(rows)
    start = time.perf_counter()
    replayed = store.log.rebuild_projections(from_snapshot=False)
    ours = time.perf_counter() - start
    assert replayed == count
    start = time.perf_counter()
    cursor = store.db.execute_sql(
        "SELECT position, type, data, metadata FROM events ORDER BY position"
    )
    for _position, _type, data, metadata in cursor:
        json.loads(data)
        json.loads(metadata)
    base = time.perf_counter() - start
    return {"events": count, "ours_per_s": count / ours, "base_per_s": count / base}


@contextmanager
def sqlite_store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            yield store
        finally:
            store.close()


@contextmanager
def postgres_store() -> Iterator[Store | None]:
    import psycopg2

    try:
        admin = psycopg2.connect(PG_ADMIN, connect_timeout=2)
    except psycopg2.OperationalError as exc:
        print(f"PostgreSQL rows skipped: {exc}".strip())
        yield None
        return
    admin.autocommit = True
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    store = open_store(f"{PG_ADMIN}?options=-csearch_path%3D{schema}")
    try:
        yield store
    finally:
        store.close()
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size by this")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    n_single = max(50, int(1000 * args.scale))
    n_batch = max(5, int(50 * args.scale))
    n_jobs = max(100, int(10_000 * args.scale))
    results: list[dict[str, Any]] = []

    def record(backend: str, figure: str, measured: dict[str, Any], baseline: str) -> None:
        results.append({"backend": backend, "figure": figure, "baseline": baseline, **measured})

    with sqlite_store() as store:
        record(
            "sqlite", "single append", bench_single(store, n_single), "bare insert, same indexes"
        )
        record("sqlite", "batched append (100/call)", bench_batch(store, n_batch), "insert_many")
    with sqlite_store() as store:
        record("sqlite", "replay", bench_replay(store, n_jobs), "SELECT + json.loads")
    if not args.no_postgres:
        with postgres_store() as pg:
            if pg is not None:
                record(
                    "postgres",
                    "single append",
                    bench_single(pg, n_single // 2),
                    "bare insert, same indexes",
                )
                record(
                    "postgres", "batched append (100/call)", bench_batch(pg, n_batch), "insert_many"
                )
        with postgres_store() as pg:
            if pg is not None:
                record("postgres", "replay", bench_replay(pg, n_jobs // 5), "SELECT + json.loads")
    database_proxy.initialize(None)

    print(
        f"{'backend':<9} {'figure':<27} {'ours ev/s':>10} {'base ev/s':>10} {'ratio':>6}  p50/p99 ms (ours | base)"
    )
    for r in results:
        ratio = r["base_per_s"] / r["ours_per_s"]
        lat = ""
        if "ours_p50_ms" in r:
            lat = f"{r['ours_p50_ms']:.2f}/{r['ours_p99_ms']:.2f} | {r['base_p50_ms']:.2f}/{r['base_p99_ms']:.2f}"
        print(
            f"{r['backend']:<9} {r['figure']:<27} {r['ours_per_s']:>10.0f} {r['base_per_s']:>10.0f} {ratio:>5.2f}x  {lat}"
        )
    by = {(r["backend"], r["figure"]): r for r in results}
    single = by[("sqlite", "single append")]
    targets = [
        (
            "batched append >= 10,000 events/s (SQLite)",
            by[("sqlite", "batched append (100/call)")]["ours_per_s"] >= 10_000,
        ),
        ("replay >= 50,000 events/s (SQLite)", by[("sqlite", "replay")]["ours_per_s"] >= 50_000),
        (
            "single append within 1.5x of the raw insert (SQLite)",
            single["base_per_s"] / single["ours_per_s"] <= 1.5,
        ),
    ]
    for name, met in targets:
        print(f"target: {name}: {'met' if met else 'NOT met'}")
    write_results(
        "bench_events",
        {"results": results, "targets": dict(targets), "rows": common_rows(results)},
    )
    return 0


def common_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results in the common row format of :mod:`bench.common`."""
    out = []
    for r in results:
        backend = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[r["backend"]]
        figure = f"{r['figure']}, {backend}"
        note = ""
        if r["figure"] == "replay":
            figure = f"replay of {r['events']:,} events, {backend}"
        if "ours_p50_ms" in r:
            note = (
                f"p50/p99 {r['ours_p50_ms']:.2f}/{r['ours_p99_ms']:.2f} ms "
                f"vs {r['base_p50_ms']:.2f}/{r['base_p99_ms']:.2f} ms"
            )
        out.append(
            row(
                f"event log: {figure}",
                r["ours_per_s"],
                "ev/s",
                baseline=r["base_per_s"],
                baseline_name=r["baseline"],
                better="higher",
                note=note,
            )
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
