"""`make bench`'s runner: each benchmark in its own process, one table, results as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import run
from bench.common import fmt_ratio, ratio


def test_the_runner_prints_one_table_and_writes_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run.main(["--quick", "--only", "log", "--out", str(tmp_path)]) == 0

    printed = capsys.readouterr().out
    assert "figure" in printed and "baseline" in printed and "ratio" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [b["name"] for b in summary["benches"]] == ["bench_log"]
    assert summary["benches"][0]["status"] == "ok"
    rows = summary["rows"]
    assert len(rows) == 2
    for r in rows:
        assert r["ours"] > 0 and r["baseline"] > 0
        assert r["ratio"] == pytest.approx(r["ours"] / r["baseline"])
        assert r["figure"] in printed
    markdown = (tmp_path / "summary.md").read_text()
    assert "| figure | opcore | baseline | ratio | note |" in markdown
    assert all(r["figure"] in markdown for r in rows)
    assert (tmp_path / "bench_log.json").exists()


def test_a_run_of_some_benchmarks_keeps_the_others_figures(tmp_path: Path) -> None:
    earlier = {
        "benches": [
            {"name": "bench_memory", "status": "ok"},
            {"name": "bench_log", "status": "ok"},
        ],
        "rows": [
            {"bench": "bench_memory", "figure": "recall"},
            {"bench": "bench_log", "figure": "old"},
        ],
    }
    (tmp_path / "summary.json").write_text(json.dumps(earlier))
    benches, rows = run.merged(
        tmp_path / "summary.json",
        [{"name": "bench_log", "status": "ok"}],
        [{"bench": "bench_log", "figure": "new"}],
    )
    assert [b["name"] for b in benches] == ["bench_log", "bench_memory"]
    assert [r["figure"] for r in rows] == ["new", "recall"]


def test_an_unknown_benchmark_is_refused_with_the_known_names() -> None:
    with pytest.raises(SystemExit, match="known: log, events"):
        run.find(["nope"])


def test_the_ratio_is_the_cost_of_opcore_whichever_way_the_figure_points() -> None:
    assert ratio(2.0, 1.0, "lower") == pytest.approx(2.0)  # twice as slow
    assert ratio(50.0, 100.0, "higher") == pytest.approx(2.0)  # half the rate
    assert ratio(1.0, None, "lower") is None
    assert fmt_ratio(2.0) == "2.00\u00d7"
