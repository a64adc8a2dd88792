"""Per-key token buckets: a burst allowance refilled at a steady rate."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBucketLimiter:
    """Allows `burst` calls at once per key and `rate_per_minute` on average after that.

    State is per gateway replica and bounded: the least recently seen keys are forgotten first
    (a forgotten key starts with a full bucket, which errs on the player's side).
    """

    def __init__(self, rate_per_minute: float, burst: int, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate_per_s = rate_per_minute / 60.0
        self._burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, key: str) -> float | None:
        """Takes one token for key; returns None if allowed, else the seconds until one is available."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate_per_s)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            allowed = None
        else:
            self._buckets[key] = (tokens, now)
            allowed = (1.0 - tokens) / self._rate_per_s
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return allowed
