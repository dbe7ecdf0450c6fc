"""Tests for the synthetic drop generator (service/generate.py)."""

import csv
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.generate import VOCAB_DIR, _ids, generate_drop

COMPANIES, CONTACTS, SEED = 400, 5_000, 7

# Written out independently of the module's own schema constants on purpose.
COMPANY_COLUMNS = [
    ("id", pa.string(), False),
    ("name", pa.string(), False),
    ("domain", pa.string(), True),
    ("industry", pa.string(), True),
    ("function", pa.string(), True),
    ("city", pa.string(), True),
    ("state", pa.string(), True),
    ("country", pa.string(), True),
    ("technologies", pa.list_(pa.string()), True),
    ("employee_count", pa.int64(), True),
    ("created_at", pa.timestamp("us", tz="UTC"), False),
    ("linkedin_url", pa.string(), True),
    ("generic_emails", pa.list_(pa.string()), True),
]
CONTACT_COLUMNS = [
    ("id", pa.string(), False),
    ("company_id", pa.string(), False),
    ("first_name", pa.string(), True),
    ("last_name", pa.string(), True),
    ("job_title", pa.string(), True),
    ("department", pa.string(), True),
    ("seniority", pa.string(), True),
    ("work_email", pa.string(), True),
    ("personal_emails", pa.list_(pa.string()), True),
    ("linkedin_url", pa.string(), True),
    ("is_decision_maker", pa.bool_(), True),
]
SENIOR = {"Director", "VP", "C-Level", "Owner", "Partner"}


@pytest.fixture(scope="module")
def drop(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("drop")
    assert generate_drop(out, COMPANIES, CONTACTS, seed=SEED) == {
        "companies": COMPANIES, "contacts": CONTACTS}
    return out


@pytest.fixture(scope="module")
def companies(drop) -> list[dict]:
    return pq.read_table(drop / "companies.parquet").to_pylist()


@pytest.fixture(scope="module")
def contacts(drop) -> list[dict]:
    return pq.read_table(drop / "contacts.parquet").to_pylist()


def _assert_schema(path: Path, expected) -> None:
    schema = pq.read_schema(path)
    assert [(f.name, f.type, f.nullable) for f in schema] == expected


def test_schemas_are_exact(drop):
    _assert_schema(drop / "companies.parquet", COMPANY_COLUMNS)
    _assert_schema(drop / "contacts.parquet", CONTACT_COLUMNS)


def test_ids_are_unique_padded_and_in_order(companies, contacts):
    assert [c["id"] for c in companies] == [f"cmp_{i:07d}" for i in range(1, COMPANIES + 1)]
    assert [c["id"] for c in contacts] == [f"ctc_{i:07d}" for i in range(1, CONTACTS + 1)]


def test_id_width_grows_past_seven_digits():
    ids = _ids("cmp_", np.arange(9_999_997, 10_000_000), 10_000_001).to_pylist()
    assert ids == ["cmp_09999998", "cmp_09999999", "cmp_10000000"]
    assert ids == sorted(ids)


def test_every_contact_works_at_an_existing_company(companies, contacts):
    ids = {c["id"] for c in companies}
    employers = [c["company_id"] for c in contacts]
    assert set(employers) <= ids
    # Bigger companies get more contacts.
    size = {c["id"]: c["employee_count"] or 0 for c in companies}
    big = sorted(ids, key=size.get)[-COMPANIES // 10:]
    share_big = sum(e in set(big) for e in employers) / len(employers)
    assert share_big > 0.3


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_same_seed_same_bytes_other_seed_other_data(tmp_path, fmt):
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        generate_drop(tmp_path / name, 50, 400, seed=seed, fmt=fmt)
    for table in ("companies", "contacts"):
        a, b, c = ((tmp_path / d / f"{table}.{fmt}").read_bytes() for d in "abc")
        assert a == b
        assert a != c


def test_csv_matches_parquet_row_for_row(drop, tmp_path, companies, contacts):
    generate_drop(tmp_path, COMPANIES, CONTACTS, seed=SEED, fmt="csv")
    for name, rows, columns in (("companies", companies, COMPANY_COLUMNS),
                                ("contacts", contacts, CONTACT_COLUMNS)):
        with open(tmp_path / f"{name}.csv", newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            assert next(reader) == [c for c, _, _ in columns]
            assert [_csv_row(r) for r in rows] == list(reader)


def _csv_row(row: dict) -> list[str]:
    """How the CSV format spells a row: lists ';'-joined, empty field = null or empty."""
    out = []
    for value in row.values():
        if value is None or value == []:
            out.append("")
        elif isinstance(value, bool):
            out.append("true" if value else "false")
        elif isinstance(value, list):
            out.append(";".join(value))
        elif isinstance(value, datetime):
            out.append(value.strftime("%Y-%m-%dT%H:%M:%SZ"))
        else:
            out.append(str(value))
    return out


def test_contact_shares(contacts):
    n = len(contacts)
    deciders = [c for c in contacts if c["is_decision_maker"]]
    assert 0.11 < len(deciders) / n < 0.19
    assert sum(c["seniority"] in SENIOR for c in deciders) / len(deciders) > 0.6

    def rate(level):
        group = [c for c in contacts if c["seniority"] == level]
        return sum(bool(c["is_decision_maker"]) for c in group) / len(group)
    assert rate("Entry") < 0.03 < 0.6 < rate("C-Level")

    assert 0.55 < sum(c["linkedin_url"] is not None for c in contacts) / n < 0.65
    assert 0.26 < sum(bool(c["personal_emails"]) for c in contacts) / n < 0.34
    assert 0.005 < sum(c["job_title"] is None for c in contacts) / n < 0.04
    assert 0.01 < sum(c["last_name"] is None for c in contacts) / n < 0.06


def test_contact_handles_are_well_formed(companies, contacts):
    domain = {c["id"]: c["domain"] for c in companies}
    email = re.compile(r"^[a-z0-9][a-z0-9._-]*@[a-z0-9.-]+\.[a-z]{2,}$")
    profile = re.compile(r"^https://www\.linkedin\.com/in/[a-z0-9-]+$")
    for c in contacts:
        work = c["work_email"]
        if domain[c["company_id"]] is None:
            assert work is None
        elif work is not None:
            assert email.match(work) and work.endswith("@" + domain[c["company_id"]])
        personal = c["personal_emails"] or []
        assert len(personal) <= 2 and len(set(personal)) == len(personal)
        assert all(email.match(e) for e in personal)
        assert c["linkedin_url"] is None or profile.match(c["linkedin_url"])
    with_domain = [c for c in contacts if domain[c["company_id"]] is not None]
    missing = sum(c["work_email"] is None for c in with_domain) / len(with_domain)
    assert 0.06 < missing < 0.14


def test_titles_agree_with_department_and_seniority(contacts):
    seen: dict[str, tuple] = {}
    for c in contacts:
        title = c["job_title"]
        if title is None:
            assert c["department"] is None and c["seniority"] is None
            continue
        assert seen.setdefault(title, (c["department"], c["seniority"])) == (
            c["department"], c["seniority"]), title
        expected = _seniority_from_words(title)
        assert expected in (None, c["seniority"]), (title, c["seniority"])
        for pattern, department in DEPARTMENT_WORDS:
            if re.search(pattern, title):
                assert c["department"] == department, (title, c["department"])
    assert len(seen) > 800  # thousands in a big drop, already many here


DEPARTMENT_WORDS = [
    (r"\bMarketing\b", "Marketing"), (r"\bSales\b", "Sales"), (r"Recruit", "Human Resources"),
    (r"Accountant", "Finance"), (r"Counsel|Paralegal|Attorney", "Legal"),
    (r"Software Engineer", "Engineering"), (r"Customer Success", "Customer Success"),
]


def _seniority_from_words(title: str) -> str | None:
    if "Founder" in title or title in ("Owner", "Co-Owner", "Business Owner"):
        return "Owner"
    if title.endswith("Partner"):
        return "Partner"
    if (title.startswith("Chief ") and title != "Chief of Staff") or re.search(
            r"\b(CEO|CFO|CTO|COO|CMO|CIO|CISO|CRO|CPO|CHRO)\b", title):
        return "C-Level"
    if "Vice President" in title or re.match(r"(VP|SVP|EVP|AVP)\b", title):
        return "VP"
    if "Director" in title or "Head of" in title:
        return "Director"
    if "Manager" in title and title != "General Manager":  # a GM runs a business unit
        return "Manager"
    if title.startswith("Junior ") or title.endswith(" Intern"):
        return "Entry"
    if title.startswith("Senior "):
        return "Senior"
    return None


def test_company_realism(companies):
    n = len(companies)
    us = sum(c["country"] == "United States" for c in companies) / n
    assert 0.35 < us < 0.55
    assert len({c["country"] for c in companies}) > 15
    assert sum(c["domain"] is None for c in companies) / n < 0.08
    com = [c["domain"] for c in companies if c["domain"] and c["domain"].endswith(".com")]
    assert 0.45 < len(com) / n < 0.75
    start = datetime(2015, 1, 1, tzinfo=UTC)
    end = datetime(2026, 10, 31, tzinfo=UTC)
    created = [c["created_at"] for c in companies]
    assert all(start <= t < end for t in created)
    middle = start + (end - start) / 2
    assert sum(t >= middle for t in created) / n > 0.55  # growth: recent years dominate
    sizes = [c["employee_count"] for c in companies if c["employee_count"] is not None]
    assert min(sizes) >= 0 and max(sizes) > 20 * sorted(sizes)[len(sizes) // 2]
    tech_lists = [c["technologies"] or [] for c in companies]
    assert all(len(t) <= 30 and len(set(t)) == len(t) for t in tech_lists)
    assert 0.01 < sum(not t for t in tech_lists) / n < 0.12
    assert max(map(len, tech_lists)) > 15


def test_company_pages_and_generic_addresses(companies):
    """SPEC v2's company members: about 60% have a LinkedIn page and 40% a generic address
    at their own domain; some pages are written dirty (upper case, no www., trailing slash),
    as real drops are, and all of them name the company's page."""
    pages = [c["linkedin_url"] for c in companies if c["linkedin_url"]]
    with_generic = [c for c in companies if c["generic_emails"]]
    assert 0.5 < len(pages) / len(companies) < 0.7
    assert 0.3 < len(with_generic) / len(companies) < 0.5
    assert all(re.fullmatch(r"https?://(www\.)?linkedin\.com/company/[a-z0-9-]+/?", page,
                            re.IGNORECASE) for page in pages)
    assert any(page != page.lower() for page in pages)
    assert any(page.endswith("/") for page in pages)
    assert any("//linkedin.com" in page for page in pages)
    for company in with_generic:
        assert 1 <= len(company["generic_emails"]) <= 2
        assert len(set(company["generic_emails"])) == len(company["generic_emails"])
        for address in company["generic_emails"]:
            local, _, domain = address.lower().partition("@")
            assert local in {"info", "contact", "hello", "sales", "support", "office"}
            assert domain == company["domain"]


def test_technology_vocabulary():
    lines = (VOCAB_DIR / "technologies.txt").read_text(encoding="utf-8").splitlines()
    names = [s.strip() for s in lines if s.strip() and not s.startswith("#")]
    assert len(set(names)) >= 1_000
    for product in ("Salesforce", "HubSpot", "Google Analytics", "React", "PostgreSQL",
                    "AWS Lambda"):
        assert product in names
    assert sum(f.stat().st_size for f in VOCAB_DIR.iterdir()) < 1_000_000


def test_used_technologies_come_from_the_vocabulary(companies):
    text = (VOCAB_DIR / "technologies.txt").read_text(encoding="utf-8")
    known = set(text.splitlines())
    used = {t for c in companies for t in c["technologies"] or []}
    assert used <= known and len(used) > 300


def test_unicode_locations_appear(tmp_path):
    generate_drop(tmp_path, 3_000, 0, seed=1)
    rows = pq.read_table(tmp_path / "companies.parquet", columns=["city", "state"]).to_pylist()
    cities = {r["city"] for r in rows}
    assert any(c and not c.isascii() for c in cities)
    assert any(r["city"] is None for r in rows) and any(r["state"] is None for r in rows)


def test_empty_drop_still_has_schema(tmp_path):
    assert generate_drop(tmp_path, 0, 0) == {"companies": 0, "contacts": 0}
    _assert_schema(tmp_path / "companies.parquet", COMPANY_COLUMNS)
    assert pq.read_metadata(tmp_path / "contacts.parquet").num_rows == 0


def test_progress_is_reported(tmp_path):
    calls = []
    generate_drop(tmp_path, 10, 20, progress=lambda *a: calls.append(a))
    assert ("companies", 10, 10) in calls and calls[-1] == ("contacts", 20, 20)


@pytest.mark.parametrize("args", [
    dict(companies=-1, contacts=0),
    dict(companies=5, contacts=-3),
    dict(companies=0, contacts=1),
    dict(companies=5, contacts=5, fmt="json"),
    dict(companies=5, contacts=5, seed=-1),
    dict(companies=2.5, contacts=5),
])
def test_bad_arguments_raise_value_error(tmp_path, args):
    with pytest.raises(ValueError) as err:
        generate_drop(tmp_path / "out", **args)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
