"""Text in requests: the GET and POST forms of one search answer the same body, integers are
ASCII digits, and text matches in Unicode NFC whichever way its accents are composed, on the
request's side and on the data's (SPEC 3, 3.1)."""

from __future__ import annotations

import unicodedata

import pytest

from service.refresh import refresh
from service.snapshots import SnapshotStore
from tests.conftest import keyed_client, make_settings
from tests.test_refresh import COMPANY, CONTACT, csv_drop

INVALID_SEARCHES = [
    {"seniorities": [" "]},
    {"seniorities": ["VP", ""], "industries": ["x" * 201]},
    {"locations": ["mars:Olympus"], "exclude_locations": ["city:"]},
    {"job_titles": ["a\x00b"]},
    {"per_page": 0},
    {"page": 101, "per_page": 100},
    {"added_after": "yesterday"},
    {"added_after": "2024-01-02", "added_before": "2024-01-01"},
    {"job_title": ["manager"]},
    {"seniorities": ["VP", " "], "per_page": 101, "locations": ["state:a||b||c"]},
]


def as_query(search: dict) -> list[tuple[str, str]]:
    return [(name, str(item)) for name, value in search.items()
            for item in (value if isinstance(value, list) else [value])]


def test_get_and_post_of_one_invalid_search_answer_the_same_body(client):
    """`'seniorities[0]' is empty` in a POST was `a value of 'seniorities' is empty` in a GET;
    the index of a repeated parameter is its place among the parameters of that name."""
    for search in INVALID_SEARCHES:
        posted = client.post("/v1/contacts/search", json=search)
        queried = client.get("/v1/contacts/search", params=as_query(search))
        assert posted.status_code == queried.status_code == 400, search
        assert posted.json() == queried.json(), search


NON_ASCII_DIGITS = ["١٠", "１０", "٢", "𝟏𝟎", "१०", "1٠"]


@pytest.mark.parametrize("digits", NON_ASCII_DIGITS)
@pytest.mark.parametrize("field", ["per_page", "page"])
def test_integers_in_query_strings_are_ascii_digits(client, field, digits):
    answer = client.get("/v1/companies/search", params={field: digits})
    assert answer.status_code == 400, answer.text
    error = answer.json()["errors"][0]
    assert error["id"] == "invalid_input" and error["field"] == field
    assert client.get("/v1/companies/search", params={field: "3"}).status_code == 200


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def total(client, kind: str, search: dict) -> int:
    answer = client.post(f"/v1/{kind}/search", json=search)
    assert answer.status_code == 200, answer.text
    return answer.json()["meta"]["total"]


@pytest.mark.parametrize(("kind", "field", "value"), [
    ("companies", "locations", "city:Zürich"),
    ("companies", "industries", "Éducation"),
    ("companies", "technologies", "Ñandú CRM"),
    ("contacts", "job_titles", "ZÜRICH"),
    ("contacts", "job_titles", "Producción"),
    ("contacts", "locations", "city:São Paulo||São Paulo||Brazil"),
])
def test_a_decomposed_request_value_matches_composed_data(client, kind, field, value):
    assert nfd(value) != value
    composed = total(client, kind, {field: [value]})
    assert composed > 0
    assert total(client, kind, {field: [nfd(value)]}) == composed
    left_out = total(client, kind, {f"exclude_{field}": [nfd(value)]})
    assert left_out == total(client, kind, {}) - composed


@pytest.fixture(scope="module")
def decomposed_drop_app(tmp_path_factory):
    """A snapshot of a drop whose text is decomposed (NFD), as some systems write it."""
    folder = tmp_path_factory.mktemp("nfd")
    companies = [{**COMPANY, "id": f"cmp_{i}", "city": nfd("Zürich"), "industry": nfd("Éducation"),
                  "technologies": nfd("Ñandú CRM;React"), "name": nfd(f"Société {i}")}
                 for i in range(3)] + [{**COMPANY, "id": "cmp_other", "city": "Basel"}]
    contacts = [{**CONTACT, "id": f"ctc_{i}", "company_id": f"cmp_{i}",
                 "job_title": nfd("Directeur Général"), "first_name": nfd("Zoë")}
                for i in range(3)] + [{**CONTACT, "id": "ctc_other", "company_id": "cmp_other"},
                                      {**CONTACT, "id": nfd("ctc_é"), "company_id": "cmp_other"}]
    drop = csv_drop(folder / "drop", companies, contacts)
    settings = make_settings(folder / "data")
    refresh(SnapshotStore(settings.data_dir), drop)
    with keyed_client(settings, "nfc@example.com") as test_client:
        yield test_client


@pytest.mark.parametrize(("kind", "field", "value"), [
    ("companies", "locations", "city:Zürich"),
    ("companies", "industries", "éducation"),
    ("companies", "technologies", "ñandú crm"),
    ("contacts", "job_titles", "général"),
    ("contacts", "locations", "city:ZÜRICH"),
])
def test_composed_request_value_matches_decomposed_drop(decomposed_drop_app, kind, field,
                                                        value):
    for sent in (value, nfd(value)):
        assert total(decomposed_drop_app, kind, {field: [sent]}) == 3, sent


def test_an_id_is_looked_up_in_nfc(decomposed_drop_app):
    for sent in ("ctc_é", nfd("ctc_é")):
        answer = decomposed_drop_app.get(f"/v1/contacts/{sent}")
        assert answer.status_code == 200 and answer.json()["data"]["id"] == "ctc_é", sent


def test_decomposed_drop_is_served_in_nfc(decomposed_drop_app):
    contact = decomposed_drop_app.get("/v1/contacts/ctc_0").json()["data"]
    assert contact["first_name"] == "Zoë" and contact["job_title"] == "Directeur Général"
    company = contact["company"]
    assert company["location"]["city"] == "Zürich" and company["name"] == "Société 0"
    assert company["technologies"] == ["Ñandú CRM", "React"]
    for text in (contact["first_name"], company["industry"], company["name"]):
        assert unicodedata.is_normalized("NFC", text)
