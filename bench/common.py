"""What every benchmark shares: the common result row, percentiles, and where results go.

Each ``bench_*`` module writes ``<results>/<name>.json`` holding its own detailed figures and
a ``rows`` list in the common format below; ``python -m bench.run`` collects the rows of every
module into one table. A row compares opcore ("ours") with a baseline measured in the same
run, and its ``ratio`` is always the *cost* of ours relative to the baseline: ours ÷ baseline
for figures where lower is better (a latency, a size), baseline ÷ ours where higher is better
(a rate, a score). Above 1: opcore costs more than the baseline; below 1: it does better.

The results go to ``bench/results/``, or to the folder named by ``OPCORE_BENCH_RESULTS``
(``bench.run --quick`` points it at ``bench/results/quick/`` so a smoke run never overwrites
the full-size figures the README quotes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

RESULTS_ENV = "OPCORE_BENCH_RESULTS"
DEFAULT_RESULTS = Path(__file__).parent / "results"

Better = Literal["lower", "higher"]
TIMES = "\u00d7"  # the multiplication sign, for ratios
NONE = "\u2013"  # an en dash, for a missing value


def results_dir() -> Path:
    """Where this run's results go (created if missing)."""
    out = Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_results(name: str, report: object) -> Path:
    """Write ``report`` as ``<results>/<name>.json``; the path written."""
    path = results_dir() / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ratio(ours: float, baseline: float | None, better: Better) -> float | None:
    """The cost of ours relative to the baseline (above 1: ours costs more)."""
    if baseline is None or ours == 0 or baseline == 0:
        return None
    return ours / baseline if better == "lower" else baseline / ours


def row(
    figure: str,
    ours: float,
    unit: str,
    *,
    baseline: float | None,
    baseline_name: str,
    better: Better = "lower",
    note: str = "",
) -> dict[str, Any]:
    """One result in the common format (a JSON object)."""
    return {
        "figure": figure,
        "ours": ours,
        "unit": unit,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "better": better,
        "ratio": ratio(ours, baseline, better),
        "note": note,
    }


def fmt(value: float | None, unit: str = "") -> str:
    """A number for a table: thousands separated, three significant digits or so."""
    if value is None:
        return NONE
    magnitude = abs(value)
    if magnitude >= 1000:
        text = f"{value:,.0f}"
    elif magnitude >= 100:
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return NONE
    if value >= 100:
        return f"{value:,.0f}{TIMES}"
    if value >= 10:
        return f"{value:.1f}{TIMES}"
    return f"{value:.2f}{TIMES}"
