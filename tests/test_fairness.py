"""One key must not starve the others: the query slots shared fairly between users
(service.query_slots), and exports bounded per key, per user and per server
(service.export_slots), down to `quarry serve` under a flood."""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path

import anyio
import httpx
import pytest
from anyio import wait_all_tasks_blocked
from litestar.testing import TestClient

from service.accounts import Accounts
from service.app import create_app
from service.envelope import ApiError
from service.export_slots import ExportSlots
from service.generate import generate_drop
from service.query_slots import RECENT, QuerySlots
from service.refresh import refresh
from service.snapshots import SnapshotStore
from tests.serving import running_server
from tests.test_errors import assert_envelope
from tests.test_hardening import litestar_of

# --- the scheduler ------------------------------------------------------------------------------


def run_async(test) -> None:
    anyio.run(test)


def test_freed_slots_go_to_users_in_turn_and_to_keys_in_turn():
    """Waiting requests are served across users (fewest slots held first) and, within a user,
    across keys in turn; first come first served would give A's three before B's two."""
    async def scenario() -> None:
        slots = QuerySlots(2)  # a share of 1
        served: list[str] = []

        async def ask(name: str, user: int, key: int) -> None:
            await slots.acquire(user, key)
            served.append(name)

        await slots.acquire(1, 10)  # A (user 1) holds one slot, C (user 3) the other
        await slots.acquire(3, 30)
        async with anyio.create_task_group() as tasks:
            for name, user, key in (("a1", 1, 10), ("a2", 1, 10), ("a3", 1, 11),
                                    ("b1", 2, 20), ("b2", 2, 20)):
                tasks.start_soon(ask, name, user, key)
                await wait_all_tasks_blocked()  # queued in this order
            assert served == [] and slots.queued == {1: 3, 2: 2}
            for releasing in (3, 1, 2, 1, 1):
                slots.release(releasing)
                await wait_all_tasks_blocked()
        # a3 (A's second key) before a2 (A's first key again)
        assert served == ["b1", "a1", "b2", "a3", "a2"]
        assert slots.waiting == {} and slots.queued == {}

    run_async(scenario)


def test_a_user_holds_at_most_their_share_and_one_slot_stays_for_others():
    async def scenario() -> None:
        slots = QuerySlots(3)
        assert slots.share == 2
        await slots.acquire(2, 20)  # another user is active: the reserve holds
        slots.release(2)
        await slots.acquire(1, 10)
        await slots.acquire(1, 11)  # another key of the same user: the same share
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(slots.acquire, 1, 12)
            await wait_all_tasks_blocked()
            assert slots.free == 1 and slots.queued == {1: 1}  # waits with a slot free
            with anyio.fail_after(1):
                await slots.acquire(2, 20)  # another user takes it at once
            assert slots.held == {1: 2, 2: 1}
            slots.release(2)  # the user at their share still cannot take it
            await wait_all_tasks_blocked()
            assert slots.held == {1: 2} and slots.queued == {1: 1}
            slots.release(1)  # one of their own ends: their waiting request goes
        assert slots.held == {1: 2} and slots.free == 1
        assert QuerySlots(1).share == 1  # a single slot is everyone's in turn

    run_async(scenario)


def test_a_user_alone_takes_every_slot_until_another_user_is_active():
    async def scenario() -> None:
        now = [0.0]
        slots = QuerySlots(2, max_wait=0.2, clock=lambda: now[0])
        for _ in range(2):  # alone: both slots, nobody is kept waiting by it
            with anyio.fail_after(1):
                await slots.acquire(1, 10)
        assert slots.held == {1: 2} and slots.share_of(1) == 2
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(slots.acquire, 2, 20)  # another user comes: waits for a slot
            await wait_all_tasks_blocked()
            slots.release(1)  # ... and gets the one that frees, not user 1
        assert slots.held == {1: 1, 2: 1}
        slots.release(2)
        assert slots.share_of(1) == 1  # user 2 asked just now: one slot stays for them
        with pytest.raises(ApiError):
            await slots.acquire(1, 10)  # waits with a slot free, then 429
        now[0] += RECENT  # user 2 has been quiet for RECENT seconds: user 1 is alone again
        with anyio.fail_after(1):
            await slots.acquire(1, 10)
        assert slots.held == {1: 2}

    run_async(scenario)


def test_past_the_queue_or_the_wait_a_request_gets_429_with_retry_after():
    async def scenario() -> None:
        slots = QuerySlots(2, max_waiting=2, max_wait=0.2)
        await slots.acquire(2, 20)  # another user is active: the reserve holds
        slots.release(2)
        await slots.acquire(1, 10)
        async with anyio.create_task_group() as tasks:
            for _ in range(2):
                tasks.start_soon(slots.acquire, 1, 10)
            await wait_all_tasks_blocked()
            with pytest.raises(ApiError) as full:
                await slots.acquire(1, 11)  # a third waiting request, from any of its keys
            slots.release(1)
            slots.release(1)  # the two waiting get their turn
        assert full.value.errors[0].id == "rate_limited" and full.value.status == 429
        assert full.value.headers == {"Retry-After": "1"}
        assert "2 waiting" in full.value.errors[0].details
        await slots.acquire(2, 20)  # every slot taken, by two users
        started = time.monotonic()
        with pytest.raises(ApiError) as late:
            await slots.acquire(3, 30)
        assert 0.15 < time.monotonic() - started < 1
        assert late.value.errors[0].id == "rate_limited"
        assert late.value.headers == {"Retry-After": "1"}
        assert slots.waiting == {} and slots.queued == {}

    run_async(scenario)


def test_a_cancelled_waiter_leaves_no_trace_and_a_slot_granted_to_it_comes_back():
    async def scenario() -> None:
        slots = QuerySlots(1)
        await slots.acquire(1, 10)
        with anyio.move_on_after(0.05):
            await slots.acquire(2, 20)
        assert slots.waiting == {} and slots.queued == {}
        async def query() -> None:
            async with slots.slot(2, 20):
                await anyio.sleep_forever()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(query)
            await wait_all_tasks_blocked()
            slots.release(1)  # granted to user 2 ...
            tasks.cancel_scope.cancel()  # ... which is cancelled before it ran again
        assert slots.free == 1 and slots.held == {} and slots.queued == {}

    run_async(scenario)


def test_export_slots_per_key_user_and_server_each_given_back_once():
    exports = ExportSlots(per_user=3, total=4)
    first = exports.take(1, 10)
    exports.take(1, 10)
    refusals = []
    for user, key in ((1, 10), (1, 11), (1, 11), (2, 20), (3, 30)):
        try:
            exports.take(user, key)
        except ApiError as error:
            assert error.status == 429 and error.headers == {"Retry-After": "5"}
            refusals.append(error.errors[0].details)
    assert len(refusals) == 3
    assert "this key already runs 2" in refusals[0]
    assert "this account already runs 3" in refusals[1]
    assert "the server already runs 4" in refusals[2]
    first.release()
    first.release()  # a second release gives nothing more back
    assert exports.running == 3 and exports.by_key == {10: 1, 11: 1, 20: 1}
    exports.take(3, 30)


# --- the served app -----------------------------------------------------------------------------


def test_an_export_whose_answer_never_starts_gives_its_slot_back(served):
    """The client is gone before the headers go out: the body is never started, and the
    slot must come back all the same (a generator's `finally` never ran: the slot leaked,
    and a key lost its exports for good after two such)."""
    settings, key = served
    app = create_app(settings)
    body = json.dumps({"format": "ndjson"}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/contacts/export",
             "raw_path": b"/v1/contacts/export", "query_string": b"", "root_path": "",
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
             "headers": [(b"authorization", f"Bearer {key}".encode()),
                         (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start" and message["status"] == 200:
            raise OSError("the client went away")

    with TestClient(app) as fresh:
        fresh.headers["Authorization"] = f"Bearer {key}"
        for _ in range(3):
            with pytest.raises(Exception) as failed:  # noqa: B017 - Litestar wraps it
                fresh.blocking_portal.call(app, dict(scope), receive, send)
            causes, error = [], failed.value
            while error is not None:
                causes.append(error)
                error = error.__cause__
            assert any(isinstance(error, OSError) for error in causes), causes
        exports = litestar_of(app).state["exports"]
        assert exports.running == 0 and exports.by_key == {} and exports.by_user == {}
        answer = fresh.post("/v1/contacts/export", json={"limit": 3})
        assert answer.status_code == 200 and len(answer.text.splitlines()) == 3


# --- `quarry serve` under a flood ---------------------------------------------------------------

# The heaviest legal search we found: 0.45-0.6 s at 200,000 contacts on 2 cores (substring
# tests of 100 job titles matching nearly every contact, every exclusion list full, page 100
# of 100): each one scans every contact twice (page and count).
HEAVY = {
    "job_titles": [chr(c) for c in range(ord("a"), ord("z") + 1)]
    + [f"{a}{b}" for a in "aeiou" for b in "nrstlm"],
    "exclude_job_titles": [f"zz{i}" for i in range(100)],
    "exclude_locations": [f"city:c{i}||s{i}||k{i}" for i in range(100)],
    **{f"exclude_{name}": [f"t{i}" for i in range(100)] for name in (
        "technologies", "industries", "functions", "departments", "seniorities", "tlds")},
    "per_page": 100, "page": 100,
}
# Key B's everyday searches.
LIGHT = [{"seniorities": ["VP"]}, {"industries": ["Software"], "per_page": 10},
         {"is_decision_maker": True, "per_page": 50}, {"departments": ["Sales"], "page": 3}]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """The demo data set (`make run`'s): 20,000 companies, 200,000 contacts."""
    root = tmp_path_factory.mktemp("fair")
    generate_drop(root / "drop", 20_000, 200_000, seed=42)
    refresh(SnapshotStore(root / "data"), root / "drop")
    return root / "data"


def eventually(start, seconds: float = 10) -> int:
    """The status of `start()`, retried while it answers 429 for up to `seconds`."""
    deadline = time.monotonic() + seconds
    while (answer := start()).status_code == 429 and time.monotonic() < deadline:
        answer.read()
        time.sleep(0.2)
    return answer.status_code


def users_with_keys(data_dir: Path, *keys_per_user: int) -> list[list[str]]:
    accounts = Accounts(data_dir / "quarry.db")
    found = []
    for keys in keys_per_user:
        email = f"user{time.monotonic_ns()}@example.com"
        accounts.create_user(email, "a long password")
        found.append([accounts.create_key(email, f"key {n}")[0] for n in range(keys)])
    return found


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def flood_and_measure(demo_data, log) -> tuple[dict[str, tuple[float, float]], list]:
    """One measurement: key B's (p50, p95) in ms alone and under A's flood, and A's answers
    as (status, seconds, measured while B was)."""
    (key_a,), (key_b,) = users_with_keys(demo_data, 1, 1)
    with running_server(demo_data, log) as server:
        flooding, stop, lock = threading.Event(), threading.Event(), threading.Lock()
        a_answers: list[tuple[int, float, bool]] = []  # status, seconds, B measured meanwhile
        in_flight, measuring = [0], [False]

        def flood() -> None:
            with httpx.Client(base_url=server.base, timeout=30,
                              headers={"Authorization": f"Bearer {key_a}"}) as client:
                while flooding.wait() and not stop.is_set():
                    with lock:
                        in_flight[0] += 1
                    started = time.monotonic()
                    answer = client.post("/v1/contacts/search", json=HEAVY)
                    with lock:
                        in_flight[0] -= 1
                        a_answers.append((answer.status_code, time.monotonic() - started,
                                          measuring[0]))
                    if answer.status_code == 429:
                        assert answer.headers["retry-after"] == "1"
                        assert answer.json()["errors"][0]["id"] == "rate_limited"

        flooders = [threading.Thread(target=flood, daemon=True) for _ in range(8)]
        for thread in flooders:
            thread.start()
        latencies: dict[str, list[float]] = {"alone": [], "flooded": []}
        try:
            with httpx.Client(base_url=server.base, timeout=30,
                              headers={"Authorization": f"Bearer {key_b}"}) as client:
                def measure(phase: str) -> None:
                    for body in LIGHT * 3 if phase == "warm" else LIGHT * 2 + LIGHT[:2]:
                        started = time.monotonic()
                        answer = client.post("/v1/contacts/search", json=body)
                        assert answer.status_code == 200, answer.text
                        if phase != "warm":
                            latencies[phase].append(time.monotonic() - started)

                measure("warm")  # the first of each pays for DuckDB's cache
                for _ in range(6):
                    flooding.clear()
                    while in_flight[0]:  # alone: A's last searches ended
                        time.sleep(0.02)
                    measure("alone")
                    flooding.set()
                    time.sleep(1.0)  # A's share of the slots taken, its queue full
                    measuring[0] = True
                    measure("flooded")
                    measuring[0] = False
        finally:
            stop.set()
            flooding.set()
            for thread in flooders:
                thread.join(timeout=30)
    ms = {phase: (statistics.median(values) * 1000, percentile(values, 0.95) * 1000)
          for phase, values in latencies.items()}
    during = [status for status, _, meanwhile in a_answers if meanwhile]
    a_ok = [seconds for status, seconds, _ in a_answers if status == 200]
    print(f"\nkey B alone:     p50 {ms['alone'][0]:.1f} ms, p95 {ms['alone'][1]:.1f} ms"
          f"\nkey B under A:   p50 {ms['flooded'][0]:.1f} ms, p95 {ms['flooded'][1]:.1f} ms"
          f"\nkey A meanwhile: {during.count(200)} answered, {during.count(429)} refused (429);"
          f" in all {len(a_ok)} answered, p50 {statistics.median(a_ok or [0]) * 1000:.0f} ms")
    return ms, a_answers


@pytest.mark.slow
def test_a_flooding_key_does_not_slow_another_users_searches(demo_data, tmp_path):
    """Key A sends the heavy search back to back on 8 connections, retrying at once when
    refused; key B's searches stay within 3x of their p95 alone, and nobody gets a 503.
    Alone and flooded take turns (6 rounds of 10 searches each), so that whatever else the
    machine runs weighs on both alike. On a busy machine (the test shares its 2 cores with
    whatever else runs) one measurement may be disturbed: a second one is taken, and one of the
    two must hold."""
    for attempt in (1, 2):
        ms, a_answers = flood_and_measure(demo_data, tmp_path / f"serve-{attempt}.log")
        assert {status for status, _, _ in a_answers} <= {200, 429}  # never a 503
        assert any(status == 200 for status, _, _ in a_answers)  # A is served, at its share
        if ms["flooded"][1] <= 3 * ms["alone"][1]:
            break
    assert ms["flooded"][1] <= 3 * ms["alone"][1]


def test_export_limits_per_key_user_and_server_then_the_slots_come_back(demo_data, tmp_path):
    """With 3 exports per user and 4 on the server: the 3rd of a key, the 4th of a user and
    the 5th of the server get 429 with Retry-After while the others stay open unread; once
    they end (one read to its end, the others' clients gone) every refused one runs. (A
    short export ends on the server before its client reads it: only whole ones stay open.)"""
    (k1, k2), (k3,), (k4,) = users_with_keys(demo_data, 2, 1, 1)
    with running_server(demo_data, tmp_path / "serve.log", QUARRY_MAX_EXPORTS_PER_USER="3",
                        QUARRY_MAX_EXPORTS="4") as server:
        clients: list[httpx.Client] = []
        opened: list = []

        def export(key: str, **body):
            client = httpx.Client(base_url=server.base, timeout=30,
                                  headers={"Authorization": f"Bearer {key}"})
            clients.append(client)
            stream = client.stream("POST", "/v1/contacts/export", json={"format": "ndjson",
                                                                        **body})
            answer = stream.__enter__()  # headers only: the 200,000 records stay unread
            opened.append(stream)
            return answer

        def refused(answer, fragment: str) -> None:
            answer.read()
            assert_envelope(answer, 429, "rate_limited")
            assert answer.headers["retry-after"] == "5"
            assert fragment in answer.json()["errors"][0]["details"]

        try:
            assert export(k1).status_code == 200
            assert export(k1).status_code == 200
            refused(export(k1), "this key already runs 2 exports")
            assert export(k2).status_code == 200  # the user's 3rd
            refused(export(k2), "this account already runs 3 exports")
            ending = export(k3, format="arrow")  # the server's 4th, read to its end below
            assert ending.status_code == 200
            refused(export(k4), "the server already runs 4 exports")
            # Searches go on meanwhile.
            search = httpx.post(f"{server.base}/v1/contacts/search", json={"seniorities": ["VP"]},
                                headers={"Authorization": f"Bearer {k4}"}, timeout=10)
            assert search.status_code == 200

            assert len(ending.read()) > 0  # a stream that ends ...
            assert eventually(lambda: export(k4, limit=1)) == 200  # ... gives its slot back
            for stream in opened:  # the other clients go away mid-stream
                stream.__exit__(None, None, None)
            opened.clear()
            # Their slots come back once the server notices: the key's 2, the user's 3 and
            # the server's 4 are all there again, held at once.
            for key in (k1, k1, k2, k3):
                assert eventually(lambda key=key: export(key)) == 200
        finally:
            for client in clients:
                client.close()
