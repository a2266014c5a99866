"""The reliability suite: load, faults, bad input and security, at bounded sizes in CI.

``make reliability`` runs it at full size (``OPCORE_RELIABILITY_SCALE=full``); ``make test``
(and CI) at the bounded size. Each test reports its figures (inputs tried, messages sent, p99)
through the :func:`figures` fixture; they are printed together at the end of the run, so the
counts the issue asks for are in the output of every run, and written as JSON when
``OPCORE_RELIABILITY_REPORT`` names a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SCALE = os.environ.get("OPCORE_RELIABILITY_SCALE", "ci").strip().lower()
if SCALE not in {"ci", "full"}:
    raise pytest.UsageError(f"OPCORE_RELIABILITY_SCALE must be ci or full, not {SCALE!r}")
FULL = SCALE == "full"


def sized(ci: int, full: int) -> int:
    """A size for this run: ``ci`` in CI and ``make test``, ``full`` in ``make reliability``."""
    return full if FULL else ci


@dataclass
class Figures:
    """What the suite measured, by test: counts of inputs tried and other figures."""

    rows: list[tuple[str, str, Any, str]] = field(default_factory=list)

    def add(self, test: str, name: str, value: Any, unit: str = "") -> None:
        self.rows.append((test, name, value, unit))


FIGURES = Figures()


class Recorder:
    """The figures of one test: ``figures.add("telegram updates tried", 500)``."""

    def __init__(self, test: str) -> None:
        self._test = test

    def add(self, name: str, value: Any, unit: str = "") -> None:
        FIGURES.add(self._test, name, value, unit)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Recorder]:
    yield Recorder(request.node.nodeid.split("::", 1)[-1])


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES.rows:
        return
    terminalreporter.section(f"reliability figures (scale: {SCALE})")
    for test, name, value, unit in FIGURES.rows:
        terminalreporter.write_line(f"{test}: {name} = {_show(value)}{' ' + unit if unit else ''}")
    target = os.environ.get("OPCORE_RELIABILITY_REPORT")
    if target:
        rows = [{"test": t, "figure": n, "value": v, "unit": u} for t, n, v, u in FIGURES.rows]
        Path(target).write_text(json.dumps({"scale": SCALE, "figures": rows}, indent=2) + "\n")
