"""The records of SPEC 3.4 as Structs: the OpenAPI document's schemas, and what the tests
decode answers into. The records themselves are rendered once per snapshot, as JSON, by
sql/refresh/4_build_records.sql."""

from __future__ import annotations

from datetime import datetime

import msgspec


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
    linkedin_url: str | None
    generic_emails: list[str]
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
