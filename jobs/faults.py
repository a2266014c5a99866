"""Failure injection for the reliability tests: kill the process at a named point.

Off unless ``OPCORE_FAULTS`` names points (settings only; nothing in chat reaches it). Each
point fires once per data directory: a marker file is written before the process dies, so
the restarted process gets past the point, as a real system would after one crash.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

KILLED_EXIT_CODE = 137  # what a shell reports for kill -9


class FaultInjector:
    def __init__(self, points: tuple[str, ...], *, marker_dir: Path) -> None:
        self._points = frozenset(points)
        self._marker_dir = marker_dir

    def __call__(self, point: str) -> None:
        if point not in self._points:
            return
        marker = self._marker_dir / f"fault-fired-{point}"
        if marker.exists():
            return
        self._marker_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))
        logger.critical("fault injection: killing process %d at %s", os.getpid(), point)
        sys.stderr.flush()
        os._exit(KILLED_EXIT_CODE)
