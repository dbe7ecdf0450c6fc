"""Refresh: a drop of Parquet or CSV files becomes a new immutable snapshot (SPEC section 4).

The work happens in a hidden folder under `snapshots/`; only a finished, fsynced snapshot is
renamed into place, and only then is the `CURRENT` pointer replaced. A refresh that fails at any
point leaves the serving snapshot untouched, and the next refresh removes the leftovers.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from .snapshots import SnapshotError, SnapshotStore, new_version

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

COMPANY_COLUMNS = ("id", "name", "domain", "industry", "function", "city", "state", "country",
                   "technologies", "employee_count", "created_at")
CONTACT_COLUMNS = ("id", "company_id", "first_name", "last_name", "job_title", "department",
                   "seniority", "work_email", "personal_emails", "linkedin_url",
                   "is_decision_maker")
LIST_COLUMNS = {"technologies", "personal_emails"}

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


Progress = Callable[[str], None]


def refresh(store: SnapshotStore, source: Path, *, max_bad_share: float = 0.01,
            memory_limit: str = "4GB", threads: int | None = None,
            progress: Progress = lambda message: None) -> RefreshResult:
    """Build a snapshot from the drop in `source` and switch the store to it."""
    started = time.monotonic()
    if not 0 <= max_bad_share <= 1:
        raise RefreshError(f"--max-bad-share must be between 0 and 1, got {max_bad_share}")
    files = {name: _drop_file(source, name) for name in ("companies", "contacts")}
    with store.refresh_lock():
        store.remove_leftovers()
        version = new_version()
        work = store.building_dir(version)
        work.mkdir(parents=True)
        try:
            result = _build(work, version, files, max_bad_share, memory_limit, threads,
                            progress, started)
            progress("publishing the snapshot")
            store.publish(work, version)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        store.switch_to(version)
        store.prune()
        return result


def _drop_file(source: Path, name: str) -> Path:
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
    try:
        staging.execute(f"CREATE MACRO whitespace_chars() AS {_sql_string(WHITESPACE)}")
        progress(f"reading {files['companies'].name}")
        _load_raw(staging, "companies", files["companies"], COMPANY_COLUMNS)
        progress(f"reading {files['contacts'].name}")
        _load_raw(staging, "contacts", files["contacts"], CONTACT_COLUMNS)
        progress("checking company rows")
        _run_sql_file(staging, SQL_DIR / "refresh" / "1_check_companies.sql")
        progress("checking contact rows")
        _run_sql_file(staging, SQL_DIR / "refresh" / "2_check_contacts.sql")
        rejected = _rejected_counts(staging)
        totals = {name: staging.execute(f"SELECT count(*) FROM raw_{name}").fetchone()[0]
                  for name in ("companies", "contacts")}
        _refuse_if_too_bad(rejected, totals, max_bad_share)

        progress("building query tables")
        staging.execute("ATTACH ? AS snap", [str(work / "quarry.duckdb")])
        _run_sql_file(staging, SQL_DIR / "refresh" / "3_build_snapshot.sql")
        staging.execute("USE snap")
        _run_sql_file(staging, SQL_DIR / "views.sql")
        staging.execute("USE staging")
        progress("writing Parquet files")
        _write_parquet(staging, work)
        counts = {name: staging.execute(f"SELECT count(*) FROM snap.{table}").fetchone()[0]
                  for name, table in (("companies", "company"), ("contacts", "contact"))}
        staging.execute("DETACH snap")
    finally:
        staging.close()
    (work / "staging.duckdb").unlink()
    shutil.rmtree(work / "spill", ignore_errors=True)

    result = RefreshResult(version, counts["companies"], counts["contacts"], rejected,
                           round(time.monotonic() - started, 2))
    manifest = {
        "version": version,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {name: str(path.resolve()) for name, path in files.items()},
        "rows": {"companies": counts["companies"], "contacts": counts["contacts"]},
        "read": totals,
        "rejected": rejected,
        "seconds": result.seconds,
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return result


def _load_raw(db: duckdb.DuckDBPyConnection, name: str, path: Path,
              columns: tuple[str, ...]) -> None:
    """Copy one drop file into raw_<name>: text columns, list columns as text lists."""
    reader = "read_parquet(?)" if path.suffix == ".parquet" else (
        "read_csv(?, header = true, all_varchar = true, auto_detect = true)")
    try:
        described = db.execute(f"DESCRIBE SELECT * FROM {reader}", [str(path)]).fetchall()
    except duckdb.Error as exc:
        raise RefreshError(f"{path.name} cannot be read: {_first_line(exc)}") from None
    types = {row[0]: row[1] for row in described}
    missing = [column for column in columns if column not in types]
    if missing:
        raise RefreshError(f"{path.name} lacks the column(s) {', '.join(missing)}")
    selects = [_raw_column(path, column, types[column]) for column in columns]
    try:
        db.execute(f"CREATE TABLE raw_{name} AS SELECT row_number() OVER () AS source_row, "
                   f"{', '.join(selects)} FROM {reader}", [str(path)])
    except duckdb.Error as exc:
        raise RefreshError(f"{path.name} cannot be read: {_first_line(exc)}") from None


def _raw_column(path: Path, column: str, source_type: str) -> str:
    quoted = f'"{column}"'
    if column not in LIST_COLUMNS:
        if source_type.endswith("[]") or source_type.startswith(("STRUCT", "MAP")):
            raise RefreshError(f"{path.name}: column {column} has type {source_type}; "
                               "expected a single value")
        if source_type.startswith("TIMESTAMP"):
            # Keep the instant exact: text with an explicit UTC offset.
            return f"strftime(timezone('UTC', {quoted}), '%Y-%m-%d %H:%M:%S.%f+00') AS {quoted}"
        return f"CAST({quoted} AS VARCHAR) AS {quoted}"
    if source_type == "VARCHAR":
        return f"string_split({quoted}, ';') AS {quoted}"
    if source_type.endswith("[]"):
        return f"CAST({quoted} AS VARCHAR[]) AS {quoted}"
    raise RefreshError(f"{path.name}: column {column} has type {source_type}; "
                       "expected a list of strings (or ';'-separated text in CSV)")


def _rejected_counts(db: duckdb.DuckDBPyConnection) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {"companies": {}, "contacts": {}}
    for name in counts:
        rows = db.execute(f"SELECT reason, count(*) FROM checked_{name} WHERE reason IS NOT NULL "
                          "GROUP BY reason ORDER BY reason").fetchall()
        counts[name] = dict(rows)
    return counts


def _refuse_if_too_bad(rejected: dict[str, dict[str, int]], totals: dict[str, int],
                       max_bad_share: float) -> None:
    for name, reasons in rejected.items():
        bad = sum(reasons.values())
        if totals[name] and bad / totals[name] > max_bad_share:
            top = ", ".join(f"{reason}: {count}" for reason, count in
                            sorted(reasons.items(), key=lambda item: -item[1])[:3])
            raise RefreshError(
                f"refused: {bad} of {totals[name]} {name} rows are bad "
                f"({bad / totals[name]:.2%} > --max-bad-share {max_bad_share:.2%}); {top}")


def _write_parquet(db: duckdb.DuckDBPyConnection, work: Path) -> None:
    """The snapshot's data of record, and the report of every rejected row."""
    for view in ("companies", "contacts"):
        db.execute(f"COPY (SELECT * FROM snap.{view}) TO ? (FORMAT parquet)",
                   [str(work / f"{view}.parquet")])
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


def _run_sql_file(db: duckdb.DuckDBPyConnection, path: Path) -> None:
    for statement in duckdb.extract_statements(path.read_text()):
        db.execute(statement)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def read_manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())

