"""One small class per request filter: its SQL fragment and bound parameters, written once.

Each filter owns an array field `X` and its `exclude_X` twin (SPEC 3.1). `match` returns the
condition "the record matches any of these values"; the compiler uses it as is for `X` and as
`NOT coalesce(match, false)` for `exclude_X`, so a record with no value for the attribute (the
condition is NULL, or its id is in no lookup table) is never left out by an exclusion.

Values reach SQL only as `?` parameters. Case-folding happens in SQL with `lower(?)` on the
value and pre-folded `*_key` columns built by the refresh, so both sides fold alike.
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


ARRAY_FILTERS: tuple[Filter, ...] = (
    LocationFilter(),
    EqualsAny("functions", "company", "function_key"),
    EqualsAny("industries", "company", "industry_key"),
    TldFilter(),
    TechnologyFilter(),
    JobTitleFilter(),
    EqualsAny("departments", "contact", "department_key"),
    EqualsAny("seniorities", "contact", "seniority_key"),
)

# Boolean field -> the contact column that must be true when the field is true.
FLAG_COLUMNS = {
    "has_personal_emails": "has_personal_email",
    "has_linkedin_profile": "has_linkedin",
    "is_decision_maker": "is_decision_maker",
}


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
    if table == "company":
        found.extend(_created_at_range(request.added_after, request.added_before))
    else:
        found.extend(Fragment(column) for name, column in FLAG_COLUMNS.items()
                     if getattr(request, name, None) is True)
    return found


def _created_at_range(after: datetime | None, before: datetime | None) -> list[Fragment]:
    # Snapshot timestamps are naive UTC, so compare with naive UTC values.
    found = []
    if after is not None:
        found.append(Fragment("created_at >= ?", [after.replace(tzinfo=None)]))
    if before is not None:
        found.append(Fragment("created_at <= ?", [before.replace(tzinfo=None)]))
    return found
