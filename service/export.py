"""Bulk export (SPEC 3.5): a whole search result streamed as NDJSON, CSV, Parquet or Arrow.

An export walks the records' positions (`cidx` of contact, `idx` of company: the rank of the
id) in windows of WINDOW positions, so memory holds a few windows whatever the result's size:

* DuckDB reads the matching rows from one table, with no join: for Arrow, Parquet and CSV one
  query read a window at a time, for NDJSON one query per window, which joins the records
  store's JSON text (each contact's record of SPEC 3.4 without its company);
* a contact's company is gathered by position from the companies held in memory
  (company_columns), several times faster than a DuckDB join that rebuilds its hash table of
  a million companies for every window (README, Exports); NDJSON takes the company's JSON
  text put together the same way;
* the record shape (nested structs, flat columns for CSV, JSON lines) is assembled in Arrow,
  and the format's encoder (export_formats) turns it into bytes; nothing loops over rows in
  Python.

Windows are shaped and encoded ahead on two worker threads (DuckDB, `take` and the writers
release the GIL); the stream only puts the encoded windows in order. The end marker (Parquet
footer, Arrow end-of-stream) is written only after the last window, so a stream that breaks
off never looks whole.

Exports read through a DuckDB instance of their own (ExportSource) with a small buffer pool:
a full scan neither evicts the blocks the searches keep cached nor grows the server's memory.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from .company_columns import CompanyColumns
from .compiler import companies_count, companies_where, contacts_count, contacts_where
from .export_formats import MEDIA_TYPES, Encoded, FormatEncoder, encoder_for
from .json_text import iso_text
from .memory import give_back_memory
from .search_requests import CompanyExport, ContactExport

__all__ = ["MEDIA_TYPES", "ExportSource", "ExportStream", "compile_export_query",
           "export_to_file"]

WINDOW = 32 * 1024           # positions per window: one encoded chunk out
# Per format, a window is WINDOW times this many positions, and so many are kept ahead (being
# built or waiting to be sent). Text windows are large (450-770 bytes a record), so they hold
# fewer records, and NDJSON keeps fewer of them ahead.
WINDOW_SCALE = {"arrow": 1.0, "parquet": 1.0, "csv": 0.5, "ndjson": 0.5}
WINDOWS_AHEAD = {"arrow": 3, "parquet": 3, "csv": 3, "ndjson": 2}
EXPORT_WORKERS = 2           # threads reading, shaping and encoding windows
CHUNK_BYTES = 8 << 20        # bytes handed to the HTTP layer at a time, at most
EXPORT_MEMORY_LIMIT = "32MB"  # the export instance's memory, for every export at once
EXPORT_QUERIES = 2           # reads running at once, across all exports
EXPORT_NICE = 10             # the export threads' scheduling priority, below the searches'


@dataclass(frozen=True)
class ExportQuery:
    contacts: bool
    format: str
    window_sql: str           # params: *params, window start, window end[, rows wanted at most]
    params: list[Any]
    limited: bool             # whether window_sql takes the last parameter
    streamed: bool            # run once over every position (no join), read in windows
    count_sql: str
    count_params: list[Any]
    limit: int | None


def compile_export_query(request: ContactExport | CompanyExport) -> ExportQuery:
    contacts = isinstance(request, ContactExport)
    where = contacts_where(request) if contacts else companies_where(request)
    table, position = ("contact", "cidx") if contacts else ("company", "idx")
    # A single-table WHERE ... LIMIT keeps the table's order (DuckDB's order preservation), so
    # the LIMIT takes the first matches (of the export when streamed, of a window otherwise); a
    # join after it may not keep that order, and ExportStream puts a window back in order by
    # its positions. Without a limit or a join the query is the plain scan (the subquery and
    # LIMIT cost a fifth of it).
    in_window = f"{where.sql} AND {table}.{position} >= ? AND {table}.{position} < ?"
    limited = request.format == "ndjson" or request.limit is not None
    limit = " LIMIT ?" if limited else ""
    if request.format == "ndjson":
        columns, joins = (CONTACT_JSON, CONTACT_JSON_JOINS) if contacts else (
            COMPANY_JSON, COMPANY_JSON_JOINS)
        window = (f"SELECT {table}.{position} AS _pos, {columns} FROM "
                  f"(SELECT * FROM {table} WHERE {in_window}{limit}) AS {table} {joins}")
    else:
        columns = CONTACT_COLUMNS if contacts else COMPANY_COLUMNS
        window = (f"SELECT {table}.{position} AS _pos, {columns} FROM {table} "
                  f"WHERE {in_window}{limit}")
    count = contacts_count(request) if contacts else companies_count(request)
    count_sql, count_params = count.sql, count.params
    if request.limit is not None:
        count_sql, count_params = f"SELECT least(({count_sql}), ?)", [*count_params,
                                                                     request.limit]
    return ExportQuery(
        contacts=contacts, format=request.format, window_sql=window, params=where.params,
        limited=limited, streamed=request.format != "ndjson", count_sql=count_sql,
        count_params=count_params, limit=request.limit)


# Columns read from DuckDB. A contacts window carries company_idx; its company is gathered in
# Arrow. The records store (`rec`) holds each record as JSON: a contact's without its company
# (`head`, an object left open) and each company's.
COMPANY_COLUMNS = (
    'company.id, company.name, company.domain, company.tld, company.industry, '
    'company."function", company.city, company.state, company.country, '
    "coalesce(company.technologies, []::VARCHAR[]) AS technologies, company.employee_count, "
    "company.linkedin_url, coalesce(company.generic_emails, []::VARCHAR[]) AS generic_emails, "
    "timezone('UTC', company.created_at) AS created_at"
)
# full_name is put together in Arrow (in DuckDB it made the reading 60% dearer);
# personal_emails is never null in a snapshot (the refresh makes it an empty list).
CONTACT_COLUMNS = (
    "contact.id, contact.first_name, contact.last_name, "
    "contact.job_title, contact.department, contact.seniority, contact.is_decision_maker, "
    "contact.work_email, contact.personal_emails, contact.linkedin_url, contact.company_idx"
)
COMPANY_JSON = "company_record.record || chr(10) AS line"
COMPANY_JSON_JOINS = "JOIN rec.company_record ON company_record.idx = company.idx"
# A contact's company record is put together in Arrow by position (CompanyColumns.json):
# joining each window to the stored company records scanned all of them, 70 ms a window.
CONTACT_JSON = "contact_record.head, contact_record.company_idx"
CONTACT_JSON_JOINS = "JOIN rec.contact_record ON contact_record.cidx = contact.cidx"


class ExportSource:
    """What the exports of one snapshot read: their own DuckDB instance, and the companies in
    memory (loaded by the first contacts export, then kept).

    The DuckDB instance is open only while exports run (`acquire`/`release`): its buffer pool
    fills with the blocks an export scanned, and closing it gives them back."""

    def __init__(self, path: Path):
        self.path = path
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._users = 0
        self._lock = threading.Lock()
        self._companies: CompanyColumns | None = None
        self._companies_lock = threading.Lock()
        # Each export has its workers, but the exports share one instance and its memory
        # limit: window queries take turns, two at a time, which keeps both cores busy
        # whatever the number of exports and bounds the memory the queries hold.
        self.query_slots = threading.BoundedSemaphore(EXPORT_QUERIES)

    def acquire(self) -> None:
        with self._lock:
            if self._connection is None:
                self._connection = _open_export_database(self.path)
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            self._close_when_unused()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        connection = self._connection
        if connection is None:
            raise RuntimeError("the export source is not acquired")
        cursor = connection.cursor()
        cursor.execute("USE snapshot")  # each cursor starts in the in-memory catalog
        return cursor

    def companies(self) -> CompanyColumns:
        with self._companies_lock:
            if self._companies is None:
                cursor = self.cursor()
                try:
                    self._companies = CompanyColumns.load(cursor, COMPANY_COLUMNS, WINDOW)
                    give_back_memory()  # the text the companies were coded from
                finally:
                    cursor.close()
            return self._companies

    def close(self) -> None:
        """At shutdown: close now if no export runs; else the last one's release does."""
        with self._lock:
            self._close_when_unused()

    def _close_when_unused(self) -> None:
        if self._users == 0 and self._connection is not None:
            self._connection.close()
            self._connection = None


def _open_export_database(path: Path) -> duckdb.DuckDBPyConnection:
    # One DuckDB thread: a read is small, and the export's workers already shape and encode
    # windows side by side.
    connection = duckdb.connect(":memory:", config={
        "TimeZone": "UTC", "autoinstall_known_extensions": False,
        "memory_limit": EXPORT_MEMORY_LIMIT, "threads": 1})
    connection.execute("ATTACH ? AS snapshot (READ_ONLY)", [str(path / "quarry.duckdb")])
    connection.execute("ATTACH ? AS rec (READ_ONLY)", [str(path / "records.duckdb")])
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return connection


class ExportStream:
    """One export in progress: call `next_chunk` until it returns None, then `close`.

    The chunks are the format's head, each window's records encoded (in id order), then the
    format's end. Windows are shaped and encoded on worker threads, WINDOWS_AHEAD at most at a
    time; `close` (also on a client that went away) cancels the windows not begun and
    interrupts the queries running.

    How windows are read depends on the query (`ExportQuery.streamed`): a single-table query
    runs once over every position and is read a window at a time, in order, on a thread of
    its own (`_read`); a query with a join (NDJSON's) runs once per window of positions, on
    the workers (`_window`), so that no join ever holds more than a window.
    """

    def __init__(self, source: ExportSource, query: ExportQuery):
        self.source = source
        self.query = query
        self.rows = 0
        self.wanted = query.limit
        self.pending: deque[Future[Encoded | None]] = deque()
        self.active: set[Future[Encoded | None]] = set()  # submitted and not done
        self.running: set[duckdb.DuckDBPyConnection] = set()
        self.closed = False
        self.window = max(1, int(WINDOW * WINDOW_SCALE[query.format]))
        self.ahead = WINDOWS_AHEAD[query.format]
        self.batches: pa.RecordBatchReader | None = None  # a streamed query's windows
        self.exhausted = False  # the streamed query has given its last window
        source.acquire()
        try:
            self.encoder, positions = self._begin()
            if query.streamed:
                self.batches = self._open(positions)
        except BaseException:
            self._close_cursors()
            source.release()
            raise
        self.head: bytes | None = self.encoder.head()
        self.windows = iter(() if query.streamed else range(0, positions, self.window))
        self.out = pa.py_buffer(b"")  # what is left to send of the window in hand
        self.executor = ThreadPoolExecutor(max_workers=EXPORT_WORKERS,
                                           thread_name_prefix="export",
                                           initializer=yield_to_searches)
        self.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-read",
                                         initializer=yield_to_searches)
        self._fill()

    def _begin(self) -> tuple[FormatEncoder, int]:
        """The format's encoder (for the schema of the records) and how many positions
        there are; the companies loaded before the answer starts, so a failure is an error."""
        query = self.query
        if query.contacts:
            self.source.companies()
        cursor = self.source.cursor()
        try:
            table = "contact" if query.contacts else "company"
            positions = cursor.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            empty = cursor.sql(query.window_sql, params=[
                *query.params, 0, 0, *([0] if query.limited else [])]).to_arrow_table()
        finally:
            cursor.close()
        return encoder_for(query.format, shape(empty.drop_columns(["_pos"]), query,
                                               self.source)), positions

    def _open(self, positions: int) -> pa.RecordBatchReader:
        """A streamed query, run once over every position, to be read a window at a time."""
        query = self.query
        cursor = self.source.cursor()
        self.running.add(cursor)
        return cursor.sql(query.window_sql, params=[
            *query.params, 0, positions, *([query.limit] if query.limited else [])]
        ).to_arrow_reader(self.window)

    def next_chunk(self) -> bytes | memoryview | None:
        if self.head is not None:
            head, self.head = self.head, None
            return head
        if len(self.out):
            return self._send()
        while self.pending:
            encoded = self.pending.popleft().result()
            self._fill()
            if encoded is None or encoded.rows == 0:
                continue
            if self.wanted is not None:
                if encoded.rows > self.wanted:  # the last window wanted: cut and encode again
                    encoded = self.encoder.encode(encoded.batch.slice(0, self.wanted))
                self.wanted -= encoded.rows
                if self.wanted == 0:
                    self._stop()
            self.rows += encoded.rows
            self.out = pa.py_buffer(self.encoder.add(encoded))  # a view, not a copy
            return self._send()
        if self.encoder is None:
            return None
        tail, self.encoder = self.encoder.tail(), None
        return tail

    def _send(self) -> memoryview:
        """The next CHUNK_BYTES of the window in hand, as a view: the socket takes what it can
        at once and the event loop's transport copies the rest into its buffer, so a window
        goes out in parts."""
        size = min(CHUNK_BYTES, self.out.size)
        chunk, self.out = self.out.slice(0, size), self.out.slice(size)
        return memoryview(chunk)

    def close(self, wait: bool = False) -> None:
        """Stop the export; the rest (the windows running, the cursors, the source) is
        finished on a worker, which `wait` waits for (the server does not: a client that went
        away must not hold up the event loop)."""
        if not self.closed:
            self._stop()
            self.closed = True
            self.executor.submit(self._finish)  # on a worker, not on the caller's thread
        self.executor.shutdown(wait=wait)

    def _finish(self) -> None:
        wait(list(self.active))  # the windows still running, interrupted
        self.reader.shutdown(wait=True)
        self._close_cursors()
        self.source.release()
        give_back_memory()

    def _close_cursors(self) -> None:
        for cursor in list(self.running):
            self.running.discard(cursor)
            cursor.close()

    def _fill(self) -> None:
        while not self.closed and len(self.pending) < self.ahead:
            if self.batches is not None:
                if self.exhausted:
                    return
                # Reads run one at a time on the reader, in the order they were asked for.
                future = self.executor.submit(self._batch, self.reader.submit(self._read))
            else:
                start = next(self.windows, None)
                if start is None:
                    return
                future = self.executor.submit(self._window, start)
            self.active.add(future)
            future.add_done_callback(self.active.discard)
            self.pending.append(future)

    def _stop(self) -> None:
        self.windows = iter(())
        self.exhausted = True
        while self.pending:
            self.pending.pop().cancel()
        for cursor in list(self.running):
            cursor.interrupt()

    def _read(self) -> pa.RecordBatch | None:
        """On the reader thread: the streamed query's next window, or None after its last."""
        if self.exhausted or self.closed:
            return None
        with self.source.query_slots:
            try:
                return self.batches.read_next_batch()
            except StopIteration:
                self.exhausted = True
                return None

    def _batch(self, read: Future[pa.RecordBatch | None]) -> Encoded | None:
        """On a worker thread: one window of a streamed query, once read, shaped and encoded."""
        batch = read.result()
        if batch is None or self.closed:
            return None
        return self._encode(pa.Table.from_batches([batch]))

    def _window(self, start: int) -> Encoded | None:
        """On a worker thread: one window read, shaped and encoded."""
        query = self.query
        wanted = min(query.limit or self.window, self.window)  # no window holds more
        with self.source.query_slots:
            cursor = self.source.cursor()
            self.running.add(cursor)
            try:
                if self.closed:
                    return None
                rows = cursor.sql(query.window_sql, params=[
                    *query.params, start, start + self.window,
                    *([wanted] if query.limited else [])]).to_arrow_table()
            finally:
                self.running.discard(cursor)
                cursor.close()
        # A join may not keep the scan's order; a window is put back in order by position.
        positions = rows.column("_pos")
        if len(positions) > 1 and not pc.all(pc.less(positions.slice(0, len(positions) - 1),
                                                     positions.slice(1))).as_py():
            rows = rows.sort_by("_pos")
        return self._encode(rows)

    def _encode(self, rows: pa.Table) -> Encoded:
        batch = shape(rows.drop_columns(["_pos"]), self.query, self.source)
        encoded = self.encoder.encode(batch)
        # A windowed query with a limit may give more rows than wanted in its last window,
        # which is cut from the batch; a streamed query's LIMIT already ends it there.
        if self.query.limit is not None and not self.query.streamed:
            encoded.batch = batch
        return encoded


def yield_to_searches() -> None:
    """Run the calling thread (an export's) at a lower priority than the rest of the server:
    an export takes whatever CPU the searches leave, and a search does not wait behind it
    (README, Exports). Linux schedules threads one by one; elsewhere this changes nothing."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), EXPORT_NICE)
    except (AttributeError, OSError):
        pass


# --- record shapes, in Arrow -------------------------------------------------------------------


def shape(rows: pa.Table, query: ExportQuery, source: ExportSource) -> pa.RecordBatch:
    """A window's rows as the records of SPEC 3.4 in the format's shape: the JSON lines as
    they are; nested structs (Arrow, Parquet); or flat columns named by their path (CSV)."""
    columns = {name: rows.column(name).combine_chunks() for name in rows.column_names}
    if query.format == "ndjson":
        if query.contacts:  # the contact's JSON, left open, and its company's
            columns = {"line": pc.binary_join_element_wise(
                columns["head"], ',"company":',
                source.companies().json(columns["company_idx"]), "}\n", "")}
        return pa.RecordBatch.from_pydict(columns)
    plain = query.format == "csv"  # Arrow and Parquet write the dictionaries as they are
    if query.contacts:
        positions = columns.pop("company_idx")
        company = source.companies().take(positions, plain)
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
        "employee_count": columns["employee_count"], "linkedin_url": columns["linkedin_url"],
        "generic_emails": columns["generic_emails"], "created_at": columns["created_at"],
    }


def contact_fields(columns: dict[str, pa.Array], company: dict[str, pa.Array]
                   ) -> dict[str, pa.Array]:
    return {
        "id": columns["id"], "first_name": columns["first_name"],
        "last_name": columns["last_name"],
        "full_name": full_name(columns["first_name"], columns["last_name"]),
        "job_title": columns["job_title"], "department": columns["department"],
        "seniority": columns["seniority"], "is_decision_maker": columns["is_decision_maker"],
        "emails": struct({"work": columns["work_email"],
                          "personal": columns["personal_emails"]}),
        "linkedin_url": columns["linkedin_url"],
        "company": struct(company_fields(company)),
    }


def full_name(first: pa.Array, last: pa.Array) -> pa.Array:
    """The names present, joined by a space; null when neither is (as the JSON record)."""
    return pc.coalesce(pc.binary_join_element_wise(first, last, " "), first, last)


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


def struct(fields: dict[str, pa.Array]) -> pa.StructArray:
    return pa.StructArray.from_arrays(list(fields.values()), list(fields.keys()))


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
    from .snapshots import SnapshotStore, missing_snapshot

    target = CompanyExport if companies else ContactExport
    try:
        fields = json.loads(filters_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--filters is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise ValueError("--filters must be a JSON object of request fields")
    if fields.setdefault("format", fmt) != fmt:
        raise ValueError(f"--filters has format {fields['format']!r} and --format is {fmt!r}; "
                         "give the format once, with --format")
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
        raise missing_snapshot(settings.data_dir)
    source = ExportSource(store.path_of(version))
    query = compile_export_query(request)
    partial = out.with_name(f".{out.name}.partial")
    stream = None
    source.acquire()
    try:
        cursor = source.cursor()
        total = cursor.sql(query.count_sql, params=query.count_params).fetchall()[0][0]
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
            stream.close(wait=True)
        partial.unlink(missing_ok=True)
        source.release()
        source.close()
    return stream.rows
