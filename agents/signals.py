"""Control-flow signals: not failures, but instructions to the job machinery."""

from __future__ import annotations

from typing import Any


class RetryLater(Exception):
    """Run this job or action again after ``delay_ms`` (a transient failure was recorded)."""

    def __init__(self, delay_ms: int, reason: str) -> None:
        super().__init__(f"retry in {delay_ms} ms: {reason}")
        self.delay_ms = delay_ms
        self.reason = reason


class BudgetExceeded(Exception):
    """A model call was not made because it would cross a budget; ``blocked`` says which."""

    def __init__(self, blocked: Any) -> None:
        super().__init__(
            f"{blocked.scope} budget for {blocked.period}: ${blocked.spent_usd:.4f} spent of "
            f"${blocked.limit_usd:.2f}, this call would add ${blocked.estimate_usd:.4f}"
        )
        self.blocked = blocked
