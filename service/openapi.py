"""The OpenAPI 3.1 document (`/schema/openapi.json`) and its interactive page (`/schema`).

Schemas come from the same msgspec Structs that validate requests and encode records, so the
document cannot drift from the code; paths and the error table are written out here.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import msgspec

from .envelope import ERROR_STATUS, ErrorObject
from .match import CompanyMatchRequest, ContactMatchRequest
from .records import Company, Contact
from .search_requests import CompanyExport, CompanySearch, ContactExport, ContactSearch


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
COMMON_ERRORS = ("unauthorized", "rate_limited", "unavailable", "query_timeout", "internal_error")


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
                requestBody={"required": True, "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{request}"}}}}),
            "get": _operation(f"Search {kind} (query parameters)", page, ("invalid_input",),
                              parameters=_query_parameters(components[request])),
        }
    for kind, request, record in (("contacts", "ContactExport", "Contact"),
                                  ("companies", "CompanyExport", "Company")):
        operation = _operation(
            f"Export every matching {kind[:-1] if kind == 'contacts' else 'company'}, streamed",
            "ErrorAnswer", ("invalid_input", "invalid_json", "payload_too_large",
                            "unsupported_media_type"),
            requestBody={"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{request}"}}}})
        operation["responses"]["200"] = {
            "description": "The records in id order, in the requested format. Header "
                           "Quarry-Total-Count: the number of records that follow.",
            "headers": {"Quarry-Total-Count": {"schema": {"type": "integer"}}},
            "content": {
                "application/x-ndjson": {"schema": {
                    "description": f"One {record} object per line",
                    "$ref": f"#/components/schemas/{record}"}},
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string",
                                                              "format": "binary"}},
                "application/vnd.apache.arrow.stream": {"schema": {"type": "string",
                                                                   "format": "binary"}},
            }}
        paths[f"/v1/{kind}/export"] = {"post": operation}
    for kind, request, answer in (("contacts", "ContactMatchRequest", "ContactMatchAnswer"),
                                  ("companies", "CompanyMatchRequest", "CompanyMatchAnswer")):
        paths[f"/v1/{kind}/match"] = {"post": _operation(
            f"Match 1 to 100 {kind} a client holds: keys tried in order, the first that "
            "identifies exactly one record decides", answer,
            ("invalid_input", "invalid_json", "payload_too_large", "unsupported_media_type"),
            requestBody={"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{request}"}}}})}
    for kind, answer in (("contacts", "ContactAnswer"), ("companies", "CompanyAnswer")):
        paths[f"/v1/{kind}/{{id}}"] = {"get": _operation(
            f"One {kind[:-1] if kind == 'contacts' else 'company'} by id", answer, ("not_found",),
            parameters=[{"name": "id", "in": "path", "required": True,
                         "schema": {"type": "string"}}])}
    paths["/health"] = {"get": {**_operation("Service health and the current snapshot",
                                             "HealthAnswer", ()), "security": []}}
    document = {
        "openapi": "3.1.0",
        "info": {"title": "Quarry", "version": "1",
                 "description": "B2B companies and contacts. Every answer is a {data, meta, "
                                "errors} envelope; error ids: " + ", ".join(ERROR_STATUS)},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "An API key, qry_..."}},
        },
    }
    return msgspec.json.encode(document)


def _operation(summary: str, answer: str, error_ids: tuple[str, ...], **extra: Any) -> dict:
    responses: dict[str, Any] = {"200": {"description": "Success", "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{answer}"}}}}}
    for error_id in (*error_ids, "method_not_allowed", *COMMON_ERRORS):
        status = str(ERROR_STATUS[error_id])
        entry = responses.setdefault(status, {"description": "", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorAnswer"}}}})
        entry["description"] = ", ".join(filter(None, [entry["description"], error_id]))
    return {"summary": summary, "responses": responses, **extra}


def _query_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": name, "in": "query", "required": False, "schema": _not_null(prop),
             "style": "form", "explode": True}
            for name, prop in schema["properties"].items()]


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query string cannot carry a JSON null (a parameter is there or not), so a query
    parameter's schema is the field's schema without its `null` alternative."""
    options = [option for option in prop.get("anyOf", []) if option != {"type": "null"}]
    if len(options) != 1:
        return prop
    return {**options[0], **{k: v for k, v in prop.items() if k not in ("anyOf", "default")}}


def swagger_page() -> str:
    return SWAGGER_PAGE


SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Quarry API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="docs"></div>
<noscript>The machine-readable document is at <a href="/schema/openapi.json">
/schema/openapi.json</a>.</noscript>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/schema/openapi.json", dom_id: "#docs"});</script>
</body></html>
"""
