"""Match (SPEC 3.6) against a plain-Python reading of the contract over the fixture drop, which
has shared emails, case variants, LinkedIn URLs in every spelling, domains two companies
share and contacts of one name at one company; and every kind of bad input."""

from __future__ import annotations

import json
import random
import re

import pytest

from tests.fixture_drop import LINKEDIN_SPELLINGS
from tests.oracle import domain_key, fold_nfc
from tests.test_firmographics import errors_of


def linkedin_key(text: str | None) -> str | None:
    """SPEC 3.6: lower-cased; the scheme, then a leading www. or two-letter country
    subdomain, removed; the query, the fragment and trailing slashes removed."""
    text = fold_nfc(text)
    if text is None:
        return None
    text = re.sub(r"^[a-z][a-z0-9+.\-]*://", "", text)
    text = re.sub(r"^(www|[a-z]{2})\.", "", text)
    return re.split(r"[?#]", text, maxsplit=1)[0].rstrip("/") or None


def contact_keys(contact: dict, company: dict) -> dict:
    emails = {fold_nfc(e) for e in [contact["work_email"], *(contact["personal_emails"] or [])]}
    return {"email": emails - {None}, "linkedin_url": linkedin_key(contact["linkedin_url"]),
            "first": fold_nfc(contact["first_name"]), "last": fold_nfc(contact["last_name"]),
            "domain": domain_key(company["domain"]), "name": fold_nfc(company["name"])}


_KEYS: dict[int, dict] = {}


def _keys_of(people: dict, companies: dict) -> dict:
    if id(people) not in _KEYS:
        _KEYS[id(people)] = {cid: contact_keys(k, companies[k["company_id"]])
                             for cid, k in people.items()}
    return _KEYS[id(people)]


def expected_contact(people: dict, companies: dict, given: dict) -> tuple:
    """(status, matched_on, candidates, id) for one contact input, as SPEC 3.6 words it."""
    keys = _keys_of(people, companies)
    tried = []
    if "email" in given:
        tried.append(("email", {c for c, k in keys.items() if fold_nfc(given["email"])
                                in k["email"]}))
    if "linkedin_url" in given:
        tried.append(("linkedin_url", {c for c, k in keys.items() if k["linkedin_url"]
                                       == linkedin_key(given["linkedin_url"])}))
    if "first_name" in given and "last_name" in given and (
            "company_domain" in given or "company_name" in given):
        tried.append(("name_and_company", {
            c for c, k in keys.items()
            if k["first"] == fold_nfc(given["first_name"])
            and k["last"] == fold_nfc(given["last_name"])
            and (("company_domain" in given and k["domain"] is not None
                  and k["domain"] == domain_key(given["company_domain"]))
                 or ("company_name" in given and k["name"] == fold_nfc(given["company_name"])))}))
    return decide(tried)


def expected_company(companies: dict, given: dict) -> tuple:
    tried = []
    if "domain" in given:
        tried.append(("domain", {c for c, row in companies.items() if domain_key(row["domain"])
                                 and domain_key(row["domain"]) == domain_key(given["domain"])}))
    if "linkedin_url" in given:
        tried.append(("linkedin_url", {
            c for c, row in companies.items() if linkedin_key(row["linkedin_url"])
            and linkedin_key(row["linkedin_url"]) == linkedin_key(given["linkedin_url"])}))
    if "name" in given:
        tried.append(("name", {c for c, row in companies.items()
                               if fold_nfc(row["name"]) == fold_nfc(given["name"])}))
    return decide(tried)


def decide(tried: list[tuple[str, set]]) -> tuple:
    most = 0
    for key, found in tried:
        most = max(most, len(found))
        if len(found) == 1:
            return "matched", key, most, next(iter(found))
    return ("ambiguous" if most > 1 else "no_match"), None, most, None


def spell_linkedin(rng: random.Random, url: str) -> str:
    key = linkedin_key(url).removeprefix("linkedin.com/")
    return rng.choice(LINKEDIN_SPELLINGS).format(rng.choice([key, key.upper()]))


def random_contact_input(rng: random.Random, people: dict, companies: dict) -> dict:
    contact = people[rng.choice(sorted(people))]
    company = companies[contact["company_id"]]
    given: dict = {}
    if rng.random() < 0.5:
        emails = [e for e in [contact["work_email"], *(contact["personal_emails"] or [])] if e]
        if emails:
            email = rng.choice(emails)
            given["email"] = rng.choice([email, email.upper(), f"  {email.title()} "])
        elif rng.random() < 0.5:
            given["email"] = "nobody@nowhere.example"
    if rng.random() < 0.4 and contact["linkedin_url"]:
        given["linkedin_url"] = spell_linkedin(rng, contact["linkedin_url"])
    if rng.random() < 0.6 and contact["first_name"] and contact["last_name"]:
        given["first_name"] = rng.choice([contact["first_name"], contact["first_name"].upper()])
        given["last_name"] = " " + contact["last_name"].lower()
        if company["domain"] and rng.random() < 0.6:
            given["company_domain"] = rng.choice(["https://{}/", "WWW.{}", "{}"]).format(
                domain_key(company["domain"]))
        if rng.random() < 0.5 or "company_domain" not in given:
            given["company_name"] = rng.choice([company["name"], company["name"].upper(),
                                                "No Such Company"])
    if not given:
        given["email"] = rng.choice(["shared@example.com", "SHARED@EXAMPLE.COM", "x@y.z"])
    if rng.random() < 0.5:
        given["ref"] = f"crm-{rng.randint(1, 10**6)}"
    return given


def random_company_input(rng: random.Random, companies: dict) -> dict:
    company = companies[rng.choice(sorted(companies))]
    given: dict = {}
    if rng.random() < 0.6 and company["domain"]:
        given["domain"] = rng.choice(["{}", "https://www.{}/about", "{}."]).format(
            domain_key(company["domain"]).upper())
    if rng.random() < 0.4 and linkedin_key(company["linkedin_url"]):
        given["linkedin_url"] = spell_linkedin(rng, company["linkedin_url"])
    if rng.random() < 0.5 or not given:
        given["name"] = rng.choice([company["name"].lower(), f" {company['name']} ", "nope"])
    return given


def check_answer(client, path: str, inputs: list[dict], expected: list[tuple]) -> list[dict]:
    answer = client.post(path, json={"inputs": inputs})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["errors"] == []
    assert body["meta"]["inputs"] == len(inputs)
    assert body["meta"]["matched"] == sum(e[0] == "matched" for e in expected)
    kind = path.split("/")[2]
    for given, item, (status, on, candidates, record_id) in zip(inputs, body["data"], expected,
                                                                strict=True):
        assert item["ref"] == given.get("ref"), given
        assert (item["status"], item["matched_on"], item["candidates"]) == (
            status, on, candidates), given
        if record_id is None:
            assert item["record"] is None
        else:  # the record of 3.4, as a lookup gives it
            assert item["record"] == client.get(f"/v1/{kind}/{record_id}").json()["data"]
    return body["data"]


def test_contacts_match_agrees_with_the_contract(client, oracle_rows):
    companies, people = oracle_rows
    rng = random.Random(3600)
    statuses = set()
    for _ in range(12):
        inputs = [random_contact_input(rng, people, companies)
                  for _ in range(rng.choice([1, 7, 100]))]
        expected = [expected_contact(people, companies, given) for given in inputs]
        statuses |= {e[0] for e in expected}
        check_answer(client, "/v1/contacts/match", inputs, expected)
    assert statuses == {"matched", "ambiguous", "no_match"}


def test_companies_match_agrees_with_the_contract(client, oracle_rows):
    companies, _ = oracle_rows
    rng = random.Random(3601)
    statuses = set()
    for _ in range(8):
        inputs = [random_company_input(rng, companies) for _ in range(rng.choice([1, 50, 100]))]
        expected = [expected_company(companies, given) for given in inputs]
        statuses |= {e[0] for e in expected}
        check_answer(client, "/v1/companies/match", inputs, expected)
    assert statuses == {"matched", "ambiguous", "no_match"}


def test_the_first_key_that_is_unique_decides(client, oracle_rows):
    """An ambiguous first key does not end the search: a unique second key matches, and
    `candidates` is the most records a tried key matched."""
    companies, people = oracle_rows
    sharing = [k for k in people.values() if fold_nfc(k["work_email"]) == "shared@example.com"]
    assert len(sharing) > 2  # and some spelled " Shared@Example.COM"
    assert len({k["work_email"] for k in sharing}) == 2
    unique = next(k for k in sharing if expected_contact(
        people, companies, {"linkedin_url": k["linkedin_url"] or "-"})[0] == "matched")
    given = {"ref": "crm-1", "email": "SHARED@example.com ",
             "linkedin_url": unique["linkedin_url"], "first_name": "x", "last_name": "y",
             "company_name": "z"}
    data = check_answer(client, "/v1/contacts/match", [given],
                        [expected_contact(people, companies, given)])
    shared = expected_contact(people, companies, {"email": "shared@example.com"})
    assert shared[0] == "ambiguous" and shared[2] >= len(sharing)
    assert data[0]["matched_on"] == "linkedin_url" and data[0]["candidates"] == shared[2]
    assert data[0]["record"]["id"] == unique["id"]
    # two contacts of one name at one company: the name is ambiguous, their email decides
    pairs: dict = {}
    for k in people.values():
        if k["first_name"] and k["last_name"]:
            pairs.setdefault((k["first_name"], k["last_name"], k["company_id"]), []).append(k)
    twins = next(group for group in pairs.values() if len(group) == 2
                 and all(expected_contact(people, companies, {"email": k["work_email"] or "-"})[0]
                         == "matched" for k in group))
    company = companies[twins[0]["company_id"]]
    by_name = {"first_name": twins[0]["first_name"], "last_name": twins[0]["last_name"],
               "company_name": company["name"]}
    data = check_answer(client, "/v1/contacts/match",
                        [by_name, {**by_name, "email": twins[1]["work_email"].upper()}],
                        [("ambiguous", None, 2, None),
                         ("matched", "email", 1, twins[1]["id"])])
    assert data[1]["record"]["company"]["id"] == company["id"]


def test_a_company_page_and_domain_shared_by_companies_are_ambiguous(client, oracle_rows):
    companies, _ = oracle_rows
    shared = [c for c in companies.values() if domain_key(c["domain"]) == "shared-domain.io"]
    inputs = [{"domain": "http://www.SHARED-domain.io/"},
              {"linkedin_url": "https://uk.linkedin.com/company/shared-page/?x=1"},
              {"domain": "shared-domain.io", "name": shared[0]["name"].upper()}]
    expected = [expected_company(companies, given) for given in inputs]
    assert [e[0] for e in expected] == ["ambiguous", "ambiguous", "matched"]
    check_answer(client, "/v1/companies/match", inputs, expected)


@pytest.mark.parametrize(("body", "fields"), [
    ({}, ["inputs"]),
    ({"inputs": []}, ["inputs"]),
    ({"inputs": {"email": "a@b.c"}}, ["inputs"]),
    ({"inputs": [{"email": "a@b.c"}] * 101}, ["inputs"]),
    ({"inputs": [{"email": "a@b.c"}], "input": []}, ["input"]),
    ({"inputs": ["a@b.c"]}, ["inputs[0]"]),
    ({"inputs": [{}]}, ["inputs[0]"]),
    ({"inputs": [{"ref": "only a ref"}]}, ["inputs[0]"]),
    ({"inputs": [{"first_name": "Ada", "last_name": "Lovelace"}]}, ["inputs[0]"]),
    ({"inputs": [{"first_name": "Ada", "company_domain": "acme.io"}]}, ["inputs[0]"]),
    ({"inputs": [{"email": "a@b.c"}, {"emial": "a@b.c"}]}, ["inputs[1].emial"]),
    ({"inputs": [{"email": 7}]}, ["inputs[0].email"]),
    ({"inputs": [{"email": ["a@b.c"]}]}, ["inputs[0].email"]),
    ({"inputs": [{"email": "   "}]}, ["inputs[0].email"]),
    ({"inputs": [{"email": "a" * 201}]}, ["inputs[0].email"]),
    ({"inputs": [{"email": "a@b.c", "ref": "r" * 201}]}, ["inputs[0].ref"]),
    ({"inputs": [{"email": "a@b.c", "ref": 17}]}, ["inputs[0].ref"]),
    ({"inputs": [{"linkedin_url": "https://"}]}, ["inputs[0].linkedin_url"]),
    ({"inputs": [{"first_name": "A", "last_name": "B", "company_domain": "http://www./"}]},
     ["inputs[0].company_domain"]),
    ({"inputs": [{"domain": "acme.io"}]}, ["inputs[0].domain"]),
    ({"inputs": [{"email": "a\x00@b.c"}]}, ["inputs[0].email"]),
    ({"inputs": [{"emial": "x"}, {"email": ""}, 3]},
     ["inputs[0].emial", "inputs[1].email", "inputs[2]"]),
])
def test_bad_contact_inputs_name_the_member(client, body, fields):
    answer = client.post("/v1/contacts/match", json=body)
    assert errors_of(answer) == [("invalid_input", field) for field in fields]


@pytest.mark.parametrize(("body", "fields"), [
    ({"inputs": [{"email": "a@b.c"}]}, ["inputs[0].email"]),
    ({"inputs": [{"domain": "."}]}, ["inputs[0].domain"]),
    ({"inputs": [{"name": True}]}, ["inputs[0].name"]),
    ({"inputs": [{"ref": "x", "nmae": "Acme"}]}, ["inputs[0].nmae"]),
])
def test_bad_company_inputs_name_the_member(client, body, fields):
    assert errors_of(client.post("/v1/companies/match", json=body)) == [
        ("invalid_input", field) for field in fields]


def test_bodies_that_are_not_requests(client):
    for body, error in ((b"{", "invalid_json"), (b"[]", "invalid_json"),
                        (b'"inputs"', "invalid_json")):
        answer = client.post("/v1/contacts/match", content=body,
                             headers={"Content-Type": "application/json"})
        assert answer.status_code == 400 and answer.json()["errors"][0]["id"] == error
    answer = client.post("/v1/companies/match", content=b'{"inputs": [{"name": "x"}]}',
                         headers={"Content-Type": "text/plain"})
    assert answer.status_code == 415
    answer = client.get("/v1/contacts/match")
    assert answer.status_code == 405 and answer.json()["errors"][0]["id"] == "method_not_allowed"


def test_null_members_are_not_given_and_ref_comes_back_as_is(client, oracle_rows):
    companies, _ = oracle_rows
    company = next(c for c in companies.values() if c["name"])
    answer = client.post("/v1/companies/match", json={"inputs": [
        {"ref": "  keep  my  spaces ", "domain": None, "name": company["name"]},
        {"ref": "", "linkedin_url": None, "name": "no such company at all"}]}).json()
    assert answer["data"][0]["ref"] == "  keep  my  spaces "
    assert answer["data"][0]["status"] == "matched"
    assert answer["data"][1] == {"ref": "", "status": "no_match", "matched_on": None,
                                 "candidates": 0, "record": None}


def test_a_snapshot_without_match_keys_answers_unavailable(tmp_path):
    """A snapshot built before match keys existed (its manifest has none) is refused in the
    envelope, not with a 500."""
    from service.refresh import refresh
    from service.snapshots import SnapshotStore
    from tests.conftest import keyed_client, make_settings
    from tests.fixture_drop import write_fixture_drop

    write_fixture_drop(tmp_path / "drop", companies=10, contacts=20)
    settings = make_settings(tmp_path / "data")
    store = SnapshotStore(settings.data_dir)
    refresh(store, tmp_path / "drop")
    manifest = store.path_of(store.current_version()) / "manifest.json"
    old = json.loads(manifest.read_text())
    del old["match_keys"]
    manifest.write_text(json.dumps(old))
    with keyed_client(settings, "m@example.com") as old_client:
        answer = old_client.post("/v1/companies/match", json={"inputs": [{"name": "x"}]})
    assert answer.status_code == 503
    assert answer.json()["errors"][0]["id"] == "unavailable"


def test_the_openapi_document_describes_match(client):
    document = client.get("/schema/openapi.json").json()
    schemas = document["components"]["schemas"]
    for kind, record in (("contacts", "Contact"), ("companies", "Company")):
        operation = document["paths"][f"/v1/{kind}/match"]["post"]
        request = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        inputs = schemas[request.rsplit("/", 1)[-1]]["properties"]["inputs"]
        assert inputs["minItems"] == 1 and inputs["maxItems"] == 100
        answer = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        properties = schemas[answer.rsplit("/", 1)[-1]]["properties"]
        item = schemas[properties["data"]["items"]["$ref"].rsplit("/", 1)[-1]]
        assert set(item["properties"]) == {"ref", "status", "matched_on", "candidates",
                                           "record"}
        assert {"$ref": f"#/components/schemas/{record}"} in item["properties"]["record"]["anyOf"]
        meta = schemas[properties["meta"]["$ref"].rsplit("/", 1)[-1]]
        assert set(meta["required"]) == {"dataset", "inputs", "matched"}


def test_match_over_quarry_serve_follows_a_refresh(data_dir, fixture_drop, tmp_path):
    """A real `quarry serve`: a batch matched over HTTP, then a refresh switches it to
    another drop without restart and the next batch is matched against the new snapshot's
    keys, not the old one's."""
    import httpx
    import pyarrow.parquet as pq

    from tests.serving import running_server
    from tests.test_cli import quarry

    def first_email(drop) -> tuple[str, str]:
        rows = pq.read_table(drop / "contacts.parquet").to_pylist()
        row = next(r for r in sorted(rows, key=lambda r: r["id"]) if r["work_email"]
                   and r["work_email"].startswith("person"))
        return row["id"], row["work_email"]

    quarry(data_dir, "refresh", "--source", str(fixture_drop))
    with running_server(data_dir, tmp_path / "serve.log") as server:
        contact_id, email = first_email(fixture_drop)
        answer = httpx.post(f"{server.base}/v1/contacts/match", headers=server.headers,
                            json={"inputs": [{"ref": "a", "email": email.upper()}]})
        assert answer.status_code == 200, answer.text
        item = answer.json()["data"][0]
        assert (item["status"], item["record"]["id"]) == ("matched", contact_id)

        other = tmp_path / "other"
        from tests.fixture_drop import write_fixture_drop

        write_fixture_drop(other, companies=20, contacts=60, seed=99)
        pq.write_table(pq.read_table(other / "contacts.parquet").set_column(
            7, "work_email", [[f"renamed{i}@example.com" for i in range(60)]]),
            other / "contacts.parquet")
        quarry(data_dir, "refresh", "--source", str(other))
        body = httpx.post(f"{server.base}/v1/contacts/match", headers=server.headers, json={
            "inputs": [{"email": email}, {"email": "Renamed7@example.com"}]}).json()
        assert [i["status"] for i in body["data"]] == ["no_match", "matched"]
        assert body["meta"] == {"dataset": httpx.get(f"{server.base}/health").json()["data"][
            "dataset"], "inputs": 2, "matched": 1}
