"""Record or check the golden runs.

    python -m tests.golden record [--flow NAME] [--offline]
    python -m tests.golden check [--flow NAME]
    python -m tests.golden list

``record`` runs every flow (or one) against the model configured by OPCORE_LLM_BASE_URL,
OPCORE_LLM_API_KEY and OPCORE_LLM_MODEL (and OPCORE_MODEL_ROUTES, as in production), checks the
flow's invariants, replays the new recording once to prove it is deterministic, and only then
overwrites ``tests/golden/recordings/<flow>.json``. ``--offline`` records the deterministic
offline templates instead (no network). ``check`` replays the recordings like
``tests/golden/test_golden.py`` and prints what changed. Exit status: 0 when all is well, 1 when
a flow failed, 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agents.errors import AgentError
from agents.providers.base import ModelProvider
from agents.providers.golden import GoldenProvider, RecordingError
from agents.providers.offline import OfflineProvider
from agents.providers.openai import OpenAIChatProvider
from agents.providers.router import ModelRouter
from config import ConfigError, load_settings
from store import Store, open_store
from tests import netguard
from tests.golden import RECORDINGS, GoldenFlow, compare, expected_of, run_flow, violations
from tests.golden.flows import FLOWS, flow_named

OFFLINE_NOTE = (
    "recorded with --offline: these answers are opcore's deterministic offline templates "
    "(OfflineProvider), not a real model's; re-record against a real model with "
    "`python -m tests.golden record` and OPCORE_LLM_BASE_URL set"
)


@contextmanager
def scratch_store() -> Iterator[tuple[Store, Path]]:
    """A fresh SQLite store and outbox directory, deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="opcore-golden-") as tmp:
        workdir = Path(tmp)
        store = open_store(f"sqlite:///{workdir / 'opcore.db'}")
        try:
            yield store, workdir
        finally:
            store.close()


def check_flow(flow: GoldenFlow) -> str:
    """Replay one flow; what changed, or empty."""
    try:
        model = GoldenProvider.replay(flow.recording)
    except RecordingError as exc:
        return str(exc)
    with scratch_store() as (store, workdir):
        run = run_flow(flow, model, store, workdir)
    return compare(flow, model.recording, run, model)


def record_flow(flow: GoldenFlow, inner: ModelProvider, recorded_with: dict[str, Any]) -> str:
    """Record one flow against ``inner``; the problem that kept it from being saved, or empty."""
    model = GoldenProvider.record(inner, flow=flow.name, recorded_with=recorded_with)
    try:
        with scratch_store() as (store, workdir):
            run = run_flow(flow, model, store, workdir)
    except AgentError as exc:  # the flow's command no longer parses
        return f"cannot run the flow: {exc}"
    problems = violations(flow, run)
    if problems:
        return "not saved: " + "; ".join(problems)
    # Replay before overwriting the recording: a prompt that is not the same twice cannot be
    # replayed (a timestamp or an id in it), and must not replace a working recording.
    partial = flow.recording.with_name(f".{flow.recording.stem}.new.json")
    try:
        model.save(partial, expected=expected_of(run))
        replayed = GoldenProvider.replay(partial)
        with scratch_store() as (store, workdir):
            again = run_flow(flow, replayed, store, workdir)
        changed = compare(flow, replayed.recording, again, replayed)
        if changed:
            return f"not saved: the new recording does not replay (non-deterministic prompt?):\n{changed}"
        partial.replace(flow.recording)
    finally:
        partial.unlink(missing_ok=True)
    return ""


def real_model() -> tuple[ModelProvider, dict[str, Any]] | str:
    """The configured model provider and its header fields, or why there is none."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        return str(exc)
    if not settings.llm_base_url:
        return (
            "OPCORE_LLM_BASE_URL is empty: set it (with OPCORE_LLM_API_KEY and "
            "OPCORE_LLM_MODEL) to record against a real model, or pass --offline to record "
            "the deterministic offline templates"
        )
    provider = OpenAIChatProvider(
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key.get_secret_value(),
        model=settings.llm_model,
        timeout=settings.llm_timeout,
    )
    header: dict[str, Any] = {"endpoint": _without_credentials(settings.llm_base_url)}
    if settings.model_routes:
        header["routes"] = settings.model_routes
    return ModelRouter(provider, settings.model_routes), header


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.golden", description="Record or check the golden runs."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    record = commands.add_parser("record", help="re-record the flows against a model")
    record.add_argument("--flow", help="only this flow")
    record.add_argument(
        "--offline",
        action="store_true",
        help="record the deterministic offline templates instead of a real model (no network)",
    )
    check = commands.add_parser("check", help="replay the recordings and print what changed")
    check.add_argument("--flow", help="only this flow")
    commands.add_parser("list", help="list the flows")
    args = parser.parse_args(argv)

    if args.command == "list":
        for flow in FLOWS:
            print(f"{flow.name}: {flow.agent().name} — {flow.description}")
        return 0
    try:
        flows = [flow_named(args.flow)] if args.flow else list(FLOWS)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2

    failed = 0
    if args.command == "check":
        netguard.install()  # a replay never needs the network
        for flow in flows:
            changed = check_flow(flow)
            print(f"{'CHANGED' if changed else 'ok'}  {flow.name}")
            if changed:
                failed += 1
                print("    " + changed.replace("\n", "\n    "))
        stray = sorted(
            p.name for p in RECORDINGS.glob("*.json") if p.stem not in {f.name for f in FLOWS}
        )
        if stray and not args.flow:
            print(f"note: recordings of no flow (delete them): {', '.join(stray)}")
        print(f"{len(flows) - failed} of {len(flows)} golden flows replay as recorded")
        return 1 if failed else 0

    if args.offline:
        netguard.install()  # the offline templates need no network: prove it
        inner: ModelProvider = OfflineProvider()
        header: dict[str, Any] = {"note": OFFLINE_NOTE}
    else:
        found = real_model()
        if isinstance(found, str):
            print(f"cannot record: {found}", file=sys.stderr)
            return 2
        inner, header = found
    try:
        for flow in flows:
            problem = record_flow(flow, inner, header)
            if problem:
                failed += 1
                print(f"FAILED    {flow.name}: {problem}")
            else:
                print(f"recorded  {flow.name} -> {flow.recording} ({inner.name} / {inner.model})")
    finally:
        inner.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
