"""`quarry serve` as a real process, spoken to over HTTP; a refresh switches it without restart."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.fixture_drop import write_fixture_drop
from tests.serving import running_server
from tests.test_cli import quarry


@pytest.fixture
def server(data_dir, fixture_drop, tmp_path):
    quarry(data_dir, "refresh", "--source", str(fixture_drop))
    with running_server(data_dir, tmp_path / "serve.log") as running:
        yield running.base, running.key, running.process


def test_search_lookup_and_switch_without_restart(server, data_dir, tmp_path):
    base, key, _ = server
    headers = {"Authorization": f"Bearer {key}"}
    health = httpx.get(f"{base}/health").json()["data"]
    assert health["status"] == "ok" and health["contacts"] > 0
    answer = httpx.post(f"{base}/v1/contacts/search", headers=headers,
                        json={"seniorities": ["vp"], "per_page": 5})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["errors"] == [] and body["meta"]["dataset"] == health["dataset"]
    assert all(r["seniority"].lower() == "vp" for r in body["data"])
    one = httpx.get(f"{base}/v1/contacts/{body['data'][0]['id']}", headers=headers).json()
    assert one["data"] == body["data"][0]
    assert httpx.get(f"{base}/v1/contacts/search").status_code == 401

    smaller = tmp_path / "smaller"
    write_fixture_drop(smaller, companies=30, contacts=90, seed=99)
    quarry(data_dir, "refresh", "--source", str(smaller))
    after = httpx.get(f"{base}/health").json()["data"]
    assert after["dataset"] != health["dataset"] and after["contacts"] == 90
    total = httpx.get(f"{base}/v1/contacts/search", headers=headers).json()["meta"]
    assert total["total"] == 90 and total["dataset"] == after["dataset"]


def test_schema_documents_every_endpoint(server):
    base, _, _ = server
    document = httpx.get(f"{base}/schema/openapi.json").json()
    assert {"/v1/contacts/search", "/v1/companies/search", "/v1/contacts/{id}",
            "/v1/companies/{id}", "/v1/contacts/export", "/v1/companies/export",
            "/health"} <= set(document["paths"])
    search = document["components"]["schemas"]["ContactSearch"]["properties"]
    assert {"job_titles", "exclude_job_titles", "has_personal_emails", "page"} <= set(search)
    assert "text/html" in httpx.get(f"{base}/schema").headers["content-type"]


def test_sigterm_stops_cleanly(server):
    _, _, process = server
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0


