"""Search requests: the typed Structs the compiler trusts, and the one place they are validated.

A JSON body and a query string both end as the same Struct. Validation collects every problem of
a request (SPEC 1: one error object per problem) instead of stopping at the first, so it is done
field by field here rather than by a single `msgspec.convert` call.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .envelope import ApiError, ErrorObject, problem

MAX_STRING = 200
MAX_VALUES = 100
MAX_DOMAINS = 1_000  # domains and exclude_domains: an account list (SPEC 3.1)
MAX_WINDOW = 10_000  # page * per_page
MAX_LIMIT = 2**63 - 1  # DuckDB's LIMIT takes a BIGINT; a larger export limit would fail there

Value = Annotated[str, Meta(min_length=1, max_length=MAX_STRING)]
Values = Annotated[list[Value], Meta(max_length=MAX_VALUES)] | None
Domains = Annotated[list[Value], Meta(max_length=MAX_DOMAINS)] | None
Count = Annotated[int, Meta(ge=0)] | None
Page = Annotated[int, Meta(ge=1)]
PerPage = Annotated[int, Meta(ge=1, le=100)]
ExportFormat = Literal["ndjson", "csv", "parquet", "arrow"]


class CompanyFilters(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    added_after: datetime | None = None
    added_before: datetime | None = None
    locations: Values = None
    functions: Values = None
    industries: Values = None
    tlds: Values = None
    technologies: Values = None
    employee_count_min: Count = None
    employee_count_max: Count = None
    domains: Domains = None
    company_names: Values = None
    company_has_linkedin_profile: bool | None = None
    company_has_generic_email: bool | None = None
    exclude_locations: Values = None
    exclude_functions: Values = None
    exclude_industries: Values = None
    exclude_tlds: Values = None
    exclude_technologies: Values = None
    exclude_domains: Domains = None
    exclude_company_names: Values = None


class ContactFilters(CompanyFilters, kw_only=True, forbid_unknown_fields=True):
    job_titles: Values = None
    departments: Values = None
    seniorities: Values = None
    exclude_job_titles: Values = None
    exclude_departments: Values = None
    exclude_seniorities: Values = None
    has_personal_emails: bool | None = None
    has_linkedin_profile: bool | None = None
    is_decision_maker: bool | None = None


class CompanySearch(CompanyFilters, kw_only=True, forbid_unknown_fields=True):
    page: Page = 1
    per_page: PerPage = 25


class ContactSearch(ContactFilters, kw_only=True, forbid_unknown_fields=True):
    page: Page = 1
    per_page: PerPage = 25


Limit = Annotated[int, Meta(ge=1, le=MAX_LIMIT)]


class CompanyExport(CompanyFilters, kw_only=True, forbid_unknown_fields=True):
    format: ExportFormat = "ndjson"
    limit: Limit | None = None


class ContactExport(ContactFilters, kw_only=True, forbid_unknown_fields=True):
    format: ExportFormat = "ndjson"
    limit: Limit | None = None


SearchRequest = CompanySearch | ContactSearch | CompanyExport | ContactExport


@dataclass(frozen=True)
class Location:
    """One parsed `KIND:VALUE` location; None parts are wildcards."""

    city: str | None
    state: str | None
    country: str | None


def parse_location(text: str) -> Location:
    """Parse the location grammar of SPEC 3.2, raising ValueError with a user-facing reason."""
    kind, colon, value = text.partition(":")
    if not colon:
        raise ValueError("a location is KIND:VALUE, e.g. 'country:Brazil'; the ':' is missing")
    kind = kind.strip().lower()
    width = LOCATION_KINDS.get(kind)
    if width is None:
        raise ValueError(f"unknown location kind {kind!r}; use city:, state: or country:")
    parts = [part.strip() or None for part in value.split("||")]
    if len(parts) > width:
        raise ValueError(f"'{kind}:' takes at most {width} parts separated by '||'")
    if parts[0] is None:
        raise ValueError(f"the {kind} of '{kind}:' may not be empty")
    # Right-align the parts onto (city, state, country): state:CA||US -> (None, CA, US).
    padded = [None] * (3 - width) + parts + [None] * (width - len(parts))
    return Location(*padded)


LOCATION_KINDS = {"city": 3, "state": 2, "country": 1}


def parse_json_body(body: bytes, target: type[SearchRequest], endpoint: str) -> SearchRequest:
    """The body is read as UTF-8 whatever charset its Content-Type names: JSON between systems
    is UTF-8 (RFC 8259 section 8.1), and no request field needs anything else."""
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError.one("invalid_json", f"the request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:  # msgspec checks the UTF-8 of strings only this way
        raise ApiError.one("invalid_json", "the request body is not valid JSON: a string in "
                           "it is not UTF-8; JSON is sent as UTF-8, whatever charset the "
                           "Content-Type names") from None
    except RecursionError:  # msgspec recurses once per level of nesting
        raise ApiError.one("invalid_json", "the request body is not valid JSON for a request: "
                           "its arrays or objects are nested too deeply") from None
    if not isinstance(raw, dict):
        raise ApiError.one("invalid_json", "the request body must be a JSON object of fields")
    return _validate(raw, target, endpoint, from_text=False)


def parse_query_string(pairs: list[tuple[str, str]], target: type[SearchRequest],
                       endpoint: str) -> SearchRequest:
    raw: dict[str, Any] = {}
    errors: list[ErrorObject] = []
    for name, value in pairs:
        if FIELD_KINDS.get(name) == "strings":
            raw.setdefault(name, []).append(value)
        elif name in raw:
            errors.append(problem(
                "invalid_input", f"'{name}' is given more than once; it takes one value", name))
        else:
            raw[name] = value
    return _validate(raw, target, endpoint, from_text=True, errors=errors)


# Field name -> how its value is checked, for every field of every request Struct.
_LIST_FIELDS = ("locations", "functions", "industries", "tlds", "technologies",
                "job_titles", "departments", "seniorities", "domains", "company_names")
FIELD_KINDS: dict[str, str] = {
    **{name: "strings" for name in _LIST_FIELDS},
    **{f"exclude_{name}": "strings" for name in _LIST_FIELDS},
    "added_after": "timestamp", "added_before": "timestamp",
    "has_personal_emails": "bool", "has_linkedin_profile": "bool", "is_decision_maker": "bool",
    "company_has_linkedin_profile": "bool", "company_has_generic_email": "bool",
    "employee_count_min": "int", "employee_count_max": "int",
    "page": "int", "per_page": "int", "limit": "int", "format": "format",
}
CONTACT_ONLY = {f.name for f in msgspec.structs.fields(ContactFilters)} - {
    f.name for f in msgspec.structs.fields(CompanyFilters)}


def _validate(raw: dict[str, Any], target: type[SearchRequest], endpoint: str, *,
              from_text: bool, errors: list[ErrorObject] | None = None) -> SearchRequest:
    errors = list(errors or [])
    known = {f.name for f in msgspec.structs.fields(target)}
    clean: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in known:
            errors.append(problem("invalid_input", _unknown_field(name, known, endpoint), name))
            continue
        # null means no filter; so does an empty array, for an array field only
        if value is None or (not from_text and value == [] and FIELD_KINDS[name] == "strings"):
            continue
        try:
            clean[name] = _CHECKS[FIELD_KINDS[name]](name, value, from_text)
        except _FieldProblems as exc:
            errors.extend(exc.errors)
    errors.extend(_cross_field_problems(clean, target, endpoint))
    if errors:
        raise ApiError(errors)
    return msgspec.convert(clean, target)


def _unknown_field(name: str, known: set[str], endpoint: str) -> str:
    if name in CONTACT_ONLY:
        return f"'{name}' is a contacts-search field; the {endpoint} does not accept it"
    hint = difflib.get_close_matches(name, sorted(known), n=1)
    if hint:
        return f"unknown field '{name}' for the {endpoint}; did you mean '{hint[0]}'?"
    suffix = f"; known fields: {', '.join(sorted(known))}"
    return f"unknown field '{name}' for the {endpoint}{suffix}"


class _FieldProblems(Exception):
    def __init__(self, errors: list[ErrorObject]):
        self.errors = errors


def _bad(name: str, details: str) -> _FieldProblems:
    return _FieldProblems([problem("invalid_input", details, name)])


def _check_strings(name: str, value: Any, from_text: bool) -> list[str]:
    if not isinstance(value, list):
        raise _bad(name, f"'{name}' must be an array of strings, got {_json_type(value)}")
    most = MAX_DOMAINS if name.endswith("domains") else MAX_VALUES
    if len(value) > most:
        raise _bad(name, f"'{name}' holds {len(value)} values; at most {most} are allowed")
    cleaned, problems = [], []
    for i, item in enumerate(value):
        # The same words for a JSON array and repeated query parameters (SPEC 3: the GET and
        # POST forms of one search answer identical bodies); i counts the parameters.
        where = f"'{name}[{i}]'"
        if not isinstance(item, str):
            problems.append(problem("invalid_input",
                                    f"{where} must be a string, got {_json_type(item)}", name))
            continue
        # NFC, so that text matches however its accents were composed (SPEC 3.1); the
        # snapshot's text is NFC from the refresh on (sql/refresh/1_check_companies.sql).
        item = unicodedata.normalize("NFC", item.strip())
        if not item:
            problems.append(problem("invalid_input", f"{where} is empty", name))
        elif len(item) > MAX_STRING:
            problems.append(problem(
                "invalid_input", f"{where} is {len(item)} characters; at most {MAX_STRING}", name))
        elif "\x00" in item:
            problems.append(problem("invalid_input", f"{where} contains a NUL character", name))
        elif name.endswith("locations"):
            try:
                parse_location(item)
            except ValueError as exc:
                problems.append(problem("invalid_input", f"{where} ({item!r}): {exc}", name))
        elif name.endswith("domains") and not domain_is_named(item):
            problems.append(problem(
                "invalid_input", f"{where} ({item!r}) names no domain once normalised (scheme, "
                "www., path and trailing dots removed)", name))
        cleaned.append(item)
    if problems:
        raise _FieldProblems(problems)
    return cleaned


def _check_int(name: str, value: Any, from_text: bool) -> int:
    if from_text:
        if not re.fullmatch(r"[+-]?[0-9]{1,18}", value.strip()):  # ASCII digits only
            raise _bad(name, f"'{name}' must be a whole number, got {value!r}")
        value = int(value)
    elif not isinstance(value, int) or isinstance(value, bool):
        raise _bad(name, f"'{name}' must be a JSON integer, got {_json_type(value)}")
    low, high = INT_RANGES[name]
    if value < low or (high is not None and value > high):
        allowed = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise _bad(name, f"'{name}' must be {allowed}, got {value}")
    return value


INT_RANGES: dict[str, tuple[int, int | None]] = {
    "page": (1, None), "per_page": (1, 100), "limit": (1, MAX_LIMIT),
    "employee_count_min": (0, None), "employee_count_max": (0, None),
}


# What sql/keys.sql's normalised_domain keeps of a value, but for case: a value is refused
# when nothing is left. Lower-casing changes none of these characters, so the test here and
# the macro that folds the value in the query agree on what is empty.
_DOMAIN_PART = re.compile(r"(?:https?://)?(?:www\.)?([^/?#:]*)", re.IGNORECASE | re.ASCII)


def domain_is_named(value: str) -> bool:
    """Whether a domain value is non-empty once normalised as a domain (SPEC 3.1)."""
    return bool(_DOMAIN_PART.match(value).group(1).rstrip("."))


def _check_bool(name: str, value: Any, from_text: bool) -> bool:
    if from_text:
        text = value.strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise _bad(name, f"'{name}' must be true, false, 1 or 0, got {value!r}")
    if not isinstance(value, bool):
        raise _bad(name, f"'{name}' must be a JSON boolean, got {_json_type(value)}")
    return value


_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.(\d{1,9}))?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 with Z or an offset, a naive date-time (UTC), or a date (midnight UTC)."""
    text = text.strip()
    match = _TIMESTAMP.fullmatch(text)
    if not match:
        raise ValueError("expected an ISO 8601 timestamp such as 2024-01-31T12:00:00Z or a date "
                         "such as 2024-01-31")
    if match.group(1) and len(match.group(1)) > 6:  # Python keeps microseconds only
        text = text.replace(match.group(1), match.group(1)[:6], 1)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a valid date or time ({exc})") from None


def _check_timestamp(name: str, value: Any, from_text: bool) -> datetime:
    if not isinstance(value, str):
        raise _bad(name, f"'{name}' must be an ISO 8601 string, got {_json_type(value)}")
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise _bad(name, f"'{name}' {value!r}: {exc}") from None


def _check_format(name: str, value: Any, from_text: bool) -> str:
    formats = ("ndjson", "csv", "parquet", "arrow")
    if not isinstance(value, str):  # not its repr, which may be a nested array 64 KiB long
        raise _bad(name, f"'{name}' must be one of {', '.join(formats)}, got {_json_type(value)}")
    if value.strip().lower() not in formats:
        raise _bad(name, f"'{name}' must be one of {', '.join(formats)}, got {value!r}")
    return value.strip().lower()


_CHECKS = {
    "strings": _check_strings, "int": _check_int, "bool": _check_bool,
    "timestamp": _check_timestamp, "format": _check_format,
}


def _cross_field_problems(clean: dict[str, Any], target: type, endpoint: str) -> list[ErrorObject]:
    problems = []
    after, before = clean.get("added_after"), clean.get("added_before")
    if after is not None and before is not None and after > before:
        problems.append(problem(
            "invalid_input", "'added_after' is later than 'added_before'; no record can match",
            "added_after"))
    low, high = clean.get("employee_count_min"), clean.get("employee_count_max")
    if low is not None and high is not None and low > high:
        problems.append(problem(
            "invalid_input", f"'employee_count_min' ({low}) is greater than "
            f"'employee_count_max' ({high}); no record can match", "employee_count_min"))
    if "page" in {f.name for f in msgspec.structs.fields(target)}:
        page, per_page = clean.get("page", 1), clean.get("per_page", 25)
        if page * per_page > MAX_WINDOW:
            export = endpoint.replace(" search", "").strip()
            problems.append(problem(
                "invalid_input",
                f"page * per_page is {page * per_page}; paging reaches at most {MAX_WINDOW:,} "
                f"records. Use the bulk export (POST /v1/{export}/export) for the whole result",
                "page"))
    return problems


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
