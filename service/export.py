"""Bulk export (SPEC 3.5): a whole search result streamed as NDJSON, CSV, Parquet or Arrow.

An export walks the records' positions (`cidx` of contact, `idx` of company: the rank of the
id) in windows of WINDOW positions, so memory holds a few windows whatever the result's size:

* DuckDB reads each window's matching rows from one table, with no join (NDJSON instead takes
  the records store's JSON text, which is already the record of SPEC 3.4);
* a contact's company is gathered by position from the companies held as Arrow columns: an
  Arrow `take` is several times faster than a DuckDB join that rebuilds its hash table of a
  million companies for every window (README, Export);
* the record shape (nested structs, or flat columns for CSV) is assembled in Arrow, and each
  format's writer turns the batch into bytes; nothing loops over rows in Python.

Windows are built ahead on two worker threads (DuckDB, `take` and the writers release the
GIL), so reading, gathering and encoding overlap. The stream's end marker (Parquet footer,
Arrow end-of-stream) is written only after the last window, so a stream that breaks off never
looks whole.

Exports read through a DuckDB instance of their own (ExportSource) with a small buffer pool:
a full scan neither evicts the blocks the searches keep cached nor grows the server's memory.
"""

from __future__ import annotations

import io
import json
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq

from .compiler import companies_where, contacts_where
from .search_requests import CompanyExport, ContactExport

MEDIA_TYPES = {
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
WINDOW = 64 * 1024           # positions per window: one DuckDB query, one batch out
WINDOWS_AHEAD = 3            # windows being built or waiting to be written, at most
EXPORT_MEMORY_LIMIT = "256MB"  # the export instance's buffer pool


@dataclass(frozen=True)
class ExportQuery:
    contacts: bool
    format: str
    window_sql: str           # params: *params, window start, window end, rows wanted at most
    params: list[Any]
    count_sql: str
    count_params: list[Any]
    limit: int | None


def compile_export_query(request: ContactExport | CompanyExport) -> ExportQuery:
    contacts = isinstance(request, ContactExport)
    where = contacts_where(request) if contacts else companies_where(request)
    table, position = ("contact", "cidx") if contacts else ("company", "idx")
    # A single-table WHERE ... LIMIT keeps the table's order (DuckDB's order preservation), so
    # the LIMIT takes the window's first matches; a join after it may not keep that order, and
    # ExportStream puts a window back in order by its positions.
    matching = (f"(SELECT * FROM {table} WHERE {where.sql} AND {position} >= ? "
                f"AND {position} < ? LIMIT ?) AS {table}")
    if request.format == "ndjson":
        columns, joins = (CONTACT_JSON, CONTACT_JSON_JOINS) if contacts else (
            COMPANY_JSON, COMPANY_JSON_JOINS)
    else:
        columns, joins = (CONTACT_COLUMNS if contacts else COMPANY_COLUMNS), ""
    window = f"SELECT {table}.{position} AS _pos, {columns} FROM {matching} {joins}"
    count = f"SELECT count(*) FROM {table} WHERE {where.sql}"
    if request.limit is not None:
        count = f"SELECT least(({count}), ?)"
    return ExportQuery(
        contacts=contacts, format=request.format, window_sql=window, params=where.params,
        count_sql=count,
        count_params=[*where.params, *([request.limit] if request.limit is not None else [])],
        limit=request.limit)


# Columns read from DuckDB. A contacts window carries company_idx; its company is gathered in
# Arrow. The records store (`rec`) holds each record as JSON: a contact's without its company
# (`head`, an object left open) and each company's.
COMPANY_COLUMNS = (
    'company.id, company.name, company.domain, company.tld, company.industry, '
    'company."function", company.city, company.state, company.country, '
    "coalesce(company.technologies, []::VARCHAR[]) AS technologies, company.employee_count, "
    "timezone('UTC', company.created_at) AS created_at"
)
CONTACT_COLUMNS = (
    "contact.id, contact.first_name, contact.last_name, "
    "nullif(concat_ws(' ', contact.first_name, contact.last_name), '') AS full_name, "
    "contact.job_title, contact.department, contact.seniority, contact.is_decision_maker, "
    "contact.work_email, coalesce(contact.personal_emails, []::VARCHAR[]) AS personal_emails, "
    "contact.linkedin_url, contact.company_idx"
)
COMPANY_JSON = "company_record.record || chr(10) AS line"
COMPANY_JSON_JOINS = "JOIN rec.company_record ON company_record.idx = company.idx"
CONTACT_JSON = ("contact_record.head || ',\"company\":' || company_record.record || '}' "
                "|| chr(10) AS line")
CONTACT_JSON_JOINS = (
    "JOIN rec.contact_record ON contact_record.cidx = contact.cidx "
    "JOIN rec.company_record ON company_record.idx = contact_record.company_idx")
# Company columns worth a Parquet dictionary (few distinct values); the rest are mostly unique,
# where a dictionary only costs time.
FEW_VALUES = ("tld", "industry", "function", "city", "state", "country")


class ExportSource:
    """What the exports of one snapshot read: their own DuckDB instance, and the companies as
    Arrow columns (loaded by the first contacts export that needs them, then kept)."""

    def __init__(self, path: Path, threads: int):
        self.connection = duckdb.connect(":memory:", config={
            "TimeZone": "UTC", "autoinstall_known_extensions": False,
            "memory_limit": EXPORT_MEMORY_LIMIT, "threads": threads})
        self.connection.execute("ATTACH ? AS snapshot (READ_ONLY)", [str(path / "quarry.duckdb")])
        self.connection.execute("ATTACH ? AS rec (READ_ONLY)", [str(path / "records.duckdb")])
        self.connection.execute("SET enable_external_access = false")
        self.connection.execute("SET lock_configuration = true")
        self._companies: dict[str, pa.Array] | None = None
        self._lock = threading.Lock()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = self.connection.cursor()
        cursor.execute("USE snapshot")  # each cursor starts in the in-memory catalog
        return cursor

    def companies(self) -> dict[str, pa.Array]:
        """Every company's record columns, in idx order (row i is the company of idx i).

        Columns with few distinct values are dictionary-encoded: gathering 4-byte codes is
        cheaper than gathering text, and it keeps the million companies near 130 MB."""
        with self._lock:
            if self._companies is None:
                cursor = self.cursor()
                try:
                    table = cursor.sql(f"SELECT {COMPANY_COLUMNS} FROM company "
                                       "ORDER BY idx").to_arrow_table().combine_chunks()
                finally:
                    cursor.close()
                columns = {name: table.column(name).chunk(0) if table.num_rows else
                           pa.array([], table.schema.field(name).type)
                           for name in table.column_names}
                for name in FEW_VALUES:
                    columns[name] = columns[name].dictionary_encode()
                technologies = columns["technologies"]
                columns["technologies"] = pa.ListArray.from_arrays(
                    technologies.offsets, technologies.values.dictionary_encode())
                self._companies = columns
            return self._companies

    def close(self) -> None:
        self.connection.close()


class ExportStream:
    """One export in progress: call `next_chunk` until it returns None, then `close`.

    Each call returns the bytes of one window of records in the chosen format, in id order;
    the format's end marker comes with the last chunk. `close` (also on a client that went
    away) cancels the windows not begun and interrupts the queries running.
    """

    def __init__(self, source: ExportSource, query: ExportQuery):
        self.source = source
        self.query = query
        self.rows = 0
        self.wanted = query.limit
        self.writer = writer_for(query.format)
        if query.contacts and query.format != "ndjson":
            source.companies()  # loaded before the answer starts, so a failure is an error
        cursor = source.cursor()
        try:
            table = "contact" if query.contacts else "company"
            positions = cursor.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        finally:
            cursor.close()
        self.windows = iter(range(0, positions, WINDOW))
        self.pending: deque[Future[pa.RecordBatch | None]] = deque()
        self.running: set[duckdb.DuckDBPyConnection] = set()
        self.closed = False
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="export")
        self._fill()

    def next_chunk(self) -> bytes | None:
        while self.pending:
            batch = self.pending.popleft().result()
            self._fill()
            if batch is None or batch.num_rows == 0:
                continue
            if self.wanted is not None:
                batch = batch.slice(0, self.wanted)
                self.wanted -= batch.num_rows
                if self.wanted == 0:
                    self._stop()
            self.rows += batch.num_rows
            if chunk := self.writer.write(batch):
                return chunk
        if self.writer is None:
            return None
        ending, self.writer = self.writer.finish(self.empty_schema()), None
        return ending

    def close(self) -> None:
        self._stop()
        self.closed = True
        self.executor.shutdown(wait=False, cancel_futures=True)

    def empty_schema(self) -> pa.Schema:
        """The schema of a result with no rows: that of a window with none."""
        query = self.query
        cursor = self.source.cursor()
        try:
            rows = cursor.sql(query.window_sql, params=[*query.params, 0, 0, 0]).to_arrow_table()
        finally:
            cursor.close()
        return shape(rows, query, self.source).schema

    def _fill(self) -> None:
        while not self.closed and len(self.pending) < WINDOWS_AHEAD:
            start = next(self.windows, None)
            if start is None:
                return
            self.pending.append(self.executor.submit(self._window, start))

    def _stop(self) -> None:
        self.windows = iter(())
        while self.pending:
            self.pending.pop().cancel()
        for cursor in list(self.running):
            cursor.interrupt()

    def _window(self, start: int) -> pa.RecordBatch | None:
        query = self.query
        wanted = query.limit if query.limit is not None else WINDOW
        cursor = self.source.cursor()
        self.running.add(cursor)
        try:
            if self.closed:
                return None
            rows = cursor.sql(query.window_sql,
                              params=[*query.params, start, start + WINDOW, wanted]
                              ).to_arrow_table()
        finally:
            self.running.discard(cursor)
            cursor.close()
        positions = rows.column("_pos")
        if len(positions) > 1 and not pc.all(pc.less(positions.slice(0, len(positions) - 1),
                                                     positions.slice(1))).as_py():
            rows = rows.sort_by("_pos")
        return shape(rows.drop_columns(["_pos"]), query, self.source)


# --- record shapes, in Arrow -------------------------------------------------------------------


def shape(rows: pa.Table, query: ExportQuery, source: ExportSource) -> pa.RecordBatch:
    """A window's rows as the records of SPEC 3.4 in the format's shape: the JSON lines as
    they are; nested structs (Arrow, Parquet); or flat columns named by their path (CSV)."""
    rows = rows.combine_chunks()
    columns = {name: rows.column(name).chunk(0) if rows.num_rows else
               pa.array([], rows.schema.field(name).type) for name in rows.column_names}
    if query.format == "ndjson":
        return pa.RecordBatch.from_pydict(columns)
    plain = query.format != "parquet"  # Parquet writes the dictionaries as they are
    if query.contacts:
        positions = columns.pop("company_idx")
        company = {name: take(values, positions, plain)
                   for name, values in source.companies().items()}
        fields = contact_fields(columns, company)
    else:
        fields = company_fields(columns)
    if query.format == "csv":
        fields = flatten(fields)
    return pa.RecordBatch.from_arrays(list(fields.values()), list(fields.keys()))


def company_fields(columns: dict[str, pa.Array]) -> dict[str, pa.Array]:
    return {
        "id": columns["id"], "name": columns["name"], "domain": columns["domain"],
        "tld": columns["tld"], "industry": columns["industry"],
        "function": columns["function"],
        "location": struct({"city": columns["city"], "state": columns["state"],
                            "country": columns["country"]}),
        "technologies": columns["technologies"],
        "employee_count": columns["employee_count"], "created_at": columns["created_at"],
    }


def contact_fields(columns: dict[str, pa.Array], company: dict[str, pa.Array]
                   ) -> dict[str, pa.Array]:
    return {
        "id": columns["id"], "first_name": columns["first_name"],
        "last_name": columns["last_name"], "full_name": columns["full_name"],
        "job_title": columns["job_title"], "department": columns["department"],
        "seniority": columns["seniority"], "is_decision_maker": columns["is_decision_maker"],
        "emails": struct({"work": columns["work_email"],
                          "personal": columns["personal_emails"]}),
        "linkedin_url": columns["linkedin_url"],
        "company": struct(company_fields(company)),
    }


def flatten(fields: dict[str, pa.Array], prefix: str = "") -> dict[str, pa.Array]:
    """CSV columns: nested values named by their path (`company_location_city`), lists joined
    with ';', timestamps as the ISO text of the JSON record."""
    flat: dict[str, pa.Array] = {}
    for name, values in fields.items():
        if pa.types.is_struct(values.type):
            flat.update(flatten({field.name: values.field(i) for i, field
                                 in enumerate(values.type)}, f"{prefix}{name}_"))
        elif pa.types.is_list(values.type):
            flat[prefix + name] = pc.binary_join(values, ";")
        elif pa.types.is_timestamp(values.type):
            flat[prefix + name] = iso_text(values)
        else:
            flat[prefix + name] = values
    return flat


def iso_text(moments: pa.Array) -> pa.Array:
    """'2024-01-02T03:04:05Z', with '.ffffff' only when there are microseconds (as in JSON)."""
    text = pc.strftime(moments, format="%Y-%m-%dT%H:%M:%S")  # seconds carry 6 decimals
    whole = pc.ends_with(text, ".000000")
    text = pc.if_else(whole, pc.utf8_slice_codeunits(text, 0, -7), text)
    return pc.binary_join_element_wise(text, pa.scalar("Z"), "")


def struct(fields: dict[str, pa.Array]) -> pa.StructArray:
    return pa.StructArray.from_arrays(list(fields.values()), list(fields.keys()))


def take(values: pa.Array, positions: pa.Array, plain: bool) -> pa.Array:
    """values[positions]; `plain` turns dictionary codes back into text."""
    if pa.types.is_list(values.type):
        gathered = take_lists(values, positions)
        items = gathered.values
        if plain and pa.types.is_dictionary(items.type):
            items = items.dictionary_decode()
        return pa.ListArray.from_arrays(gathered.offsets, items)
    gathered = values.take(positions)
    if plain and pa.types.is_dictionary(gathered.type):
        gathered = gathered.dictionary_decode()
    return gathered


def take_lists(lists: pa.ListArray, positions: pa.Array) -> pa.ListArray:
    """lists[positions] for lists without nulls, by offset arithmetic: Arrow's own `take` of a
    list array goes list by list and was the slowest step of a window (measured: 13 ms here
    against 57 ms for 64k contacts)."""
    offsets = lists.offsets.to_numpy()
    chosen = positions.to_numpy(zero_copy_only=False).astype(np.int64)
    starts = offsets[chosen]
    lengths = offsets[chosen + 1] - starts
    new_offsets = np.zeros(len(chosen) + 1, dtype=np.int32)
    np.cumsum(lengths, out=new_offsets[1:])
    # item k of the result is item k - new_offsets[i] + starts[i] of the input, i its list
    shift = np.repeat(starts.astype(np.int64) - new_offsets[:-1], lengths)
    items = np.arange(int(new_offsets[-1]), dtype=np.int64) + shift
    return pa.ListArray.from_arrays(pa.array(new_offsets), lists.values.take(pa.array(items)))


# --- formats ------------------------------------------------------------------------------------


class FormatWriter:
    """Turns record batches into the bytes of one format: `write` per batch, then `finish`
    (given the schema in case no batch came)."""

    def write(self, batch: pa.RecordBatch) -> bytes:
        raise NotImplementedError

    def finish(self, schema: pa.Schema) -> bytes:
        return b""


class NdjsonWriter(FormatWriter):
    def write(self, batch: pa.RecordBatch) -> bytes:
        # Each value is one JSON line ending in "\n": the string column's data buffer, between
        # its first and last offset, is exactly the lines one after another.
        lines = batch.column(0)
        if len(lines) == 0:
            return b""
        _, offsets, data = lines.buffers()
        width = np.int64 if pa.types.is_large_string(lines.type) else np.int32
        positions = np.frombuffer(offsets, dtype=width)
        start, end = positions[lines.offset], positions[lines.offset + len(lines)]
        return data.slice(int(start), int(end - start)).to_pybytes()


class _SinkWriter(FormatWriter):
    """Formats whose writers want a file: write into a buffer and hand over what is new."""

    def __init__(self) -> None:
        self.sink = io.BytesIO()
        self.writer: Any = None

    def write(self, batch: pa.RecordBatch) -> bytes:
        if self.writer is None:
            self.writer = self.open(batch.schema)
        self.writer.write_batch(batch)
        return self._drain()

    def finish(self, schema: pa.Schema) -> bytes:
        if self.writer is None:  # no rows: still a valid, empty file of the right schema
            self.writer = self.open(schema)
        self.writer.close()
        return self._drain()

    def _drain(self) -> bytes:
        data = self.sink.getvalue()
        self.sink.seek(0)
        self.sink.truncate()
        return data

    def open(self, schema: pa.Schema) -> Any:
        raise NotImplementedError


class CsvWriter(_SinkWriter):
    def open(self, schema: pa.Schema) -> Any:
        return pa_csv.CSVWriter(self.sink, schema,
                                write_options=pa_csv.WriteOptions(quoting_style="needed"))


class ArrowWriter(_SinkWriter):
    def open(self, schema: pa.Schema) -> Any:
        return pa_ipc.new_stream(self.sink, schema)


class ParquetWriter(_SinkWriter):
    """Uncompressed, with dictionaries for the few-valued columns only and no statistics: the
    settings that encode fastest (README, Export). The Arrow schema is not stored, so readers
    see text columns as text rather than as the dictionaries they were written from."""

    def open(self, schema: pa.Schema) -> Any:
        few = [path for path in _leaf_paths(schema)
               if path.rsplit(".", 1)[-1] in ("department", "seniority", "job_title",
                                              *FEW_VALUES) or "technologies" in path]
        return pq.ParquetWriter(self.sink, schema, compression="none", use_dictionary=few,
                                write_statistics=False, store_schema=False)


def _leaf_paths(schema: pa.Schema) -> list[str]:
    paths: list[str] = []

    def walk(field: pa.Field, prefix: str) -> None:
        if pa.types.is_struct(field.type):
            for child in field.type:
                walk(child, f"{prefix}{field.name}.")
        elif pa.types.is_list(field.type):
            paths.append(f"{prefix}{field.name}.list.element")
        else:
            paths.append(prefix + field.name)

    for field in schema:
        walk(field, "")
    return paths


def writer_for(fmt: str) -> FormatWriter:
    return {"ndjson": NdjsonWriter, "csv": CsvWriter, "arrow": ArrowWriter,
            "parquet": ParquetWriter}[fmt]()


# --- offline --------------------------------------------------------------------------------


def export_to_file(
    settings,
    filters_json: str,
    fmt: str,
    out: Path,
    *,
    companies: bool,
    progress=lambda stage, done, total: None,
) -> int:
    """`quarry export`: the same export, offline over the current snapshot, into a file.

    Written to a temporary file and renamed at the end, so a failed export leaves no file that
    looks whole.
    """
    from .envelope import ApiError
    from .search_requests import parse_json_body
    from .snapshots import SnapshotStore

    target = CompanyExport if companies else ContactExport
    try:
        fields = json.loads(filters_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--filters is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise ValueError("--filters must be a JSON object of request fields")
    fields.setdefault("format", fmt)
    try:
        request = parse_json_body(
            json.dumps(fields).encode(),
            target,
            "companies export" if companies else "contacts export",
        )
    except ApiError as exc:
        raise ValueError("; ".join(error.details for error in exc.errors)) from None
    store = SnapshotStore(settings.data_dir)
    version = store.current_version()
    if version is None:
        raise ValueError("no data snapshot has been loaded yet; run 'quarry refresh' first")
    source = ExportSource(store.path_of(version), settings.duckdb_threads)
    query = compile_export_query(request)
    partial = out.with_name(f".{out.name}.partial")
    stream = None
    try:
        cursor = source.cursor()
        total = cursor.execute(query.count_sql, query.count_params).fetchone()[0]
        cursor.close()
        stream = ExportStream(source, query)
        with open(partial, "wb") as handle:
            progress("export", 0, total)
            while (chunk := stream.next_chunk()) is not None:
                handle.write(chunk)
                progress("export", stream.rows, total)
        partial.replace(out)
    finally:
        if stream is not None:
            stream.close()
        partial.unlink(missing_ok=True)
        source.close()
    return stream.rows
