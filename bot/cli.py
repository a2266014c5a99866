"""The ``opcore`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from agents import pairing
from bot import cli_contacts, cli_init, cli_memory, render, trace_story
from bot.errors import BotError
from bot.serve import CHANNELS, configured_channels, serve
from config import ConfigError, Settings, load_settings
from config.logs import configure as configure_logs
from jobs.errors import JobsError, WorkerSetupError
from jobs.runtime import Runtime, build_runtime
from jobs.service import JobService
from store import open_store, queries
from store.db import redact
from store.errors import NotFoundError, StoreError
from store.replay import verify

logger = logging.getLogger("opcore")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        configure_logs(settings.log_level, settings.log_format)
        result: int = args.func(settings, args)
        return result
    except (ConfigError, StoreError, JobsError, BotError) as exc:
        print(f"opcore: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opcore", description="The operational core of a one-person company."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "run",
        help="start opcore: every configured channel (or the console), workers when in-process",
    ).set_defaults(func=cmd_run)
    sub.add_parser(
        "console", help="chat with opcore on this terminal (works with piped input)"
    ).set_defaults(func=cmd_console)
    bot = sub.add_parser("bot", help="serve one channel alone: telegram, slack or console")
    bot.add_argument("channel", choices=CHANNELS)
    bot.set_defaults(func=cmd_bot)
    pair = sub.add_parser(
        "pair", help="print a one-time code that makes whoever sends it an operator"
    )
    pair.add_argument("channel", choices=("telegram", "slack"))
    pair.set_defaults(func=cmd_pair)
    sub.add_parser("worker", help="run job workers (for a redis:// broker)").set_defaults(
        func=cmd_worker
    )
    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(
        func=cmd_migrate
    )
    sub.add_parser(
        "reconcile", help="re-send jobs and actions the log says are pending but nothing is moving"
    ).set_defaults(func=cmd_reconcile)
    replay = sub.add_parser("replay", help="rebuild the read models from the event log")
    replay.add_argument(
        "--verify",
        action="store_true",
        help="rebuild in a scratch database and compare; exit 1 on any difference",
    )
    replay.add_argument(
        "--from-scratch",
        action="store_true",
        help="ignore snapshots: apply every event from the first",
    )
    replay.add_argument("--snapshot", action="store_true", help="then snapshot the read models")
    replay.set_defaults(func=cmd_replay)

    events = sub.add_parser("events", help="print the event log")
    events.add_argument("--job", help="only the events of this job (id or short id)")
    events.add_argument("--limit", type=int, default=200)
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.set_defaults(func=cmd_events)

    jobs = sub.add_parser("jobs", help="print the jobs")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(func=cmd_jobs)

    approvals = sub.add_parser("approvals", help="print the approvals waiting")
    approvals.add_argument("--json", action="store_true")
    approvals.set_defaults(func=cmd_approvals)

    trace = sub.add_parser("trace", help="print what happened in a job (or an action's job)")
    trace.add_argument("job", help="a job or action id, or a unique prefix")
    trace.add_argument("--json", action="store_true")
    trace.set_defaults(func=cmd_trace)
    cli_memory.add_commands(sub)
    cli_contacts.add_commands(sub)
    cli_init.add_commands(sub)
    return parser


# Long-running commands ---------------------------------------------------------------


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    return serve(settings, configured_channels(settings))


def cmd_console(settings: Settings, args: argparse.Namespace) -> int:
    return serve(settings, ["console"])


def cmd_bot(settings: Settings, args: argparse.Namespace) -> int:
    return serve(settings, [args.channel])


def cmd_pair(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings.resolved_database_url)
    try:
        code, expires = pairing.issue(store.log, args.channel, by="cli")
    finally:
        store.close()
    print(f"Send this to your opcore bot on {args.channel} within 10 minutes (it works once):\n")
    print(f"    /pair {code}\n")
    print(f"The account that sends it becomes an operator (code expires {expires:%H:%M} UTC).")
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    if settings.in_process_broker:
        raise WorkerSetupError(
            "the broker is memory://, which lives inside `opcore run`; set OPCORE_BROKER_URL=redis://… "
            "to run separate workers"
        )
    runtime: Runtime = build_runtime(settings, with_worker=True)
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(
        f"opcore worker: {settings.worker_threads} threads on {redact(settings.broker_url)}",
        file=sys.stderr,
        flush=True,
    )
    try:
        stop.wait()
    finally:
        runtime.close()
    return 0


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    if settings.in_process_broker:
        raise WorkerSetupError(
            "the broker is memory://, whose queue lives inside `opcore run`, which reconciles at start "
            "and every OPCORE_RECONCILE_INTERVAL_SECONDS; `opcore reconcile` is for a redis:// broker"
        )
    runtime = build_runtime(settings)
    try:
        report = JobService(runtime).reconciler().run_once()
    finally:
        runtime.close()
    print(f"re-sent {len(report.jobs)} job(s) and {len(report.actions)} action(s)")
    for job_id in report.jobs:
        print(f"  job {job_id[:6]}")
    for action_id in report.actions:
        print(f"  action {action_id[:6]}")
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings.resolved_database_url)
    try:
        if args.verify:
            report = verify(store.log)
            for difference in report.differences:
                print(difference)
            verdict = "match" if report.ok else f"differ in {len(report.differences)} row(s)"
            print(
                f"replayed {report.events} events: the read models ({report.rows} rows) {verdict}"
            )
            return 0 if report.ok else 1
        count = store.log.rebuild_projections()
        print(f"rebuilt the read models from {count} events")
        return 0
    finally:
        store.close()


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from store.db import open_database
    from store.migrate import migrate

    applied = migrate(open_database(settings.resolved_database_url))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


# Read-only commands ------------------------------------------------------------------


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _dump(obj: object) -> str:
    return json.dumps(obj, default=_json_default, ensure_ascii=False, sort_keys=True)


def cmd_events(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings.resolved_database_url)
    try:
        if args.job:
            events = store.log.read_correlated(queries.find_job(args.job).job_id)
        else:
            events = store.log.read_all(limit=args.limit)
        for e in events:
            if args.json:
                print(
                    _dump(
                        {
                            "position": e.position,
                            "event_id": e.event_id,
                            "stream_id": e.stream_id,
                            "version": e.version,
                            "type": e.type,
                            "data": e.data.model_dump(mode="json"),
                            "metadata": e.metadata.model_dump(mode="json"),
                            "idempotency_key": e.idempotency_key,
                            "recorded_at": e.recorded_at,
                        }
                    )
                )
            else:
                print(
                    f"{e.position:>6} {e.recorded_at:%Y-%m-%d %H:%M:%S} {e.stream_id[:14]:<14} v{e.version:<3} "
                    f"{e.type:<18} {e.metadata.actor}"
                )
    except NotFoundError as exc:
        print(f"opcore: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def cmd_jobs(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings.resolved_database_url)
    try:
        for job in queries.list_jobs(limit=args.limit):
            print(_dump(asdict(job)) if args.json else render.job_line(job))
    finally:
        store.close()
    return 0


def cmd_approvals(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings.resolved_database_url)
    try:
        pending = queries.pending_approvals(limit=1000)
        if not pending and not args.json:
            print("No approvals waiting.")
        for approval in pending:
            action = queries.get_action(approval.action_id)
            if args.json:
                print(_dump({"approval": asdict(approval), "action": asdict(action)}))
            else:
                print(render.approval_line(approval, action))
    finally:
        store.close()
    return 0


def cmd_trace(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings.resolved_database_url)
    try:
        job, _ = trace_story.resolve(args.job)
        trace = trace_story.build(job, store.log.read_correlated(job.job_id))
        if args.json:
            print(_dump(trace_story.as_json(trace)))
        else:
            print(trace_story.tree(trace, render.describe))
    except NotFoundError as exc:
        print(f"opcore: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
