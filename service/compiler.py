"""The SQL compiler: a validated search request becomes parameterized DuckDB queries.

A search is three queries, each shaped by measurement at 10M contacts (README, Performance):
* the page's positions (`cidx` of contact, `idx` of company: the rank of the id), ordered and
  cut by LIMIT/OFFSET, so the sort carries one integer per matching row, not whole records;
* the records at those positions, as JSON text from the records store (`rec`);
* the exact total: count(*); or, for a contacts search that filters company attributes only,
  the sum of the matching companies' precomputed contact_count, which never reads contacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .filters import Fragment, conditions
from .search_requests import CompanyFilters, CompanySearch, ContactFilters, ContactSearch


@dataclass(frozen=True)
class CompiledQuery:
    count_sql: str
    count_params: list[Any]
    page_sql: str       # the positions of the page's records
    page_params: list[Any]
    records_sql: str    # their JSON records, in order; one parameter: the list of positions


def compile_companies_query(request: CompanySearch) -> CompiledQuery:
    where = companies_where(request)
    count = companies_count(request)
    return CompiledQuery(
        count_sql=count.sql,
        count_params=count.params,
        page_sql=f"SELECT idx FROM company WHERE {where.sql} ORDER BY idx LIMIT ? OFFSET ?",
        page_params=[*where.params, *_window(request)],
        records_sql=COMPANY_RECORDS_SQL,
    )


def compile_contacts_query(request: ContactSearch) -> CompiledQuery:
    where = contacts_where(request)
    count = contacts_count(request)
    return CompiledQuery(
        count_sql=count.sql,
        count_params=count.params,
        page_sql=f"SELECT cidx FROM contact WHERE {where.sql} ORDER BY cidx LIMIT ? OFFSET ?",
        page_params=[*where.params, *_window(request)],
        records_sql=CONTACT_RECORDS_SQL,
    )


COMPANY_RECORDS_SQL = (
    "SELECT company_record.record FROM (SELECT unnest(?::INTEGER[]) AS idx) AS page "
    "JOIN rec.company_record USING (idx) ORDER BY idx")
CONTACT_RECORDS_SQL = (
    "SELECT contact_record.head || ',\"company\":' || company_record.record || '}' "
    "FROM (SELECT unnest(?::INTEGER[]) AS cidx) AS page "
    "JOIN rec.contact_record USING (cidx) "
    "JOIN rec.company_record ON company_record.idx = contact_record.company_idx "
    "ORDER BY contact_record.cidx")
# A lookup by id: the record's position, then COMPANY_/CONTACT_RECORDS_SQL.
COMPANY_POSITION_SQL = "SELECT idx FROM company WHERE id = ?"
CONTACT_POSITION_SQL = "SELECT cidx FROM contact WHERE id = ?"


def companies_count(request: CompanyFilters) -> Fragment:
    """The exact number of companies a search (or an export) matches."""
    where = companies_where(request)
    return Fragment(f"SELECT count(*) FROM company WHERE {where.sql}", where.params)


def contacts_count(request: ContactFilters) -> Fragment:
    """The exact number of contacts matched: a count, or for filters on company attributes
    only the sum of the matching companies' contact_count, which never reads contacts."""
    if conditions(request, "contact", on="contact"):
        where = contacts_where(request)
        return Fragment(f"SELECT count(*) FROM contact WHERE {where.sql}", where.params)
    on_companies = companies_where(request)
    return Fragment("SELECT coalesce(sum(contact_count), 0) FROM company "
                    f"WHERE {on_companies.sql}", on_companies.params)


def companies_where(request: CompanyFilters) -> Fragment:
    return _all_of(conditions(request, "company", on="company"))


def contacts_where(request: ContactFilters) -> Fragment:
    return _all_of(conditions(request, "contact", on="contact")
                   + conditions(request, "company", on="contact"))


def _all_of(fragments: list[Fragment]) -> Fragment:
    if not fragments:
        return Fragment("true")
    return Fragment(" AND ".join(f"({f.sql})" for f in fragments),
                    [param for f in fragments for param in f.params])


def _window(request: CompanySearch | ContactSearch) -> list[int]:
    return [request.per_page, (request.page - 1) * request.per_page]
