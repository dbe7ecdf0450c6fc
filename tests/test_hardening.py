"""Limits a client cannot talk its way past: failed keys per address, query slots, the access log
line and request id of every answer."""

from __future__ import annotations

import json
import logging
import time

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from service.access_log import KEY_SHOWN, configure_access_log
from service.app import create_app
from service.gate import BRAKE_DELAY
from service.guard import FAILED_AUTH_BURST, FailedAuths
from service.logs import JsonLines
from tests.test_errors import assert_envelope


def litestar_of(app) -> Litestar:
    while not isinstance(app, Litestar):
        app = app.app
    return app


# --- failed authentications per address -------------------------------------------------------


def test_an_address_guessing_keys_is_slowed_after_a_burst_and_still_gets_401(served, monkeypatch):
    settings, key = served
    # The real burst, and next to no refill, so the test does not depend on its own speed.
    monkeypatch.setattr("service.gate.FailedAuths",
                        lambda: FailedAuths(rate=0.001, burst=FAILED_AUTH_BURST))
    with TestClient(create_app(settings)) as fresh:
        good = {"Authorization": f"Bearer {key}"}
        for _ in range(50):  # a valid key never uses up the address's allowance
            assert fresh.get("/v1/companies/search?per_page=1", headers=good).status_code == 200
        for i in range(FAILED_AUTH_BURST):
            answer = fresh.get("/v1/companies/search", headers={
                "Authorization": f"Bearer qry_guess{i}"})
            assert_envelope(answer, 401, "unauthorized")
        for headers in ({"Authorization": "Bearer qry_one_more"}, {}):
            started = time.monotonic()
            braked = fresh.get("/v1/companies/search", headers=headers)
            # SPEC 1: a request without a valid key gets 401 and WWW-Authenticate, braked or not.
            assert_envelope(braked, 401, "unauthorized", "Authorization")
            assert braked.headers["www-authenticate"].startswith("Bearer")
            assert int(braked.headers["retry-after"]) >= 1
            assert "too many requests without a valid API key" in \
                braked.json()["errors"][0]["details"]
            assert time.monotonic() - started >= BRAKE_DELAY  # the brake: a slowed answer
        # A valid key is served all the same: the contract promises its holder the answers.
        assert fresh.get("/v1/companies/search", headers=good).status_code == 200
        assert fresh.get("/health").status_code == 200  # outside /v1: not limited


def test_failed_auth_allowance_is_per_address_and_refills():
    now = [0.0]
    limit = FailedAuths(rate=1, burst=3, clock=lambda: now[0])
    here, there = {"client": ("10.0.0.1", 1)}, {"client": ("10.0.0.2", 1)}
    assert [limit.failed(here) for _ in range(3)] == [None] * 3
    braked = limit.blocked(here)
    assert braked is not None and braked[1] == 1  # Retry-After: 1 s
    assert limit.blocked(there) is None and limit.blocked({}) is None
    now[0] += 1.0
    assert limit.blocked(here) is None  # one more attempt a second
    assert limit.failed(here) is None and limit.blocked(here) is not None


# --- query slots ------------------------------------------------------------------------------


def test_a_query_waits_briefly_for_a_slot_then_gets_429(served):
    """Every slot held by other users: the request waits `max_wait`, then gets 429 with
    Retry-After (SPEC keeps 503 `unavailable` for no snapshot or shutting down)."""
    settings, key = served
    app = create_app(settings)
    with TestClient(app) as fresh:
        fresh.headers["Authorization"] = f"Bearer {key}"
        slots = litestar_of(app).state["query_slots"]
        slots.max_wait = 0.3
        others = [-1 - number for number in range(slots.slots)]  # one slot each
        for other in others:
            fresh.blocking_portal.call(slots.acquire, other, other)
        try:
            started = time.monotonic()
            busy = fresh.get("/v1/companies/search")
            waited = time.monotonic() - started
            assert_envelope(busy, 429, "rate_limited")
            assert busy.headers["retry-after"] == "1"
            assert "no query slot came free" in busy.json()["errors"][0]["details"]
            assert 0.25 < waited < 2
            assert_envelope(fresh.get("/v1/companies/cmp_0001"), 429, "rate_limited")
            assert slots.waiting == {} and slots.queued == {}  # the refused left no trace
        finally:
            for other in others:
                fresh.blocking_portal.call(slots.release, other)
        assert fresh.get("/v1/companies/search").status_code == 200
        assert slots.free == slots.slots and slots.held == {}  # every slot is given back


# --- access log and request id ----------------------------------------------------------------


@pytest.fixture
def access_lines():
    """The `quarry.access` lines written while the test runs, as `quarry serve` writes them."""
    configure_access_log()
    logger = logging.getLogger("quarry.access")
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(JsonLines().format(record))

    handler = Collect()
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def test_one_json_line_per_request_with_rows_and_key_prefix(client, served, access_lines):
    _, key = served
    search = client.get("/v1/contacts/search?per_page=7&exclude_job_titles=secret-value")
    assert search.status_code == 200 and len(search.json()["data"]) == 7
    with client.stream("POST", "/v1/companies/export", json={"limit": 9}) as export:
        assert len(export.read().splitlines()) == 9
    client.get("/health")
    client.get("/v1/contacts/search", headers={"Authorization": "Bearer not-a-key-at-all"})
    lines = [json.loads(line) for line in access_lines]
    assert [line["path"] for line in lines] == [
        "/v1/contacts/search", "/v1/companies/export", "/health", "/v1/contacts/search"]
    for line in lines:
        assert set(line) == {"time", "level", "logger", "message", "request_id", "client", "key",
                             "method", "path", "status", "duration_ms", "rows"}
        assert line["logger"] == "quarry.access" and line["level"] == "INFO"
        assert line["time"].endswith("Z") and line["duration_ms"] >= 0
    assert lines[0]["rows"] == 7 and lines[0]["status"] == 200
    assert lines[0]["key"] == key[:KEY_SHOWN] and len(lines[0]["key"]) == 12
    assert lines[0]["request_id"] == search.headers["x-request-id"]
    assert lines[1]["rows"] == 9 and lines[1]["method"] == "POST"
    assert lines[2]["rows"] is None and lines[2]["status"] == 200
    assert lines[3]["key"] == "-" and lines[3]["status"] == 401
    text = "\n".join(access_lines)
    assert key not in text and "secret-value" not in text and "not-a-key" not in text


def test_request_id_is_echoed_or_made(client):
    given = client.get("/health", headers={"X-Request-ID": "trace-42.a:b_c"})
    assert given.headers["x-request-id"] == "trace-42.a:b_c"
    made = {client.get("/health").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3 and all(len(rid) == 32 for rid in made)
    for unsafe in ("x" * 65, "a b", "evil\u00e9", "", "a\tb"):
        answer = client.get("/health", headers={"X-Request-ID": unsafe.encode("latin-1")})
        made_instead = answer.headers["x-request-id"]
        assert made_instead != unsafe and len(made_instead) == 32
    # Every answer carries one, the key gate's and the 404's included.
    for answer in (client.get("/v1/contacts/search", headers={"Authorization": "Bearer x"}),
                   client.get("/nowhere"), client.options("/health")):
        assert answer.headers["x-request-id"]
        assert answer.headers.get_list("x-request-id") == [answer.headers["x-request-id"]]
