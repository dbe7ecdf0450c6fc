"""The compiler's SQL fragments and parameters, filter by filter."""

from __future__ import annotations

import pytest

from service.compiler import compile_companies_query, compile_contacts_query, contacts_where
from service.search_requests import CompanySearch, ContactSearch, parse_json_body


def contacts(**fields) -> ContactSearch:
    return parse_json_body(__import__("json").dumps(fields).encode(), ContactSearch, "contacts")


CASES = [
    ({"industries": ["Retail", "Banking"]}, "(industry_key IN (lower(?), lower(?)))",
     ["Retail", "Banking"]),
    ({"exclude_industries": ["Retail"]}, "(NOT coalesce((industry_key IN (lower(?))), false))",
     ["Retail"]),
    ({"tlds": [".io", "DE"]}, "tld IN (lower(?), lower(?))", ["io", "DE"]),
    ({"technologies": ["React"]},
     "company_idx IN (SELECT company_idx FROM company_technology WHERE tech_key IN (lower(?)))",
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
    # idx and cidx are the positions of the records in id order.
    query = compile_companies_query(CompanySearch(page=3, per_page=20, industries=["Retail"]))
    assert query.page_sql.endswith("ORDER BY idx LIMIT ? OFFSET ?")
    assert query.page_params == ["Retail", 20, 40]
    assert query.count_params == ["Retail"]
    query = compile_contacts_query(contacts(page=2, per_page=10, seniorities=["VP"]))
    assert query.page_sql.startswith("SELECT cidx FROM contact")
    assert query.page_sql.endswith("ORDER BY cidx LIMIT ? OFFSET ?")
    assert query.page_params == ["VP", 10, 10]


def test_contacts_total_uses_company_counts_when_only_companies_are_filtered():
    only_companies = compile_contacts_query(contacts(industries=["Retail"], tlds=["io"]))
    assert only_companies.count_sql.startswith("SELECT coalesce(sum(contact_count), 0) FROM "
                                               "company WHERE")
    assert only_companies.count_params == ["Retail", "io"]
    both = compile_contacts_query(contacts(industries=["Retail"], is_decision_maker=True))
    assert both.count_sql.startswith("SELECT count(*) FROM contact WHERE")


def test_compiled_sql_is_valid_duckdb(served):
    from service.app import duckdb_config
    from service.snapshots import SnapshotStore, open_snapshot

    settings, _ = served
    store = SnapshotStore(settings.data_dir)
    # The same configuration as the app: DuckDB allows one per database file and process.
    db = open_snapshot(store, store.current_version(), duckdb_config(settings)).cursor()
    for fields, _, _ in CASES:
        query = compile_contacts_query(contacts(**fields))
        positions = [row[0] for row in db.execute(query.page_sql, query.page_params).fetchall()]
        assert len(db.execute(query.records_sql, [positions]).fetchall()) == len(positions)
        assert db.execute(query.count_sql, query.count_params).fetchone()[0] >= 0


def test_hostile_strings_stay_values(client):
    hostile = ["'; DROP TABLE contact; --", "\" OR 1=1 --", "%", "_", "\\", "\u202eevil",
               "😀", "x" * 200, "a'b\"c"]
    for field in ("job_titles", "industries", "technologies", "exclude_job_titles"):
        answer = client.post("/v1/contacts/search", json={field: hostile})
        assert answer.status_code == 200, answer.text
    assert client.get("/health").json()["data"]["contacts"] > 0
