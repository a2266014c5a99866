"""Control-flow signals: not failures, but instructions to the job machinery."""

from __future__ import annotations


class RetryLater(Exception):
    """Run this job or action again after ``delay_ms`` (a transient failure was recorded)."""

    def __init__(self, delay_ms: int, reason: str) -> None:
        super().__init__(f"retry in {delay_ms} ms: {reason}")
        self.delay_ms = delay_ms
        self.reason = reason
