"""Bulk export (SPEC 3.5): every format read back with its standard reader and compared with the
search API's records for the same filters."""

from __future__ import annotations

import csv
import io
import json

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from service.export import COMPANY_COLUMNS, ExportSource, ExportStream, compile_export_query
from service.search_requests import ContactExport
from service.snapshots import SnapshotStore
from tests.test_cli import quarry
from tests.test_errors import assert_envelope

FILTERS = {"seniorities": ["vp", "Manager", "director"], "exclude_industries": ["retail"]}


def all_pages(client, path: str, filters: dict) -> list[dict]:
    records, page = [], 1
    while True:
        body = client.post(path, json={**filters, "page": page, "per_page": 100}).json()
        records += body["data"]
        if page >= body["meta"]["total_pages"]:
            return records
        page += 1


def served_export_source(served) -> ExportSource:
    settings, _ = served
    store = SnapshotStore(settings.data_dir)
    return ExportSource(store.path_of(store.current_version()))


def flatten(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}_"))
        elif isinstance(value, list):
            flat[f"{prefix}{key}"] = ";".join(value)
        elif isinstance(value, bool):
            flat[f"{prefix}{key}"] = "true" if value else "false"
        else:
            flat[f"{prefix}{key}"] = "" if value is None else str(value)
    return flat


def as_json_values(rows: list[dict]) -> list[dict]:
    """Arrow rows to the JSON form of a record (timestamps as ISO with Z)."""
    def convert(value):
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if hasattr(value, "isoformat"):
            return value.strftime("%Y-%m-%dT%H:%M:%S") + (
                f".{value.microsecond:06d}" if value.microsecond else "") + "Z"
        return value
    return [convert(row) for row in rows]


@pytest.mark.parametrize("kind", ["contacts", "companies"])
@pytest.mark.parametrize("fmt", ["ndjson", "csv", "parquet", "arrow"])
def test_export_matches_search(client, kind, fmt):
    filters = FILTERS if kind == "contacts" else {"exclude_industries": ["retail"]}
    expected = all_pages(client, f"/v1/{kind}/search", filters)
    assert len(expected) > 100
    answer = client.post(f"/v1/{kind}/export", json={**filters, "format": fmt})
    assert answer.status_code == 200
    assert int(answer.headers["quarry-total-count"]) == len(expected)
    assert answer.headers["content-type"].startswith(MEDIA[fmt])
    assert_records(answer, fmt, expected)


MEDIA = {"ndjson": "application/x-ndjson", "csv": "text/csv",
         "parquet": "application/vnd.apache.parquet",
         "arrow": "application/vnd.apache.arrow.stream"}


def assert_records(answer, fmt: str, expected: list[dict]) -> None:
    """The export's records, read with the format's standard reader, are `expected`."""
    if fmt == "ndjson":
        assert [json.loads(line) for line in answer.text.splitlines()] == expected
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(answer.text)))
        assert rows == [flatten(record) for record in expected]
    else:
        if fmt == "parquet":
            table = pq.read_table(io.BytesIO(answer.content))
        else:
            table = ipc.open_stream(answer.content).read_all()
        assert as_json_values(table.to_pylist()) == expected


def test_limit_and_empty_results(client):
    answer = client.post("/v1/contacts/export", json={"limit": 7, "format": "ndjson"})
    lines = answer.text.splitlines()
    assert answer.headers["quarry-total-count"] == "7" and len(lines) == 7
    first = client.post("/v1/contacts/search", json={"per_page": 7}).json()["data"]
    assert [json.loads(line)["id"] for line in lines] == [r["id"] for r in first]
    for fmt in ("parquet", "arrow", "csv", "ndjson"):
        empty = client.post("/v1/contacts/export", json={"format": fmt,
                                                         "industries": ["no such thing"]})
        assert empty.status_code == 200 and empty.headers["quarry-total-count"] == "0"
    empty = client.post("/v1/contacts/export", json={"format": "parquet", "industries": ["x"]})
    assert pq.read_table(io.BytesIO(empty.content)).num_rows == 0


def test_export_goes_past_the_paging_window(client):
    answer = client.post("/v1/contacts/export", json={"format": "arrow"})
    table = ipc.open_stream(answer.content).read_all()
    total = client.get("/v1/contacts/search").json()["meta"]["total"]
    assert table.num_rows == total == int(answer.headers["quarry-total-count"])
    ids = table.column("id").to_pylist()
    assert ids == sorted(ids)


def test_arrow_sends_the_coded_company_columns_as_dictionaries(client):
    """The few-valued company columns travel as Arrow dictionaries of the snapshot's
    vocabularies (README, Exports); Parquet's readers see them as text; the values agree."""
    arrow = ipc.open_stream(client.post("/v1/contacts/export", json={"format": "arrow"}
                                        ).content).read_all()
    company = arrow.schema.field("company").type
    kinds = {field.name: field.type for field in company}
    assert pa.types.is_dictionary(kinds["industry"])
    assert pa.types.is_dictionary(kinds["technologies"].value_type)
    assert pa.types.is_dictionary(kinds["location"].field("city").type)
    assert kinds["name"] == pa.string() and arrow.schema.field("seniority").type == pa.string()
    parquet = pq.read_table(io.BytesIO(client.post(
        "/v1/contacts/export", json={"format": "parquet"}).content))
    assert parquet.schema.field("company").type.field("industry").type == pa.string()
    assert arrow.to_pylist() == parquet.to_pylist()


@pytest.mark.parametrize(("body", "field"), [
    ({"format": "xml"}, "format"), ({"limit": 0}, "limit"), ({"limit": "5"}, "limit"),
    ({"page": 1}, "page"), ({"per_page": 10}, "per_page"), ({"industries": "x"}, "industries"),
])
def test_validation_errors_come_before_any_data(client, body, field):
    assert_envelope(client.post("/v1/contacts/export", json=body), 400, "invalid_input", field)


def test_contact_field_refused_on_companies_export(client):
    assert_envelope(client.post("/v1/companies/export", json={"job_titles": ["x"]}),
                    400, "invalid_input", "job_titles")


def test_offline_export_command(data_dir, fixture_drop, tmp_path, client):
    quarry(data_dir, "refresh", "--source", str(fixture_drop))
    out = tmp_path / "contacts.ndjson"
    done = quarry(data_dir, "export", "--format", "ndjson", "--out", str(out), "--filters",
                  json.dumps(FILTERS))
    assert "export" in done.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert got == all_pages(client, "/v1/contacts/search", FILTERS)
    companies = tmp_path / "companies.parquet"
    quarry(data_dir, "export", "--format", "parquet", "--out", str(companies), "--companies")
    assert pq.read_table(companies).num_rows == client.get(
        "/v1/companies/search").json()["meta"]["total"]
    refused = quarry(data_dir, "export", "--format", "csv", "--out", str(tmp_path / "x.csv"),
                     "--filters", '{"page": 2}', check=False)
    assert refused.returncode == 2 and "page" in refused.stderr
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "parquet", "arrow"])
@pytest.mark.parametrize("limit", [None, 1, 130, 5000])
def test_export_runs_window_by_window_in_id_order(client, monkeypatch, fmt, limit):
    monkeypatch.setattr("service.export.WINDOW", 97)  # many windows over the fixture drop
    expected = all_pages(client, "/v1/contacts/search", FILTERS)
    body = {**FILTERS, "format": fmt, **({"limit": limit} if limit else {})}
    answer = client.post("/v1/contacts/export", json=body)
    wanted = expected[:limit] if limit else expected
    assert int(answer.headers["quarry-total-count"]) == len(wanted)
    assert_records(answer, fmt, wanted)
    if fmt == "parquet":  # one row group per window, stitched under one footer
        assert pq.ParquetFile(io.BytesIO(answer.content)).metadata.num_row_groups > 1 or (
            limit is not None and limit <= 97)
    companies = client.post("/v1/companies/export", json={"format": fmt, **(
        {"limit": limit} if limit else {})})
    ids = [r["id"] for r in all_pages(client, "/v1/companies/search", {})]
    assert int(companies.headers["quarry-total-count"]) == len(ids[:limit] if limit else ids)


@pytest.mark.parametrize(("fmt", "reads"), [("arrow", "_read"), ("ndjson", "_window")])
def test_closing_an_export_starts_no_more_windows(served, monkeypatch, fmt, reads):
    """What a client that goes away triggers (the answer's stream closes the export): the
    windows not begun are dropped, the reads stop and the export's cursors close. Arrow's
    query is streamed (read window by window on the reader), NDJSON's runs per window."""
    monkeypatch.setattr("service.export.WINDOW", 13)
    source = served_export_source(served)
    started = []
    original = getattr(ExportStream, reads)
    monkeypatch.setattr(ExportStream, reads,
                        lambda self, *args: started.append(args) or original(self, *args))
    stream = ExportStream(source, compile_export_query(ContactExport(format=fmt)))
    try:
        assert stream.next_chunk() is not None  # the head (Arrow: the schema)
        assert len(stream.next_chunk()) > 0  # the first window's records
        stream.close()
    finally:
        stream.close(wait=True)
    assert source._connection is None  # the export's DuckDB instance closed with its last use
    assert stream.rows == 13 // (2 if fmt == "ndjson" else 1)
    assert 1 <= len(started) <= 1 + 4  # the window sent and those built ahead, of about 90
    assert not stream.running


@pytest.mark.parametrize("plain", [True, False])
def test_companies_gathered_by_position_are_the_companies_at_those_positions(served, plain):
    source = served_export_source(served)
    source.acquire()
    try:
        cursor = source.cursor()
        table = cursor.sql(f"SELECT {COMPANY_COLUMNS} FROM company ORDER BY idx"
                           ).to_arrow_table()
        cursor.close()
        every = table.to_pylist()
        positions = [len(every) - 1, 0, 3, 3, *range(5, len(every), 7), 1]
        gathered = source.companies().take(pa.array(positions, pa.int32()), plain)
    finally:
        source.close()
    assert any(row["industry"] is None for row in every)  # nulls are gathered too
    got = pa.Table.from_pydict({name: values.cast(
        pa.list_(pa.string()) if name == "technologies" else
        pa.string() if pa.types.is_dictionary(values.type) else values.type)
        for name, values in gathered.items()}).to_pylist()
    assert got == [every[position] for position in positions]


AWKWARD = {  # company text that JSON must escape, without and with control characters
    "escaped": ['Quote "Q" Ltd', "Back\\slash & Søn", "Émile 😀 /co", "plain"],
    "control": ["Tab\there", "Bell\x07Co", "Esc\x1bX\x1fY", "new\nline"],
}


@pytest.mark.parametrize("kind", sorted(AWKWARD))
def test_ndjson_lines_are_the_records_store_byte_for_byte(tmp_path, kind):
    """A contact's company record is put together in Arrow (CompanyColumns.json): each line is
    exactly the stored contact record joined to the stored company record, as the searches
    serve them, whatever the text holds (in unique and in few-valued columns)."""
    import duckdb
    import pyarrow.parquet as pq

    from service.refresh import refresh
    from tests.fixture_drop import write_fixture_drop

    drop = tmp_path / "drop"
    write_fixture_drop(drop, companies=40, contacts=300)
    companies = pq.read_table(drop / "companies.parquet").to_pylist()
    texts = AWKWARD[kind]
    for i, company in enumerate(companies):
        company["name"] = f"{texts[i % len(texts)]} {i}"
        company["city"] = texts[(i + 1) % len(texts)]
        company["technologies"] = [texts[i % len(texts)], "React"]
        company["linkedin_url"] = texts[(i + 2) % len(texts)]
        company["generic_emails"] = [texts[(i + 3) % len(texts)], "info@plain.io"][:i % 3]
    pq.write_table(pa.Table.from_pylist(companies, pq.read_schema(drop / "companies.parquet")),
                   drop / "companies.parquet")
    store = SnapshotStore(tmp_path / "data")
    refresh(store, drop)
    path = store.path_of(store.current_version())
    stream = ExportStream(ExportSource(path), compile_export_query(ContactExport()))
    try:
        text = b"".join(bytes(chunk) for chunk in iter(stream.next_chunk, None)).decode()
    finally:
        stream.close(wait=True)
    with duckdb.connect(str(path / "records.duckdb"), read_only=True) as records:
        stored = [line for (line,) in records.sql(
            "SELECT head || ',\"company\":' || record || '}' FROM contact_record "
            "JOIN company_record ON company_record.idx = contact_record.company_idx "
            "ORDER BY cidx").fetchall()]
    assert text.splitlines() == stored and len(stored) == 300
    assert (r"Esc\u001BX\u001FY" if kind == "control" else r'Quote \"Q\" Ltd') in text


def test_export_threads_run_below_the_searches_priority(served):
    """An export's threads (workers and reader) yield the CPU to the searches: their nice
    value is EXPORT_NICE above the server's, and the server's own threads keep theirs."""
    import os
    import threading

    from service.export import EXPORT_NICE

    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    stream = ExportStream(served_export_source(served),
                          compile_export_query(ContactExport(format="arrow")))
    try:
        expected = min(19, priority() + EXPORT_NICE)
        assert stream.executor.submit(priority).result() == expected
        assert stream.reader.submit(priority).result() == expected
        assert priority() == expected - EXPORT_NICE or expected == 19
    finally:
        stream.close(wait=True)
