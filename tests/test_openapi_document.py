"""The OpenAPI document says what the API does: what it accepts (null, formats, the location
grammar), the error ids and the headers it answers, and names for every operation. Each claim is
checked against the real app's answers, not only read from the document."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from service.app import create_app
from service.openapi import LOCATION_PATTERN, openapi_document
from service.search_requests import parse_location
from tests.conftest import make_settings

DOCUMENT = json.loads(openapi_document())
SCHEMAS = DOCUMENT["components"]["schemas"]
REQUESTS = ("ContactSearch", "CompanySearch", "ContactExport", "CompanyExport")
# SPEC 1's table of error ids, as the contract writes it.
SPEC_ERROR_IDS = {"invalid_input", "invalid_json", "unauthorized", "not_found", "dataset_gone",
                  "method_not_allowed", "payload_too_large", "unsupported_media_type",
                  "rate_limited", "query_timeout", "unavailable", "internal_error"}


def _options(schema: dict) -> list[dict]:
    return schema.get("anyOf", [schema])


def test_every_request_field_is_documented_nullable(client):
    """SPEC 3.1: an absent field and null mean the same; `page`, `per_page` and `format`
    were documented as not taking null, which the API accepts."""
    for request_schema in REQUESTS:
        for field, schema in SCHEMAS[request_schema]["properties"].items():
            assert {"type": "null"} in _options(schema), (request_schema, field)
    answer = client.post("/v1/contacts/search", json={"page": None, "per_page": None})
    assert answer.status_code == 200
    assert (answer.json()["meta"]["page"], answer.json()["meta"]["per_page"]) == (1, 25)
    export = client.post("/v1/companies/export", json={"format": None, "limit": 2})
    assert export.status_code == 200
    assert export.headers["content-type"] == "application/x-ndjson"


def test_timestamps_have_formats(client):
    for request_schema in REQUESTS:
        for field in ("added_after", "added_before"):
            formats = {option.get("format") for option in
                       _options(SCHEMAS[request_schema]["properties"][field])}
            assert formats == {"date-time", "date", None}, (request_schema, field)
    assert SCHEMAS["Company"]["properties"]["created_at"]["format"] == "date-time"
    for value in ("2020-02-29", "2020-02-29T10:11:12Z", "2020-02-29T10:11:12.5+02:00"):
        assert client.get("/v1/companies/search", params={"added_after": value}).status_code \
            == 200, value


def test_error_id_is_the_enum_of_spec_1():
    error = SCHEMAS["ErrorObject"]["properties"]
    assert set(error["id"]["enum"]) == SPEC_ERROR_IDS
    assert set(error["code"]["enum"]) == {400, 401, 404, 405, 410, 413, 415, 429, 500, 503}


def test_every_operation_has_an_operation_id_and_a_tag():
    ids = []
    for path, methods in DOCUMENT["paths"].items():
        for method, operation in methods.items():
            assert re.fullmatch(r"[a-z][a-z_]*", operation.get("operationId", "")), (path, method)
            assert operation.get("tags") and set(operation["tags"]) <= {
                tag["name"] for tag in DOCUMENT["tags"]}, (path, method)
            ids.append(operation["operationId"])
    assert len(ids) == len(set(ids))
    assert DOCUMENT["paths"]["/v1/contacts/search"]["post"]["operationId"] == "search_contacts"


def test_health_documents_only_what_it_answers():
    responses = DOCUMENT["paths"]["/health"]["get"]["responses"]
    assert "401" not in responses and "429" not in responses
    assert set(responses) == {"200", "405", "500", "503"}


def _headers(path: str, method: str, status: str) -> dict:
    return DOCUMENT["paths"][path][method]["responses"][status].get("headers", {})


def _header(name: str) -> dict:
    return DOCUMENT["components"]["headers"][name]


def test_headers_are_documented():
    assert "WWW-Authenticate" in _headers("/v1/contacts/search", "post", "401")
    assert "Retry-After" in _headers("/v1/contacts/export", "post", "429")
    assert "Allow" in _headers("/v1/contacts/{id}", "get", "405")
    assert "Allow" in _headers("/health", "get", "405")
    for path, status in (("/v1/companies/search", "200"), ("/v1/companies/search", "400"),
                         ("/v1/companies/{id}", "404"), ("/v1/contacts/export", "429")):
        for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
            assert name in _headers(path, "get" if "export" not in path else "post",
                                    status), (path, status, name)
    for name in ("WWW-Authenticate", "Retry-After", "Allow", "RateLimit-Reset"):
        assert _header(name)["schema"]["type"], name


def test_documented_headers_are_sent(served, client):
    """Each answer carries the headers its status documents."""
    def documented(path, method, status):
        return {name.lower() for name in _headers(path, method, status)}

    no_key = client.get("/v1/contacts/search", headers={"Authorization": "Bearer qry_nope"})
    assert no_key.status_code == 401 and "www-authenticate" in no_key.headers
    found = client.get("/v1/companies/cmp_nope")
    wanted = documented("/v1/companies/{id}", "get", "404")
    assert found.status_code == 404 and wanted and wanted <= set(found.headers)
    wrong = client.delete("/v1/contacts/ctc_0001")
    assert wrong.status_code == 405
    assert documented("/v1/contacts/{id}", "get", "405") <= set(wrong.headers)
    assert client.post("/health").headers["allow"] == "GET, HEAD"
    settings_, key = served
    slow = make_settings(settings_.data_dir, QUARRY_RATE_LIMIT="1")
    with TestClient(create_app(slow)) as limited:
        limited.headers["Authorization"] = f"Bearer {key}"
        answers = [limited.get("/v1/companies/search") for _ in range(4)]
    refused = [answer for answer in answers if answer.status_code == 429]
    assert refused, [answer.status_code for answer in answers]
    assert documented("/v1/companies/search", "get", "429") <= set(refused[0].headers)
    assert int(refused[0].headers["retry-after"]) >= 1


def test_export_answers_are_documented_as_binary():
    content = DOCUMENT["paths"]["/v1/contacts/export"]["post"]["responses"]["200"]["content"]
    assert next(iter(content)) == "application/octet-stream"
    for media_type in ("application/octet-stream", "application/vnd.apache.parquet",
                       "application/vnd.apache.arrow.stream"):
        assert content[media_type]["schema"]["format"] == "binary"


# --- the location grammar's pattern is the parser's grammar --------------------------------

LOCATION_TEXT = st.builds(
    lambda kind, gap, rest: kind + gap + rest,
    st.sampled_from(["city", "City", "STATE", "state", "country", "Country", "town", "", " city",
                     "ſtate", "cİty"]),
    st.sampled_from([":", " :", ":", "\t:", ""]),
    st.text(alphabet=st.sampled_from(list("|| ab:é\t\x1f\x00\u3000\n")), max_size=14))


def _parser_accepts(text: str) -> bool:
    item = text.strip()  # as search_requests._check_strings reads an array item
    if not item or "\x00" in item:
        return False
    try:
        parse_location(item)
    except ValueError:
        return False
    return True


@settings(max_examples=3000, derandomize=True, database=None)
@given(text=LOCATION_TEXT)
def test_location_pattern_is_the_parser_grammar(text):
    assert bool(re.fullmatch(LOCATION_PATTERN, text)) == _parser_accepts(text), repr(text)


def test_location_pattern_is_in_the_document():
    for request_schema in REQUESTS:
        for field in ("locations", "exclude_locations"):
            array = _options(SCHEMAS[request_schema]["properties"][field])[0]
            assert array["items"]["pattern"] == LOCATION_PATTERN
    assert re.fullmatch(LOCATION_PATTERN, "city:London||||United Kingdom")
    assert not re.fullmatch(LOCATION_PATTERN, "state:a||b||c")
