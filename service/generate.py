"""Deterministic synthetic drops: companies and the people who work at them.

Every column is sampled as a whole numpy array and strings are assembled with
pyarrow.compute (take from small vocabulary arrays, element-wise joins), never row by
row, so that ten million contacts take seconds. Vocabularies are plain files under
data/vocab/; each random stream is seeded from (seed, stage, chunk) so output is
byte-identical for the same arguments.
"""

from __future__ import annotations

import csv
import functools
import operator
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

VOCAB_DIR = Path(__file__).resolve().parent.parent / "data" / "vocab"
CHUNK_ROWS = 1_000_000  # bounds peak memory; also the granularity of progress reports

COMPANY_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("name", pa.string(), nullable=False),
    pa.field("domain", pa.string()),
    pa.field("industry", pa.string()),
    pa.field("function", pa.string()),
    pa.field("city", pa.string()),
    pa.field("state", pa.string()),
    pa.field("country", pa.string()),
    pa.field("technologies", pa.list_(pa.string())),
    pa.field("employee_count", pa.int64()),
    pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("linkedin_url", pa.string()),
    pa.field("generic_emails", pa.list_(pa.string())),
])
CONTACT_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("company_id", pa.string(), nullable=False),
    pa.field("first_name", pa.string()),
    pa.field("last_name", pa.string()),
    pa.field("job_title", pa.string()),
    pa.field("department", pa.string()),
    pa.field("seniority", pa.string()),
    pa.field("work_email", pa.string()),
    pa.field("personal_emails", pa.list_(pa.string())),
    pa.field("linkedin_url", pa.string()),
    pa.field("is_decision_maker", pa.bool_()),
])

FORMATS = ("parquet", "csv")
CREATED_FROM = np.datetime64("2015-01-01T00:00:00", "s")
CREATED_TO = np.datetime64("2026-10-31T00:00:00", "s")
CREATED_GROWTH = 1.6  # the newest month is ~5x as common as the oldest one


def generate_drop(out: Path, companies: int, contacts: int, seed: int = 0,
                  fmt: str = "parquet",
                  progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Write companies.<fmt> and contacts.<fmt> into `out`; return the row counts."""
    companies, contacts, seed = _check_args(companies, contacts, seed, fmt)
    report = progress or (lambda stage, done, total: None)
    vocab = _vocab()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    facts = []  # per chunk: what contacts need to know about their employers
    with _Sink(out / f"companies.{fmt}", COMPANY_SCHEMA, fmt) as sink:
        for chunk, start in enumerate(range(0, companies, CHUNK_ROWS)):
            n = min(CHUNK_ROWS, companies - start)
            table, fact = _company_chunk(vocab, _rng(seed, 1, chunk), start, n, companies)
            sink.write(table)
            facts.append(fact)
            report("companies", start + n, companies)
    if companies == 0:
        report("companies", 0, 0)

    employers = _Employers.combine(facts)
    with _Sink(out / f"contacts.{fmt}", CONTACT_SCHEMA, fmt) as sink:
        for chunk, start in enumerate(range(0, contacts, CHUNK_ROWS)):
            n = min(CHUNK_ROWS, contacts - start)
            sink.write(_contact_chunk(vocab, _rng(seed, 2, chunk), start, n, contacts,
                                      employers, companies))
            report("contacts", start + n, contacts)
    if contacts == 0:
        report("contacts", 0, 0)
    return {"companies": companies, "contacts": contacts}


# --- arguments and plumbing ------------------------------------------------------------

def _check_args(companies, contacts, seed, fmt) -> tuple[int, int, int]:
    try:
        companies, contacts, seed = (operator.index(x) for x in (companies, contacts, seed))
    except TypeError:
        raise ValueError("companies, contacts and seed must be integers") from None
    if companies < 0 or contacts < 0:
        raise ValueError(f"counts must be >= 0 (companies={companies}, contacts={contacts})")
    if contacts > 0 and companies == 0:
        raise ValueError("contacts need at least one company to work at")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return companies, contacts, seed


def _rng(seed: int, stage: int, chunk: int) -> np.random.Generator:
    # One independent stream per chunk: output never depends on how much a previous
    # chunk happened to draw.
    return np.random.default_rng([seed, stage, chunk])


def _ids(prefix: str, rows: np.ndarray, total: int) -> pa.Array:
    """Ids for 0-based row numbers: cmp_0000001 is row 0 of `total` rows."""
    width = max(7, len(str(total)))  # fixed width, so string order == numeric order
    numbers = pc.cast(pa.array(rows + 1), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(numbers, width, padding="0"), "")


class _Sink:
    """Streams tables into one Parquet or CSV file."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: str):
        self._csv = fmt == "csv"
        if self._csv:
            self._writer = pacsv.CSVWriter(path, _csv_schema(schema))
        else:
            self._writer = pq.ParquetWriter(path, schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(_csv_table(table) if self._csv else table)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._writer.close()


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([
        pa.field(f.name, pa.string(), f.nullable)
        if pa.types.is_list(f.type) or pa.types.is_timestamp(f.type) else f
        for f in schema
    ])


def _csv_table(table: pa.Table) -> pa.Table:
    """Flatten to what CSV can hold: ';'-joined lists, ISO 8601 UTC timestamps."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_list(field.type):
            joined = pc.binary_join(column, ";")
            # An empty list and a null both mean "none"; CSV says that with an empty field.
            column = pc.if_else(pc.equal(joined, ""), pa.scalar(None, pa.string()), joined)
        elif pa.types.is_timestamp(field.type):
            seconds = pc.cast(column, pa.timestamp("s", tz="UTC"))
            column = pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%SZ")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=_csv_schema(table.schema))


# --- companies -------------------------------------------------------------------------

@dataclass
class _Employers:
    """Company attributes that contacts are derived from, for all companies."""

    region: np.ndarray     # home name region of the company's country (-1 = unknown)
    local: np.ndarray      # chance that an employee has a locally common name
    small: np.ndarray      # tiny firms, where owners and C-level are a big share of staff
    domain: pa.Array
    cum_weight: np.ndarray  # bigger companies get more contacts

    @staticmethod
    def combine(parts: list[dict]) -> _Employers:
        if not parts:
            empty = np.zeros(0)
            return _Employers(empty, empty, empty, pa.array([], pa.string()), empty)
        cat = {k: np.concatenate([p[k] for p in parts]) for k in ("region", "local", "emp")}
        emp = cat["emp"]
        return _Employers(
            region=cat["region"], local=cat["local"], small=emp <= 10,
            domain=pa.concat_arrays([p["domain"] for p in parts]),
            cum_weight=np.cumsum((emp + 1.0) ** 0.75),
        )


def _company_chunk(v: _Vocab, rng: np.random.Generator, start: int, n: int,
                   total: int) -> tuple[pa.Table, dict]:
    loc = v.locations.sample(rng, n)
    country = v.loc_country[loc]
    industry = np.where(rng.random(n) < 0.02, v.industries.null, v.industries.sample(rng, n))
    # A company's function mostly follows from its industry, but not always.
    unknown = industry == v.industries.null
    function = np.where(~unknown & (rng.random(n) < 0.88), v.industry_function[industry],
                        v.functions.sample(rng, n))
    function[unknown & (rng.random(n) < 0.5)] = v.functions.null

    employees = np.maximum(np.rint(rng.lognormal(np.log(18.0), 1.7, n)), 1.0)
    employees = np.minimum(employees, 2_500_000.0)
    employees_missing = rng.random(n) < 0.03
    typical = np.where(employees_missing, 18.0, employees)

    u = rng.random(n)  # inverse CDF of an exponential growth curve over the window
    span = (CREATED_TO - CREATED_FROM).astype(np.int64)
    offset = np.log1p(u * np.expm1(CREATED_GROWTH)) / CREATED_GROWTH * span
    created = (CREATED_FROM.astype(np.int64) + offset.astype(np.int64)) * 1_000_000

    name, domain = _company_names(v, rng, n, function, country)
    linkedin, generic = _company_addresses(rng, domain)
    table = pa.Table.from_arrays([
        _ids("cmp_", np.arange(start, start + n), total),
        name,
        domain,
        v.industries.values.take(industry),
        v.functions.values.take(function),
        v.loc_city.take(loc),
        v.loc_state.take(loc),
        v.countries.take(country),
        _technologies(v, rng, typical),
        pa.array(employees.astype(np.int64), mask=employees_missing),
        pa.array(created, pa.timestamp("us", tz="UTC")),
        linkedin,
        generic,
    ], schema=COMPANY_SCHEMA)
    fact = {"region": v.country_region[country], "local": v.country_local[country],
            "emp": typical, "domain": domain}
    return table, fact


# Company name shapes and how often they occur: "Blue Harbor Analytics", "Bluepath",
# "Hoffmann Consulting", "Miller & Cho", "Zenlytics", "Atlas Capital".
SPACED, COMPOUND, SURNAME, DUO, BRAND, WORD = range(6)
NAME_SHAPES = np.array([0.30, 0.20, 0.14, 0.06, 0.18, 0.12])
SHAPE_DESCRIPTOR = np.array([0.5, 0.35, 1.0, 0.0, 0.3, 1.0])  # "... Analytics" appended
DESCRIPTOR_IN_DOMAIN = np.array([0.25, 0.2, 0.6, 0.0, 0.2, 0.85])
DOMAIN_PREFIXES = ["get", "try", "use", "join", "the"]
DOMAIN_SUFFIXES = ["hq", "app", "inc", "group"]


def _company_names(v: _Vocab, rng: np.random.Generator, n: int, function: np.ndarray,
                   country: np.ndarray) -> tuple[pa.Array, pa.Array]:
    shape = _choice(rng, NAME_SHAPES, n)
    a = v.word_a.sample(rng, n)
    b = v.word_b.sample(rng, n)
    surname = _names_for(rng, v, v.last, country)
    surname2 = _names_for(rng, v, v.last, country)
    prefix = v.brand_prefix.sample(rng, n)
    ending = v.brand_ending.sample(rng, n)
    p = v.name_parts  # offsets of each block in the slot tables

    first = np.select([shape == SURNAME, shape == DUO, shape == BRAND],
                      [p.s1_surname + surname, p.s1_surname + surname, p.s1_brand + prefix],
                      p.s1_word + a)
    second = np.select(
        [shape == SPACED, shape == COMPOUND, shape == DUO, shape == BRAND],
        [p.s2_spaced + b, p.s2_compound + b, p.s2_duo + surname2, p.s2_ending + ending],
        p.s2_empty)
    # Domains sometimes hyphenate two words: blue-harbor.com, miller-cho.com.
    hyphen = rng.random(n) < 0.08
    second_slug = np.where(hyphen & ((shape == SPACED) | (shape == COMPOUND)),
                           p.s2_hyphen_word + b, second)
    second_slug = np.where(hyphen & (shape == DUO), p.s2_hyphen_surname + surname2,
                           second_slug)

    has_descriptor = rng.random(n) < SHAPE_DESCRIPTOR[shape]
    descriptor = _grouped(rng, v.descriptors, np.where(
        (rng.random(n) < 0.7) & (function < v.functions.null), function, v.generic_descriptors))
    third = np.where(has_descriptor, descriptor, v.descriptors.null)
    third_slug = np.where(has_descriptor & (rng.random(n) < DESCRIPTOR_IN_DOMAIN[shape]),
                          descriptor, v.descriptors.null)

    legal = _grouped(rng, v.legal_forms, country)
    legal = np.where(rng.random(n) < 0.35, legal, v.legal_forms.null)

    name = pc.binary_join_element_wise(
        p.s1.take(first), p.s2.take(second), v.descriptor_display.take(third),
        v.legal_display.take(legal), "")

    pre = np.where(rng.random(n) < 0.03, rng.integers(0, len(DOMAIN_PREFIXES), n), -1)
    suf = np.where(rng.random(n) < 0.03, rng.integers(0, len(DOMAIN_SUFFIXES), n), -1)
    cc = v.country_cctld[country]
    tld = np.where((cc >= 0) & (rng.random(n) < v.country_cctld_share[country]), cc,
                   v.tlds.sample(rng, n))
    missing = rng.random(n) < 0.03
    domain = pc.binary_join_element_wise(
        v.domain_prefix.take(pre + 1),
        p.d1.take(np.where(missing, len(p.d1) - 1, first)),  # last slot is null
        p.d2.take(second_slug), v.descriptor_slug.take(third_slug),
        v.domain_suffix.take(suf + 1), ".", v.tld_values.take(tld), "")
    return name, domain


# A company's LinkedIn page, written as drops write it: mostly the canonical form, some in
# upper case, without www. or with a trailing slash (SPEC 3.6 normalises them all alike).
COMPANY_PAGES = pa.array(["https://www.linkedin.com/company/", "https://linkedin.com/company/",
                          "HTTPS://WWW.LINKEDIN.COM/company/", "http://www.linkedin.com/company/"])
COMPANY_PAGE_SHARES = np.array([0.86, 0.06, 0.04, 0.04])
GENERIC_LOCALS = ["info", "contact", "hello", "sales", "support", "office"]


def _company_addresses(rng: np.random.Generator, domain: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The LinkedIn page (about 60% of companies with a domain) and the generic addresses such
    as info@<domain> (about 40%, one or two), named after the domain."""
    n = len(domain)
    known = pc.is_valid(domain).to_numpy(zero_copy_only=False)
    slug = pc.list_element(pc.split_pattern(domain, ".", max_splits=1), 0)
    tail = pa.array(["", "/"]).take(pa.array((rng.random(n) < 0.08).astype(np.int8)))
    page = pc.binary_join_element_wise(
        COMPANY_PAGES.take(pa.array(_choice(rng, COMPANY_PAGE_SHARES, n))), slug, tail, "")
    page = pc.if_else(pa.array(known & (rng.random(n) < 0.60 / 0.97)), page,
                      pa.scalar(None, pa.string()))
    count = np.where(known & (rng.random(n) < 0.40 / 0.97), 1 + (rng.random(n) < 0.3), 0)
    first = rng.integers(0, len(GENERIC_LOCALS), n)
    second = (first + rng.integers(1, len(GENERIC_LOCALS), n)) % len(GENERIC_LOCALS)
    row = np.repeat(np.arange(n), count)
    local = np.where(np.arange(len(row)) == np.searchsorted(row, row), first[row], second[row])
    address = pc.binary_join_element_wise(pa.array(GENERIC_LOCALS).take(pa.array(local)), "@",
                                          domain.take(pa.array(row)), "")
    shout = pa.array(rng.random(len(row)) < 0.03)  # a few written in upper case
    address = pc.if_else(shout, pc.utf8_upper(address), address)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(count, out=offsets[1:])
    return page, pa.ListArray.from_arrays(pa.array(offsets), address,
                                          mask=pa.array(count == 0))


def _technologies(v: _Vocab, rng: np.random.Generator, employees: np.ndarray) -> pa.Array:
    """0-30 distinct products per company, popular ones far more often (Zipf)."""
    n = len(employees)
    # Bigger companies run more software; duplicates drawn below are dropped, so this
    # is a target rather than the final count.
    want = np.rint(rng.lognormal(np.log(3.0 + 1.6 * np.log1p(employees)), 0.55))
    want = np.where(rng.random(n) < 0.05, 0, np.clip(want, 1, 30)).astype(np.int64)
    owner = np.repeat(np.arange(n, dtype=np.int64), want)
    drawn = v.technologies.sample(rng, len(owner))
    # Sorting (company, alphabetical rank) both removes duplicates and lists each
    # company's products alphabetically.
    key = np.sort(owner * v.tech_count + v.tech_alpha_rank[drawn])
    key = key[np.append(True, key[1:] != key[:-1])]  # np.unique hashes: much slower here
    counts = np.bincount(key // v.tech_count, minlength=n)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    # Most companies without products have no list at all, a few an empty one.
    none = (counts == 0) & (rng.random(n) < 0.8)
    values = v.tech_alphabetical.take(key % v.tech_count)
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(none))


# --- contacts --------------------------------------------------------------------------

# Work address shapes: (local part A, separator, local part B) as name-form kinds, see
# _Vocab.forms. john.smith, jsmith, john, johnsmith, john_smith, j.smith, johns, john-smith.
F, FI, L, LI, NONE = range(5)
SEPARATORS = [".", "", "_", "-"]
WORK_SHAPES = np.array([0.45, 0.18, 0.10, 0.10, 0.04, 0.06, 0.05, 0.02])
WORK_A = np.array([F, FI, F, F, F, FI, F, F])
WORK_SEP = np.array([0, 1, 1, 1, 2, 0, 1, 3])
WORK_B = np.array([L, L, NONE, L, L, L, LI, L])
# Personal addresses: john.smith, johnsmith, john_smith, john.smith84, johnsmith1984,
# jsmith84, john427, smith.john.
HOME_SHAPES = np.array([0.22, 0.14, 0.06, 0.16, 0.14, 0.12, 0.10, 0.06])
HOME_A = np.array([F, F, F, F, F, FI, F, L])
HOME_SEP = np.array([0, 1, 2, 0, 1, 1, 1, 0])
HOME_B = np.array([L, L, L, L, L, L, NONE, F])
HOME_NUMBER = np.array([0, 0, 0, 2, 4, 2, 3, 0])  # digits appended (0 = none)
LINKEDIN = "https://www.linkedin.com/in/"


def _contact_chunk(v: _Vocab, rng: np.random.Generator, start: int, n: int, total: int,
                   employers: _Employers, companies: int) -> pa.Table:
    employer = np.searchsorted(employers.cum_weight, rng.random(n) * employers.cum_weight[-1],
                               side="right")
    employer = np.minimum(employer, companies - 1)

    # Names follow the company's country (Müller in München), with a global mix on top.
    region = employers.region[employer]
    first_region = np.where(rng.random(n) < employers.local[employer], region,
                            v.name_regions.sample(rng, n))
    first = _grouped(rng, v.first, first_region)
    last_region = np.where(rng.random(n) < 0.85, first_region, v.name_regions.sample(rng, n))
    last = np.where(rng.random(n) < 0.03, -1, _grouped(rng, v.last, last_region))

    title = v.titles.sample(rng, n)
    boss = employers.small[employer] & (rng.random(n) < 0.12)
    title = np.where(boss, v.top_titles[v.top_table.sample(rng, n)], title)
    title = np.where(rng.random(n) < 0.02, v.titles.null, title)
    seniority = v.title_seniority[title]
    decides = rng.random(n) < v.decision_rate[seniority]

    domain = employers.domain.take(employer)
    shape = _choice(rng, WORK_SHAPES, n)
    work_a, work_sep, work_b = _local_part(v, WORK_A[shape], WORK_SEP[shape], WORK_B[shape],
                                           first, last)
    work_a = np.where(rng.random(n) < 0.10, v.forms_null, work_a)
    work_email = pc.binary_join_element_wise(
        v.forms.take(work_a), v.separators.take(work_sep), v.forms.take(work_b), "@",
        domain, "")

    return pa.Table.from_arrays([
        _ids("ctc_", np.arange(start, start + n), total),
        _ids("cmp_", employer, companies),
        v.first_display.take(first),
        v.last_display.take(np.where(last < 0, v.last.null, last)),
        v.title_values.take(title),
        v.departments.take(v.title_department[title]),
        v.seniorities.take(seniority),
        work_email,
        _personal_emails(v, rng, first, last),
        _linkedin(v, rng, first, last),
        pa.array(decides, mask=title == v.titles.null),  # no known role: unknown, not "no"
    ], schema=CONTACT_SCHEMA)


def _local_part(v: _Vocab, a_kind: np.ndarray, sep: np.ndarray, b_kind: np.ndarray,
                first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, ...]:
    """Indices (forms, separators, forms) for name-based handles like john.smith."""
    # Without a last name an initial alone ("j@acme.com") would be no handle at all.
    a_kind = np.where((last < 0) & (a_kind == FI), F, a_kind)
    a, b = v.form_index(a_kind, first, last), v.form_index(b_kind, first, last)
    sep = np.where((a == v.forms_empty) | (b == v.forms_empty), 1, sep)  # 1 is ""
    return a, sep, b


def _personal_emails(v: _Vocab, rng: np.random.Generator, first: np.ndarray,
                     last: np.ndarray) -> pa.Array:
    n = len(first)
    count = np.where(rng.random(n) < 0.30, 1 + (rng.random(n) < 0.25), 0)
    row = np.repeat(np.arange(n), count)
    m = len(row)
    shape = _choice(rng, HOME_SHAPES, m)
    a, sep, b = _local_part(v, HOME_A[shape], HOME_SEP[shape], HOME_B[shape], first[row],
                            last[row])
    digits = HOME_NUMBER[shape]
    number = np.select([digits == 2, digits == 4, digits == 3],
                       [rng.integers(60, 100, m) % 100, rng.integers(1960, 2006, m),
                        rng.integers(1, 1000, m)], -1)
    number_text = pc.if_else(pa.array(number >= 0), pc.cast(pa.array(number), pa.string()), "")
    # Two addresses of one person never share a provider, so they never coincide.
    provider = v.email_providers.sample(rng, m)
    second = np.zeros(m, bool)
    second[1:] = row[1:] == row[:-1]
    shift = 1 + rng.integers(0, v.email_providers.null - 1, m)
    earlier = provider[np.flatnonzero(second) - 1]
    provider[second] = (earlier + shift[second]) % v.email_providers.null
    values = pc.binary_join_element_wise(
        v.forms.take(a), v.separators.take(sep), v.forms.take(b), number_text, "@",
        v.email_providers.values.take(provider), "")
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(count, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(count == 0))


def _linkedin(v: _Vocab, rng: np.random.Generator, first: np.ndarray,
              last: np.ndarray) -> pa.Array:
    n = len(first)
    kind = _choice(rng, np.array([0.35, 0.40, 0.10, 0.10, 0.05]), n)
    # first-last, first-last-<hex>, firstlast, first-last-<number>, flast
    a, sep, b = _local_part(v, np.where(kind == 4, FI, F),
                            np.where((kind == 2) | (kind == 4), 1, 3), np.full(n, L), first, last)
    a = np.where(rng.random(n) < 0.60, a, v.forms_null)
    no_last = last < 0
    hex_tail = pc.binary_join_element_wise(
        "-", v.hex4.take(rng.integers(0, 1 << 16, n)), v.hex4.take(rng.integers(0, 1 << 16, n)),
        "")
    number_tail = pc.binary_join_element_wise(
        "-", pc.cast(pa.array(rng.integers(1, 10_000, n)), pa.string()), "")
    # A person without a last name on record nearly always has a suffixed profile URL.
    tail = pc.if_else(pa.array((kind == 1) | no_last), hex_tail,
                      pc.if_else(pa.array(kind == 3), number_tail, ""))
    return pc.binary_join_element_wise(
        LINKEDIN, v.forms.take(a), v.separators.take(sep), v.forms.take(b), tail, "")


# --- sampling helpers ------------------------------------------------------------------

@dataclass(frozen=True)
class _Weighted:
    """A weighted vocabulary; index `null` (== len) is a null slot at the end of values."""

    values: pa.Array | None
    cum: np.ndarray

    @staticmethod
    def of(values: list[str] | None, weights) -> _Weighted:
        """values=None: only indices are drawn (e.g. rows of a vocabulary file)."""
        w = np.asarray(weights, dtype=np.float64)
        array = None if values is None else pa.array(list(values) + [None], pa.string())
        return _Weighted(array, np.cumsum(w))

    @property
    def null(self) -> int:
        return len(self.cum)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        idx = np.searchsorted(self.cum, rng.random(n) * self.cum[-1], side="right")
        return np.minimum(idx, len(self.cum) - 1)


@dataclass(frozen=True)
class _Grouped:
    """Weighted vocabulary split into contiguous groups (e.g. names per region)."""

    cum: np.ndarray
    lo: np.ndarray    # cumulative weight before each group
    hi: np.ndarray    # cumulative weight at each group's end
    last: np.ndarray  # index of each group's last entry

    @staticmethod
    def of(groups: np.ndarray, weights, group_count: int) -> _Grouped:
        """`groups` must be sorted; every group needs at least one entry."""
        cum = np.cumsum(np.asarray(weights, dtype=np.float64))
        first = np.searchsorted(groups, np.arange(group_count), side="left")
        end = np.searchsorted(groups, np.arange(group_count), side="right")
        if np.any(end <= first):
            raise ValueError("vocabulary group without entries")
        lo = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0.0)
        return _Grouped(cum, lo, cum[end - 1], end - 1)

    @property
    def null(self) -> int:
        return len(self.cum)


def _grouped(rng: np.random.Generator, table: _Grouped, group: np.ndarray) -> np.ndarray:
    """Draw one entry per row from that row's group, by weight."""
    target = table.lo[group] + rng.random(len(group)) * (table.hi[group] - table.lo[group])
    return np.minimum(np.searchsorted(table.cum, target, side="right"), table.last[group])


def _choice(rng: np.random.Generator, p: np.ndarray, n: int) -> np.ndarray:
    cum = np.cumsum(p)
    return np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), len(p) - 1)


def _names_for(rng: np.random.Generator, v: _Vocab, table: _Grouped,
               country: np.ndarray) -> np.ndarray:
    """Names mostly from the country's own culture, otherwise from the global mix."""
    n = len(country)
    local = rng.random(n) < v.country_local[country]
    region = np.where(local, v.country_region[country], v.name_regions.sample(rng, n))
    return _grouped(rng, table, region)


# --- vocabularies ----------------------------------------------------------------------

def _lines(name: str) -> list[str]:
    text = (VOCAB_DIR / name).read_text(encoding="utf-8")
    return [s.strip() for s in text.splitlines() if s.strip() and not s.startswith("#")]


def _rows(name: str) -> list[dict[str, str]]:
    with open(VOCAB_DIR / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


_ASCII = str.maketrans({"ß": "ss", "ø": "o", "Ø": "o", "ł": "l", "Ł": "l", "æ": "ae",
                        "Æ": "ae", "œ": "oe", "đ": "d", "Đ": "d", "ı": "i", "ð": "d",
                        "Ð": "d", "þ": "th"})


def _slug(text: str) -> str:
    """ASCII lower-case letters and digits only: 'Müller' -> 'muller', "O'Brien" -> 'obrien'."""
    plain = unicodedata.normalize("NFKD", text.translate(_ASCII))
    return "".join(c for c in plain.lower() if c.isascii() and c.isalnum())


@dataclass(frozen=True)
class _NameParts:
    """Slot tables for company names (s1, s2) and domains (d1, d2), with block offsets."""

    s1: pa.Array
    s2: pa.Array
    d1: pa.Array
    d2: pa.Array
    s1_word: int
    s1_surname: int
    s1_brand: int
    s2_spaced: int
    s2_compound: int
    s2_duo: int
    s2_ending: int
    s2_empty: int
    s2_hyphen_word: int
    s2_hyphen_surname: int


@dataclass(frozen=True)
class _Vocab:
    locations: _Weighted
    loc_city: pa.Array
    loc_state: pa.Array
    loc_country: np.ndarray
    countries: pa.Array
    country_region: np.ndarray
    country_local: np.ndarray
    country_cctld: np.ndarray
    country_cctld_share: np.ndarray
    industries: _Weighted
    industry_function: np.ndarray
    functions: _Weighted
    technologies: _Weighted
    tech_count: int
    tech_alpha_rank: np.ndarray
    tech_alphabetical: pa.Array
    word_a: _Weighted
    word_b: _Weighted
    brand_prefix: _Weighted
    brand_ending: _Weighted
    name_parts: _NameParts
    descriptors: _Grouped
    generic_descriptors: int
    descriptor_display: pa.Array
    descriptor_slug: pa.Array
    legal_forms: _Grouped
    legal_display: pa.Array
    tlds: _Weighted
    tld_values: pa.Array
    domain_prefix: pa.Array
    domain_suffix: pa.Array
    name_regions: _Weighted
    first: _Grouped
    last: _Grouped
    first_display: pa.Array
    last_display: pa.Array
    forms: pa.Array
    form_offsets: tuple[int, int, int, int]
    forms_empty: int
    forms_null: int
    separators: pa.Array
    email_providers: _Weighted
    hex4: pa.Array
    titles: _Weighted
    title_values: pa.Array
    title_department: np.ndarray
    title_seniority: np.ndarray
    departments: pa.Array
    seniorities: pa.Array
    decision_rate: np.ndarray
    top_titles: np.ndarray
    top_table: _Weighted

    def form_index(self, kind: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Index into `forms` for a name form kind (F, FI, L, LI, NONE) per row."""
        f0, fi0, l0, li0 = self.form_offsets
        has_last = last >= 0
        idx = np.select([kind == F, kind == FI, (kind == L) & has_last, (kind == LI) & has_last],
                        [f0 + first, fi0 + first, l0 + last, li0 + last], self.forms_empty)
        return idx


@functools.cache
def _vocab() -> _Vocab:
    regions = _rows("name_regions.csv")
    region_id = {r["region"]: i for i, r in enumerate(regions)}

    countries = _rows("countries.csv")
    country_id = {c["country"]: i for i, c in enumerate(countries)}
    locations = _rows("locations.csv")

    industries = _rows("industries.csv")
    function_names = list(dict.fromkeys(r["function"] for r in industries))
    function_id = {f: i for i, f in enumerate(function_names)}
    function_weight = np.zeros(len(function_names))
    for r in industries:
        function_weight[function_id[r["function"]]] += float(r["weight"])

    technologies = _lines("technologies.txt")
    if len(set(technologies)) != len(technologies):
        raise ValueError("technologies.txt has duplicates")
    alphabetical = sorted(technologies, key=lambda t: (t.casefold(), t))
    alpha_rank = {t: i for i, t in enumerate(alphabetical)}
    # Zipf: the line order of technologies.txt is the popularity rank.
    tech_weight = 1.0 / (np.arange(len(technologies)) + 3.0) ** 1.05

    first_rows = sorted(_rows("first_names.csv"), key=lambda r: region_id[r["region"]])
    last_rows = sorted(_rows("last_names.csv"), key=lambda r: region_id[r["region"]])
    first_names = [r["name"] for r in first_rows]
    last_names = [r["name"] for r in last_rows]
    for name in first_names + last_names:
        if not _slug(name):
            raise ValueError(f"name {name!r} has no ASCII spelling for e-mail addresses")

    words_a, words_b = _lines("company_words_first.txt"), _lines("company_words_second.txt")
    prefixes, endings = _lines("company_brand_prefixes.txt"), _lines("company_brand_endings.txt")

    descriptors = _rows("company_descriptors.csv")
    descriptor_group = [function_id.get(r["function"], len(function_names)) for r in descriptors]
    order = np.argsort(descriptor_group, kind="stable")
    descriptors = [descriptors[i] for i in order]

    legal = [(country_id[c["country"]], form) for c in countries
             for form in c["legal_forms"].split(";")]
    tlds = _rows("tlds.csv")
    cctlds = [c["cctld"] for c in countries]

    forms = ([_slug(n) for n in first_names] + [_slug(n)[0] for n in first_names]
             + [_slug(n) for n in last_names] + [_slug(n)[0] for n in last_names])
    nf, nl = len(first_names), len(last_names)

    titles = _title_vocab()
    seniority_rows = _rows("seniorities.csv")
    top = np.flatnonzero(np.isin(titles.seniority, [
        i for i, r in enumerate(seniority_rows) if r["seniority"] in ("Owner", "C-Level")]))

    providers = _rows("personal_email_domains.csv")
    return _Vocab(
        locations=_Weighted.of(None, [float(r["weight"]) for r in locations]),
        loc_city=pa.array([r["city"] or None for r in locations], pa.string()),
        loc_state=pa.array([r["state"] or None for r in locations], pa.string()),
        loc_country=np.array([country_id[r["country"]] for r in locations]),
        countries=pa.array([c["country"] for c in countries]),
        country_region=np.array([region_id[c["name_region"]] for c in countries]),
        country_local=np.array([float(c["local_share"]) for c in countries]),
        country_cctld=np.array([len(tlds) + i if c["cctld"] else -1
                                for i, c in enumerate(countries)]),
        country_cctld_share=np.array([float(c["cctld_share"]) for c in countries]),
        industries=_Weighted.of([r["industry"] for r in industries],
                                [float(r["weight"]) for r in industries]),
        industry_function=np.array([function_id[r["function"]] for r in industries]
                                   + [len(function_names)]),
        functions=_Weighted.of(function_names, function_weight),
        technologies=_Weighted.of(technologies, tech_weight),
        tech_count=len(technologies),
        tech_alpha_rank=np.array([alpha_rank[t] for t in technologies], np.int64),
        tech_alphabetical=pa.array(alphabetical),
        word_a=_Weighted.of(words_a, np.ones(len(words_a))),
        word_b=_Weighted.of(words_b, np.ones(len(words_b))),
        brand_prefix=_Weighted.of(prefixes, np.ones(len(prefixes))),
        brand_ending=_Weighted.of(endings, np.ones(len(endings))),
        name_parts=_name_parts(words_a, words_b, last_names, prefixes, endings),
        descriptors=_Grouped.of(np.sort(descriptor_group), [float(r["weight"])
                                                            for r in descriptors],
                                len(function_names) + 1),
        generic_descriptors=len(function_names),
        descriptor_display=pa.array([" " + r["descriptor"] for r in descriptors] + [""]),
        descriptor_slug=pa.array([_slug(r["descriptor"]) for r in descriptors] + [""]),
        legal_forms=_Grouped.of(np.array([c for c, _ in legal]), np.ones(len(legal)),
                                len(countries)),
        legal_display=pa.array([" " + form for _, form in legal] + [""]),
        tlds=_Weighted.of([t["tld"] for t in tlds], [float(t["weight"]) for t in tlds]),
        tld_values=pa.array([t["tld"] for t in tlds] + cctlds),
        domain_prefix=pa.array([""] + DOMAIN_PREFIXES),
        domain_suffix=pa.array([""] + DOMAIN_SUFFIXES),
        name_regions=_Weighted.of([r["region"] for r in regions],
                                  [float(r["global_weight"]) for r in regions]),
        first=_name_table(first_rows, region_id),
        last=_name_table(last_rows, region_id),
        first_display=pa.array(first_names),
        last_display=pa.array(last_names + [None], pa.string()),
        forms=pa.array(forms + ["", None], pa.string()),
        form_offsets=(0, nf, 2 * nf, 2 * nf + nl),
        forms_empty=len(forms),
        forms_null=len(forms) + 1,
        separators=pa.array(SEPARATORS),
        email_providers=_Weighted.of([p["domain"] for p in providers],
                                     [float(p["weight"]) for p in providers]),
        hex4=pa.array([f"{i:04x}" for i in range(1 << 16)]),
        titles=titles.table,
        title_values=titles.table.values,
        title_department=titles.department,
        title_seniority=titles.seniority,
        departments=pa.array(titles.department_names + [None], pa.string()),
        seniorities=pa.array([r["seniority"] for r in seniority_rows] + [None], pa.string()),
        decision_rate=np.array([float(r["decision_maker_rate"]) for r in seniority_rows]
                               + [0.0]),
        top_titles=top,
        top_table=_Weighted.of(None, np.diff(titles.table.cum, prepend=0.0)[top]),
    )


def _name_table(rows: list[dict[str, str]], region_id: dict[str, int]) -> _Grouped:
    groups = np.array([region_id[r["region"]] for r in rows])
    # Within a region earlier lines are more common names (a mild Zipf).
    rank = np.arange(len(rows)) - np.searchsorted(groups, groups, side="left")
    return _Grouped.of(groups, 1.0 / (rank + 4.0) ** 0.7, len(region_id))


def _name_parts(words_a, words_b, surnames, prefixes, endings) -> _NameParts:
    s1 = words_a + surnames + prefixes
    d1 = [_slug(w) for w in s1] + [None]
    s2 = ([" " + w for w in words_b] + [w.lower() for w in words_b]
          + [" & " + s for s in surnames] + endings + [""])
    d2 = ([_slug(w) for w in words_b] * 2 + ["and" + _slug(s) for s in surnames]
          + [_slug(e) for e in endings] + [""]
          + ["-" + _slug(w) for w in words_b] + ["-" + _slug(s) for s in surnames])
    na, ns, nb = len(words_a), len(surnames), len(words_b)
    return _NameParts(
        s1=pa.array(s1), s2=pa.array(s2),
        d1=pa.array(d1, pa.string()), d2=pa.array(d2),
        s1_word=0, s1_surname=na, s1_brand=na + ns,
        s2_spaced=0, s2_compound=nb, s2_duo=2 * nb, s2_ending=2 * nb + ns,
        s2_empty=2 * nb + ns + len(endings),
        s2_hyphen_word=2 * nb + ns + len(endings) + 1,
        s2_hyphen_surname=3 * nb + ns + len(endings) + 1,
    )


@dataclass(frozen=True)
class _Titles:
    table: _Weighted
    department: np.ndarray  # per title, index into department_names (last = null)
    seniority: np.ndarray   # per title, index into seniorities.csv rows (last = null)
    department_names: list[str]


def _title_vocab() -> _Titles:
    """Expand templates x areas/roles into concrete titles, each with one department and
    seniority, weighted so seniority and department mixes follow their CSV files."""
    seniorities = _rows("seniorities.csv")
    departments = _rows("departments.csv")
    sen_id = {r["seniority"]: i for i, r in enumerate(seniorities)}
    dep_id = {r["department"]: i for i, r in enumerate(departments)}
    found: dict[str, list] = {}  # title -> [department, seniority, weight]

    def add(title: str, department: str, seniority: str, weight: float) -> None:
        entry = found.setdefault(title, [dep_id[department], sen_id[seniority], 0.0])
        if entry[:2] != [dep_id[department], sen_id[seniority]]:
            raise ValueError(f"job title {title!r} maps to two departments or seniorities")
        entry[2] += weight

    areas, roles = _rows("title_areas.csv"), _rows("title_roles.csv")
    for t in _rows("title_templates.csv"):
        template, weight = t["template"], float(t["weight"])
        if "{role}" in template:
            extra = set(template.replace("{role}", "").split())
            for r in roles:
                if not extra & set(r["role"].split()):  # no "Associate Sales Associate"
                    add(template.replace("{role}", r["role"]), r["department"],
                        t["seniority"], weight * float(r["weight"]))
        else:
            for a in areas:
                if "Manag" in template and "Manag" in a["area"]:
                    continue  # no "Product Management Manager"
                if a["ic"] == "yes" or t["seniority"] not in ("Entry", "Senior"):
                    add(template.replace("{area}", a["area"]), a["department"],
                        t["seniority"], weight * float(a["weight"]))
    for f in _rows("title_fixed.csv"):
        add(f["title"], f["department"], f["seniority"], float(f["weight"]))

    names = list(found)
    dep = np.array([found[t][0] for t in names])
    sen = np.array([found[t][1] for t in names])
    raw = np.array([found[t][2] for t in names])
    weight = np.zeros(len(names))
    dep_weight = np.array([float(r["weight"]) for r in departments])
    for s, row in enumerate(seniorities):
        in_s = sen == s
        if row["by_department"] == "yes":
            present = np.unique(dep[in_s])
            share = dep_weight[present] / dep_weight[present].sum()
            for d, d_share in zip(present, share, strict=True):
                cell = in_s & (dep == d)
                weight[cell] = raw[cell] / raw[cell].sum() * d_share
        else:
            weight[in_s] = raw[in_s] / raw[in_s].sum()
        weight[in_s] *= float(row["weight"])
    return _Titles(
        table=_Weighted.of(names, weight),
        department=np.append(dep, len(departments)),
        seniority=np.append(sen, len(seniorities)),
        department_names=[r["department"] for r in departments],
    )
