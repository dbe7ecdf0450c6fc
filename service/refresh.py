"""Refresh: a drop of Parquet or CSV files becomes a new immutable snapshot (SPEC section 4).

The work happens in a hidden folder under `snapshots/`; only a finished, fsynced snapshot is
renamed into place, and only then is the `CURRENT` pointer replaced. A refresh that fails at any
point leaves the serving snapshot untouched, and the next refresh removes the leftovers.
"""

from __future__ import annotations

import errno
import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from .match_index import build_match_index
from .snapshots import SNAPSHOT_LAYOUT, SnapshotError, SnapshotStore, new_version

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
KEYS_SQL = SQL_DIR / "keys.sql"  # the normalising macros (domains, LinkedIn URLs, text)

COMPANY_COLUMNS = ("id", "name", "domain", "industry", "function", "city", "state", "country",
                   "technologies", "employee_count", "created_at", "linkedin_url",
                   "generic_emails")
CONTACT_COLUMNS = ("id", "company_id", "first_name", "last_name", "job_title", "department",
                   "seniority", "work_email", "personal_emails", "linkedin_url",
                   "is_decision_maker")
LIST_COLUMNS = {"technologies", "personal_emails", "generic_emails"}
# Columns a drop may leave out (SPEC 4, v2): read as if every value were null, so that a drop
# made before they existed still refreshes.
OPTIONAL_COLUMNS = {"linkedin_url": "VARCHAR", "generic_emails": "VARCHAR[]"}
RECORDS_ROW_GROUP = 2_048
# What a Parquet column may hold, besides text (which every column accepts, as CSV does) and
# the all-null type. Anything else is refused at once, naming the file and the column.
COLUMN_KINDS = {"employee_count": "integer", "created_at": "timestamp",
                "is_decision_maker": "boolean", "technologies": "list",
                "personal_emails": "list", "generic_emails": "list"}
EXPECTED = {"text": "text", "integer": "an integer (or text)",
            "timestamp": "a timestamp or date (or text)", "boolean": "a boolean (or text)",
            "list": "a list of text (or ';'-separated text)"}
INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                 "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
NULL_TYPE = '"NULL"'

# Characters Python's str.strip() treats as white space, so that the data and the request
# values (stripped in search_requests) are trimmed alike.
WHITESPACE = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())  # U+3000 is the last


class RefreshError(SnapshotError):
    """A one-line reason the drop was refused; nothing was changed."""


@dataclass(frozen=True)
class RefreshResult:
    version: str
    companies: int
    contacts: int
    rejected: dict[str, dict[str, int]]  # file -> reason -> count
    seconds: float


# Called with each stage's name and, for a stage that can tell, a function that says how much
# of it is done (see StageLog in service/progress.py).
Progress = Callable[[str, Callable[[], float | None] | None], None]


class _Meter:
    """How much of the running stage is done: its statements run so far plus DuckDB's own
    estimate for the one running (`query_progress`, safe to read from another thread while a
    statement runs). Each statement is one step, whatever its cost: a crude but steady share
    for a stage that would otherwise show nothing for a minute at 10M contacts."""

    def __init__(self, db: duckdb.DuckDBPyConnection):
        self._db: duckdb.DuckDBPyConnection | None = db
        self._lock = threading.Lock()
        self.statements = self.done = 1
        self._stale = self._high = 0.0

    def start(self, statements: int) -> Callable[[], float | None]:
        with self._lock:
            self.statements, self.done, self._high = max(1, statements), 0, 0.0
            self._stale = self._db.query_progress() if self._db is not None else 0.0
        return self.share

    def advance(self) -> None:
        """A statement is done. DuckDB keeps answering the finished query's progress until the
        next one has its own: that value must not count for the next statement."""
        with self._lock:
            self.done += 1
            self._stale = self._db.query_progress() if self._db is not None else 0.0

    def share(self) -> float | None:
        with self._lock:  # never ask a connection that is being closed
            if self._db is None:
                return None
            running = self._db.query_progress()
            part = running / 100 if running > 0 and running != self._stale else 0.0
            # Never backwards within a stage.
            self._high = max(self._high, min(self.done + part, self.done + 1) / self.statements)
            return min(self._high, 1.0)

    def stop(self) -> None:
        with self._lock:
            self._db = None


def refresh(store: SnapshotStore, source: Path, *, max_bad_share: float = 0.01,
            memory_limit: str = "4GB", threads: int | None = None,
            progress: Progress = lambda message, share=None: None) -> RefreshResult:
    """Build a snapshot from the drop in `source` and switch the store to it."""
    started = time.monotonic()
    if not 0 <= max_bad_share <= 1:
        raise RefreshError(f"--max-bad-share must be between 0 and 1, got {max_bad_share}")
    files = {name: _drop_file(source, name) for name in ("companies", "contacts")}
    stage = ["preparing the build"]

    def step(message: str, share: Callable[[], float | None] | None = None) -> None:
        stage[0] = message
        progress(message, share)

    with store.refresh_lock():
        version = new_version()
        work = store.building_dir(version)
        try:
            store.remove_leftovers()
            work.mkdir(parents=True)
            result = _build(work, version, files, max_bad_share, memory_limit, threads,
                            step, started)
            step("publishing the snapshot")
            store.publish(work, version)
        except BaseException as exc:
            shutil.rmtree(work, ignore_errors=True)
            _reraise_with_stage(exc, stage[0], store)
            raise
        try:
            store.switch_to(version)
        except BaseException as exc:
            # Not current, so nothing reads it: a failed switch leaves no new snapshot behind.
            if store.current_version() != version:
                shutil.rmtree(store.path_of(version), ignore_errors=True)
            _reraise_with_stage(exc, "switching CURRENT to the new snapshot", store)
            raise
        store.prune()
        return result


def _reraise_with_stage(exc: BaseException, stage: str, store: SnapshotStore) -> None:
    """Turn a failure of the disk or of DuckDB into one line that says what was being done."""
    if isinstance(exc, SnapshotError) or not isinstance(exc, (OSError, duckdb.Error)):
        return
    text = _first_line(exc)
    if (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
            "no space left on device" in text.lower()):
        raise RefreshError(f"no space left on device while {stage}; nothing was changed "
                           f"(free space under {store.data_dir})") from None
    if isinstance(exc, duckdb.OutOfMemoryException):
        raise RefreshError(f"out of memory while {stage}; nothing was changed (raise "
                           "QUARRY_REFRESH_MEMORY_LIMIT or free memory)") from None
    raise RefreshError(f"refresh failed while {stage}; nothing was changed: {text}") from None


def _drop_file(source: Path, name: str) -> Path:
    if source.exists() and not source.is_dir():
        raise RefreshError(f"drop folder {source} is a file; give the folder that holds "
                           "companies and contacts (.parquet or .csv)")
    if not source.is_dir():
        raise RefreshError(f"drop folder {source} does not exist")
    for suffix in (".parquet", ".csv"):
        path = source / f"{name}{suffix}"
        if path.is_file():
            return path
    raise RefreshError(f"drop {source} has neither {name}.parquet nor {name}.csv")


def _build(work: Path, version: str, files: dict[str, Path], max_bad_share: float,
           memory_limit: str, threads: int | None, progress: Progress,
           started: float) -> RefreshResult:
    config = {"memory_limit": memory_limit, "temp_directory": str(work / "spill"),
              "autoinstall_known_extensions": False, "TimeZone": "UTC"}
    if threads:
        config["threads"] = threads
    staging = duckdb.connect(str(work / "staging.duckdb"), config=config)
    meter = _Meter(staging)
    try:
        # DuckDB tracks each query's progress (read by _Meter) but prints nothing itself.
        staging.execute("SET enable_progress_bar = true")
        staging.execute("SET enable_progress_bar_print = false")
        staging.execute(f"CREATE MACRO whitespace_chars() AS {_sql_string(WHITESPACE)}")
        _run_sql_file(staging, KEYS_SQL, meter)
        progress("checking files and columns")
        loads = _check_files(staging, files)
        for name, path in files.items():
            progress(f"reading {path.name}", meter.start(1))
            _load_raw(staging, name, path, *loads[name])
        # Each file's share of bad rows is judged as soon as it is checked, so that a refusal
        # comes under the stage that found it.
        rejected, totals = {}, {}
        for name, row, script in (("companies", "company", "1_check_companies.sql"),
                                  ("contacts", "contact", "2_check_contacts.sql")):
            progress(f"checking {row} rows",
                     meter.start(_statements(SQL_DIR / "refresh" / script)))
            _run_sql_file(staging, SQL_DIR / "refresh" / script, meter)
            rejected[name] = _rejected_counts(staging, name)
            totals[name] = staging.execute(f"SELECT count(*) FROM raw_{name}").fetchone()[0]
            _refuse_if_too_bad(name, rejected[name], totals[name], max_bad_share)

        build, views = SQL_DIR / "refresh" / "3_build_snapshot.sql", SQL_DIR / "views.sql"
        progress("building query tables", meter.start(
            _statements(build) + _statements(views) + _statements(KEYS_SQL)))
        staging.execute("ATTACH ? AS snap", [str(work / "quarry.duckdb")])
        _run_sql_file(staging, build, meter)
        staging.execute("USE snap")
        _run_sql_file(staging, views, meter)
        # Stored in the snapshot too: the server folds request values with these macros, so
        # that both sides of a comparison are normalised alike.
        _run_sql_file(staging, KEYS_SQL, meter)
        staging.execute("USE staging")
        records = SQL_DIR / "refresh" / "4_build_records.sql"
        progress("rendering records", meter.start(_statements(records)))
        # Small row groups: a page fetches its records by position, and zone maps then skip
        # all but one vector per record (measured: README, Performance).
        staging.execute(f"ATTACH ? AS rec (ROW_GROUP_SIZE {RECORDS_ROW_GROUP})",
                        [str(work / "records.duckdb")])
        _run_sql_file(staging, records, meter)
        staging.execute("DETACH rec")
        progress("building match keys")  # numpy and DuckDB sorts: no statement count to show
        match_keys = build_match_index(staging, work)
        progress("writing Parquet files", meter.start(3))
        _write_parquet(staging, work, meter)
        counts = {name: staging.execute(f"SELECT count(*) FROM snap.{table}").fetchone()[0]
                  for name, table in (("companies", "company"), ("contacts", "contact"))}
        staging.execute("DETACH snap")
    finally:
        meter.stop()
        staging.close()
    (work / "staging.duckdb").unlink()
    shutil.rmtree(work / "spill", ignore_errors=True)

    result = RefreshResult(version, counts["companies"], counts["contacts"], rejected,
                           round(time.monotonic() - started, 2))
    manifest = {
        "version": version,
        "layout": SNAPSHOT_LAYOUT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {name: str(path.resolve()) for name, path in files.items()},
        "rows": {"companies": counts["companies"], "contacts": counts["contacts"]},
        "read": totals,
        "rejected": rejected,
        "match_keys": match_keys,
        "seconds": result.seconds,
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return result


def _csv_reader(path: Path) -> tuple[str, dict[str, str]]:
    """A CSV drop file is read as written, never guessed at: comma-separated, '"'-quoted, the
    header row naming the columns, every value text (SPEC 4). A malformed line then refuses the
    file naming the line, instead of making a guess at the dialect go wrong."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RefreshError(f"{path.name} cannot be read: {exc}") from None
    if len(set(header)) != len(header):
        twice = sorted({name for name in header if header.count(name) > 1})
        raise RefreshError(f"{path.name}: the header names the column(s) {', '.join(twice)} "
                           "more than once")
    columns = ", ".join(f"{_sql_string(name)}: 'VARCHAR'" for name in header)
    reader = ("read_csv(?, header = true, auto_detect = false, delim = ',', quote = '\"', "
              f"escape = '\"', columns = {{{columns}}})")
    return reader, dict.fromkeys(header, "VARCHAR")


def _check_files(db: duckdb.DuckDBPyConnection,
                 files: dict[str, Path]) -> dict[str, tuple[str, list[str]]]:
    """Files and columns of both files, before any row is read: a file that cannot be read, a
    missing column or a Parquet column of the wrong type refuses the drop at once, in one line
    that names the file and the column(s). Returns the reader and SELECT list of each file."""
    loads: dict[str, tuple[str, list[str]]] = {}
    problems: list[str] = []
    for name, path in files.items():
        columns = COMPANY_COLUMNS if name == "companies" else CONTACT_COLUMNS
        if path.suffix == ".csv":
            reader, types = _csv_reader(path)
        else:
            reader = "read_parquet(?)"
            try:
                described = db.execute(f"DESCRIBE SELECT * FROM {reader}",
                                       [str(path)]).fetchall()
            except duckdb.Error as exc:
                raise RefreshError(f"{path.name} cannot be read: {_first_line(exc)}") from None
            types = {row[0]: row[1] for row in described}
        optional = OPTIONAL_COLUMNS if name == "companies" else {}
        missing = [column for column in columns if column not in types
                   and column not in optional]
        if missing:
            problems.append(f"{path.name} lacks the column(s) {', '.join(missing)}")
            continue
        selects = []
        for column in columns:
            if column not in types:  # an optional column the drop leaves out
                selects.append(f'CAST(NULL AS {optional[column]}) AS "{column}"')
                continue
            select = _raw_column(column, types[column])
            if select is None:
                problems.append(f"{path.name}: column {column} has type {types[column]}; "
                                f"expected {EXPECTED[COLUMN_KINDS.get(column, 'text')]}")
            selects.append(select)
        loads[name] = (reader, selects)
    if problems:
        raise RefreshError("; ".join(problems))
    return loads


def _load_raw(db: duckdb.DuckDBPyConnection, name: str, path: Path, reader: str,
              selects: list[str]) -> None:
    """Copy one drop file into raw_<name>: text columns, list columns as text lists."""
    try:
        db.execute(f"CREATE TABLE raw_{name} AS SELECT row_number() OVER () AS source_row, "
                   f"{', '.join(selects)} FROM {reader}", [str(path)])
    except duckdb.Error as exc:
        if "no space left on device" in str(exc).lower():
            raise
        raise RefreshError(f"{path.name} cannot be read: {_one_line(exc)}") from None


def _raw_column(column: str, source_type: str) -> str | None:
    """The expression that reads `column` as text (a text list for list columns), keeping every
    value as it was so that a row with an unreadable one can be reported; None if the column's
    type cannot hold what the column means."""
    quoted = f'"{column}"'
    kind = COLUMN_KINDS.get(column, "text")
    if kind == "list":
        if source_type == "VARCHAR":
            return f"string_split({quoted}, ';') AS {quoted}"
        if source_type in ("VARCHAR[]", f"{NULL_TYPE}[]", NULL_TYPE):
            return f"CAST({quoted} AS VARCHAR[]) AS {quoted}"
        return None
    if source_type in ("VARCHAR", NULL_TYPE):
        return f"CAST({quoted} AS VARCHAR) AS {quoted}"
    if kind == "timestamp" and source_type.startswith("TIMESTAMP"):
        # Keep the instant exact: text with an explicit UTC offset; a naive timestamp is UTC.
        return f"strftime(timezone('UTC', {quoted}), '%Y-%m-%d %H:%M:%S.%f+00') AS {quoted}"
    if kind == "timestamp" and source_type == "DATE":
        return f"CAST({quoted} AS VARCHAR) AS {quoted}"
    if kind in ("integer", "boolean") and source_type in INTEGER_TYPES:
        return f"CAST({quoted} AS VARCHAR) AS {quoted}"
    if kind == "boolean" and source_type == "BOOLEAN":
        return f"CAST({quoted} AS VARCHAR) AS {quoted}"
    if kind == "integer" and (source_type in ("FLOAT", "DOUBLE")
                              or source_type.startswith("DECIMAL")):
        # Whole numbers stored as floats (pandas stores an integer column with gaps so) are
        # read as integers; 12.5, NaN or infinity stay as text and make their row unreadable.
        return (f"CASE WHEN {quoted} = trunc({quoted}) THEN coalesce(CAST(TRY_CAST({quoted} AS "
                f"HUGEINT) AS VARCHAR), CAST({quoted} AS VARCHAR)) ELSE CAST({quoted} AS "
                f"VARCHAR) END AS {quoted}")
    return None


def _rejected_counts(db: duckdb.DuckDBPyConnection, name: str) -> dict[str, int]:
    rows = db.execute(f"SELECT reason, count(*) FROM checked_{name} WHERE reason IS NOT NULL "
                      "GROUP BY reason ORDER BY reason").fetchall()
    return dict(rows)


def _refuse_if_too_bad(name: str, reasons: dict[str, int], total: int,
                       max_bad_share: float) -> None:
    bad = sum(reasons.values())
    if total and bad / total > max_bad_share:
        top = ", ".join(f"{reason}: {count}" for reason, count in
                        sorted(reasons.items(), key=lambda item: -item[1])[:3])
        raise RefreshError(
            f"refused: {bad} of {total} {name} rows are bad "
            f"({bad / total:.2%} > --max-bad-share {max_bad_share:.2%}); {top}")


def _write_parquet(db: duckdb.DuckDBPyConnection, work: Path, meter: _Meter) -> None:
    """The snapshot's data of record, and the report of every rejected row."""
    for view in ("companies", "contacts"):
        db.execute(f"COPY (SELECT * FROM snap.{view}) TO ? (FORMAT parquet)",
                   [str(work / f"{view}.parquet")])
        meter.advance()
    db.execute(
        "COPY ("
        " SELECT 'companies' AS file, c.source_row, c.id, c.reason, to_json(r) AS original"
        " FROM checked_companies c JOIN raw_companies r USING (source_row)"
        " WHERE c.reason IS NOT NULL"
        " UNION ALL"
        " SELECT 'contacts', k.source_row, k.id, k.reason, to_json(r)"
        " FROM checked_contacts k JOIN raw_contacts r USING (source_row)"
        " WHERE k.reason IS NOT NULL"
        " ORDER BY file, source_row"
        ") TO ? (FORMAT parquet)", [str(work / "rejects.parquet")])


def _run_sql_file(db: duckdb.DuckDBPyConnection, path: Path, meter: _Meter) -> None:
    for statement in duckdb.extract_statements(path.read_text()):
        db.execute(statement)
        meter.advance()


def _statements(path: Path) -> int:
    return len(duckdb.extract_statements(path.read_text()))


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _one_line(exc: BaseException) -> str:
    """DuckDB's reason, with the line that says what is wrong with a malformed CSV line."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return "; ".join([lines[0], *(line for line in lines[1:]
                                  if line.startswith("Expected Number of Columns"))])


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def read_manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())

