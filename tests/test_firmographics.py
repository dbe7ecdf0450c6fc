"""SPEC v2's firmographic filters and company members: their validation, the cases the random
oracle test meets only by chance, a drop without the optional columns, and the documents."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from service.refresh import refresh
from service.snapshots import SnapshotStore
from tests.conftest import make_settings
from tests.fixture_drop import write_fixture_drop
from tests.oracle import company_matches, domain_key, fold

SPELLINGS = ["{}", "https://www.{}/about", "WWW.{}", "{}.", "http://{}:8080/x?y#z", " {} "]


def every_id(client, path: str, fields: dict) -> list[str]:
    ids, page = [], 1
    while True:
        body = client.post(path, json={**fields, "page": page, "per_page": 100}).json()
        assert body["errors"] == [], body
        ids += [record["id"] for record in body["data"]]
        if page >= body["meta"]["total_pages"]:
            return ids
        page += 1


def errors_of(answer) -> list[tuple[str, str]]:
    assert answer.status_code == 400, answer.text
    return [(error["id"], error.get("field")) for error in answer.json()["errors"]]


def test_every_domain_of_the_drop_in_every_spelling_finds_its_companies(client, oracle_rows):
    """Dirty on both sides: the drop's domains (www., scheme, path, port, trailing dot, case)
    and the request's, normalised alike; a domain two companies share finds both."""
    companies, people = oracle_rows
    keys = sorted({domain_key(c["domain"]) for c in companies.values() if c["domain"]})
    assert "shared-domain.io" in keys and len(keys) > 100
    for i, key in enumerate(keys[:60]):
        spelled = SPELLINGS[i % len(SPELLINGS)].format(key.upper() if i % 2 else key)
        expected = sorted(cid for cid, c in companies.items() if domain_key(c["domain"]) == key)
        assert every_id(client, "/v1/companies/search", {"domains": [spelled]}) == expected
    shared = sorted(cid for cid, c in companies.items()
                    if domain_key(c["domain"]) == "shared-domain.io")
    assert len(shared) > 1
    contacts = every_id(client, "/v1/contacts/search", {"domains": ["HTTPS://Shared-Domain.IO/"]})
    assert contacts == sorted(k for k, row in people.items() if row["company_id"] in shared)


def test_an_account_list_of_1000_domains(client, oracle_rows):
    companies, _ = oracle_rows
    keys = sorted({domain_key(c["domain"]) for c in companies.values() if c["domain"]})
    listed = keys + [f"nobody{i}.example" for i in range(1000 - len(keys))]
    assert len(listed) == 1000
    body = client.post("/v1/companies/search", json={"domains": listed}).json()
    assert body["meta"]["total"] == sum(1 for c in companies.values() if c["domain"])
    excluded = client.post("/v1/companies/search", json={"exclude_domains": listed}).json()
    assert excluded["meta"]["total"] == sum(1 for c in companies.values() if not c["domain"])
    assert errors_of(client.post("/v1/companies/search", json={"domains": listed + ["x.io"]})
                     ) == [("invalid_input", "domains")]
    assert errors_of(client.post("/v1/contacts/search", json={"exclude_domains": listed * 2})
                     ) == [("invalid_input", "exclude_domains")]


def test_employee_counts_of_null_never_match(client, oracle_rows):
    companies, _ = oracle_rows
    unknown = {cid for cid, c in companies.items() if c["employee_count"] is None}
    assert unknown
    for fields in ({"employee_count_min": 0}, {"employee_count_max": 10**12},
                   {"employee_count_min": 0, "employee_count_max": 10**12}):
        found = set(every_id(client, "/v1/companies/search", fields))
        assert found == set(companies) - unknown
    exact = next(c["employee_count"] for c in companies.values() if c["employee_count"])
    found = every_id(client, "/v1/companies/search",
                     {"employee_count_min": exact, "employee_count_max": exact})
    assert found == sorted(cid for cid, c in companies.items() if c["employee_count"] == exact)


def test_company_names_are_substrings_with_literal_wildcards(client, oracle_rows):
    companies, _ = oracle_rows
    for value in ("COMPANY 01", "pany 0", "%", "_", "\\", "y 0_2"):
        expected = sorted(cid for cid, c in companies.items()
                          if company_matches(c, {"company_names": [value]}))
        assert every_id(client, "/v1/companies/search", {"company_names": [value]}) == expected
    assert every_id(client, "/v1/companies/search", {"company_names": ["%"]}) == []


def test_domains_compare_in_nfc(client, oracle_rows):
    """SPEC 3.1 (v2): `u` + U+0308 is `ü`; the drop has über.de domains, written composed."""
    companies, _ = oracle_rows
    umlaut = sorted(cid for cid, c in companies.items()
                    if (domain_key(c["domain"]) or "").endswith(".über.de"))
    assert umlaut
    key = domain_key(companies[umlaut[0]]["domain"]).replace("ü", "u\u0308")
    assert "ü" not in key
    assert every_id(client, "/v1/companies/search", {"domains": [key.upper()]}) == umlaut[:1]


def test_company_flags(client, oracle_rows):
    companies, people = oracle_rows
    paged = sorted(cid for cid, c in companies.items() if fold(c["linkedin_url"]))
    generic = sorted(cid for cid, c in companies.items()
                     if any(fold(e) for e in c["generic_emails"] or []))
    assert 0 < len(paged) < len(companies) and 0 < len(generic) < len(companies)
    # a page of only spaces is no page; a list of only empty addresses is no address
    assert any(c["linkedin_url"] == "  " for c in companies.values())
    assert every_id(client, "/v1/companies/search", {"company_has_linkedin_profile": True}) == paged
    assert every_id(client, "/v1/companies/search", {"company_has_generic_email": True}) == generic
    assert len(every_id(client, "/v1/companies/search",
                        {"company_has_generic_email": False})) == len(companies)
    contacts = client.get("/v1/contacts/search?company_has_generic_email=1").json()["meta"]
    assert contacts["total"] == sum(1 for k in people.values() if k["company_id"] in generic)


@pytest.mark.parametrize(("fields", "field"), [
    ({"employee_count_min": 10, "employee_count_max": 9}, "employee_count_min"),
    ({"employee_count_min": -1}, "employee_count_min"),
    ({"employee_count_max": -5}, "employee_count_max"),
    ({"employee_count_min": 2.0}, "employee_count_min"),
    ({"employee_count_max": "10"}, "employee_count_max"),
    ({"domains": ["https://"]}, "domains"),
    ({"domains": ["acme.io", "www./"]}, "domains"),
    ({"exclude_domains": ["...", "ok.io"]}, "exclude_domains"),
    ({"domains": [":8080"]}, "domains"),
    ({"domains": "acme.io"}, "domains"),
    ({"company_names": [" "]}, "company_names"),
    ({"exclude_company_names": ["x" * 201]}, "exclude_company_names"),
    ({"company_names": ["x"] * 101}, "company_names"),
    ({"company_has_linkedin_profile": "yes"}, "company_has_linkedin_profile"),
    ({"company_has_generic_email": 1}, "company_has_generic_email"),
])
@pytest.mark.parametrize("path", ["/v1/contacts/search", "/v1/companies/search",
                                  "/v1/contacts/export", "/v1/companies/export"])
def test_bad_values_are_invalid_input_naming_the_field(client, path, fields, field):
    assert errors_of(client.post(path, json=fields)) == [("invalid_input", field)]


def test_bad_values_in_a_query_string(client):
    for query, field in ((("employee_count_min", "x"),), "employee_count_min"), (
            (("employee_count_min", "5"), ("employee_count_max", "4")), "employee_count_min"), (
            (("domains", "http://www."),), "domains"), (
            (("company_has_generic_email", ""),), "company_has_generic_email"), (
            (("employee_count_max", "1"), ("employee_count_max", "2")), "employee_count_max"):
        answer = client.get(f"/v1/companies/search?{urlencode(query)}")
        assert errors_of(answer) == [("invalid_input", field)], query
    several = client.post("/v1/contacts/search", json={
        "employee_count_min": 3, "employee_count_max": 1, "domains": ["/"], "emploee_count": 1})
    assert sorted(errors_of(several)) == sorted([
        ("invalid_input", "employee_count_min"), ("invalid_input", "domains"),
        ("invalid_input", "emploee_count")])


def test_get_form_of_the_new_filters_is_the_post_form(client):
    fields = {"employee_count_min": 10, "employee_count_max": 4000,
              "domains": ["www.Shared-Domain.io/", "c0002.x.ai"], "exclude_company_names": ["7"],
              "company_has_linkedin_profile": True, "per_page": 50}
    pairs = [(name, str(item).lower() if isinstance(item, bool) else str(item))
             for name, value in fields.items()
             for item in (value if isinstance(value, list) else [value])]
    for kind in ("contacts", "companies"):
        by_get = client.get(f"/v1/{kind}/search?{urlencode(pairs)}")
        by_post = client.post(f"/v1/{kind}/search", json=fields)
        assert by_get.status_code == 200 and by_get.content == by_post.content
        assert by_post.json()["meta"]["total"] > 0


def test_exports_take_the_new_filters_and_carry_the_new_members(client):
    import csv
    import io

    fields = {"company_has_generic_email": True, "exclude_domains": ["shared-domain.io"]}
    expected = client.post("/v1/companies/search", json={**fields, "per_page": 100}).json()
    answer = client.post("/v1/companies/export", json={**fields, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert int(answer.headers["quarry-total-count"]) == expected["meta"]["total"] == len(rows)
    assert [r["id"] for r in rows][:100] == [r["id"] for r in expected["data"]]
    assert all(row["generic_emails"] for row in rows)
    contacts = client.post("/v1/contacts/export", json={**fields, "format": "csv", "limit": 50})
    header = next(csv.reader(io.StringIO(contacts.text)))
    assert {"company_linkedin_url", "company_generic_emails"} <= set(header)
    lines = client.post("/v1/contacts/export", json={**fields, "limit": 5}).text.splitlines()
    assert all(json.loads(line)["company"]["generic_emails"] for line in lines)


def test_a_drop_without_the_optional_columns_still_refreshes(tmp_path):
    """SPEC 4 (v2): a drop made before linkedin_url and generic_emails existed is read as if
    they were all null; its records have null and []."""
    from litestar.testing import TestClient

    from service.accounts import Accounts
    from service.app import create_app

    for fmt in ("parquet", "csv"):
        drop = tmp_path / f"old-{fmt}"
        write_fixture_drop(drop, companies=30, contacts=100, fmt=fmt, optional_columns=False)
        header = (drop / f"companies.{fmt}").read_bytes()[:400]
        assert fmt == "parquet" or b"linkedin_url" not in header
        settings = make_settings(tmp_path / f"data-{fmt}")
        result = refresh(SnapshotStore(settings.data_dir), drop)
        assert result.companies == 30 and result.contacts == 100
        accounts = Accounts(settings.db_path)
        accounts.create_user("old@example.com", "correct horse battery")
        key, _ = accounts.create_key("old@example.com", "tests")
        with TestClient(create_app(settings)) as old:
            old.headers["Authorization"] = f"Bearer {key}"
            companies = old.post("/v1/companies/search", json={"per_page": 100}).json()["data"]
            assert len(companies) == 30
            assert all(c["linkedin_url"] is None and c["generic_emails"] == [] for c in companies)
            for flag in ("company_has_linkedin_profile", "company_has_generic_email"):
                body = old.post("/v1/contacts/search", json={flag: True}).json()
                assert body["meta"]["total"] == 0
            # no company has a page: its lookup table is empty, and matching on it finds none
            body = old.post("/v1/companies/match", json={"inputs": [
                {"linkedin_url": "https://www.linkedin.com/company/x"},
                {"name": companies[0]["name"]}]}).json()
            assert [i["status"] for i in body["data"]] == ["no_match", "matched"]


def test_the_openapi_document_describes_the_new_fields_and_members(client):
    document = client.get("/schema/openapi.json").json()
    schemas = document["components"]["schemas"]
    for request in ("ContactSearch", "CompanySearch", "ContactExport", "CompanyExport"):
        properties = schemas[request]["properties"]
        for field in ("employee_count_min", "employee_count_max", "domains", "exclude_domains",
                      "company_names", "exclude_company_names", "company_has_linkedin_profile",
                      "company_has_generic_email"):
            assert properties[field].get("description"), (request, field)
        assert properties["domains"]["anyOf"][0]["maxItems"] == 1000
        assert properties["employee_count_min"]["anyOf"][0]["minimum"] == 0
    company = schemas["Company"]["properties"]
    assert company["generic_emails"]["type"] == "array" and "linkedin_url" in company
    parameters = {p["name"] for p in document["paths"]["/v1/companies/search"]["get"][
        "parameters"]}
    assert {"domains", "employee_count_max", "company_has_generic_email"} <= parameters
