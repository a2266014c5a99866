"""Run every benchmark and print one table: figure, opcore, baseline, ratio.

Each ``bench/bench_*.py`` module runs in a fresh Python process, writes its detailed JSON
and a ``rows`` list in the common format of :mod:`bench.common`; this collects the rows, prints
them as one table, and writes ``summary.json`` and ``summary.md`` (a Markdown table for the
README) beside the modules' own results.

    python -m bench.run                  # full size, results in bench/results/ (~5-10 min)
    python -m bench.run --quick          # bounded sizes (~1-2 min), results in bench/results/quick/
    python -m bench.run --only approval --only startup   # some benchmarks (summary merged)

The ratio is the cost of opcore relative to the baseline measured in the same run: for a
latency or a size ours ÷ baseline, for a rate or a score baseline ÷ ours. Above 1 opcore
costs more than the baseline, below 1 it does better.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_RESULTS, RESULTS_ENV, fmt, fmt_ratio

ROOT = Path(__file__).resolve().parent.parent
QUICK_RESULTS = DEFAULT_RESULTS / "quick"
MISSING_EXTRA = 2  # a module's exit code when an optional dependency is not installed
BUSY = 1.0  # a 1-minute load average above this at start: other work will skew the figures


@dataclass(frozen=True)
class Bench:
    name: str  # the module, bench/<name>.py, writing <results>/<name>.json
    measures: str
    quick: tuple[str, ...] = ()  # arguments for --quick
    # Arguments to run again with when the module exits MISSING_EXTRA (e.g. no embedding model).
    fallback: tuple[str, ...] = ()
    fallback_note: str = ""  # what the fallback leaves out
    timeout: float = 1200.0


BENCHES = (
    Bench("bench_log", "event append, /lead message -> job queued (in process)"),
    Bench("bench_events", "event append and replay, SQLite and PostgreSQL", ("--scale", "0.1")),
    Bench("bench_channels", "chat update -> job queued, Telegram and Slack", ("--updates", "100")),
    Bench("bench_approval", "approval tap -> connector call started", ("--taps", "50")),
    Bench(
        "bench_pipeline",
        "end-to-end jobs/s on Redis with 2 worker processes",
        ("--jobs", "100", "--noop-jobs", "1000"),
    ),
    Bench(
        "bench_memory",
        "recall quality and latency",
        ("--scale", "0.1", "--queries", "100"),
        fallback=("--latency-only",),
        fallback_note="quality not measured: the local-embeddings extra is not installed",
    ),
    Bench("bench_startup", "`opcore run` start to ready, resident memory", ("--runs", "2")),
)


def find(names: list[str]) -> list[Bench]:
    """The benchmarks named (``approval`` or ``bench_approval``), in the run's order."""
    by_name = {b.name: b for b in BENCHES}
    wanted = set()
    for given in names:
        for name in given.split(","):
            key = name.strip().removesuffix(".py")
            key = key if key.startswith("bench_") else f"bench_{key}"
            if key not in by_name:
                raise SystemExit(
                    f"unknown benchmark {name!r}; known: "
                    + ", ".join(b.name.removeprefix("bench_") for b in BENCHES)
                )
            wanted.add(key)
    return [b for b in BENCHES if b.name in wanted]


def run_one(
    bench: Bench, *, quick: bool, out: Path, verbose: bool, logs: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run one module in a fresh process; its status and its rows."""
    args = list(bench.quick) if quick else []
    result_file = out / f"{bench.name}.json"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, RESULTS_ENV: str(out), "PYTHONPATH": path}
    status: dict[str, Any] = {"name": bench.name, "args": args}
    notes: list[str] = []
    timeout = bench.timeout / 4 if quick else bench.timeout
    wall = time.time()
    start = time.perf_counter()
    returncode = run_module(
        bench, args, env=env, verbose=verbose, log=logs / bench.name, timeout=timeout
    )
    if returncode == MISSING_EXTRA and bench.fallback:
        notes.append(bench.fallback_note or last_line(logs / bench.name))
        args = [*args, *bench.fallback]
        status["args"] = args
        returncode = run_module(
            bench, args, env=env, verbose=verbose, log=logs / bench.name, timeout=timeout
        )
    status["seconds"] = time.perf_counter() - start
    status["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    status["returncode"] = returncode
    fresh = result_file.exists() and result_file.stat().st_mtime >= wall - 1
    if not fresh:
        status["status"] = f"failed (exit {returncode}, no results)"
        if not verbose:
            print(tail(logs / bench.name), file=sys.stderr)
        return status, []
    report = json.loads(result_file.read_text())
    if isinstance(report, dict) and report.get("skipped"):
        status["status"] = f"skipped: {report['skipped']}"
        return status, []
    rows = report.get("rows", []) if isinstance(report, dict) else []
    status["status"] = "ok" if returncode == 0 else f"exit {returncode}"
    if returncode != 0 and not verbose:
        print(tail(logs / bench.name), file=sys.stderr)
    if notes:
        status["status"] += f", {'; '.join(notes)}"
    return status, [{"bench": bench.name, **r} for r in rows]


def run_module(
    bench: Bench, args: list[str], *, env: dict[str, str], verbose: bool, log: Path, timeout: float
) -> int:
    command = [sys.executable, "-m", f"bench.{bench.name}", *args]
    with log.open("w") as sink:
        try:
            done = subprocess.run(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=None if verbose else sink,
                stderr=None if verbose else subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            print(f"{bench.name}: timed out after {timeout:.0f} s", file=sys.stderr)
            return -1
    return done.returncode


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def tail(log: Path, n: int = 25) -> str:
    lines = log.read_text(errors="replace").splitlines()[-n:]
    return "\n".join(f"    {line}" for line in lines)


# Output ----------------------------------------------------------------------------------


def cells(r: dict[str, Any]) -> tuple[str, str, str, str]:
    return (
        r["figure"],
        fmt(r["ours"], r["unit"]),
        fmt(r["baseline"], r["unit"]),
        fmt_ratio(r["ratio"]),
    )


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table, the baseline's name and the note on a second line."""
    head = ("figure", "opcore", "baseline", "ratio")
    body = [cells(r) for r in rows]
    widths = [max(len(c[i]) for c in [head, *body]) for i in range(4)]

    def line(c: tuple[str, ...]) -> str:
        return f"{c[0]:<{widths[0]}}  {c[1]:>{widths[1]}}  {c[2]:>{widths[2]}}  {c[3]:>{widths[3]}}"

    out = [line(head), "  ".join("-" * w for w in widths)]
    for r, c in zip(rows, body, strict=True):
        out.append(line(c))
        detail = f"baseline: {r['baseline_name']}" + (f"; {r['note']}" if r["note"] else "")
        out.append(f"    {detail}")
    return "\n".join(out)


def markdown(summary: dict[str, Any]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        f"<!-- written by `python -m bench.run{' --quick' if summary['quick'] else ''}` on "
        f"{summary['generated_at'][:16].replace('T', ' ')} UTC; "
        f"{summary['machine']['cpus']} cores, Python {summary['machine']['python']} -->",
        "",
        "| figure | opcore | baseline | ratio | note |",
        "|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        figure, ours, base, ratio = cells(r)
        lines.append(
            f"| {esc(figure)} | {ours} | {base} ({esc(r['baseline_name'])}) | {ratio} | "
            f"{esc(r['note'])} |"
        )
    skipped = [b for b in summary["benches"] if b["status"] != "ok"]
    if skipped:
        lines.append("")
        lines.extend(f"- `{b['name']}`: {esc(b['status'])}" for b in skipped)
    lines += [
        "",
        "Ratio: the cost of opcore relative to the baseline measured in the same run "
        "(ours ÷ baseline for times and sizes, baseline ÷ ours for rates and scores); "
        "above 1 opcore costs more.",
    ]
    return "\n".join(lines) + "\n"


def merged(
    previous: Path, run: list[dict[str, Any]], rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """With ``--only``: the earlier summary's benches and rows, the ones run now replaced."""
    if not previous.exists():
        return run, rows
    earlier = json.loads(previous.read_text())
    now = {b["name"] for b in run}
    order = [b.name for b in BENCHES]
    benches = [b for b in earlier.get("benches", []) if b["name"] not in now] + run
    benches.sort(key=lambda b: order.index(b["name"]) if b["name"] in order else len(order))
    kept = [r for r in earlier.get("rows", []) if r.get("bench") not in now] + rows
    kept.sort(key=lambda r: order.index(r["bench"]) if r.get("bench") in order else len(order))
    return benches, kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="bounded sizes: a smoke run")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run this benchmark only (repeatable; e.g. approval, pipeline, memory)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show each module's output")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results[/quick])")
    args = parser.parse_args(argv)
    benches = find(args.only) if args.only else list(BENCHES)
    out: Path = args.out or (QUICK_RESULTS if args.quick else DEFAULT_RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    if out == QUICK_RESULTS and not (out / ".gitignore").exists():
        (out / ".gitignore").write_text("# smoke-run figures of `bench.run --quick`\n*\n")

    statuses: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    if load_before[0] > BUSY:
        print(
            f"note: the machine is busy (load average {load_before[0]:.1f}); "
            "the figures will be noisy",
            flush=True,
        )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="opcore-bench-") as tmp:
        for i, bench in enumerate(benches, start=1):
            print(f"[{i}/{len(benches)}] {bench.name}: {bench.measures} ...", flush=True)
            status, found = run_one(
                bench, quick=args.quick, out=out, verbose=args.verbose, logs=Path(tmp)
            )
            statuses.append(status)
            rows.extend(found)
            print(f"      {status['status']} ({status['seconds']:.1f} s)", flush=True)
    total = time.perf_counter() - started

    print()
    print(table(rows) if rows else "no results")
    print(
        "\nratio: opcore's cost relative to the baseline of the same run (ours/baseline for "
        "times and sizes, baseline/ours for rates and scores); above 1 = opcore costs more."
    )
    summary_file = out / "summary.json"
    all_benches, all_rows = merged(summary_file, statuses, rows) if args.only else (statuses, rows)
    summary = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "seconds": total,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "system": platform.system(),
            # 1-minute load average before and after: other work on the machine skews figures
            "load_before": round(load_before[0], 2),
            "load_after": round(os.getloadavg()[0], 2),
        },
        "ratio": "cost of opcore relative to the baseline: ours/baseline where lower is "
        "better, baseline/ours where higher is better; above 1 = opcore costs more",
        "benches": all_benches,
        "rows": all_rows,
    }
    summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    failed = [s for s in statuses if not s["status"].startswith(("ok", "skipped"))]
    print(
        f"\n{len(rows)} figures from {len(statuses) - len(failed)}/{len(statuses)} benchmarks "
        f"in {total:.0f} s; written to {display(summary_file)} and {display(out / 'summary.md')}"
    )
    for s in failed:
        print(f"  {s['name']}: {s['status']}")
    return 1 if failed else 0


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
