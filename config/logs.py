"""Logging: plain lines or one JSON object per line, each carrying the correlation id.

The correlation id is the job's id (the one ``/trace`` takes): a worker sets it while it runs
a job or one of the job's actions, so every line a job causes, in any module, can be found
with one ``grep`` or one log query. ``OPCORE_LOG_FORMAT=json`` gives lines a log shipper
reads without parsing rules.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

correlation: ContextVar[str] = ContextVar("opcore_correlation_id", default="")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s]: %(message)s"


@contextmanager
def correlated(correlation_id: str) -> Iterator[None]:
    """Every log line inside carries ``correlation_id``."""
    token = correlation.set(correlation_id)
    try:
        yield
    finally:
        correlation.reset(token)


class CorrelationFilter(logging.Filter):
    """Puts the current correlation id on each record (``-`` outside a job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, correlation id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", "-"),
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler on whatever ``sys.stderr`` is when a record is written, not the one
    at set-up: whoever swaps stderr (a test's capture, a daemon's redirect) does not leave
    the handler writing to a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stderr


def configure(level: str, fmt: Literal["text", "json"] = "text") -> None:
    """Set up the root logger on stderr (replacing any handler a previous call set)."""
    handler = StderrHandler()
    handler.addFilter(CorrelationFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_opcore", False):
            root.removeHandler(old)
    handler._opcore = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
