"""Every failure is the envelope with the contract's id, status and field (SPEC section 1)."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from service.accounts import Accounts
from service.app import create_app
from tests.conftest import keyed_client, make_settings


def assert_envelope(answer, status: int, error_id: str, field: str | None = None) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"data", "meta", "errors"}
    assert body["data"] is None and isinstance(body["meta"], dict)
    assert body["errors"], body
    for error in body["errors"]:
        assert error["code"] == status and error["details"]
    assert error_id in [e["id"] for e in body["errors"]]
    if field is not None:
        assert field in [e.get("field") for e in body["errors"]]
    return body


@pytest.mark.parametrize(("body", "field"), [
    ({"per_page": "10"}, "per_page"),
    ({"per_page": 2.0}, "per_page"),
    ({"per_page": 101}, "per_page"),
    ({"page": 0}, "page"),
    ({"page": True}, "page"),
    ({"industries": "Retail"}, "industries"),
    ({"industries": [""]}, "industries"),
    ({"industries": ["   "]}, "industries"),
    ({"industries": ["x" * 201]}, "industries"),
    ({"industries": ["a"] * 101}, "industries"),
    ({"industries": [1]}, "industries"),
    ({"job_title": ["manager"]}, "job_title"),
    ({"is_decision_maker": "true"}, "is_decision_maker"),
    ({"added_after": "yesterday"}, "added_after"),
    ({"added_after": "2024-13-01"}, "added_after"),
    ({"added_after": 20240101}, "added_after"),
    ({"added_after": "2024-02-01", "added_before": "2024-01-01"}, "added_after"),
    ({"page": 101, "per_page": 100}, "page"),
    ({"locations": ["London"]}, "locations"),
    ({"locations": ["town:London"]}, "locations"),
    ({"locations": ["city:||UK"]}, "locations"),
    ({"locations": ["country:A||B"]}, "locations"),
    ({"locations": ["city:a||b||c||d"]}, "locations"),
])
def test_invalid_input_names_the_field(client, body, field):
    assert_envelope(client.post("/v1/contacts/search", json=body), 400, "invalid_input", field)


def test_contact_field_on_companies_search_is_refused(client):
    body = assert_envelope(client.post("/v1/companies/search", json={"seniorities": ["VP"]}),
                           400, "invalid_input", "seniorities")
    assert "contacts" in body["errors"][0]["details"]


def test_every_problem_is_reported_at_once(client):
    body = assert_envelope(client.post("/v1/contacts/search", json={
        "per_page": "x", "industries": "Retail", "job_title": ["a"]}), 400, "invalid_input")
    assert {e["field"] for e in body["errors"]} == {"per_page", "industries", "job_title"}


@pytest.mark.parametrize(("query", "field"), [
    ("page=", "page"), ("page=1&page=2", "page"), ("per_page=ten", "per_page"),
    ("is_decision_maker=yes", "is_decision_maker"), ("job_title=x", "job_title"),
    ("industries=", "industries"),
    ("page=%EF%BC%92", "page"), ("per_page=%D9%A1", "per_page"),  # not ASCII digits
    ("page=" + "9" * 40, "page"), ("per_page=99999999999999999999", "per_page"),
])
def test_query_string_rules(client, query, field):
    assert_envelope(client.get(f"/v1/contacts/search?{query}"), 400, "invalid_input", field)


def test_query_string_parses_text(client):
    answer = client.get("/v1/contacts/search?per_page=10&is_decision_maker=TRUE&"
                        "seniorities=VP&seniorities=Director")
    assert answer.status_code == 200
    assert answer.json()["meta"]["per_page"] == 10


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe"])
def test_invalid_json(client, body):
    answer = client.post("/v1/contacts/search", content=body,
                         headers={"content-type": "application/json"})
    assert_envelope(answer, 400, "invalid_json")


# Bodies that once got a 500: bytes that are not UTF-8 inside a string (msgspec raises
# UnicodeDecodeError, not DecodeError), also when the Content-Type names another charset, and
# nesting deep enough that msgspec runs out of recursion.
NOT_UTF8 = b'{"industries": ["S\xe3o Paulo"]}'
DEEP = b'{"industries": ' + b"[" * 1_000 + b"]" * 1_000 + b"}"


@pytest.mark.parametrize(("body", "content_type"), [
    (NOT_UTF8, "application/json"),
    (NOT_UTF8, "application/json; charset=latin-1"),
    (b'{"job_titles": ["\xed\xa0\x80"]}', "application/json"),  # a UTF-8-encoded surrogate
    (DEEP, "application/json"),
    (b"[" * 1_000 + b"]" * 1_000, "application/json"),
    (b'{"a":' * 1_000 + b"1" + b"}" * 1_000, "application/json"),
])
@pytest.mark.parametrize("path", ["/v1/contacts/search", "/v1/companies/export"])
def test_unreadable_json_is_invalid_json(client, path, body, content_type):
    answer = client.post(path, content=body, headers={"content-type": content_type})
    assert_envelope(answer, 400, "invalid_json")


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "parquet", "arrow"])
@pytest.mark.parametrize("limit", [2**63, 2**64 - 1])
@pytest.mark.parametrize("path", ["/v1/contacts/export", "/v1/companies/export"])
def test_an_export_limit_past_a_bigint_is_invalid_input(client, path, limit, fmt):
    # DuckDB's LIMIT takes a BIGINT; past it the streamed formats failed in DuckDB (500)
    body = assert_envelope(client.post(path, json={"limit": limit, "format": fmt}),
                           400, "invalid_input", "limit")
    assert str(2**63 - 1) in body["errors"][0]["details"]
    largest = client.post(path, json={"limit": 2**63 - 1, "format": fmt})
    assert largest.status_code == 200
    assert largest.headers["quarry-total-count"] == client.post(
        path, json={"format": fmt}).headers["quarry-total-count"]


def test_unsupported_media_type(client):
    answer = client.post("/v1/contacts/search", content=b"{}",
                         headers={"content-type": "text/plain"})
    assert_envelope(answer, 415, "unsupported_media_type")


def test_payload_too_large(client):
    body = b'{"industries": ["' + b"a" * 70_000 + b'"]}'
    answer = client.post("/v1/contacts/search", content=body,
                         headers={"content-type": "application/json"})
    assert_envelope(answer, 413, "payload_too_large")


def test_not_found_path_and_record(client):
    assert_envelope(client.get("/v1/nothing/here"), 404, "not_found")
    assert_envelope(client.get("/v1/contacts/ctc_missing"), 404, "not_found", "id")
    assert_envelope(client.get("/v1/companies/cmp_missing"), 404, "not_found", "id")


def test_method_not_allowed(client):
    assert_envelope(client.delete("/v1/contacts/search"), 405, "method_not_allowed")
    assert_envelope(client.options("/v1/contacts/search"), 405, "method_not_allowed")
    assert_envelope(client.put("/health"), 405, "method_not_allowed")
    assert_envelope(client.post("/v1/companies/cmp_0001", json={}), 405, "method_not_allowed")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc",
                                    "Bearer qry_unknown", "Token qry_x", "bearer nope"])
def test_unauthorized_before_anything_else(served, header):
    settings, _ = served
    with TestClient(create_app(settings)) as anonymous:
        headers = {} if header is None else {"Authorization": header}
        for method, path, extra in [
            ("GET", "/v1/contacts/search", {}),
            ("GET", "/v1/no/such/path", {}),
            ("DELETE", "/v1/contacts/search", {}),
            ("POST", "/v1/contacts/search", {"content": b"x" * 70_000}),
        ]:
            answer = anonymous.request(method, path, headers=headers, **extra)
            assert_envelope(answer, 401, "unauthorized")
            assert answer.headers["www-authenticate"].lower().startswith("bearer")


def test_bearer_scheme_is_case_insensitive(served, client):
    _, key = served
    for scheme in ("bearer", "BEARER", "Bearer"):
        answer = client.get("/v1/companies/search", headers={"Authorization": f"{scheme} {key}"})
        assert answer.status_code == 200


def test_revoked_key_is_refused_at_once(served, client):
    settings, _ = served
    accounts = Accounts(settings.db_path)
    key, info = accounts.create_key("tester@example.com", "short-lived")
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/companies/search", headers=headers).status_code == 200
    accounts.revoke_key(info.prefix)
    assert_envelope(client.get("/v1/companies/search", headers=headers), 401, "unauthorized")


def test_unavailable_before_the_first_snapshot(tmp_path):
    settings = make_settings(tmp_path / "empty")
    accounts = Accounts(settings.db_path)
    accounts.create_user("a@example.com", "long enough pw")
    key, _ = accounts.create_key("a@example.com", "k")
    with TestClient(create_app(settings)) as fresh:
        assert_envelope(fresh.get("/health"), 503, "unavailable")
        answer = fresh.get("/v1/contacts/search", headers={"Authorization": f"Bearer {key}"})
        assert_envelope(answer, 503, "unavailable")


def test_internal_error_leaks_nothing(client, monkeypatch):
    import service.app

    def explode(_request):
        raise RuntimeError("SELECT secret FROM /srv/quarry/data/x.duckdb")

    monkeypatch.setattr(service.app, "compile_companies_query", explode)
    body = assert_envelope(client.post("/v1/companies/search", json={}), 500, "internal_error")
    assert "SELECT" not in body["errors"][0]["details"]
    assert "/srv" not in body["errors"][0]["details"]


def test_rate_limited_per_key_with_retry_after(tmp_path, fixture_drop):
    from service.refresh import refresh
    from service.snapshots import SnapshotStore

    settings = make_settings(tmp_path / "data", QUARRY_RATE_LIMIT="2")
    refresh(SnapshotStore(settings.data_dir), fixture_drop)
    accounts = Accounts(settings.db_path)
    accounts.create_user("busy@example.com", "long enough pw")
    keys = [accounts.create_key("busy@example.com", name)[0] for name in ("a", "b")]
    with TestClient(create_app(settings)) as fresh:
        first = [fresh.get("/v1/companies/search", headers={"Authorization": f"Bearer {keys[0]}"})
                 for _ in range(6)]
        assert [a.status_code for a in first[:4]] == [200] * 4  # a burst of twice the rate
        assert first[0].headers["ratelimit-limit"] == "4"
        limited = first[-1]
        assert_envelope(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        other = fresh.get("/v1/companies/search", headers={"Authorization": f"Bearer {keys[1]}"})
        assert other.status_code == 200  # limits are per key, not per caller


def test_token_bucket_refills_at_the_rate():
    from service.ratelimit import TokenBuckets

    now = [0.0]
    buckets = TokenBuckets(rate=10, clock=lambda: now[0])
    assert all(buckets.take("k").allowed for _ in range(20))
    refused = buckets.take("k")
    assert not refused.allowed and refused.retry_after == 1
    now[0] += 0.1
    assert buckets.take("k").allowed and not buckets.take("k").allowed
    now[0] += 10
    assert buckets.take("k").remaining == 19


def test_query_timeout_with_a_one_millisecond_budget(tmp_path, fixture_drop):
    from service.refresh import refresh
    from service.snapshots import SnapshotStore

    settings = make_settings(tmp_path / "data", QUARRY_QUERY_TIMEOUT_MS="1")
    refresh(SnapshotStore(settings.data_dir), fixture_drop)
    with keyed_client(settings, "slow@example.com") as fresh:
        for _ in range(3):
            assert_envelope(fresh.post("/v1/contacts/search", json={"job_titles": ["a"]}),
                            503, "query_timeout")
            assert_envelope(fresh.get("/v1/companies/search"), 503, "query_timeout")


def test_a_format_of_the_wrong_type_is_named_not_echoed(client):
    nested = {"format": [[["csv"] * 50] * 20]}
    body = assert_envelope(client.post("/v1/contacts/export", json=nested),
                           400, "invalid_input", "format")
    assert body["errors"][0]["details"].endswith("got an array")
