"""Fuzzing from the OpenAPI document: schemathesis generates requests from `/schema/openapi.json`
and sends them, with a valid key, to the real app in process.

Every answer must be documented (status, Content-Type, body schema), never a 5xx, and always the
envelope - exactly `{data, meta, errors}` as application/json - except an export's stream.
The examples are bounded and derandomized, so every run sends the same requests.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from litestar.testing import TestClient
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

from service.app import create_app
from service.gate import KeyGate
from service.guard import FailedAuths
from service.openapi import openapi_document
from tests.test_errors import assert_envelope

EXPORT_TYPES = ("application/x-ndjson", "text/csv", "application/vnd.apache.parquet",
                "application/vnd.apache.arrow.stream")


@pytest.fixture(scope="module")
def fuzzed_app(served):
    settings_, key = served
    app = create_app(settings_)
    gate = app
    while not isinstance(gate, KeyGate):
        gate = gate.app
    # schemathesis checks that a bad key gets 401 on every operation, many times over; from one
    # address that would soon meet the limit on failed keys (429), which has its own tests.
    gate.failed_auths = FailedAuths(burst=1_000_000)
    with TestClient(app):  # runs the app's startup and shutdown around the module
        yield app, key


@pytest.fixture(scope="module")
def api_schema(fuzzed_app):
    """The document as the real app serves it."""
    app, _ = fuzzed_app
    return schemathesis.openapi.from_asgi("/schema/openapi.json", app)


# The operations, known before any app runs (the document is static): each with valid data,
# and with invalid data where it takes any input.
CASES = [(path, method, mode)
         for path, methods in json.loads(openapi_document())["paths"].items()
         for method, operation in methods.items()
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode is GenerationMode.POSITIVE or {"parameters", "requestBody"} & set(operation)]


def envelope(ctx, response, case) -> bool | None:
    """Every answer but an export's stream is exactly the envelope, as application/json."""
    content_type = response.headers.get("content-type", [""])[0]
    if response.status_code == 200 and content_type.split(";")[0] in EXPORT_TYPES:
        assert case.path.endswith("/export"), case.path
        return True
    if response.status_code == 200 and case.path == "/metrics":  # Prometheus text (SPEC 5)
        assert content_type.startswith("text/plain"), content_type
        return True
    assert content_type == "application/json", (response.status_code, content_type)
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"data", "meta", "errors"}, body
    assert isinstance(body["meta"], dict) and isinstance(body["errors"], list)
    if response.status_code == 200:
        assert body["errors"] == [], body
    else:
        assert body["data"] is None and body["errors"], body
        assert all(error["code"] == response.status_code for error in body["errors"]), body
    return True


def no_server_error(ctx, response, case) -> bool | None:
    assert response.status_code < 500, (response.status_code, response.content[:300])
    return True


# Rules the document states in words (descriptions) that its JSON Schema cannot express:
# the location grammar, the timestamp formats, values that are blank once trimmed, NUL,
# `page * per_page` at most 10,000, `added_after` not later than `added_before`, and integers
# that are JSON integers (the schema's "integer" admits 2.0). Schema-valid data may get a 400
# for these and only these.
IN_WORDS_ONLY = (
    "a location is KIND:VALUE", "unknown location kind", "parts separated by '||'",
    "may not be empty", "expected an ISO 8601 timestamp", "not a valid date or time",
    "is empty", "contains a NUL character", "page * per_page",
    "later than 'added_before'", "must be a JSON integer", "must be a whole number",
    "is greater than 'employee_count_max'", "names no domain once normalised",
    "carries no key to match on", "names no LinkedIn URL once normalised",
)
answered = {"ok": 0}  # 200s seen: the fuzzing must not be all refusals


def valid_data_accepted(ctx, response, case) -> bool | None:
    """Schema-valid data gets a 200 (a 404 for an unknown id), or a 400 that names only rules
    of IN_WORDS_ONLY. (A 401 is the answer to schemathesis's own request without a key.)"""
    if response.status_code == 400:
        errors = json.loads(response.content)["errors"]
        assert all(any(rule in error["details"] for rule in IN_WORDS_ONLY)
                   for error in errors), errors
    else:
        assert response.status_code in (200, 401, 404), (response.status_code,
                                                          response.content[:300])
        answered["ok"] += response.status_code == 200
    return True


@pytest.mark.parametrize(("path", "method", "mode"), CASES,
                         ids=[f"{m.upper()} {path} {mode.value}" for path, m, mode in CASES])
def test_openapi_document_holds(api_schema, fuzzed_app, path, method, mode):
    _, key = fuzzed_app
    strategy = api_schema[path][method].as_strategy(generation_mode=mode)
    checks = [envelope, no_server_error]
    excluded = [positive_data_acceptance]  # replaced by valid_data_accepted
    if mode is GenerationMode.POSITIVE:
        checks.append(valid_data_accepted)
    elif method == "get":
        # A query string is text: an "invalid" integer 0 or boolean false is sent as "0" or
        # "false", which is a fine array element. Invalid data still may not cause a 5xx.
        excluded.append(negative_data_rejection)

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def fuzz(case):
        case.call_and_validate(headers={"Authorization": f"Bearer {key}"},
                               additional_checks=checks,
                               excluded_checks=excluded)

    before = answered["ok"]
    fuzz()
    if mode is GenerationMode.POSITIVE and "{id}" not in path:
        assert answered["ok"] > before, "no valid request was answered 200"


EXAMPLES = 30  # per operation and mode: about 10 s in all


# --- what the fuzzing found -------------------------------------------------------------------


@pytest.mark.parametrize("field", ["added_before", "page", "per_page", "is_decision_maker"])
def test_an_empty_array_is_no_value_for_a_scalar_field(client, field):
    """Found by fuzzing: `{"added_before": []}` was taken as "no filter" (200); an empty array
    means that for an array field only, and is the wrong JSON type for any other."""
    answer = client.post("/v1/contacts/search", json={field: []})
    assert_envelope(answer, 400, "invalid_input", field)
    assert client.post("/v1/contacts/search", json={"industries": []}).status_code == 200


def test_query_parameters_are_never_null():
    """Found by fuzzing: the GET parameters were documented as `array | null`, but a query
    string cannot carry a null."""
    document = json.loads(openapi_document())
    for path in ("/v1/contacts/search", "/v1/companies/search"):
        for parameter in document["paths"][path]["get"]["parameters"]:
            assert "null" not in json.dumps(parameter["schema"]), parameter
