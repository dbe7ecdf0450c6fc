"""The SQL compiler: a validated search request becomes parameterized DuckDB queries.

A companies search is two queries: the page, and the exact total. A contacts search is three,
each shaped by measurement at 10M contacts (README, Performance):
* the total: count(*) over contact; or, when only company attributes are filtered, the sum of
  the matching companies' precomputed contact_count, which never touches the 10M rows;
* the page's positions: `cidx` only, ordered and cut by LIMIT/OFFSET, so the sort carries one
  integer per matching row instead of whole records;
* the records at those positions, joined to their companies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .filters import Fragment, conditions
from .search_requests import CompanyFilters, CompanySearch, ContactFilters, ContactSearch

COMPANY_FIELDS = ("id", "name", "domain", "tld", "industry", "function", "city", "state",
                  "country", "technologies", "employee_count", "created_at")
CONTACT_FIELDS = ("id", "first_name", "last_name", "job_title", "department", "seniority",
                  "is_decision_maker", "work_email", "personal_emails", "linkedin_url")


@dataclass(frozen=True)
class CompiledQuery:
    count_sql: str
    count_params: list[Any]
    page_sql: str
    page_params: list[Any]
    # Contacts only: the records for the list of positions the page query found (one param).
    records_sql: str | None = None


def compile_companies_query(request: CompanySearch) -> CompiledQuery:
    where = companies_where(request)
    return CompiledQuery(
        count_sql=f"SELECT count(*) FROM company WHERE {where.sql}",
        count_params=where.params,
        page_sql=f"SELECT {_columns('company', COMPANY_FIELDS)} FROM company "
                 f"WHERE {where.sql} ORDER BY idx LIMIT ? OFFSET ?",
        page_params=[*where.params, *_window(request)],
    )


def compile_contacts_query(request: ContactSearch) -> CompiledQuery:
    where = contacts_where(request)
    if conditions(request, "contact", on="contact"):
        count = Fragment(f"SELECT count(*) FROM contact WHERE {where.sql}", where.params)
    else:
        on_companies = companies_where(request)
        count = Fragment("SELECT coalesce(sum(contact_count), 0) FROM company "
                         f"WHERE {on_companies.sql}", on_companies.params)
    return CompiledQuery(
        count_sql=count.sql,
        count_params=count.params,
        page_sql=f"SELECT cidx FROM contact WHERE {where.sql} ORDER BY cidx LIMIT ? OFFSET ?",
        page_params=[*where.params, *_window(request)],
        records_sql=f"SELECT {CONTACT_RECORD_COLUMNS} "
                    "FROM (SELECT unnest(?::INTEGER[]) AS cidx) AS page "
                    "JOIN contact ON contact.cidx = page.cidx "
                    "JOIN company ON company.idx = contact.company_idx ORDER BY contact.cidx",
    )


def companies_where(request: CompanyFilters) -> Fragment:
    return _all_of(conditions(request, "company", on="company"))


def contacts_where(request: ContactFilters) -> Fragment:
    return _all_of(conditions(request, "contact", on="contact")
                   + conditions(request, "company", on="contact"))


def lookup_company_sql() -> str:
    return f"SELECT {_columns('company', COMPANY_FIELDS)} FROM company WHERE id = ?"


def lookup_contact_sql() -> str:
    return (f"SELECT {CONTACT_RECORD_COLUMNS} FROM contact "
            "JOIN company ON company.idx = contact.company_idx WHERE contact.id = ?")


def _columns(table: str, fields: tuple[str, ...]) -> str:
    return ", ".join(f'{table}."{name}"' for name in fields)


CONTACT_RECORD_COLUMNS = (f"{_columns('contact', CONTACT_FIELDS)}, "
                          f"{_columns('company', COMPANY_FIELDS)}")


def _all_of(fragments: list[Fragment]) -> Fragment:
    if not fragments:
        return Fragment("true")
    return Fragment(" AND ".join(f"({f.sql})" for f in fragments),
                    [param for f in fragments for param in f.params])


def _window(request: CompanySearch | ContactSearch) -> list[int]:
    return [request.per_page, (request.page - 1) * request.per_page]
