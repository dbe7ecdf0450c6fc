"""Property tests (hypothesis): random filter combinations agree with the plain-Python oracle, and
no string a client can send breaks a query (200 or a clean 400, never a 500).

Example counts are bounded and the runs derandomized, so the suite stays fast and every run
tries the same examples.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixture_drop import (
    DEPARTMENTS,
    FUNCTIONS,
    INDUSTRIES,
    LOCATIONS,
    SENIORITIES,
    TECHNOLOGIES,
    TITLES,
)
from tests.test_errors import assert_envelope
from tests.test_search_oracle import expected_ids

BOUNDED = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow])


def wobbled(values: list[str | None]) -> st.SearchStrategy[str]:
    """A known value in another case, with surrounding white space."""
    known = st.sampled_from([v for v in values if v and v.strip()])
    case = st.sampled_from([str, str.upper, str.lower, str.title])
    space = st.sampled_from(["", " ", "\t", "  "])
    return st.builds(lambda v, c, a, b: a + c(v) + b, known, case, space, space)


def values_of(vocab: list[str | None]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.one_of(wobbled(vocab), st.just("no such value")), min_size=1,
                    max_size=3)


@st.composite
def title_fragments(draw) -> str:
    title = draw(st.sampled_from([t for t in TITLES if t]))
    start = draw(st.integers(0, len(title) - 1))
    fragment = title[start:start + draw(st.integers(1, 8))].strip()
    return fragment or draw(st.sampled_from(["%", "_", "\\", "50%", "a_b"]))


@st.composite
def locations(draw) -> str:
    city, state, country = draw(st.sampled_from([loc for loc in LOCATIONS if loc[2]]))
    kinds = ["country"] + (["state"] if state else []) + (["city"] if city else [])
    kind = draw(st.sampled_from(kinds))
    maybe = st.booleans()
    if kind == "country":
        parts = [country]
    elif kind == "state":
        parts = [state, country if draw(maybe) else ""]
    else:
        parts = [city, (state or "") if draw(maybe) else "", country if draw(maybe) else ""]
    return draw(st.sampled_from([kind, kind.upper()])) + ":" + "||".join(parts)


TLDS = st.lists(st.sampled_from(["io", ".io", "UK", "com", "de", ".ai", "org", "nl"]),
                min_size=1, max_size=2)
DATES = st.dates(min_value=__import__("datetime").date(2014, 1, 1),
                 max_value=__import__("datetime").date(2027, 1, 1)).map(str)

COMPANY_FIELDS = {
    "industries": values_of(INDUSTRIES), "functions": values_of(FUNCTIONS),
    "technologies": values_of(TECHNOLOGIES), "tlds": TLDS,
    "locations": st.lists(locations(), min_size=1, max_size=2),
    "exclude_industries": values_of(INDUSTRIES), "exclude_functions": values_of(FUNCTIONS),
    "exclude_technologies": values_of(TECHNOLOGIES), "exclude_tlds": TLDS,
    "exclude_locations": st.lists(locations(), min_size=1, max_size=2),
    "added_after": DATES, "added_before": DATES,
}
CONTACT_FIELDS = {
    **COMPANY_FIELDS,
    "job_titles": st.lists(title_fragments(), min_size=1, max_size=2),
    "exclude_job_titles": st.lists(title_fragments(), min_size=1, max_size=2),
    "departments": values_of(DEPARTMENTS), "seniorities": values_of(SENIORITIES),
    "exclude_departments": values_of(DEPARTMENTS),
    "exclude_seniorities": values_of(SENIORITIES),
    "has_personal_emails": st.booleans(), "has_linkedin_profile": st.booleans(),
    "is_decision_maker": st.booleans(),
}


@st.composite
def requests(draw, fields: dict) -> dict:
    """Up to 5 filters (more would match almost nothing in the small fixture drop), paging."""
    names = draw(st.lists(st.sampled_from(sorted(fields)), max_size=5, unique=True))
    request = {name: draw(fields[name]) for name in names}
    if request.get("added_after", "") > request.get("added_before", "9999"):
        del request["added_after"]
    if draw(st.booleans()):
        request["page"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        request["per_page"] = draw(st.sampled_from([1, 7, 25, 100]))
    return request


def check_against_oracle(client, oracle_rows, request: dict, contacts: bool) -> None:
    path = "/v1/contacts/search" if contacts else "/v1/companies/search"
    answer = client.post(path, json=request)
    assert answer.status_code == 200, (request, answer.text)
    body = answer.json()
    ids = expected_ids(oracle_rows, request, contacts)
    page, per_page = request.get("page", 1), request.get("per_page", 25)
    assert body["meta"]["total"] == len(ids), request
    assert [r["id"] for r in body["data"]] == ids[(page - 1) * per_page:page * per_page], request


@BOUNDED
@given(request=requests(CONTACT_FIELDS))
def test_contacts_agree_with_the_oracle(client, oracle_rows, request):
    check_against_oracle(client, oracle_rows, request, contacts=True)


@BOUNDED
@given(request=requests(COMPANY_FIELDS))
def test_companies_agree_with_the_oracle(client, oracle_rows, request):
    check_against_oracle(client, oracle_rows, request, contacts=False)


# --- hostile strings --------------------------------------------------------------------------

AWKWARD = st.sampled_from([
    "'", '"', "%", "_", "\\", "\x00", "%_\\", "' OR 1=1 --", "\"); DROP TABLE contacts; --",
    "😀", "👩🏽‍💻", "שלום", "مرحبا", "\u202e", "\u200f", "\u0301", "ß", "İ", "ǅ", "\ufeff",
    "\r\n", "\t", " ", "||", "city:", ":", "*", "?", "$1", "?1", "\ud7ff", "\U0010ffff",
])
HOSTILE = st.one_of(
    st.lists(st.one_of(AWKWARD, st.text(max_size=3)), max_size=12).map("".join),
    st.text(min_size=195, max_size=205),
    st.text(alphabet=st.sampled_from("%_\\'\"a"), min_size=200, max_size=200),
    st.text(),
)
STRING_FIELDS = ["job_titles", "exclude_job_titles", "industries", "exclude_technologies",
                 "tlds", "locations", "departments", "exclude_locations"]


def assert_clean(answer) -> None:
    """A 200, or a 400 `invalid_input` envelope naming a field."""
    assert answer.status_code in (200, 400), (answer.status_code, answer.text)
    assert answer.headers["content-type"] == "application/json"
    if answer.status_code == 400:
        body = assert_envelope(answer, 400, "invalid_input")
        assert all(error.get("field") for error in body["errors"])


def is_valid_value(text: str) -> bool:
    stripped = text.strip()
    return 0 < len(stripped) <= 200 and "\x00" not in stripped


@BOUNDED
@given(text=HOSTILE, field=st.sampled_from(STRING_FIELDS))
def test_no_string_breaks_a_search(client, text, field):
    for answer in (
        client.post("/v1/contacts/search", json={field: [text]}),
        client.get("/v1/contacts/search?" + urlencode(
            {field: text.encode("utf-8", "surrogatepass")})),
    ):
        assert_clean(answer)
        if is_valid_value(text) and "locations" not in field:
            assert answer.status_code == 200, (field, text, answer.text)


@BOUNDED
@given(text=HOSTILE)
def test_hostile_job_titles_match_as_literal_substrings(client, oracle_rows, text):
    if not is_valid_value(text):
        return
    check_against_oracle(client, oracle_rows, {"job_titles": [text], "per_page": 100},
                         contacts=True)
    check_against_oracle(client, oracle_rows, {"exclude_job_titles": [text], "per_page": 100},
                         contacts=True)


@BOUNDED
@given(text=HOSTILE, field=st.sampled_from(["page", "per_page", "added_after",
                                            "is_decision_maker", "format"]))
def test_no_string_breaks_a_scalar_field(client, text, field):
    assert_clean(client.post("/v1/contacts/search", json={field: text}))
    query = urlencode({field: text.encode("utf-8", "surrogatepass")})
    assert_clean(client.get(f"/v1/contacts/search?{query}"))


@BOUNDED
@given(text=HOSTILE)
def test_no_string_breaks_a_lookup(client, text):
    path = quote(text.encode("utf-8", "surrogatepass"), safe="")
    for kind in ("contacts", "companies"):
        answer = client.get(f"/v1/{kind}/{path}")
        assert answer.status_code in (200, 404, 405), (text, answer.text)
        assert answer.headers["content-type"] == "application/json"
        assert set(answer.json()) == {"data", "meta", "errors"}
