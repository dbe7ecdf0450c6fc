"""Match (SPEC 3.6): the records a client already holds, found by email, LinkedIn URL, domain or
name, for a batch of 1 to 100 inputs.

An input's keys are tried in the contract's order; the first that identifies exactly one
record decides. Every key of the batch is normalised and hashed in one DuckDB query, by the
macros that normalised the data (sql/keys.sql), and looked up in the snapshot's sorted key
tables (match_index); the matched records come from the records store in one query.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import duckdb
import msgspec
import numpy as np
from msgspec import Meta

from .compiler import COMPANY_RECORDS_SQL, CONTACT_RECORDS_SQL
from .envelope import ApiError, ErrorObject, problem
from .match_index import HASH_CHECK_TEXT, Found, MatchIndex
from .search_requests import MAX_STRING, domain_is_named

MAX_INPUTS = 100

Text = Annotated[str, Meta(min_length=1, max_length=MAX_STRING)] | None


class ContactMatchInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A contact the client holds: at least one key of email, linkedin_url, or first_name +
    last_name + (company_domain or company_name)."""

    ref: Annotated[str, Meta(max_length=MAX_STRING)] | None = None
    email: Text = None
    linkedin_url: Text = None
    first_name: Text = None
    last_name: Text = None
    company_domain: Text = None
    company_name: Text = None


class CompanyMatchInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A company the client holds: at least one key of domain, linkedin_url or name."""

    ref: Annotated[str, Meta(max_length=MAX_STRING)] | None = None
    domain: Text = None
    linkedin_url: Text = None
    name: Text = None


class ContactMatchRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    inputs: Annotated[list[ContactMatchInput], Meta(min_length=1, max_length=MAX_INPUTS)]


class CompanyMatchRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    inputs: Annotated[list[CompanyMatchInput], Meta(min_length=1, max_length=MAX_INPUTS)]


@dataclass(frozen=True)
class MatchKind:
    """Contacts or companies: the members an input may carry, its keys in the order they are
    tried, and which lookup table (match_index) answers which hashed member."""

    name: str                           # "contacts" or "companies"
    members: tuple[str, ...]
    keys: tuple[str, ...]
    lookups: tuple[tuple[str, str], ...]  # (lookup table, hashed member)
    records_sql: str


CONTACTS = MatchKind(
    "contacts", tuple(f.name for f in msgspec.structs.fields(ContactMatchInput)),
    ("email", "linkedin_url", "name_and_company"),
    (("contact_email", "email"), ("contact_linkedin", "linkedin_url"),
     ("company_domain", "company_domain"), ("company_name", "company_name"),
     ("contact_name", "names")),
    CONTACT_RECORDS_SQL)
COMPANIES = MatchKind(
    "companies", tuple(f.name for f in msgspec.structs.fields(CompanyMatchInput)),
    ("domain", "linkedin_url", "name"),
    (("company_domain", "domain"), ("company_linkedin", "linkedin_url"),
     ("company_name", "name")),
    COMPANY_RECORDS_SQL)


# --- validation -------------------------------------------------------------------------------


def parse_match_body(body: bytes, kind: MatchKind) -> list[dict[str, str]]:
    """The inputs of a match request, each as {member: trimmed value} (ref as given), or an
    ApiError with one error object per problem, each naming `inputs[i].member`."""
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError.one("invalid_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ApiError.one("invalid_json", "the request body must be a JSON object: "
                                           '{"inputs": [...]}')
    errors: list[ErrorObject] = [
        problem("invalid_input", _unknown(name, ("inputs",), f"{kind.name} match"), name)
        for name in raw if name != "inputs"]
    inputs = raw.get("inputs")
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
        got = (f"{len(inputs)} inputs" if isinstance(inputs, list) else
               "nothing" if inputs is None else "no array")
        errors.append(problem("invalid_input", f"'inputs' must be an array of 1 to "
                              f"{MAX_INPUTS} input objects; got {got}", "inputs"))
        raise ApiError(errors)
    cleaned = []
    for i, item in enumerate(inputs):
        values, problems = _check_input(item, f"inputs[{i}]", kind)
        errors.extend(problems)
        cleaned.append(values)
    if errors:
        raise ApiError(errors)
    return cleaned


def _check_input(item: Any, where: str, kind: MatchKind
                 ) -> tuple[dict[str, str], list[ErrorObject]]:
    if not isinstance(item, dict):
        return {}, [problem("invalid_input", f"'{where}' must be an object of "
                            f"{', '.join(kind.members)}", where)]
    values: dict[str, str] = {}
    problems = []
    for member, value in item.items():
        field = f"{where}.{member}"
        if member not in kind.members:
            problems.append(problem("invalid_input", _unknown(field, kind.members,
                                                              f"{kind.name} match"), field))
        elif value is None:
            continue  # as in a search: null is "not given"
        elif not isinstance(value, str):
            problems.append(problem("invalid_input", f"'{field}' must be a string", field))
        elif member == "ref":
            if len(value) > MAX_STRING:
                problems.append(problem("invalid_input", f"'{field}' is {len(value)} "
                                        f"characters; at most {MAX_STRING}", field))
            values[member] = value  # given back as it is
        elif reason := _bad_value(member, value.strip()):
            problems.append(problem("invalid_input", f"'{field}' {reason}", field))
        else:
            values[member] = value.strip()
    if not problems and not carried_keys(values, kind):
        keys = ("email, linkedin_url, or first_name + last_name + (company_domain or "
                "company_name)" if kind.name == "contacts" else "domain, linkedin_url or name")
        problems.append(problem("invalid_input", f"'{where}' carries no key to match on; give "
                                f"at least one of {keys}", where))
    return values, problems


def _bad_value(member: str, value: str) -> str | None:
    if not value:
        return "is empty"
    if len(value) > MAX_STRING:
        return f"is {len(value)} characters; at most {MAX_STRING}"
    if "\x00" in value:
        return "contains a NUL character"
    if member in ("domain", "company_domain") and not domain_is_named(value):
        return f"({value!r}) names no domain once normalised (scheme, www., path removed)"
    if member == "linkedin_url" and not linkedin_is_named(value):
        return f"({value!r}) names no LinkedIn URL once normalised (scheme, query removed)"
    return None


# What sql/keys.sql's normalised_linkedin keeps of a value, but for case (as domain_is_named).
_LINKEDIN_PART = re.compile(r"(?:[a-z][a-z0-9+.\-]*://)?(?:www\.|[a-z]{2}\.)?([^?#]*)",
                            re.IGNORECASE | re.ASCII)


def linkedin_is_named(value: str) -> bool:
    return bool(_LINKEDIN_PART.match(value).group(1).rstrip("/"))


def _unknown(field: str, known: tuple[str, ...], endpoint: str) -> str:
    name = field.rsplit(".", 1)[-1]
    hint = difflib.get_close_matches(name, known, n=1)
    if hint:
        return f"unknown field '{field}' for the {endpoint}; did you mean '{hint[0]}'?"
    return f"unknown field '{field}' for the {endpoint}; known fields: {', '.join(known)}"


def carried_keys(values: dict[str, str], kind: MatchKind) -> list[str]:
    """The keys an input carries, in the order they are tried."""
    carried = []
    for key in kind.keys:
        if key == "name_and_company":
            if ("first_name" in values and "last_name" in values
                    and ("company_domain" in values or "company_name" in values)):
                carried.append(key)
        elif key in values:
            carried.append(key)
    return carried


# --- matching -------------------------------------------------------------------------------

Status = Literal["matched", "ambiguous", "no_match"]
# How each member is normalised before it is hashed (sql/keys.sql).
NORMALISED_BY = {"email": "text", "name": "text", "company_name": "text", "domain": "domain",
                 "company_domain": "domain", "linkedin_url": "linkedin"}
HASH_SQL = (
    "SELECT CASE how WHEN 'text' THEN hash(normalised_text(a))"
    " WHEN 'domain' THEN hash(normalised_domain(a))"
    " WHEN 'linkedin' THEN hash(normalised_linkedin(a))"
    " WHEN 'names' THEN hash(normalised_text(a), normalised_text(b))"
    " ELSE hash(a) END"
    " FROM (SELECT unnest(?::VARCHAR[]) AS how, unnest(?::VARCHAR[]) AS a,"
    " unnest(?::VARCHAR[]) AS b, unnest(range(?)) AS i) ORDER BY i")


@dataclass
class Outcome:
    status: Status
    matched_on: str | None
    candidates: int
    position: int | None


def match_inputs(cursor: duckdb.DuckDBPyConnection, index: MatchIndex, kind: MatchKind,
                 inputs: list[dict[str, str]], hash_check: int | None
                 ) -> tuple[list[Outcome], dict[int, str]]:
    """Each input's outcome, and the records (JSON text) of the matched positions."""
    hashes = _hashes(cursor, inputs, hash_check)
    found: list[dict[str, Found]] = [{} for _ in inputs]
    for lookup, member in kind.lookups:
        wanted = [i for i in range(len(inputs)) if member in hashes[i]]
        for i, records in zip(wanted, index.find(lookup, [hashes[i][member] for i in wanted]),
                              strict=True):
            found[i][member] = records
    outcomes = [_decide(values, found[i], kind) for i, values in enumerate(inputs)]
    positions = sorted({o.position for o in outcomes if o.position is not None})
    records = {}
    if positions:
        rows = cursor.execute(kind.records_sql, [positions]).fetchall()
        records = dict(zip(positions, (row[0] for row in rows), strict=True))
    return outcomes, records


def _hashes(cursor: duckdb.DuckDBPyConnection, inputs: list[dict[str, str]],
            hash_check: int | None) -> list[dict[str, int]]:
    """Every key value of every input, normalised and hashed in one query."""
    how, first, second, slots = ["check"], [HASH_CHECK_TEXT], [None], [(-1, "")]
    for i, values in enumerate(inputs):
        for member, value in values.items():
            if member in NORMALISED_BY:
                how.append(NORMALISED_BY[member])
                first.append(value)
                second.append(None)
                slots.append((i, member))
        if "first_name" in values and "last_name" in values:
            how.append("names")
            first.append(values["first_name"])
            second.append(values["last_name"])
            slots.append((i, "names"))
    rows = cursor.execute(HASH_SQL, [how, first, second, len(how)]).fetchall()
    if hash_check is not None and rows[0][0] != hash_check:
        raise ApiError.one("unavailable", "this snapshot's match keys were built by another "
                           "version of the database engine; refresh the data again")
    hashes: list[dict[str, int]] = [{} for _ in inputs]
    for (i, member), (value,) in zip(slots[1:], rows[1:], strict=True):
        hashes[i][member] = value
    return hashes


def _decide(values: dict[str, str], found: dict[str, Found], kind: MatchKind) -> Outcome:
    """SPEC 3.6: the first carried key with exactly one record decides; else ambiguous when
    a tried key matched more than one, else no_match. candidates: the most records one of the
    tried keys matched."""
    most = 0
    for key in carried_keys(values, kind):
        positions = _records_of(key, found)
        most = max(most, len(positions))
        if len(positions) == 1:
            return Outcome("matched", key, most, int(positions[0]))
    return Outcome("ambiguous" if most > 1 else "no_match", None, most, None)


def _records_of(key: str, found: dict[str, Found]) -> np.ndarray:
    if key != "name_and_company":
        return found[key].positions
    # the contacts of that name, at a company of that domain or of that name
    companies = [found[member].positions for member in ("company_domain", "company_name")
                 if member in found]
    people = found["names"]
    return people.positions[np.isin(people.companies, np.concatenate(companies))]


def match_body(outcomes: list[Outcome], records: dict[int, str], inputs: list[dict[str, str]],
               dataset: str) -> bytes:
    """The answer: one item per input, in order, the records spliced in as they are stored."""
    items = [{"ref": values.get("ref"), "status": o.status, "matched_on": o.matched_on,
              "candidates": o.candidates,
              "record": msgspec.Raw(records[o.position].encode()) if o.position is not None
              else None} for values, o in zip(inputs, outcomes, strict=True)]
    matched = sum(o.status == "matched" for o in outcomes)
    return msgspec.json.encode({"data": items, "meta": {
        "dataset": dataset, "inputs": len(inputs), "matched": matched}, "errors": []})
