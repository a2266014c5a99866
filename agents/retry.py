"""Retry policy: exponential backoff with jitter, shared by jobs and actions."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4
    min_backoff_ms: int = 2_000
    max_backoff_ms: int = 300_000

    def delay_ms(self, attempt: int, *, rng: random.Random | None = None) -> int:
        """Delay before retry number ``attempt`` (1-based): doubling, capped, with equal jitter
        (half fixed, half random) so that many failing jobs do not retry in lockstep."""
        ceiling = min(self.max_backoff_ms, self.min_backoff_ms * 2 ** max(attempt - 1, 0))
        half = ceiling / 2
        return int(half + (rng or random).uniform(0, half))

    def exhausted(self, attempt: int) -> bool:
        """Whether failure number ``attempt`` (1-based) is past the last retry."""
        return attempt > self.max_retries
