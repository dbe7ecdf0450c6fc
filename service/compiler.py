"""The SQL compiler: a validated search request becomes parameterized DuckDB queries.

Every search is two queries over the snapshot's tables: one for the page, one for the exact
total. Company conditions reach the contacts search as one semi-join
(`company_idx IN (SELECT idx FROM company WHERE ...)`), evaluated once over the companies.
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
    page_sql: str
    page_params: list[Any]
    count_sql: str
    count_params: list[Any]


def compile_companies_query(request: CompanySearch) -> CompiledQuery:
    where = companies_where(request)
    return CompiledQuery(
        page_sql=f"SELECT {_columns('company', COMPANY_FIELDS)} FROM company "
                 f"WHERE {where.sql} ORDER BY id LIMIT ? OFFSET ?",
        page_params=[*where.params, *_window(request)],
        count_sql=f"SELECT count(*) FROM company WHERE {where.sql}",
        count_params=where.params,
    )


def compile_contacts_query(request: ContactSearch) -> CompiledQuery:
    where = contacts_where(request)
    return CompiledQuery(
        page_sql=f"SELECT {CONTACT_RECORD_COLUMNS} FROM "
                 f"(SELECT * FROM contact WHERE {where.sql} ORDER BY id LIMIT ? OFFSET ?) contact "
                 "JOIN company ON company.idx = contact.company_idx ORDER BY contact.id",
        page_params=[*where.params, *_window(request)],
        count_sql=f"SELECT count(*) FROM contact WHERE {where.sql}",
        count_params=where.params,
    )


def companies_where(request: CompanyFilters) -> Fragment:
    return _all_of(conditions(request, "company"))


def contacts_where(request: ContactFilters) -> Fragment:
    found = conditions(request, "contact")
    company = conditions(request, "company")
    if company:
        inner = _all_of(company)
        found.append(Fragment(f"company_idx IN (SELECT idx FROM company WHERE {inner.sql})",
                              inner.params))
    return _all_of(found)


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
