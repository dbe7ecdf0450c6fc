"""`GET /metrics` (SPEC 5), scraped from a real `quarry serve` without a key and read with
prometheus-client's own text parser."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.metrics import METHODS, UNMATCHED
from tests.serving import running_server

TEMPLATES = {"/v1/contacts/search", "/v1/companies/search", "/v1/contacts/{record_id}",
             "/v1/companies/{record_id}", "/v1/contacts/export", "/v1/companies/export",
             "/health", "/metrics", "/schema", "/schema/openapi.json"}


def scrape(base: str) -> dict[str, list]:
    """Metric family name -> its samples, as the library's parser reads the answer."""
    answer = httpx.get(f"{base}/metrics", timeout=10)  # no key: SPEC 5
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {family.name: family.samples
            for family in text_string_to_metric_families(answer.text)}


def value(families: dict, family: str, sample: str, **labels: str) -> float:
    found = [s.value for s in families.get(family, [])
             if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found)


@pytest.fixture(scope="module")
def server(served, tmp_path_factory):
    settings_, _ = served
    with running_server(settings_.data_dir, tmp_path_factory.mktemp("log") / "serve.log") as s:
        yield s


def test_requests_latency_records_and_dataset_are_counted(server):
    base, key = server.base, server.headers
    before = scrape(base)
    searched = httpx.get(f"{base}/v1/contacts/search", params={"per_page": 7}, headers=key)
    record_id = searched.json()["data"][0]["id"]
    assert httpx.get(f"{base}/v1/contacts/{record_id}", headers=key).status_code == 200
    assert httpx.get(f"{base}/v1/contacts/search").status_code == 401
    exported = httpx.post(f"{base}/v1/companies/export", json={"limit": 9}, headers=key)
    assert len(exported.text.splitlines()) == 9
    after = scrape(base)

    def grew(sample: str, family: str = "quarry_http_requests", **labels) -> float:
        return value(after, family, sample, **labels) - value(before, family, sample, **labels)

    search = {"route": "/v1/contacts/search"}
    assert grew("quarry_http_requests_total", **search, status="200", method="GET") == 1
    assert grew("quarry_http_requests_total", **search, status="401") == 1
    assert grew("quarry_http_requests_total", route="/v1/contacts/{record_id}",
                status="200") == 1
    records = "quarry_records_served"
    assert grew("quarry_records_served_total", records, **search) == 7
    assert grew("quarry_records_served_total", records, route="/v1/contacts/{record_id}") == 1
    assert grew("quarry_records_served_total", records, route="/v1/companies/export") == 9
    latency = "quarry_http_request_duration_seconds"
    assert grew("quarry_http_request_duration_seconds_count", latency, **search) == 2
    assert grew("quarry_http_request_duration_seconds_bucket", latency, **search,
                le="+Inf") == 2
    assert value(after, latency, "quarry_http_request_duration_seconds_sum", **search) > 0
    assert value(after, "quarry_exports_running", "quarry_exports_running") == 0
    health = httpx.get(f"{base}/health").json()["data"]
    info = after["quarry_dataset_info"]
    assert [(s.labels["version"], s.value) for s in info] == [(health["dataset"], 1.0)]
    age = value(after, "quarry_dataset_age_seconds", "quarry_dataset_age_seconds")
    assert 0 <= age < 3600
    assert value(after, "process_resident_memory_bytes", "process_resident_memory_bytes") > 1e6
    peak = value(after, "quarry_process_peak_resident_memory_bytes",
                 "quarry_process_peak_resident_memory_bytes")
    assert peak >= value(after, "process_resident_memory_bytes",
                         "process_resident_memory_bytes") * 0.5 > 0


def test_labels_are_route_templates_never_raw_paths(server):
    """A client that invents paths and methods adds no series: routes are the router's
    templates (or `unmatched`), methods the HTTP ones (or `other`)."""
    base, key = server.base, server.headers
    with httpx.Client(base_url=base) as client:
        for i in range(30):
            client.get(f"/v1/invented-{i}/x{i}", headers=key)
            client.get(f"/v1/contacts/ctc_invented_{i}")  # 401 before routing
            client.get(f"/nowhere/{i}")
            client.request(f"BREW{i}", "/v1/contacts/search", headers=key)
    families = scrape(base)
    routes = {s.labels["route"] for s in families["quarry_http_requests"]}
    methods = {s.labels["method"] for s in families["quarry_http_requests"]}
    assert routes <= TEMPLATES | {UNMATCHED}, routes
    assert UNMATCHED in routes and "/v1/contacts/{record_id}" in routes
    assert methods <= METHODS | {"other"} and "other" in methods
    latency_routes = {s.labels["route"] for s in families["quarry_http_request_duration_seconds"]}
    assert latency_routes <= TEMPLATES | {UNMATCHED}
    assert not any("invented" in line or "nowhere" in line
                   for line in httpx.get(f"{base}/metrics").text.splitlines())


def test_exports_running_counts_an_export_while_it_streams(served):
    """Scraped through the same app while an export's first chunk is being sent."""
    settings_, key = served
    app = create_app(settings_)
    seen: list[float] = []

    async def call(method: str, path: str, body: bytes, headers: list, on_body=None) -> bytes:
        chunks, sent, done = [], [False], asyncio.Event()

        async def receive():  # the request, then (as a server does) a disconnect at its end
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))
                if on_body is not None and message.get("body") and len(chunks) == 1:
                    await on_body()
                if not message.get("more_body"):
                    done.set()

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}
        await app(scope, receive, send)
        return b"".join(chunks)

    async def scrape_in_app() -> None:
        text = (await call("GET", "/metrics", b"", [])).decode()
        families = {f.name: f.samples for f in text_string_to_metric_families(text)}
        seen.append(value(families, "quarry_exports_running", "quarry_exports_running"))

    async def main() -> None:
        headers = [(b"authorization", f"Bearer {key}".encode()),
                   (b"content-type", b"application/json")]
        exported = await call("POST", "/v1/contacts/export",
                              json.dumps({"format": "csv"}).encode(), headers,
                              on_body=scrape_in_app)
        assert exported.count(b"\n") > 100
        await scrape_in_app()

    asyncio.run(main())
    assert seen[0] == 1 and seen[-1] == 0, seen


def test_several_processes_add_up(served, tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR, two `quarry serve` processes over one folder answer the
    sum of both in either's scrape."""
    settings_, _ = served
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    with running_server(settings_.data_dir, tmp_path / "a.log", **env) as one, \
            running_server(settings_.data_dir, tmp_path / "b.log", **env) as two:
        for server, times in ((one, 3), (two, 4)):
            for _ in range(times):
                answer = httpx.get(f"{server.base}/v1/companies/search",
                                   params={"per_page": 2}, headers=server.headers)
                assert answer.status_code == 200
        for server in (one, two):
            families = scrape(server.base)
            route = {"route": "/v1/companies/search", "status": "200"}
            assert value(families, "quarry_http_requests", "quarry_http_requests_total",
                         **route) == 7
            assert value(families, "quarry_records_served", "quarry_records_served_total",
                         route="/v1/companies/search") == 14
            assert value(families, "quarry_http_request_duration_seconds",
                         "quarry_http_request_duration_seconds_count",
                         route="/v1/companies/search") == 7
            assert value(families, "quarry_exports_running", "quarry_exports_running") == 0
            assert families["quarry_dataset_info"][0].value == 1
