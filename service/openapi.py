"""The OpenAPI 3.1 document (`/schema/openapi.json`) and its interactive page (`/schema`, its
script `static/schema.js`, Swagger UI's files under `/schema/static/`).

Schemas come from the same msgspec Structs that validate requests and encode records, so the
document cannot drift from the code; paths and the error table are written out here.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal, get_args

import msgspec
from swagger_ui_bundle import swagger_ui_path

from .envelope import ERROR_STATUS, ErrorObject
from .match import CompanyMatchRequest, ContactMatchRequest
from .records import Company, Contact
from .search_requests import (
    CompanyExport,
    CompanySearch,
    ContactExport,
    ContactSearch,
    ExportFormat,
)

# The page's Swagger UI comes from the pinned package swagger-ui-bundle-v2, served from this
# origin under the pages' Content-Security-Policy: nothing is fetched from elsewhere, at run
# time or in the browser. Only the two files the page loads are served.
SWAGGER_UI = Path(str(swagger_ui_path))
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")
DOCS_STATIC = "/schema/static"


class SearchMeta(msgspec.Struct):
    page: int
    per_page: int
    total: int
    total_pages: int
    dataset: str


class LookupMeta(msgspec.Struct):
    dataset: str


class Health(msgspec.Struct):
    status: str
    dataset: str
    companies: int
    contacts: int


class ContactPage(msgspec.Struct):
    data: list[Contact]
    meta: SearchMeta
    errors: list[ErrorObject]


class CompanyPage(msgspec.Struct):
    data: list[Company]
    meta: SearchMeta
    errors: list[ErrorObject]


class ContactAnswer(msgspec.Struct):
    data: Contact
    meta: LookupMeta
    errors: list[ErrorObject]


class CompanyAnswer(msgspec.Struct):
    data: Company
    meta: LookupMeta
    errors: list[ErrorObject]


class HealthAnswer(msgspec.Struct):
    data: Health
    meta: LookupMeta
    errors: list[ErrorObject]


MatchStatus = Literal["matched", "ambiguous", "no_match"]


class MatchMeta(msgspec.Struct):
    dataset: str
    inputs: int
    matched: int


class ContactMatch(msgspec.Struct):
    """One input's answer: the record when one key identified exactly one contact."""

    ref: str | None
    status: MatchStatus
    matched_on: Literal["email", "linkedin_url", "name_and_company"] | None
    candidates: int
    record: Contact | None


class CompanyMatch(msgspec.Struct):
    """One input's answer: the record when one key identified exactly one company."""

    ref: str | None
    status: MatchStatus
    matched_on: Literal["domain", "linkedin_url", "name"] | None
    candidates: int
    record: Company | None


class ContactMatchAnswer(msgspec.Struct):
    data: list[ContactMatch]
    meta: MatchMeta
    errors: list[ErrorObject]


class CompanyMatchAnswer(msgspec.Struct):
    data: list[CompanyMatch]
    meta: MatchMeta
    errors: list[ErrorObject]


class ErrorAnswer(msgspec.Struct):
    data: None
    meta: dict[str, Any]
    errors: list[ErrorObject]


FIELD_DOCS = {
    "added_after": "Company created_at >= this instant. ISO 8601 with Z or an offset, a naive "
                   "date-time (UTC) or a date YYYY-MM-DD (midnight UTC).",
    "added_before": "Company created_at <= this instant; same formats as added_after.",
    "locations": "Any of these locations: city:CITY[||STATE[||COUNTRY]], state:STATE[||COUNTRY] "
                 "or country:COUNTRY; an empty part is a wildcard.",
    "functions": "Company function equals any of these.",
    "industries": "Company industry equals any of these.",
    "tlds": "Last label of the company's domain equals any of these; a leading dot is ignored.",
    "technologies": "The company uses at least one of these technologies.",
    "employee_count_min": "Company employee_count >= this. A company without an employee "
                          "count never matches. Not greater than employee_count_max.",
    "employee_count_max": "Company employee_count <= this. A company without an employee "
                          "count never matches.",
    "domains": "The company's domain equals any of these (up to 1,000), both normalised as a "
               "domain: lower-cased, without http(s)://, www., path, port and trailing dots "
               "(https://www.Acme.io/about is acme.io).",
    "company_names": "Company name contains any of these as a substring, case-insensitively; "
                     "% _ and \\ are literal.",
    "company_has_linkedin_profile": "true: only companies with a LinkedIn page. false: no "
                                    "filter.",
    "company_has_generic_email": "true: only companies with a generic address (info@, "
                                 "sales@, ...). false: no filter.",
    "job_titles": "Job title contains any of these as a substring; % _ and \\ are literal.",
    "departments": "Contact department equals any of these.",
    "seniorities": "Contact seniority equals any of these.",
    "has_personal_emails": "true: only contacts with a personal email. false: no filter.",
    "has_linkedin_profile": "true: only contacts with a LinkedIn URL. false: no filter.",
    "is_decision_maker": "true: only decision makers. false: no filter.",
    "page": "Page number, from 1. page * per_page may not exceed 10,000.",
    "per_page": "Records per page, 1 to 100.",
    "format": "Export format: ndjson (default), csv, parquet or arrow (an Arrow IPC stream).",
    "limit": "Export at most this many records; absent means all.",
}
MATCH_DOCS = {
    "ref": "Any text, given back as is in the answer's item.",
    "email": "Matches the contact's work email or one of its personal emails "
             "(case-insensitive, trimmed).",
    "linkedin_url": "Matches the record's LinkedIn URL, both normalised: lower-cased, "
                    "without scheme, www. or a two-letter country subdomain, query, fragment "
                    "and trailing slashes.",
    "first_name": "With last_name and company_domain or company_name: the key "
                  "name_and_company.",
    "last_name": "With first_name and company_domain or company_name: the key "
                 "name_and_company.",
    "company_domain": "The contact's company domain, normalised as a domain.",
    "company_name": "The contact's company name (case-insensitive, trimmed).",
    "domain": "Matches the company's domain, both normalised as a domain.",
    "name": "Matches the company's name (case-insensitive, trimmed).",
}
# The errors a /v1 operation may answer whatever its input; /health answers none of the key's.
COMMON_ERRORS = ("unauthorized", "rate_limited", "unavailable", "query_timeout", "internal_error")
HEALTH_ERRORS = ("unavailable", "internal_error")

# The location grammar of SPEC 3.2, exactly as `search_requests.parse_location` reads it (a
# test holds the two together): the kind in any case, then 1 to 3 parts split by '||' from the
# left, the first not blank. A part holds no '||' and, unless last, does not end in '|' (that
# '|' and the separator would be split as '||' one character earlier). WS is what Python's
# str.strip() takes off, spelled out because a schema's \s differs between regex dialects.
WS = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_PART = r"(?:[^|\x00]|\|(?!\|))*"
_FIRST = rf"[{WS}]*(?:[^|\x00{WS}]|\|(?!\|)){_PART}"
LOCATION_PATTERN = (
    rf"^[{WS}]*(?:[cC][oO][uU][nN][tT][rR][yY][{WS}]*:{_FIRST}"
    rf"|[sS][tT][aA][tT][eE][{WS}]*:{_FIRST}(?:\|\|{_PART})?"
    rf"|[cC][iI][tT][yY][{WS}]*:{_FIRST}(?:\|\|{_PART}){{0,2}})$"
)
# A request timestamp: an RFC 3339 date-time or a date (SPEC 3.1 takes a naive date-time too).
TIMESTAMP_SCHEMA = [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}]
TIMESTAMP_FIELDS = ("added_after", "added_before")

HEADERS = {
    "WWW-Authenticate": {"description": "Bearer realm=\"quarry\": the answer wants an API key.",
                         "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer", "minimum": 0}},
    "Allow": {"description": "The methods the path takes, comma-separated.",
              "schema": {"type": "string"}},
    "RateLimit-Limit": {"description": "Requests per second allowed to the key.",
                        "schema": {"type": "integer", "minimum": 0}},
    "RateLimit-Remaining": {"description": "Requests the key may still make at once.",
                            "schema": {"type": "integer", "minimum": 0}},
    "RateLimit-Reset": {"description": "Seconds until the key's allowance is whole again.",
                        "schema": {"type": "integer", "minimum": 0}},
}
RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
# Status -> the headers every answer of that status carries (service.gate sends them).
REQUIRED_HEADERS = {"401": ("WWW-Authenticate",), "405": ("Allow",), "429": ("Retry-After",)}


def openapi_document() -> bytes:
    return _document()


@functools.cache
def _document() -> bytes:
    structs = [ContactSearch, CompanySearch, ContactExport, CompanyExport, ContactPage,
               CompanyPage, ContactAnswer, CompanyAnswer, HealthAnswer, ErrorAnswer,
               ContactMatchRequest, CompanyMatchRequest, ContactMatchAnswer,
               CompanyMatchAnswer]
    _, components = msgspec.json.schema_components(
        structs, ref_template="#/components/schemas/{name}")
    for name in ("ContactSearch", "CompanySearch", "ContactExport", "CompanyExport"):
        for field, schema in components[name]["properties"].items():
            base = field.removeprefix("exclude_")
            if base in FIELD_DOCS:
                prefix = "Leave out records matching: " if field != base else ""
                schema["description"] = prefix + FIELD_DOCS[base]
            _describe_field(base, schema)
    _describe_records(components)
    for name in ("ContactMatchInput", "CompanyMatchInput"):
        for field, schema in components[name]["properties"].items():
            schema["description"] = MATCH_DOCS[field]
    paths: dict[str, Any] = {}
    for kind, request, page in (("contacts", "ContactSearch", "ContactPage"),
                                ("companies", "CompanySearch", "CompanyPage")):
        paths[f"/v1/{kind}/search"] = {
            "post": _operation(
                f"Search {kind} (JSON body)", page, ("invalid_input", "invalid_json",
                                                     "payload_too_large",
                                                     "unsupported_media_type"),
                operation_id=f"search_{kind}", tag=kind,
                requestBody={"required": True, "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{request}"}}}}),
            "get": _operation(f"Search {kind} (query parameters)", page, ("invalid_input",),
                              operation_id=f"search_{kind}_by_query", tag=kind,
                              parameters=_query_parameters(components[request])),
        }
    for kind, request, record in (("contacts", "ContactExport", "Contact"),
                                  ("companies", "CompanyExport", "Company")):
        operation = _operation(
            f"Export every matching {kind[:-1] if kind == 'contacts' else 'company'}, streamed",
            "ErrorAnswer", ("invalid_input", "invalid_json", "payload_too_large",
                            "unsupported_media_type"),
            operation_id=f"export_{kind}", tag=kind,
            requestBody={"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{request}"}}}})
        binary = {"type": "string", "format": "binary"}
        operation["responses"]["200"] = {
            "description": "The records in id order, in the requested format. Header "
                           "Quarry-Total-Count: the number of records that follow.",
            "headers": {"Quarry-Total-Count": {"schema": {"type": "integer"}},
                        **_rate_limit_headers()},
            # Bytes first: a client generated from this document takes the first media type
            # it knows, and decoding Parquet or Arrow as text corrupts it. The answer's
            # Content-Type is always one of the four formats after it.
            "content": {
                "application/octet-stream": {"schema": {
                    **binary, "description": "The export's bytes, in the format asked for; "
                                             "the Content-Type names it."}},
                "application/x-ndjson": {"schema": {
                    **binary, "description": f"One {record} object "
                                             f"(#/components/schemas/{record}) per line"}},
                "text/csv": {"schema": {**binary, "description": "A header row, then one row "
                                                                 "per record"}},
                "application/vnd.apache.parquet": {"schema": binary},
                "application/vnd.apache.arrow.stream": {"schema": binary},
            }}
        paths[f"/v1/{kind}/export"] = {"post": operation}
    for kind, request, answer in (("contacts", "ContactMatchRequest", "ContactMatchAnswer"),
                                  ("companies", "CompanyMatchRequest", "CompanyMatchAnswer")):
        paths[f"/v1/{kind}/match"] = {"post": _operation(
            f"Match 1 to 100 {kind} a client holds: keys tried in order, the first that "
            "identifies exactly one record decides", answer,
            ("invalid_input", "invalid_json", "payload_too_large", "unsupported_media_type"),
            operation_id=f"match_{kind}", tag=kind,
            requestBody={"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{request}"}}}})}
    for kind, answer in (("contacts", "ContactAnswer"), ("companies", "CompanyAnswer")):
        one = kind[:-1] if kind == "contacts" else "company"
        paths[f"/v1/{kind}/{{id}}"] = {"get": _operation(
            f"One {one} by id", answer, ("not_found",), operation_id=f"get_{one}", tag=kind,
            parameters=[{"name": "id", "in": "path", "required": True,
                         "schema": {"type": "string"}}])}
    paths["/health"] = {"get": {**_operation("Service health and the current snapshot",
                                             "HealthAnswer", HEALTH_ERRORS, common=(),
                                             operation_id="get_health", tag="operations"),
                                "security": []}}
    metrics = _operation("Prometheus metrics: requests, latency, records, exports, dataset, "
                         "memory", "HealthAnswer", ("internal_error",), common=(),
                         operation_id="get_metrics", tag="operations")
    metrics["responses"]["200"] = {"description": "Prometheus text format", "content": {
        "text/plain": {"schema": {"type": "string"}}}}
    paths["/metrics"] = {"get": {**metrics, "security": []}}
    document = {
        "openapi": "3.1.0",
        "info": {"title": "Quarry", "version": "1",
                 "description": "B2B companies and contacts. Every answer is a {data, meta, "
                                "errors} envelope; error ids: " + ", ".join(ERROR_STATUS)},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [{"name": "contacts", "description": "People and their companies"},
                 {"name": "companies", "description": "Companies"},
                 {"name": "operations", "description": "Health and metrics, no key needed"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "headers": HEADERS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "An API key, qry_..."}},
        },
    }
    return msgspec.json.encode(document)


def _describe_field(base: str, schema: dict[str, Any]) -> None:
    """What the Structs' schemas cannot say: every field takes `null` as "absent" (SPEC 3.1,
    `search_requests._validate`), the timestamps' formats, the location grammar."""
    options = schema.pop("anyOf", None) or [
        {k: schema.pop(k) for k in list(schema) if k not in ("default", "description")}]
    options = [option for option in options if option != {"type": "null"}]
    if base in TIMESTAMP_FIELDS:
        options = TIMESTAMP_SCHEMA
    if base == "format":  # one named schema, so that a generated client has one enum type
        options = [{"$ref": "#/components/schemas/ExportFormat"}]
    if base == "locations":
        options = [{**option, "items": {**option["items"], "pattern": LOCATION_PATTERN}}
                   if option.get("type") == "array" else option for option in options]
    schema["anyOf"] = [*options, {"type": "null"}]


def _describe_records(components: dict[str, Any]) -> None:
    components["ExportFormat"] = {"type": "string", "enum": list(get_args(ExportFormat))}
    components["Company"]["properties"]["created_at"]["format"] = "date-time"
    error = components["ErrorObject"]["properties"]
    error["id"]["enum"] = list(ERROR_STATUS)
    error["code"]["enum"] = sorted(set(ERROR_STATUS.values()))


def _rate_limit_headers() -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in RATE_LIMIT_HEADERS}


def _operation(summary: str, answer: str, error_ids: tuple[str, ...], *, operation_id: str,
               tag: str, common: tuple[str, ...] = COMMON_ERRORS, **extra: Any) -> dict:
    """One operation: its 200 and every error status it may answer, each with its headers.
    A /v1 answer past the key gate carries the RateLimit-* headers; `common=()` for a path
    outside /v1."""
    api = common == COMMON_ERRORS
    responses: dict[str, Any] = {"200": {"description": "Success", "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{answer}"}}}}}
    for error_id in (*error_ids, "method_not_allowed", *common):
        status = str(ERROR_STATUS[error_id])
        entry = responses.setdefault(status, {"description": "", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorAnswer"}}}})
        entry["description"] = ", ".join(filter(None, [entry["description"], error_id]))
    for status, entry in responses.items():
        headers = {name: {"$ref": f"#/components/headers/{name}"}
                   for name in REQUIRED_HEADERS.get(status, ())}
        if status == "401":
            # the answer of a failed key; slowed answers to a flood also say when to retry
            headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        elif api:
            headers.update(_rate_limit_headers())
        if status == "503":
            headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        if headers:
            entry["headers"] = headers
    return {"operationId": operation_id, "tags": [tag], "summary": summary,
            "responses": responses, **extra}


def _query_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": name, "in": "query", "required": False, "schema": _not_null(prop),
             "style": "form", "explode": True}
            for name, prop in schema["properties"].items()]


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query string cannot carry a JSON null (a parameter is there or not), so a query
    parameter's schema is the field's schema without its `null` alternative."""
    options = [option for option in prop.get("anyOf", []) if option != {"type": "null"}]
    rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
    if len(options) == 1:
        return {**options[0], **rest}
    return {"anyOf": options, **rest} if options else rest


def swagger_page() -> str:
    return SWAGGER_PAGE


SWAGGER_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Quarry API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{DOCS_STATIC}/swagger-ui.css">
<script src="{DOCS_STATIC}/swagger-ui-bundle.js" defer></script>
<script src="/static/schema.js" defer></script>
</head><body><div id="docs"></div>
<noscript>The machine-readable document is at <a href="/schema/openapi.json">
/schema/openapi.json</a>.</noscript>
</body></html>
"""
