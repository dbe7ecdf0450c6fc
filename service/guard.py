"""Slows key guessing: requests without a valid key are limited per client address.

A /v1 request without a valid key gets 401 (SPEC 1). An address that keeps sending such requests
(more than a burst of FAILED_AUTH_BURST, refilled at FAILED_AUTH_RATE per second) gets 429
`rate_limited` with Retry-After instead of 401 until its allowance refills. A request with a
valid key is always served, and never uses up the allowance: the contract promises a key
holder its answers, and a guesser gains nothing from the difference, since a key has 256
random bits and a guess is a 2^-256 chance whatever the rate. The limit is there to keep
floods of bad keys from costing a database look-up each, and the thresholds are high enough
that a client testing its error handling never meets them.

The address is the TCP peer (`scope["client"]`); behind a reverse proxy every client shares the
proxy's address, so the proxy should do its own limiting. In memory and per process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from litestar.types import Scope

from .envelope import ErrorObject, problem
from .ratelimit import Decision, TokenBuckets

FAILED_AUTH_BURST = 200    # failed authentications an address may make at once
FAILED_AUTH_RATE = 20.0    # ... and per second after that


class FailedAuths:
    def __init__(self, rate: float = FAILED_AUTH_RATE, burst: float = FAILED_AUTH_BURST,
                 clock: Callable[[], float] = time.monotonic):
        self.buckets = TokenBuckets(rate, burst, clock)

    def blocked(self, scope: Scope) -> tuple[ErrorObject, list[tuple[bytes, bytes]]] | None:
        """The 429 to answer when the caller's address has used up its failed attempts."""
        decision = self.buckets.peek(client_address(scope))
        return None if decision.allowed else self._refusal(decision)

    def failed(self, scope: Scope) -> tuple[ErrorObject, list[tuple[bytes, bytes]]] | None:
        """Counts one failed authentication; the 429 to answer if it was one too many."""
        decision = self.buckets.take(client_address(scope))
        return None if decision.allowed else self._refusal(decision)

    def _refusal(self, decision: Decision) -> tuple[ErrorObject, list[tuple[bytes, bytes]]]:
        details = ("too many requests without a valid API key from this address; retry in "
                   f"{decision.retry_after} s with a valid key")
        return (problem("rate_limited", details),
                [(b"retry-after", str(decision.retry_after).encode())])


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
