"""Retry policy: exponential backoff with jitter, shared by jobs and actions."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from store import events as ev


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4
    min_backoff_ms: int = 2_000
    max_backoff_ms: int = 300_000

    def delay_ms(
        self, attempt: int, *, rng: random.Random | None = None, at_least_s: float | None = None
    ) -> int:
        """Delay before retry number ``attempt`` (1-based): doubling, capped, with equal jitter
        (half fixed, half random) so that many failing jobs do not retry in lockstep. A server
        that said when to come back (``at_least_s``, from Retry-After) is not asked sooner,
        up to the longest delay."""
        ceiling = min(self.max_backoff_ms, self.min_backoff_ms * 2 ** max(attempt - 1, 0))
        half = ceiling / 2
        delay = int(half + (rng or random).uniform(0, half))
        if at_least_s is not None:
            delay = max(delay, min(int(at_least_s * 1000), self.max_backoff_ms))
        return delay

    def exhausted(self, attempt: int) -> bool:
        """Whether failure number ``attempt`` (1-based) is past the last retry."""
        return attempt > self.max_retries


def failures_since_retry(
    history: Sequence[ev.RecordedEvent], *, failed: type[ev.EventData], reset: type[ev.EventData]
) -> int:
    """Transient failures (``failed`` events) since the stream began or the operator last
    asked for a retry (a ``reset`` event): the attempt count the policy applies to."""
    count = 0
    for event in history:
        if isinstance(event.data, reset):
            count = 0
        elif isinstance(event.data, failed):
            count += 1
    return count
