"""Slows key guessing: requests without a valid key are limited per client address.

A /v1 request without a valid key gets 401 (SPEC 1), and so does one from an address that keeps
sending such requests (more than a burst of FAILED_AUTH_BURST, refilled at FAILED_AUTH_RATE per
second): until its allowance refills, its 401 answers are held back (`service.gate.BRAKE_DELAY`)
and carry Retry-After. The status stays 401 with `WWW-Authenticate`, as SPEC 1 says of every
request without a valid key. A request with a
valid key is always served, and never uses up the allowance: the contract promises a key
holder its answers, and a guesser gains nothing from the difference, since a key has 256
random bits and a guess is a 2^-256 chance whatever the rate. The limit is there to keep
floods of bad keys from costing a database look-up each, and the thresholds are high enough
that a client testing its error handling never meets them.

The address is the client's (`scope["client"]`): the TCP peer, unless the peer is one of
`QUARRY_TRUSTED_PROXIES`. In memory and per process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from litestar.types import Scope

from .ratelimit import Decision, TokenBuckets

FAILED_AUTH_BURST = 200    # failed authentications an address may make at once
FAILED_AUTH_RATE = 20.0    # ... and per second after that


Braked = tuple[str, int]  # the 401's details, and the Retry-After seconds


class FailedAuths:
    def __init__(self, rate: float = FAILED_AUTH_RATE, burst: float = FAILED_AUTH_BURST,
                 clock: Callable[[], float] = time.monotonic):
        self.buckets = TokenBuckets(rate, burst, clock)

    def blocked(self, scope: Scope) -> Braked | None:
        """The brake's answer when the caller's address has used up its failed attempts."""
        decision = self.buckets.peek(client_address(scope))
        return None if decision.allowed else _braked(decision)

    def failed(self, scope: Scope) -> Braked | None:
        """Counts one failed authentication; the brake's answer if it was one too many."""
        decision = self.buckets.take(client_address(scope))
        return None if decision.allowed else _braked(decision)


def _braked(decision: Decision) -> Braked:
    return ("too many requests without a valid API key from this address; answers are slowed "
            f"for {decision.retry_after} s; send a valid key", decision.retry_after)


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
