"""The records of SPEC 3.4, and how a row of the compiler's columns becomes one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from .compiler import COMPANY_FIELDS, CONTACT_FIELDS


class Location(msgspec.Struct):
    city: str | None
    state: str | None
    country: str | None


class Company(msgspec.Struct):
    id: str
    name: str
    domain: str | None
    tld: str | None
    industry: str | None
    function: str | None
    location: Location
    technologies: list[str]
    employee_count: int | None
    created_at: datetime


class Emails(msgspec.Struct):
    work: str | None
    personal: list[str]


class Contact(msgspec.Struct):
    id: str
    first_name: str | None
    last_name: str | None
    full_name: str | None
    job_title: str | None
    department: str | None
    seniority: str | None
    is_decision_maker: bool
    emails: Emails
    linkedin_url: str | None
    company: Company


def company_from_row(row: tuple[Any, ...]) -> Company:
    (id_, name, domain, tld, industry, function, city, state, country, technologies,
     employee_count, created_at) = row
    return Company(
        id=id_, name=name, domain=domain, tld=tld, industry=industry, function=function,
        location=Location(city=city, state=state, country=country),
        technologies=technologies or [], employee_count=employee_count,
        created_at=created_at.replace(tzinfo=UTC),
    )


def contact_from_row(row: tuple[Any, ...]) -> Contact:
    (id_, first_name, last_name, job_title, department, seniority, is_decision_maker,
     work_email, personal_emails, linkedin_url) = row[:_CONTACT_WIDTH]
    return Contact(
        id=id_, first_name=first_name, last_name=last_name,
        full_name=" ".join(part for part in (first_name, last_name) if part) or None,
        job_title=job_title, department=department, seniority=seniority,
        is_decision_maker=bool(is_decision_maker),
        emails=Emails(work=work_email, personal=personal_emails or []),
        linkedin_url=linkedin_url, company=company_from_row(row[_CONTACT_WIDTH:]),
    )


_CONTACT_WIDTH = len(CONTACT_FIELDS)
assert len(COMPANY_FIELDS) == 12
