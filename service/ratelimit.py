"""Per-key request rates: a token bucket per key (SPEC 6: `QUARRY_RATE_LIMIT` per second, bursts
of twice that).

In memory and per process: a restart forgets the buckets, which at worst allows one burst.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int          # the burst size
    remaining: int      # whole requests left right now
    retry_after: int    # seconds until one more request is allowed (0 when allowed)
    reset: int          # seconds until the bucket is full again


class TokenBuckets:
    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst if burst is not None else 2 * rate
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # identity -> (tokens, updated)
        self._lock = threading.Lock()

    def take(self, identity: str) -> Decision:
        now = self.clock()
        with self._lock:
            tokens, updated = self._buckets.get(identity, (self.burst, now))
            tokens = min(self.burst, tokens + (now - updated) * self.rate)
            allowed = tokens >= 1
            if allowed:
                tokens -= 1
            self._buckets[identity] = (tokens, now)
            if len(self._buckets) > 100_000:
                self._forget_full(now)
        return Decision(
            allowed=allowed, limit=int(self.burst), remaining=int(tokens),
            retry_after=0 if allowed else max(1, math.ceil((1 - tokens) / self.rate)),
            reset=math.ceil((self.burst - tokens) / self.rate))

    def peek(self, identity: str) -> Decision:
        """What `take` would decide, without taking anything."""
        now = self.clock()
        with self._lock:
            tokens, updated = self._buckets.get(identity, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        return Decision(
            allowed=tokens >= 1, limit=int(self.burst), remaining=int(tokens),
            retry_after=0 if tokens >= 1 else max(1, math.ceil((1 - tokens) / self.rate)),
            reset=math.ceil((self.burst - tokens) / self.rate))

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket.
        self._buckets = {identity: (tokens, updated)
                         for identity, (tokens, updated) in self._buckets.items()
                         if tokens + (now - updated) * self.rate < self.burst}
