"""Hundreds of random filter combinations: the API must agree with the plain-Python oracle."""

from __future__ import annotations

import random
from urllib.parse import urlencode

import pytest

from tests.fixture_drop import (
    DEPARTMENTS,
    FUNCTIONS,
    INDUSTRIES,
    LOCATIONS,
    SENIORITIES,
    TECHNOLOGIES,
    TITLES,
)
from tests.oracle import company_matches, contact_matches, domain_key


def wobble(rng: random.Random, text: str) -> str:
    """Same value, different case and surrounding space."""
    text = rng.choice([text, text.upper(), text.lower(), text.title()])
    return rng.choice(["", " ", "\t"]) + text + rng.choice(["", "  "])


def random_location(rng: random.Random) -> str:
    city, state, country = rng.choice([loc for loc in LOCATIONS if loc[2]])
    kind = rng.choice(["city", "state", "country"] if city and state else ["country"])
    if kind == "country":
        parts = [country]
    elif kind == "state":
        parts = [state, rng.choice([country, ""])]
    else:
        parts = [city, rng.choice([state or "", ""]), rng.choice([country, ""])]
        while len(parts) > 1 and rng.random() < 0.3 and parts[-1] == "":
            parts.pop()
    return rng.choice([kind, kind.upper(), kind.title()]) + ":" + "||".join(
        wobble(rng, p) if p else p for p in parts)


def random_values(rng, vocab, field):
    if field == "tlds":
        return [rng.choice(["", "."]) + rng.choice(["io", "UK", "com", "de", "ai", "org", "nl"])]
    values = [v for v in vocab if v]
    if field == "job_titles":
        picks = []
        for _ in range(rng.randint(1, 2)):
            title = rng.choice(values)
            start = rng.randint(0, len(title) - 1)
            picks.append(title[start:start + rng.randint(1, 6)].strip() or title)
        picks += rng.sample(["%", "_", "\\", "50%", "a_b", "manager"], rng.randint(0, 1))
        return [wobble(rng, p) for p in picks]
    chosen = rng.sample(values, rng.randint(1, min(3, len(values))))
    if rng.random() < 0.2:
        chosen.append("no such value")
    return [wobble(rng, v) for v in chosen]


COMPANY_VOCAB = {"industries": INDUSTRIES, "functions": FUNCTIONS, "technologies": TECHNOLOGIES,
                 "tlds": None}
CONTACT_VOCAB = {"job_titles": TITLES, "departments": DEPARTMENTS, "seniorities": SENIORITIES}


def random_domains(rng: random.Random, companies: dict) -> list[str]:
    """Domains of the drop, spelled as a CRM would (scheme, www., path, case, trailing dot),
    and some that no company has."""
    known = [c["domain"] for c in companies.values() if c["domain"]]
    picks = []
    for _ in range(rng.choice([1, 2, 3, 30])):
        bare = domain_key(rng.choice(known)) if rng.random() < 0.85 else "nobody.example"
        picks.append(rng.choice(["{}", "https://www.{}/team", "WWW.{}", "{}.", "{}:443",
                                 "http://{}?q=1"]).format(wobble(rng, bare).strip()))
    return picks


def random_company_names(rng: random.Random) -> list[str]:
    # names are "Company 0123": parts of them, digits, and characters LIKE would misread
    return [wobble(rng, rng.choice(["company 00", "pany 01", "1", "23", "Company", "%", "_",
                                    "\\", "zz"])) for _ in range(rng.randint(1, 2))]


def random_v2_filters(rng: random.Random, request: dict, companies: dict) -> None:
    """SPEC v2's company filters, into `request`."""
    if rng.random() < 0.25:
        request["employee_count_min"] = rng.choice([0, 10, 500, 2500])
    if rng.random() < 0.25:
        request["employee_count_max"] = rng.choice([0, 100, 2600, 4999])
        if request.get("employee_count_min", 0) > request["employee_count_max"]:
            del request["employee_count_min"]
    for field, values in (("domains", lambda: random_domains(rng, companies)),
                          ("company_names", lambda: random_company_names(rng))):
        roll = rng.random()
        if roll < 0.2:
            request[field] = values()
        elif roll < 0.3:
            request[f"exclude_{field}"] = values()
    for flag in ("company_has_linkedin_profile", "company_has_generic_email"):
        if rng.random() < 0.15:
            request[flag] = rng.choice([True, False])


def random_request(rng: random.Random, contacts: bool, companies: dict | None = None) -> dict:
    request: dict = {}
    if companies is not None:
        random_v2_filters(rng, request, companies)
    fields = dict(COMPANY_VOCAB, **(CONTACT_VOCAB if contacts else {}))
    for field, vocab in fields.items():
        roll = rng.random()
        if roll < 0.2:
            request[field] = random_values(rng, vocab, field)
        elif roll < 0.3:
            request[f"exclude_{field}"] = random_values(rng, vocab, field)
    if rng.random() < 0.3:
        request["locations"] = [random_location(rng) for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.15:
        request["exclude_locations"] = [random_location(rng)]
    if rng.random() < 0.2:
        request["added_after"] = f"{rng.randint(2015, 2025)}-0{rng.randint(1, 9)}-01"
    if rng.random() < 0.2:
        request["added_before"] = f"{rng.randint(2021, 2026)}-01-15T12:00:00+02:00"
        if "added_after" in request and request["added_after"] > request["added_before"]:
            del request["added_after"]
    if contacts:
        for flag in ("has_personal_emails", "has_linkedin_profile", "is_decision_maker"):
            if rng.random() < 0.2:
                request[flag] = rng.choice([True, False])
    request["per_page"] = rng.choice([5, 25, 100])
    request["page"] = rng.randint(1, 3)
    return request


def expected_ids(oracle_rows, request: dict, contacts: bool) -> list[str]:
    companies, people = oracle_rows
    if contacts:
        found = [cid for cid, k in people.items()
                 if contact_matches(k, companies[k["company_id"]], request)]
    else:
        found = [cid for cid, c in companies.items() if company_matches(c, request)]
    return sorted(found)


@pytest.mark.parametrize("contacts", [True, False], ids=["contacts", "companies"])
def test_api_agrees_with_oracle(client, oracle_rows, contacts):
    rng = random.Random(20261126 + contacts)
    path = "/v1/contacts/search" if contacts else "/v1/companies/search"
    non_empty = 0
    for _ in range(300):
        request = random_request(rng, contacts, oracle_rows[0])
        answer = client.post(path, json=request)
        assert answer.status_code == 200, (request, answer.text)
        body = answer.json()
        ids = expected_ids(oracle_rows, request, contacts)
        start = (request["page"] - 1) * request["per_page"]
        assert body["meta"]["total"] == len(ids), request
        assert [r["id"] for r in body["data"]] == ids[start:start + request["per_page"]], request
        non_empty += bool(body["data"])
    assert non_empty > 40  # the random requests must not all be vacuous


def test_get_and_post_return_identical_bodies(client, oracle_rows):
    rng = random.Random(5)
    for _ in range(60):
        request = random_request(rng, contacts=True, companies=oracle_rows[0])
        pairs = []
        for name, value in request.items():
            for item in value if isinstance(value, list) else [value]:
                pairs.append((name, str(item).lower() if isinstance(item, bool) else str(item)))
        by_get = client.get(f"/v1/contacts/search?{urlencode(pairs)}")
        by_post = client.post("/v1/contacts/search", json=request)
        assert by_get.status_code == by_post.status_code == 200
        assert by_get.content == by_post.content


def test_exclusion_keeps_records_without_a_value(client, oracle_rows):
    companies, _ = oracle_rows
    no_industry = {cid for cid, c in companies.items() if not (c["industry"] or "").strip()}
    assert no_industry
    found = set()
    page = 1
    while True:
        body = client.post("/v1/companies/search", json={
            "exclude_industries": ["Retail", "Software Development"], "per_page": 100,
            "page": page}).json()
        found |= {r["id"] for r in body["data"]}
        if page >= body["meta"]["total_pages"]:
            break
        page += 1
    assert no_industry <= found


def _clean(value):
    if isinstance(value, str):
        return value.strip() or None
    return value


def test_records_are_the_drop_rows_in_the_documented_shape(client, oracle_rows):
    import msgspec

    from service.records import Company, Contact

    companies, people = oracle_rows
    checked = 0
    for page in (1, 2, 3):
        body = client.post("/v1/contacts/search", json={"per_page": 100, "page": page}).json()
        for record in body["data"]:
            msgspec.convert(record, Contact, strict=False)  # every field, of the right type
            row = people[record["id"]]
            company = companies[row["company_id"]]
            first, last = _clean(row["first_name"]), _clean(row["last_name"])
            assert record["first_name"] == first and record["last_name"] == last
            assert record["full_name"] == (" ".join(p for p in (first, last) if p) or None)
            assert record["job_title"] == _clean(row["job_title"])
            assert record["is_decision_maker"] is bool(row["is_decision_maker"])
            assert record["emails"] == {"work": _clean(row["work_email"]),
                                        "personal": row["personal_emails"] or []}
            assert record["linkedin_url"] == _clean(row["linkedin_url"])
            got = record["company"]
            assert got["id"] == company["id"] and got["name"] == company["name"]
            domain = _clean(company["domain"])
            assert got["domain"] == (domain.lower() if domain else None)
            # the tld is the last label of the normalised domain (www.x.io/ -> io)
            assert got["tld"] == (domain_key(domain).split(".")[-1] if domain else None)
            assert got["linkedin_url"] == _clean(company["linkedin_url"])
            assert got["generic_emails"] == [e.strip() for e in company["generic_emails"] or []
                                             if e.strip()]
            assert got["location"] == {"city": _clean(company["city"]),
                                       "state": _clean(company["state"]),
                                       "country": _clean(company["country"])}
            assert got["technologies"] == [t.strip() for t in company["technologies"] or []
                                           if t.strip()]
            assert got["employee_count"] == company["employee_count"]
            assert got["created_at"] == company["created_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
            checked += 1
    one = client.get(f"/v1/companies/{got['id']}").json()["data"]
    msgspec.convert(one, Company, strict=False)
    assert one == got
    assert checked == 300
