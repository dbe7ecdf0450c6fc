"""Refresh: drop -> validated snapshot, bad rows reported, refusals that change nothing."""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.refresh import RefreshError, refresh
from service.snapshots import SnapshotError, SnapshotStore
from tests.fixture_drop import write_csv, write_fixture_drop

COMPANY = {"id": "cmp_1", "name": "Acme", "domain": "Acme.IO", "industry": "Retail",
           "function": "Finance", "city": "Zürich", "state": None, "country": "Switzerland",
           "technologies": "React;Vue", "employee_count": "10",
           "created_at": "2023-04-01T09:30:00Z"}
CONTACT = {"id": "ctc_1", "company_id": "cmp_1", "first_name": "Ada", "last_name": None,
           "job_title": "CEO", "department": "Executive", "seniority": "C-Level",
           "work_email": None, "personal_emails": "a@b.c", "linkedin_url": None,
           "is_decision_maker": "TRUE"}


def csv_drop(path: Path, companies: list[dict], contacts: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    write_csv(path / "companies.csv", companies)
    write_csv(path / "contacts.csv", contacts)
    return path


def good_rows(n: int = 200) -> tuple[list[dict], list[dict]]:
    companies = [{**COMPANY, "id": f"cmp_{i:03d}"} for i in range(n)]
    contacts = [{**CONTACT, "id": f"ctc_{i:03d}", "company_id": f"cmp_{i:03d}"} for i in range(n)]
    return companies, contacts


def rejects(store: SnapshotStore) -> list[tuple]:
    path = store.path_of(store.current_version()) / "rejects.parquet"
    return duckdb.sql(f"SELECT file, id, reason, original FROM '{path}' ORDER BY file, id"
                      ).fetchall()


def test_each_rejection_reason_is_reported(data_dir, tmp_path):
    companies, contacts = good_rows()
    companies += [
        {**COMPANY, "id": "", "name": "no id"},
        {**COMPANY, "id": "cmp_noname", "name": " "},
        {**COMPANY, "id": "cmp_notime", "created_at": ""},
        {**COMPANY, "id": "cmp_badtime", "created_at": "last tuesday"},
        {**COMPANY, "id": "cmp_many", "employee_count": "many"},
        {**COMPANY, "id": "cmp_negative", "employee_count": "-3"},
        {**COMPANY, "id": "cmp_twice", "name": "first"},
        {**COMPANY, "id": "cmp_twice", "name": "second"},
    ]
    contacts += [
        {**CONTACT, "id": "ctc_orphan", "company_id": "cmp_nowhere"},
        {**CONTACT, "id": "ctc_leftout", "company_id": "cmp_many"},
        {**CONTACT, "id": "ctc_nocompany", "company_id": ""},
        {**CONTACT, "id": "ctc_maybe", "is_decision_maker": "maybe"},
        {**CONTACT, "id": "ctc_dup"}, {**CONTACT, "id": "ctc_dup"},
    ]
    store = SnapshotStore(data_dir)
    result = refresh(store, csv_drop(tmp_path / "drop", companies, contacts), max_bad_share=0.5)
    assert result.companies == 200 and result.contacts == 200
    assert result.rejected["companies"] == {
        "duplicate id": 2, "invalid value: employee_count is negative": 1,
        "missing required value: created_at": 1, "missing required value: id": 1,
        "missing required value: name": 1, "unreadable value: created_at": 1,
        "unreadable value: employee_count": 1}
    assert result.rejected["contacts"] == {
        "company left out: its company row was rejected": 1,
        "company missing: no company with this company_id": 1, "duplicate id": 2,
        "missing required value: company_id": 1, "unreadable value: is_decision_maker": 1}
    report = rejects(store)
    assert len(report) == 14
    many = next(row for row in report if row[1] == "cmp_many")
    assert json.loads(many[3])["employee_count"] == "many"  # the original value is kept
    manifest = store.versions()[-1]
    assert manifest["rejected"] == result.rejected and manifest["current"]


def test_values_are_normalised(data_dir, tmp_path):
    companies, contacts = good_rows(3)
    companies[0].update(domain=" Foo.CO.UK ", industry="  Retail ", technologies=" A ; ;B ")
    contacts[0].update(is_decision_maker="0", personal_emails="")
    store = SnapshotStore(data_dir)
    refresh(store, csv_drop(tmp_path / "drop", companies, contacts))
    db = duckdb.connect(str(store.path_of(store.current_version()) / "quarry.duckdb"))
    assert db.execute("SELECT domain, tld, industry, technologies FROM company WHERE id = "
                      "'cmp_000'").fetchone() == ("foo.co.uk", "uk", "Retail", ["A", "B"])
    assert db.execute("SELECT is_decision_maker, personal_emails FROM contact WHERE id = "
                      "'ctc_000'").fetchone() == (False, [])


def test_share_threshold_refuses_and_changes_nothing(data_dir, tmp_path):
    store = SnapshotStore(data_dir)
    companies, contacts = good_rows(100)
    first = refresh(store, csv_drop(tmp_path / "good", companies, contacts))
    contacts[0]["company_id"] = "cmp_gone"
    contacts[1]["company_id"] = "cmp_gone"  # 2% of contacts are bad
    with pytest.raises(RefreshError, match="2 of 100 contacts rows are bad"):
        refresh(store, csv_drop(tmp_path / "bad", companies, contacts))
    assert store.current_version() == first.version
    assert len(store.versions()) == 1
    assert not list(store.snapshots_dir.glob(".building-*"))
    refresh(store, tmp_path / "bad", max_bad_share=0.05)
    assert store.current_version() != first.version


@pytest.mark.parametrize("damage", ["missing column", "no contacts file", "not parquet",
                                    "list column as number"])
def test_bad_drop_is_refused_with_one_line(data_dir, tmp_path, fixture_drop, damage):
    store = SnapshotStore(data_dir)
    first = refresh(store, fixture_drop)
    drop = tmp_path / "damaged"
    shutil.copytree(fixture_drop, drop)
    if damage == "missing column":
        table = pq.read_table(drop / "contacts.parquet").drop_columns(["seniority"])
        pq.write_table(table, drop / "contacts.parquet")
        expected = "contacts.parquet lacks the column.s. seniority"
    elif damage == "no contacts file":
        (drop / "contacts.parquet").unlink()
        expected = "neither contacts.parquet nor contacts.csv"
    elif damage == "not parquet":
        (drop / "companies.parquet").write_bytes(b"this is not parquet")
        expected = "companies.parquet cannot be read"
    else:
        table = pq.read_table(drop / "companies.parquet")
        table = table.set_column(table.schema.get_field_index("technologies"), "technologies",
                                 pa.array([1] * table.num_rows))
        pq.write_table(table, drop / "companies.parquet")
        expected = "column technologies has type BIGINT"
    with pytest.raises(RefreshError, match=expected) as refused:
        refresh(store, drop)
    assert "\n" not in str(refused.value)
    assert store.current_version() == first.version
    assert [m["version"] for m in store.versions()] == [first.version]


def test_csv_and_parquet_drops_give_the_same_snapshot(tmp_path):
    answers = []
    for fmt in ("parquet", "csv"):
        drop = tmp_path / f"drop-{fmt}"
        write_fixture_drop(drop, companies=60, contacts=300, fmt=fmt)
        store = SnapshotStore(tmp_path / f"data-{fmt}")
        refresh(store, drop)
        db = duckdb.connect(str(store.path_of(store.current_version()) / "quarry.duckdb"))
        answers.append((db.execute("SELECT * EXCLUDE (idx) FROM company ORDER BY id").fetchall(),
                        db.execute("SELECT * FROM contact ORDER BY id").fetchall()))
    assert answers[0] == answers[1]


def test_second_refresh_at_once_is_refused(data_dir, fixture_drop):
    store = SnapshotStore(data_dir)
    held, release = threading.Event(), threading.Event()

    def hold_lock():
        with store.refresh_lock():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait(10)
    try:
        with pytest.raises(SnapshotError, match="another refresh is running"):
            refresh(store, fixture_drop)
    finally:
        release.set()
        holder.join()
    assert store.current_version() is None


def test_leftovers_of_a_killed_refresh_are_removed(data_dir, fixture_drop):
    store = SnapshotStore(data_dir)
    leftover = store.building_dir("20200101T000000Z-dead")
    leftover.mkdir(parents=True)
    (leftover / "quarry.duckdb").write_bytes(b"half")
    refresh(store, fixture_drop)
    assert not leftover.exists()
    assert len(store.versions()) == 1


def test_snapshots_are_kept_pruned_and_switchable(data_dir, fixture_drop):
    store = SnapshotStore(data_dir, keep=2)
    versions = [refresh(store, fixture_drop).version for _ in range(3)]
    kept = [m["version"] for m in store.versions()]
    assert kept == versions[1:]
    store.switch_to(versions[1])
    assert store.current_version() == versions[1]
    with pytest.raises(SnapshotError, match="no kept snapshot"):
        store.switch_to(versions[0])
    newest = refresh(store, fixture_drop).version
    assert [m["version"] for m in store.versions()] == [versions[2], newest]


def test_views_have_the_drop_schema(data_dir, fixture_drop):
    store = SnapshotStore(data_dir)
    refresh(store, fixture_drop)
    db = duckdb.connect(str(store.path_of(store.current_version()) / "quarry.duckdb"))
    company_columns = [r[0] for r in db.execute("DESCRIBE companies").fetchall()]
    contact_columns = [r[0] for r in db.execute("DESCRIBE contacts").fetchall()]
    assert company_columns == [f.name for f in pq.read_schema(fixture_drop / "companies.parquet")]
    assert contact_columns == [f.name for f in pq.read_schema(fixture_drop / "contacts.parquet")]
    parquet = store.path_of(store.current_version()) / "contacts.parquet"
    assert pq.read_metadata(parquet).num_rows == db.execute(
        "SELECT count(*) FROM contacts").fetchone()[0]


def test_bad_company_share_is_refused_under_its_own_stage(data_dir, tmp_path):
    from tests.serving import assert_refresh_refused
    from tests.test_cli import quarry

    companies, contacts = good_rows(100)
    companies[0]["employee_count"] = "-1"
    companies[1]["name"] = ""  # 2% of companies are bad (and so are their 2 contacts)
    done = quarry(data_dir, "refresh", "--source",
                  str(csv_drop(tmp_path / "drop", companies, contacts)), check=False)
    assert_refresh_refused(done, "2 of 100 companies rows are bad")
    stages = done.stderr.splitlines()[:-1]
    assert stages[-1].startswith("  checking company rows ... failed in"), done.stderr
    assert "checking contact rows" not in done.stderr


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_long_stage_shows_it_is_alive():
    """Off a terminal: a line per `every` seconds with the share done and the time so far,
    then the stage's own line; on a terminal: a bar redrawn in place."""
    from service.progress import StageLog

    log = io.StringIO()
    with StageLog(log, every=0.3) as stages:
        stages.stage("crunching", lambda: 0.5)
        time.sleep(1.0)
        stages.stage("quick")
    lines = log.getvalue().splitlines()
    assert lines[0] == "  crunching ..."
    ticks = lines[1:-2]
    assert 2 <= len(ticks) <= 4 and all(re.fullmatch(r"  crunching \.\.\. 50% after \ds", line)
                                        for line in ticks), lines
    assert re.fullmatch(r"  crunching \.\.\. done in 1\.\ds", lines[-2]), lines
    assert re.fullmatch(r"  quick \.\.\. done in 0\.\ds", lines[-1]), lines

    screen = Terminal()
    with StageLog(screen) as stages:
        stages.stage("crunching", lambda: 0.5)
        time.sleep(0.5)
    assert f"\r\x1b[K  crunching ... [{'#' * 15}{'-' * 15}]  50%" in screen.getvalue()
    assert screen.getvalue().endswith("\r\x1b[K  crunching ... done in 0.5s\n")


@pytest.fixture(scope="module")
def seconds_drop(tmp_path_factory) -> Path:
    """A drop whose refresh stages take a second or more each."""
    from service.generate import generate_drop

    drop = tmp_path_factory.mktemp("seconds") / "drop"
    generate_drop(drop, 10_000, 100_000, seed=3)
    return drop


def test_refresh_on_a_terminal_shows_a_bar_per_stage(data_dir, seconds_drop):
    """`quarry refresh` with its stderr on a terminal (a pty): DuckDB's progress of the stage's
    statements, as a bar that moves."""
    import os
    import pty
    import subprocess

    from tests.serving import env_for
    from tests.test_cli import QUARRY, REPO

    main, child = pty.openpty()
    process = subprocess.Popen([*QUARRY, "refresh", "--source", str(seconds_drop)], cwd=REPO,
                               env=env_for(data_dir), stdout=subprocess.DEVNULL, stderr=child)
    os.close(child)
    screen = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        screen += chunk
    os.close(main)
    assert process.wait(timeout=120) == 0
    text = screen.decode()
    shares = {stage: [int(share) for share in re.findall(
        rf"\r\x1b\[K  {stage} \.\.\. \[[#-]{{30}}\] +(\d+)%", text)]
        for stage in ("reading contacts.parquet", "checking contact rows",
                      "building query tables")}
    assert any(values and max(values) > 0 for values in shares.values()), text
    for values in shares.values():
        assert values == sorted(values)  # never backwards
    assert "  building query tables ... done in" in text
