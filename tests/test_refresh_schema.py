"""Refresh, validation order: files and columns are checked first, before any row is read, and
a bad one refuses the drop at once in one line naming the file and the column (SPEC 4)."""

from __future__ import annotations

import shutil
from datetime import date

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from service.refresh import RefreshError, refresh
from service.snapshots import SnapshotStore
from tests.fixture_drop import write_fixture_drop
from tests.serving import assert_refresh_refused
from tests.test_cli import quarry


def replace_column(drop, file: str, column: str, values: pa.Array) -> None:
    path = drop / f"{file}.parquet"
    table = pq.read_table(path)
    index = table.schema.get_field_index(column)
    pq.write_table(table.set_column(index, column, values), path)


def view(store: SnapshotStore, sql: str) -> list[tuple]:
    db = duckdb.connect(str(store.path_of(store.current_version()) / "quarry.duckdb"),
                        read_only=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


@pytest.mark.parametrize("file, column, make, expected", [
    ("companies", "created_at", lambda n: pa.array([True] * n),
     "companies.parquet: column created_at has type BOOLEAN; expected a timestamp"),
    ("companies", "created_at", lambda n: pa.array([["2020-01-01"]] * n),
     "companies.parquet: column created_at has type VARCHAR[]; expected a timestamp"),
    ("companies", "name", lambda n: pa.array([["Acme"]] * n),
     "companies.parquet: column name has type VARCHAR[]; expected text"),
    ("companies", "id", lambda n: pa.array(range(n)),
     "companies.parquet: column id has type BIGINT; expected text"),
    ("companies", "employee_count", lambda n: pa.array([True] * n),
     "companies.parquet: column employee_count has type BOOLEAN; expected an integer"),
    ("companies", "technologies", lambda n: pa.array([[1, 2]] * n),
     "companies.parquet: column technologies has type BIGINT[]; expected a list of text"),
    ("contacts", "is_decision_maker", lambda n: pa.array([date(2020, 1, 1)] * n),
     "contacts.parquet: column is_decision_maker has type DATE; expected a boolean"),
    ("contacts", "work_email", lambda n: pa.array([{"a": "b"}] * n),
     "contacts.parquet: column work_email has type STRUCT"),
    ("contacts", "company_id", lambda n: pa.array([b"\x00"] * n, pa.binary()),
     "contacts.parquet: column company_id has type BLOB; expected text"),
])
def test_mistyped_parquet_column_is_refused_at_once(data_dir, fixture_drop, tmp_path,
                                                    file, column, make, expected):
    store = SnapshotStore(data_dir)
    version = refresh(store, fixture_drop).version
    drop = tmp_path / "drop"
    shutil.copytree(fixture_drop, drop)
    rows = pq.read_metadata(drop / f"{file}.parquet").num_rows
    replace_column(drop, file, column, make(rows))
    done = quarry(data_dir, "refresh", "--source", str(drop), check=False)
    assert_refresh_refused(done, expected)
    # Refused at the column check: no row was read, nothing was changed.
    assert "reading companies.parquet" not in done.stderr
    assert "checking files and columns ... failed" in done.stderr
    assert [m["version"] for m in store.versions()] == [version]
    assert store.current_version() == version
    assert not list(store.snapshots_dir.glob(".*"))


def test_every_schema_problem_in_one_line(data_dir, fixture_drop, tmp_path):
    drop = tmp_path / "drop"
    shutil.copytree(fixture_drop, drop)
    rows = pq.read_metadata(drop / "companies.parquet").num_rows
    replace_column(drop, "companies", "created_at", pa.array([False] * rows))
    contacts = pq.read_table(drop / "contacts.parquet").drop_columns(["seniority"])
    pq.write_table(contacts, drop / "contacts.parquet")
    done = quarry(data_dir, "refresh", "--source", str(drop), check=False)
    assert_refresh_refused(done, "companies.parquet: column created_at has type BOOLEAN")
    assert "contacts.parquet lacks the column(s) seniority" in done.stderr


@pytest.mark.parametrize("damage, expected", [
    ("empty file", "contacts.parquet cannot be read"),
    ("truncated", "contacts.parquet cannot be read"),
    ("csv without columns", "companies.csv lacks the column(s) id, name"),
])
def test_unreadable_file_is_refused_with_one_line(data_dir, fixture_drop, tmp_path, damage,
                                                  expected):
    drop = tmp_path / "drop"
    shutil.copytree(fixture_drop, drop)
    if damage == "empty file":
        (drop / "contacts.parquet").write_bytes(b"")
    elif damage == "truncated":
        data = (drop / "contacts.parquet").read_bytes()
        (drop / "contacts.parquet").write_bytes(data[: len(data) // 2])
    else:
        (drop / "companies.parquet").unlink()
        (drop / "companies.csv").write_text("just one column\nx\n")
    done = quarry(data_dir, "refresh", "--source", str(drop), check=False)
    assert_refresh_refused(done, expected)
    assert not (data_dir / "CURRENT").exists()


def test_compatible_parquet_types_are_read(data_dir, fixture_drop, tmp_path):
    """What pandas and other writers produce for the drop schema is accepted: an all-null
    column, whole numbers stored as floats, dates, nanosecond timestamps, 0/1 flags, large
    strings and dictionary-encoded strings."""
    drop = tmp_path / "drop"
    shutil.copytree(fixture_drop, drop)
    companies = pq.read_table(drop / "companies.parquet")
    n = companies.num_rows
    counts = companies.column("employee_count")
    replace_column(drop, "companies", "employee_count", pc.cast(counts, pa.float64()))
    replace_column(drop, "companies", "state", pa.nulls(n))
    replace_column(drop, "companies", "industry",
                   pc.cast(companies.column("industry"), pa.large_string()).combine_chunks())
    replace_column(drop, "companies", "created_at",
                   pc.cast(companies.column("created_at"), pa.timestamp("ns")))
    contacts = pq.read_table(drop / "contacts.parquet")
    replace_column(drop, "contacts", "is_decision_maker",
                   pc.cast(contacts.column("is_decision_maker"), pa.int8()))
    replace_column(drop, "contacts", "department",
                   contacts.column("department").combine_chunks().dictionary_encode())
    replace_column(drop, "contacts", "personal_emails", pa.nulls(contacts.num_rows))
    store = SnapshotStore(data_dir)
    result = refresh(store, drop)
    assert result.companies == n and result.rejected == {"companies": {}, "contacts": {}}
    expected_counts = sorted(counts.to_pylist(), key=lambda v: (v is None, v))
    assert [r[0] for r in view(store, "SELECT employee_count FROM companies ORDER BY 1")] == \
        expected_counts
    assert view(store, "SELECT count(*) FROM companies WHERE state IS NOT NULL") == [(0,)]
    assert view(store, "SELECT count(*) FROM contacts WHERE len(personal_emails) > 0") == [(0,)]
    decision_makers = pc.sum(pc.fill_null(contacts.column("is_decision_maker"), False)).as_py()
    assert view(store, "SELECT count(*) FROM contacts WHERE is_decision_maker") == \
        [(decision_makers,)]


def test_fractional_employee_count_makes_the_row_bad(data_dir, fixture_drop, tmp_path):
    drop = tmp_path / "drop"
    shutil.copytree(fixture_drop, drop)
    n = pq.read_metadata(drop / "companies.parquet").num_rows
    replace_column(drop, "companies", "employee_count",
                   pa.array([12.5, float("nan")] + [3.0] * (n - 2)))
    store = SnapshotStore(data_dir)
    with pytest.raises(RefreshError, match="unreadable value: employee_count: 2"):
        refresh(store, drop, max_bad_share=0.001)
    result = refresh(store, drop)
    assert result.rejected["companies"] == {"unreadable value: employee_count": 2}
    assert result.companies == n - 2


def test_csv_is_read_as_written_and_a_malformed_line_is_named(data_dir, tmp_path):
    drop = tmp_path / "drop"
    write_fixture_drop(drop, companies=50, contacts=200, fmt="csv")
    lines = (drop / "companies.csv").read_text().splitlines(keepends=True)
    # A value with the delimiter, quotes and a line break in it is one value.
    first_id, name, rest = lines[1].split(",", 2)
    lines[1] = f'{first_id},"{name}, ""Quoted""\nand more",{rest}'
    (drop / "companies.csv").write_text("".join(lines))
    store = SnapshotStore(data_dir)
    refresh(store, drop)
    assert view(store, f"SELECT name FROM companies WHERE id = '{first_id}'") == [
        (f'{name}, "Quoted"\nand more',)]
    contacts = (drop / "contacts.csv").read_text().splitlines(keepends=True)
    contacts[120] = contacts[120].rstrip("\n") + ",one too many\n"
    (drop / "contacts.csv").write_text("".join(contacts))
    done = quarry(data_dir, "refresh", "--source", str(drop), check=False)
    assert_refresh_refused(done, "contacts.csv cannot be read: ")
    assert "Line: 121" in done.stderr and "Expected Number of Columns: 11 Found: 12" in done.stderr
