"""``opcore run`` cold start to ready, and its resident memory once ready.

``opcore run`` with no channel configured serves the console, on the embedded defaults
(SQLite log, in-process broker and worker threads, offline model). It is started as a new
process with its standard input an open pipe, and timed until its first line of output, the
console's greeting, which it prints once the store is migrated, the worker threads, the
reconciler and the notifier are running. Then its resident memory (``VmRSS`` from
``/proc/<pid>/status``, and the peak ``VmHWM``) is read, and its input is closed so it exits.
Two cases: a new data folder (the first start: creating the SQLite schema) and a restart on
the folder of the previous run.

Baseline: a new Python process importing the libraries opcore is built on
(``import dramatiq, peewee, telegram, slack_bolt``), timed and measured the same way (it
prints a line once imported and waits for its input to close).

Run ``python -m bench.bench_startup [--runs 5]``; medians; writes
``bench/results/bench_startup.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import row, write_results

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "import dramatiq, peewee, telegram, slack_bolt; print('ready', flush=True); import sys; sys.stdin.read()"


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB (Linux ``/proc``)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def start_to_ready(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """Start ``args``, time it to its first line of output, measure its memory, close its
    input and wait for it to exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        args,
        env=env,
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    first = proc.stdout.readline()
    ready = time.perf_counter() - start
    if not first:
        proc.wait(timeout=30)
        raise RuntimeError(
            f"{' '.join(args)} exited with {proc.returncode} before any output:\n"
            f"{proc.stderr.read() if proc.stderr else ''}"
        )
    memory = proc_status(proc.pid)
    try:
        proc.communicate(input="", timeout=60)  # end of input: the console quits
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited with {proc.returncode}")
    return {"ready_s": ready, "rss_mb": memory["VmRSS"] / 1024, "hwm_mb": memory["VmHWM"] / 1024}


def opcore_command() -> list[str]:
    script = Path(sys.executable).parent / "opcore"
    return [str(script), "run"] if script.exists() else [sys.executable, "-m", "bot.cli", "run"]


def medians(samples: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "runs": len(samples),
        **{key: statistics.median(s[key] for s in samples) for key in samples[0]},
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPCORE_")}
    env["PYTHONPATH"] = str(ROOT)
    command = opcore_command()
    new: list[dict[str, float]] = []
    restart: list[dict[str, float]] = []
    base: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):  # interleaved, so a busy moment hits all three alike
            cwd = Path(tmp) / f"run{i}"
            cwd.mkdir()
            run_env = {**env, "OPCORE_DATA_DIR": str(cwd / "data")}
            new.append(start_to_ready(command, run_env, cwd))
            restart.append(start_to_ready(command, run_env, cwd))
            base.append(start_to_ready([sys.executable, "-c", BASELINE], env, cwd))
    report: dict[str, Any] = {
        "command": " ".join(Path(command[0]).name if i == 0 else a for i, a in enumerate(command)),
        "baseline_command": f'python -c "{BASELINE}"',
        "new_data_dir": medians(new),
        "restart": medians(restart),
        "baseline": medians(base),
    }
    print(f"`opcore run` (console, embedded defaults), median of {args.runs} runs")
    print(f"{'':<52} {'ready s':>8} {'RSS MB':>8} {'peak MB':>8}")
    for key, label in (
        ("new_data_dir", "ours: new data folder (first start)"),
        ("restart", "ours: restart, existing data folder"),
        ("baseline", "bare: import dramatiq, peewee, telegram, slack_bolt"),
    ):
        m = report[key]
        print(f"{label:<52} {m['ready_s']:>8.2f} {m['rss_mb']:>8.1f} {m['hwm_mb']:>8.1f}")
    o, r, b = report["new_data_dir"], report["restart"], report["baseline"]
    bare = "python importing dramatiq, peewee, telegram, slack_bolt"
    report["rows"] = [
        row(
            "`opcore run` cold start to ready (new data folder)",
            o["ready_s"] * 1e3,
            "ms",
            baseline=b["ready_s"] * 1e3,
            baseline_name=bare,
            note=f"restart on an existing folder {r['ready_s'] * 1e3:.0f} ms; median of {args.runs}",
        ),
        row(
            "`opcore run` resident memory once ready",
            o["rss_mb"],
            "MB",
            baseline=b["rss_mb"],
            baseline_name=bare,
            note=f"VmRSS; peak {o['hwm_mb']:.0f} MB; restart {r['rss_mb']:.0f} MB",
        ),
    ]
    write_results("bench_startup", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
