"""The compiler's SQL fragments and parameters, filter by filter."""

from __future__ import annotations

import duckdb
import pytest

from service.compiler import compile_companies_query, compile_contacts_query, contacts_where
from service.search_requests import CompanySearch, ContactSearch, parse_json_body


def contacts(**fields) -> ContactSearch:
    return parse_json_body(__import__("json").dumps(fields).encode(), ContactSearch, "contacts")


CASES = [
    ({"industries": ["Retail", "Banking"]},
     "(company_idx IN (SELECT idx FROM company WHERE (industry_key IN (lower(?), lower(?)))))",
     ["Retail", "Banking"]),
    ({"exclude_industries": ["Retail"]},
     "(company_idx IN (SELECT idx FROM company WHERE "
     "(NOT coalesce((industry_key IN (lower(?))), false))))", ["Retail"]),
    ({"tlds": [".io", "DE"]}, "tld IN (lower(?), lower(?))", ["io", "DE"]),
    ({"technologies": ["React"]},
     "idx IN (SELECT company_idx FROM company_technology WHERE tech_key IN (lower(?)))",
     ["React"]),
    ({"locations": ["city:London||||United Kingdom", "state:CA"]},
     "((city_key = lower(?) AND country_key = lower(?)) OR (state_key = lower(?)))",
     ["London", "United Kingdom", "CA"]),
    ({"job_titles": ["50%_\\"]},
     "(title_idx IN (SELECT idx FROM title WHERE contains(title_key, lower(?))))", ["50%_\\"]),
    ({"exclude_job_titles": ["ceo", "cto"]},
     "(NOT coalesce((title_idx IN (SELECT idx FROM title WHERE contains(title_key, lower(?)) "
     "OR contains(title_key, lower(?)))), false))", ["ceo", "cto"]),
    ({"departments": ["Sales"], "seniorities": ["VP"]},
     "(department_key IN (lower(?))) AND (seniority_key IN (lower(?)))", ["Sales", "VP"]),
    ({"is_decision_maker": True, "has_linkedin_profile": True, "has_personal_emails": False},
     "(has_linkedin) AND (is_decision_maker)", []),
    ({"is_decision_maker": False}, "true", []),
    ({"added_after": "2024-01-01", "added_before": "2024-02-01T00:00:00+01:00"},
     "(created_at >= ?) AND (created_at <= ?)", None),
    ({}, "true", []),
]


@pytest.mark.parametrize(("fields", "sql", "params"), CASES)
def test_each_filter_compiles_to_its_fragment(fields, sql, params):
    where = contacts_where(contacts(**fields))
    assert sql in where.sql
    if params is not None:
        assert where.params == params
    assert "Retail" not in where.sql and "London" not in where.sql  # values are never inlined


def test_timestamps_are_bound_as_naive_utc():
    where = contacts_where(contacts(added_before="2024-02-01T00:00:00+01:00"))
    assert [str(p) for p in where.params] == ["2024-01-31 23:00:00"]


def test_paging_is_bound_and_ordered_by_id():
    query = compile_companies_query(CompanySearch(page=3, per_page=20, industries=["Retail"]))
    assert query.page_sql.endswith("ORDER BY id LIMIT ? OFFSET ?")
    assert query.page_params == ["Retail", 20, 40]
    assert query.count_params == ["Retail"]


def test_compiled_sql_is_valid_duckdb(served):
    settings, _ = served
    from service.snapshots import SnapshotStore

    store = SnapshotStore(settings.data_dir)
    db = duckdb.connect(str(store.path_of(store.current_version()) / "quarry.duckdb"),
                        read_only=True)
    for fields, _, _ in CASES:
        query = compile_contacts_query(contacts(**fields))
        db.execute(query.page_sql, query.page_params).fetchall()
        assert db.execute(query.count_sql, query.count_params).fetchone()[0] >= 0


def test_hostile_strings_stay_values(client):
    hostile = ["'; DROP TABLE contact; --", "\" OR 1=1 --", "%", "_", "\\", "\u202eevil",
               "😀", "x" * 200, "a'b\"c"]
    for field in ("job_titles", "industries", "technologies", "exclude_job_titles"):
        answer = client.post("/v1/contacts/search", json={field: hostile})
        assert answer.status_code == 200, answer.text
    assert client.get("/health").json()["data"]["contacts"] > 0
