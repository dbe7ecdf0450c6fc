"""Fair sharing of the query slots (QUARRY_DUCKDB_THREADS of them) between users and their keys.

A search or lookup runs its DuckDB work holding one slot. Queries cannot be preempted, so who
gets a slot decides who waits:

* while another user is active (holds a slot, waits for one, or asked within RECENT seconds),
  one user (all of their keys together) holds at most `share` = max(1, slots - 1) slots at a
  time, even when nobody is waiting at that moment: a query cannot be stopped to make room, so
  a user who took every slot would make the other user's next request wait for one of those
  queries to end (up to the query budget). With one slot left over, it starts at once. A user
  alone on the server may take every slot: nobody is kept waiting by it, and a single client
  with several connections gets the server's whole throughput (measured: 27 requests/s with
  the reserve, 37 without, 2 clients of one key at 10M contacts);
* a freed slot goes to the waiting user holding the fewest slots, in turn among equals, and
  within a user to their keys in turn: never first come first served, so a flood of one key
  does not stand in front of everyone else's requests;
* a user has at most `max_waiting` requests waiting, and a request waits at most `max_wait`
  seconds; past either it gets 429 `rate_limited` with `Retry-After` (SPEC keeps 503
  `unavailable` for "no snapshot yet, or shutting down").

A slot is not the whole story: two queries side by side share the cores, and a short search
next to a long one took 5 times as long (p95 9 ms alone, 48 ms beside one 0.5 s search on 2
cores). So `run_query` runs each query on a thread of its own and lowers that thread's CPU
priority once the query has run DEMOTE_AFTER (nice +10, the exports' level): a long query
then takes the CPU the short ones leave, whoever sent them, and loses nothing when it runs
alone. A fresh thread per query, because an unprivileged process cannot raise a thread's
priority again, and a pool thread would stay lowered for the queries after.

The slots' bookkeeping runs on the event loop's thread only, so it needs no lock.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from .envelope import ApiError

MAX_WAIT = 2.0      # seconds a request waits for a slot before it is refused
RECENT = 5.0        # seconds a user's last request keeps them active: a slot stays for them
MAX_WAITING = 8     # requests of one user waiting for a slot at once
RETRY_AFTER = "1"   # seconds; slots turn over in well under that when the server is not overrun
DEMOTE_AFTER = 0.05  # seconds a query runs at normal priority; most searches end before
LONG_QUERY_NICE = 10


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


class QuerySlots:
    def __init__(self, slots: int, max_waiting: int = MAX_WAITING, max_wait: float = MAX_WAIT,
                 clock: Callable[[], float] = time.monotonic):
        self.slots = slots
        self.share = max(1, slots - 1)  # a user's slots while another user is active
        self.clock = clock
        self.seen: dict[int, float] = {}  # user id -> when they last asked for a slot
        self.max_waiting = max_waiting
        self.max_wait = max_wait
        self.free = slots
        self.held: dict[int, int] = {}      # user id -> slots held (no entry: none)
        self.queued: dict[int, int] = {}    # user id -> requests waiting (no entry: none)
        # user id -> key id -> its waiting requests, oldest first. Both levels are in turn
        # order (dicts keep insertion order): one served goes to the back.
        self.waiting: dict[int, dict[int, deque[_Waiter]]] = {}

    @asynccontextmanager
    async def slot(self, user_id: int, key_id: int) -> AsyncIterator[None]:
        """Hold one slot for the body of the `async with`; refused with 429 (ApiError)."""
        await self.acquire(user_id, key_id)
        try:
            yield
        finally:
            self.release(user_id)

    async def acquire(self, user_id: int, key_id: int) -> None:
        self._seen(user_id)
        # A slot free means no waiter could take it (each release hands slots out at once),
        # so taking it jumps no queue.
        if self.free and self.held.get(user_id, 0) < self.share_of(user_id):
            self._take(user_id)
            return
        if self.queued.get(user_id, 0) >= self.max_waiting:
            raise _refused(f"this account already has {self.held.get(user_id, 0)} queries "
                           f"running and {self.max_waiting} waiting, its share of the server; "
                           f"retry in {RETRY_AFTER} s")
        waiter = _Waiter()
        self.waiting.setdefault(user_id, {}).setdefault(key_id, deque()).append(waiter)
        self.queued[user_id] = self.queued.get(user_id, 0) + 1
        try:
            with anyio.move_on_after(self.max_wait):
                await waiter.event.wait()
        except BaseException:  # cancelled: hand back what may have been granted meanwhile
            if waiter.granted:
                self.release(user_id)
            else:
                self._forget(user_id, key_id, waiter)
            raise
        if not waiter.granted:
            self._forget(user_id, key_id, waiter)
            raise _refused(f"no query slot came free for this account within "
                           f"{self.max_wait:g} s (the server is busy, or this account's other "
                           f"requests hold its share); retry in {RETRY_AFTER} s")

    def share_of(self, user_id: int) -> int:
        """Every slot for a user alone; `share` while another user is active."""
        now = self.clock()
        alone = all(other == user_id for other in (*self.held, *self.waiting)) and all(
            other == user_id or now - when >= RECENT for other, when in self.seen.items())
        return self.slots if alone else self.share

    def _seen(self, user_id: int) -> None:
        now = self.seen[user_id] = self.clock()
        if len(self.seen) > 256:  # only the recent ones count: forget the others
            self.seen = {user: when for user, when in self.seen.items() if now - when < RECENT}

    def release(self, user_id: int) -> None:
        held = self.held[user_id] - 1
        if held:
            self.held[user_id] = held
        else:
            del self.held[user_id]
        self.free += 1
        self._hand_out()

    def _take(self, user_id: int) -> None:
        self.free -= 1
        self.held[user_id] = self.held.get(user_id, 0) + 1

    def _hand_out(self) -> None:
        while self.free and (user_id := self._next_user()) is not None:
            keys = self.waiting.pop(user_id)
            key_id, queue = next(iter(keys.items()))
            waiter = queue.popleft()
            del keys[key_id]
            if queue:
                keys[key_id] = queue  # this key goes behind the user's other keys
            if keys:
                self.waiting[user_id] = keys  # and the user behind the other users
            self._count_out(user_id)
            self._take(user_id)
            waiter.granted = True
            waiter.event.set()

    def _next_user(self) -> int | None:
        """The waiting user under their share holding the fewest slots, first in turn."""
        best, fewest = None, self.slots
        for user_id in self.waiting:
            held = self.held.get(user_id, 0)
            if held < min(fewest, self.share_of(user_id)):
                best, fewest = user_id, held
        return best

    def _forget(self, user_id: int, key_id: int, waiter: _Waiter) -> None:
        keys = self.waiting[user_id]
        keys[key_id].remove(waiter)
        if not keys[key_id]:
            del keys[key_id]
        if not keys:
            del self.waiting[user_id]
        self._count_out(user_id)

    def _count_out(self, user_id: int) -> None:
        queued = self.queued[user_id] - 1
        if queued:
            self.queued[user_id] = queued
        else:
            del self.queued[user_id]


def _refused(details: str) -> ApiError:
    return ApiError.one("rate_limited", details, headers={"Retry-After": RETRY_AFTER})


async def run_query(work: Callable[[], Any]) -> Any:
    """`work()` on a thread of its own, lowered in priority past DEMOTE_AFTER; not cancellable
    (like anyio.to_thread.run_sync), so the caller's slot is held until the work has ended."""
    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    outcome: dict[str, Any] = {}

    def target() -> None:
        demote = threading.Timer(DEMOTE_AFTER, _lower_priority, (threading.get_native_id(),))
        demote.start()
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome["error"] = exc
        finally:
            demote.cancel()
            demote.join()  # never renice a thread id after this thread has ended
            try:
                anyio.from_thread.run_sync(done.set, token=token)
            except anyio.RunFinishedError:
                pass  # the server stopped meanwhile: nobody waits for the answer

    threading.Thread(target=target, name="quarry-query", daemon=True).start()
    with anyio.CancelScope(shield=True):
        await done.wait()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _lower_priority(native_id: int) -> None:
    # Linux schedules threads one by one, and a thread's id names it to setpriority; elsewhere
    # the id may name a process, so nothing is changed.
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, native_id, LONG_QUERY_NICE)
        except OSError:
            pass
