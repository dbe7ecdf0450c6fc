"""One small class per request filter: its SQL fragment and bound parameters, written once.

Each filter owns an array field `X` and its `exclude_X` twin (SPEC 3.1). `match` returns the
condition "the record matches any of these values"; the compiler uses it as is for `X` and as
`NOT coalesce(match, false)` for `exclude_X`, so a record with no value for the attribute (the
condition is NULL, or its id is in no lookup table) is never left out by an exclusion.

Values reach SQL only as `?` parameters. Case-folding happens in SQL with `lower(?)` on the
value and pre-folded `*_key` columns built by the refresh, so both sides fold alike; the v2
filters fold with the macros of sql/keys.sql, stored in the snapshot, which the refresh used.

The scalar filters (ranges and flags) are classes too, each giving its conditions for a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .search_requests import parse_location


@dataclass(frozen=True)
class Fragment:
    sql: str
    params: list[Any] = field(default_factory=list)


def _placeholders(count: int) -> str:
    return ", ".join(["lower(?)"] * count)


class Filter:
    """An array field of a search request.

    `table` says whose attribute it tests: "contact" filters run on the contact table only;
    "company" filters run on the company table, and on the contact table too, which repeats
    its company's match keys. `on` names the table the fragment is for.
    """

    name: str
    table: str  # "company" or "contact"

    def match(self, values: list[str], on: str) -> Fragment:
        raise NotImplementedError


@dataclass(frozen=True)
class EqualsAny(Filter):
    """The attribute equals any of the values (case-insensitive)."""

    name: str
    table: str
    key_column: str

    def match(self, values: list[str], on: str) -> Fragment:
        return Fragment(f"{self.key_column} IN ({_placeholders(len(values))})", list(values))


@dataclass(frozen=True)
class TldFilter(Filter):
    """The last label of the domain; a leading dot is ignored (`.io` = `io`)."""

    name: str = "tlds"
    table: str = "company"

    def match(self, values: list[str], on: str) -> Fragment:
        tlds = [value.lstrip(".") for value in values]
        return Fragment(f"tld IN ({_placeholders(len(tlds))})", tlds)


@dataclass(frozen=True)
class TechnologyFilter(Filter):
    """List overlap, answered from the company_technology lookup table."""

    name: str = "technologies"
    table: str = "company"

    def match(self, values: list[str], on: str) -> Fragment:
        company_index = "idx" if on == "company" else "company_idx"
        return Fragment(
            f"{company_index} IN (SELECT company_idx FROM company_technology "
            f"WHERE tech_key IN ({_placeholders(len(values))}))", list(values))


@dataclass(frozen=True)
class LocationFilter(Filter):
    """The location grammar of SPEC 3.2; empty parts are wildcards."""

    name: str = "locations"
    table: str = "company"

    def match(self, values: list[str], on: str) -> Fragment:
        alternatives, params = [], []
        for value in values:
            location = parse_location(value)
            parts = [(column, part) for column, part in (
                ("city_key", location.city), ("state_key", location.state),
                ("country_key", location.country)) if part is not None]
            alternatives.append(" AND ".join(f"{column} = lower(?)" for column, _ in parts))
            params.extend(part for _, part in parts)
        return Fragment(" OR ".join(f"({sql})" for sql in alternatives), params)


@dataclass(frozen=True)
class JobTitleFilter(Filter):
    """Substring match over the distinct titles, then the contacts with those titles.

    `contains` is a plain substring test, so `%`, `_` and `\\` are literal characters.
    """

    name: str = "job_titles"
    table: str = "contact"

    def match(self, values: list[str], on: str) -> Fragment:
        tests = " OR ".join(["contains(title_key, lower(?))"] * len(values))
        return Fragment(f"title_idx IN (SELECT idx FROM title WHERE {tests})", list(values))


@dataclass(frozen=True)
class DomainFilter(Filter):
    """The company's domain equals any value, both normalised as a domain (SPEC 3.1). Up to
    1,000 values (an account list) travel as one list parameter, folded by the same macro
    that folded the data. The companies are found in the company_domain lookup table by the
    hash of the domain, then by its text (so a shared hash never lets a company in)."""

    name: str = "domains"
    table: str = "company"

    def match(self, values: list[str], on: str) -> Fragment:
        folded = "normalised_domain(unnest(?::VARCHAR[]))"
        company_index = "idx" if on == "company" else "company_idx"
        return Fragment(
            f"{company_index} IN (SELECT idx FROM company_domain WHERE h IN (SELECT hash({folded}))"
            f" AND domain_key IN (SELECT {folded}))", [list(values), list(values)])


@dataclass(frozen=True)
class CompanyNameFilter(Filter):
    """The company's name contains any value (the rule of job_titles: case-insensitive, `%`,
    `_` and `\\` literal), compared in NFC."""

    name: str = "company_names"
    table: str = "company"

    def match(self, values: list[str], on: str) -> Fragment:
        tests = " OR ".join(["contains(name_key, normalised_text(?))"] * len(values))
        return Fragment(_on_company(tests, on), list(values))


def _on_company(test: str, on: str) -> str:
    """A test of company columns that the contact table does not repeat: on contacts, the
    contacts of the matching companies, by company_idx (the matches are few companies, as for
    technologies)."""
    if on == "company":
        return test
    return f"company_idx IN (SELECT idx FROM company WHERE {test})"


ARRAY_FILTERS: tuple[Filter, ...] = (
    LocationFilter(),
    EqualsAny("functions", "company", "function_key"),
    EqualsAny("industries", "company", "industry_key"),
    TldFilter(),
    TechnologyFilter(),
    JobTitleFilter(),
    EqualsAny("departments", "contact", "department_key"),
    EqualsAny("seniorities", "contact", "seniority_key"),
    DomainFilter(),
    CompanyNameFilter(),
)


@dataclass(frozen=True)
class FlagFilter:
    """A boolean field: `true` keeps the records whose `column` is true; `false` or absent
    filters nothing. Company flags are repeated on the contact table under the same name."""

    name: str
    table: str
    column: str

    def conditions(self, request: Any) -> list[Fragment]:
        return [Fragment(self.column)] if getattr(request, self.name, None) is True else []


@dataclass(frozen=True)
class RangeFilter:
    """`<name>_min` / `<name>_max`: the column >= / <= the value. A record without a value
    (NULL) never matches either bound. The contact table repeats the company's column."""

    name: str
    table: str
    column: str

    def conditions(self, request: Any) -> list[Fragment]:
        found = []
        if (low := getattr(request, f"{self.name}_min", None)) is not None:
            found.append(Fragment(f"{self.column} >= ?", [low]))
        if (high := getattr(request, f"{self.name}_max", None)) is not None:
            found.append(Fragment(f"{self.column} <= ?", [high]))
        return found


SCALAR_FILTERS: tuple[FlagFilter | RangeFilter, ...] = (
    FlagFilter("has_personal_emails", "contact", "has_personal_email"),
    FlagFilter("has_linkedin_profile", "contact", "has_linkedin"),
    FlagFilter("is_decision_maker", "contact", "is_decision_maker"),
    FlagFilter("company_has_linkedin_profile", "company", "company_has_linkedin"),
    FlagFilter("company_has_generic_email", "company", "company_has_generic_email"),
    RangeFilter("employee_count", "company", "employee_count"),
)


def conditions(request: Any, table: str, on: str) -> list[Fragment]:
    """Every condition the request puts on `table`'s attributes, as fragments over the table
    `on` ("company" attributes can be tested on both tables). ANDed by the caller."""
    found = []
    for flt in ARRAY_FILTERS:
        if flt.table != table:
            continue
        if values := getattr(request, flt.name, None):
            found.append(flt.match(values, on))
        if values := getattr(request, f"exclude_{flt.name}", None):
            excluded = flt.match(values, on)
            found.append(Fragment(f"NOT coalesce(({excluded.sql}), false)", excluded.params))
    for scalar in SCALAR_FILTERS:
        if scalar.table == table:
            found.extend(scalar.conditions(request))
    if table == "company":
        found.extend(_created_at_range(request.added_after, request.added_before))
    return found


def _created_at_range(after: datetime | None, before: datetime | None) -> list[Fragment]:
    # Snapshot timestamps are naive UTC, so compare with naive UTC values.
    found = []
    if after is not None:
        found.append(Fragment("created_at >= ?", [after.replace(tzinfo=None)]))
    if before is not None:
        found.append(Fragment("created_at <= ?", [before.replace(tzinfo=None)]))
    return found
