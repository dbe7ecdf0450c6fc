"""A small drop full of the awkward cases: Unicode, odd case and spacing, `%`, `_` and `\\` in
titles, nulls in every nullable column. Deterministic for a seed."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

LOCATIONS = [
    ("San Francisco", "California", "United States"),
    ("Portland", "Oregon", "United States"),
    ("Portland", "Maine", "United States"),
    ("London", None, "United Kingdom"),
    ("London", "Ontario", "Canada"),
    ("Zürich", "Zürich", "Switzerland"),
    ("São Paulo", "São Paulo", "Brazil"),
    ("München", "Bayern", "Germany"),
    (None, None, "Germany"),
    (None, None, None),
]
INDUSTRIES = ["Software Development", " software development ", "Retail", "Financial Services",
              "Hospitals and Health Care", "Éducation", None]
FUNCTIONS = ["Technology", "Finance", "Healthcare", "TECHNOLOGY", None]
DOMAINS = ["acme.io", "Foo.CO.UK", "bar.com", "baz.de", "x.AI", "sub.example.org", "über.de",
           None]
TECHNOLOGIES = ["Salesforce", "HubSpot", "React", "PostgreSQL", "Node.js", "C++", "Go",
                "TensorFlow", "Ñandú CRM", "salesforce "]
TITLES = ["Senior Finance Manager", "finance MANAGER", "100% Growth Hacker", "Sales_Rep",
          "R&D \\ Lead", "Ingeniero de Producción", "ZÜRICH Office Head", "CEO",
          "Chief Executive Officer", "Head of 50% Sales", "a_b c", "VP of Engineering", None]
DEPARTMENTS = ["Finance", "finance", "Sales", "Engineering", "Executive", "Produktion", None]
SENIORITIES = ["Manager", "Senior", "VP", "vp", "C-Level", "Director", "Entry", None]
FIRST = ["Ada", "Grace", "José", "Zoë", None]
# How drops write domains and LinkedIn URLs (SPEC 3.1 and 3.6 normalise them): {} is the value.
DOMAIN_SPELLINGS = ["{}", "{}", "{}", "{}", "www.{}", "https://www.{}/about", "HTTP://{}.",
                    "{}:8080", "{}/"]
LINKEDIN_SPELLINGS = ["https://www.linkedin.com/{}", "https://www.linkedin.com/{}",
                      "HTTPS://UK.LinkedIn.com/{}/?trk=x", "linkedin.com/{}/",
                      "http://www.linkedin.com/{}#about", "https://de.linkedin.com/{}//"]
LAST = ["Lovelace", "Hopper", "Müller", "O'Brien", None]


def write_fixture_drop(out: Path, companies: int = 240, contacts: int = 1200, seed: int = 7,
                       fmt: str = "parquet", optional_columns: bool = True) -> None:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    company_ids = [f"cmp_{i:04d}" for i in range(companies)]
    rng.shuffle(company_ids)  # rows arrive out of order; answers must still be by id
    start = datetime(2015, 1, 1, tzinfo=UTC)
    company_rows = []
    for cid in company_ids:
        city, state, country = rng.choice(LOCATIONS)
        domain = rng.choice(DOMAINS)
        company_rows.append({
            "id": cid,
            "name": f"Company {cid[-4:]}",
            "domain": f"c{cid[-4:]}.{domain}" if domain else None,
            "industry": rng.choice(INDUSTRIES),
            "function": rng.choice(FUNCTIONS),
            "city": city, "state": state, "country": country,
            "technologies": (None if rng.random() < 0.1 else
                             rng.sample(TECHNOLOGIES, rng.randint(0, 4))),
            "employee_count": None if rng.random() < 0.1 else rng.randint(0, 5000),
            "created_at": start + timedelta(seconds=rng.randint(0, 11 * 365 * 86400)),
        })
    contact_rows = []
    for i in range(contacts):
        contact_rows.append({
            "id": f"ctc_{i:05d}",
            "company_id": rng.choice(company_ids),
            "first_name": rng.choice(FIRST), "last_name": rng.choice(LAST),
            "job_title": rng.choice(TITLES),
            "department": rng.choice(DEPARTMENTS),
            "seniority": rng.choice(SENIORITIES),
            "work_email": None if rng.random() < 0.3 else f"person{i}@example.com",
            "personal_emails": rng.choice([None, [], [f"p{i}@gmail.com"],
                                           [f"p{i}@gmail.com", f"q{i}@proton.me"]]),
            "linkedin_url": None if rng.random() < 0.4 else f"https://www.linkedin.com/in/p{i}",
            "is_decision_maker": rng.choice([True, False, None]),
        })
    _add_v2_values(random.Random(seed + 1), company_rows, contact_rows)
    rng.shuffle(contact_rows)
    if not optional_columns:  # a drop made before SPEC v2's optional columns
        for row in company_rows:
            del row["linkedin_url"], row["generic_emails"]
    if fmt == "parquet":
        schema = COMPANY_SCHEMA if optional_columns else pa.schema(
            [f for f in COMPANY_SCHEMA if f.name not in ("linkedin_url", "generic_emails")])
        pq.write_table(pa.Table.from_pylist(company_rows, schema=schema),
                       out / "companies.parquet")
        pq.write_table(pa.Table.from_pylist(contact_rows, schema=CONTACT_SCHEMA),
                       out / "contacts.parquet")
    else:
        write_csv(out / "companies.csv", company_rows)
        write_csv(out / "contacts.csv", contact_rows)


def _add_v2_values(rng: random.Random, companies: list[dict], contacts: list[dict]) -> None:
    """What SPEC v2 reads and matches, from a stream of its own (the other values stay as
    they were): dirty domains, some shared by two companies; company LinkedIn pages and
    generic addresses; contacts' LinkedIn URLs in every spelling; work emails shared by
    several contacts or in another case, and personal emails that are someone's work email."""
    for company in companies:
        if company["domain"] and rng.random() < 0.06:
            company["domain"] = "shared-domain.io"
        if company["domain"]:
            company["domain"] = rng.choice(DOMAIN_SPELLINGS).format(company["domain"])
        slug = "company/" + ("shared-page" if rng.random() < 0.05 else company["id"])
        roll = rng.random()
        company["linkedin_url"] = (None if roll < 0.35 else "  " if roll < 0.4 else
                                   rng.choice(LINKEDIN_SPELLINGS).format(slug))
        company["generic_emails"] = rng.choice([
            None, None, [], [f"info@{company['id']}.io"],
            [" SALES@Shared.io ", "", f"hello@{company['id']}.io"]])
    for contact in contacts:
        if contact["linkedin_url"]:
            slug = contact["linkedin_url"].rsplit("/", 1)[-1]
            slug = "in/shared-profile" if rng.random() < 0.03 else "in/" + rng.choice(
                [slug, slug.upper()])
            contact["linkedin_url"] = rng.choice(LINKEDIN_SPELLINGS).format(slug)
        roll = rng.random()
        if roll < 0.03:
            contact["work_email"] = rng.choice(["shared@example.com", " Shared@Example.COM"])
        elif roll < 0.06 and contact["work_email"]:
            contact["work_email"] = contact["work_email"].upper()
        elif roll < 0.08:
            other = rng.choice(contacts)["work_email"]
            if other:
                contact["personal_emails"] = [*(contact["personal_emails"] or []), other]


def write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_value(value) for key, value in row.items()})


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


COMPANY_SCHEMA = pa.schema([
    ("id", pa.string()), ("name", pa.string()), ("domain", pa.string()),
    ("industry", pa.string()), ("function", pa.string()), ("city", pa.string()),
    ("state", pa.string()), ("country", pa.string()), ("technologies", pa.list_(pa.string())),
    ("employee_count", pa.int64()), ("created_at", pa.timestamp("us", tz="UTC")),
    ("linkedin_url", pa.string()), ("generic_emails", pa.list_(pa.string())),
])
CONTACT_SCHEMA = pa.schema([
    ("id", pa.string()), ("company_id", pa.string()), ("first_name", pa.string()),
    ("last_name", pa.string()), ("job_title", pa.string()), ("department", pa.string()),
    ("seniority", pa.string()), ("work_email", pa.string()),
    ("personal_emails", pa.list_(pa.string())), ("linkedin_url", pa.string()),
    ("is_decision_maker", pa.bool_()),
])
