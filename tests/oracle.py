"""A plain-Python reading of SPEC 3.1-3.3, to check the SQL compiler's answers against.

It shares no code with the service: it reads the fixture drop's rows and applies each rule as
the contract words it.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime

import pyarrow.parquet as pq


def fold(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text.lower() if text else None


def fold_nfc(text: str | None) -> str | None:
    """SPEC 3.1 (v2): trimmed, compared in NFC, lower-cased."""
    text = fold(text)
    return unicodedata.normalize("NFC", text).lower() if text else None


def domain_key(text: str | None) -> str | None:
    """SPEC 3.1: lower-cased; a leading http:// or https://, then www., removed; everything
    from the first / ? # or : on removed; trailing dots removed."""
    text = fold_nfc(text)
    if text is None:
        return None
    for scheme in ("https://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
            break
    text = text.removeprefix("www.")
    return re.split(r"[/?#:]", text, maxsplit=1)[0].rstrip(".") or None


def load(drop) -> tuple[dict[str, dict], dict[str, dict]]:
    companies = {row["id"]: row for row in pq.read_table(drop / "companies.parquet").to_pylist()}
    contacts = {row["id"]: row for row in pq.read_table(drop / "contacts.parquet").to_pylist()}
    return companies, contacts


def company_matches(company: dict, request: dict) -> bool:
    return all(rule(company, request) for rule in COMPANY_RULES)


def contact_matches(contact: dict, company: dict, request: dict) -> bool:
    return company_matches(company, request) and all(rule(contact, request)
                                                     for rule in CONTACT_RULES)


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _tld(company):
    domain = domain_key(company["domain"])
    return domain.split(".")[-1] if domain else None


def _location_matches(company, text: str) -> bool:
    kind, _, value = text.partition(":")
    parts = [fold(p) for p in value.split("||")]
    columns = {"city": ["city", "state", "country"], "state": ["state", "country"],
               "country": ["country"]}[kind.strip().lower()]
    return all(part is None or fold(company[column]) == part
               for column, part in zip(columns, parts, strict=False))


def _any_of(request, field, test) -> bool:
    """Include field: some value matches. Exclude twin: no value matches (a missing attribute
    counts as no match, so it is never left out)."""
    values = request.get(field)
    if values and not any(test(v) for v in values):
        return False
    excluded = request.get(f"exclude_{field}")
    return not (excluded and any(test(v) for v in excluded))


def _equals(column, field):
    return lambda record, request: _any_of(
        request, field, lambda v: fold(record[column]) is not None
        and fold(record[column]) == fold(v))


def _technologies(company, request):
    have = {fold(t) for t in company["technologies"] or [] if fold(t)}
    return _any_of(request, "technologies", lambda v: fold(v) in have)


def _created(company, request):
    created = company["created_at"]
    after, before = request.get("added_after"), request.get("added_before")
    return ((after is None or created >= _parse_time(after))
            and (before is None or created <= _parse_time(before)))


def _employees(company, request):
    count, low, high = (company["employee_count"], request.get("employee_count_min"),
                        request.get("employee_count_max"))
    if low is None and high is None:
        return True
    return count is not None and (low is None or count >= low) and (high is None
                                                                   or count <= high)


def _company_names(company, request):
    name = fold_nfc(company["name"])
    return _any_of(request, "company_names", lambda v: name is not None and fold_nfc(v) in name)


def _company_flags(company, request):
    page = fold(company.get("linkedin_url"))
    generic = [e for e in company.get("generic_emails") or [] if fold(e)]
    return ((not request.get("company_has_linkedin_profile") or page is not None)
            and (not request.get("company_has_generic_email") or bool(generic)))


COMPANY_RULES = [
    _employees,
    lambda c, r: _any_of(r, "domains", lambda v: domain_key(c["domain"]) is not None
                         and domain_key(c["domain"]) == domain_key(v)),
    _company_names,
    _company_flags,
    _equals("industry", "industries"),
    _equals("function", "functions"),
    lambda c, r: _any_of(r, "tlds", lambda v: _tld(c) is not None
                         and _tld(c) == fold(v).lstrip(".")),
    lambda c, r: _any_of(r, "locations", lambda v: _location_matches(c, v)),
    _technologies,
    _created,
]

CONTACT_RULES = [
    _equals("department", "departments"),
    _equals("seniority", "seniorities"),
    lambda k, r: _any_of(r, "job_titles", lambda v: fold(k["job_title"]) is not None
                         and fold(v) in fold(k["job_title"])),
    lambda k, r: not r.get("has_personal_emails") or bool(k["personal_emails"]),
    lambda k, r: not r.get("has_linkedin_profile") or fold(k["linkedin_url"]) is not None,
    lambda k, r: not r.get("is_decision_maker") or bool(k["is_decision_maker"]),
]
