"""The `quarry` command line, run as a real process (SPEC section 6)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

QUARRY = [sys.executable, "-m", "service.cli"]
REPO = Path(__file__).resolve().parent.parent


def quarry(data_dir: Path, *args: str, stdin: str | None = None, check: bool = True):
    env = {**os.environ, "QUARRY_DATA_DIR": str(data_dir)}
    done = subprocess.run([*QUARRY, *args], input=stdin, capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def assert_refused(done, fragment: str) -> None:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quarry: "), done.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in done.stderr


def test_users_and_tokens(data_dir):
    quarry(data_dir, "users", "create", "Ops@Example.com", "--password-stdin",
           stdin="a long password\n")
    assert_refused(quarry(data_dir, "users", "create", "ops@example.com", "--password-stdin",
                          stdin="another password\n", check=False), "already exists")
    created = quarry(data_dir, "tokens", "create", "--user", "ops@example.com", "--name", "ci")
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("qry_") and len(key) >= 4 + 22
    listing = quarry(data_dir, "tokens", "list", "--user", "ops@example.com").stdout
    assert key not in listing and len(listing.splitlines()) == 1  # one line per key
    assert listing.split("\t")[0] == "ci"
    assert "ci" in listing and key[:12] in listing and "active" in listing and "never" in listing
    quarry(data_dir, "tokens", "revoke", key[:12])
    assert "revoked" in quarry(data_dir, "tokens", "list", "--user", "ops@example.com").stdout
    assert_refused(quarry(data_dir, "tokens", "revoke", "qry_nosuchkey", check=False),
                   "no key")
    assert_refused(quarry(data_dir, "tokens", "create", "--user", "nobody@example.com",
                          "--name", "x", check=False), "nobody@example.com")
    assert_refused(quarry(data_dir, "tokens", "create", "--user", "ops@example.com",
                          "--name", "ci\u202eexe.pdf", check=False), "(it has U+202E)")
    quarry(data_dir, "users", "set-password", "ops@example.com", "--password-stdin",
           stdin="a brand new password\n")
    assert_refused(quarry(data_dir, "users", "set-password", "who@example.com",
                          "--password-stdin", stdin="whatever123\n", check=False), "no user")


def test_ambiguous_prefix_is_refused(data_dir):
    quarry(data_dir, "users", "create", "a@example.com", "--password-stdin", stdin="password1\n")
    for name in ("one", "two"):
        quarry(data_dir, "tokens", "create", "--user", "a@example.com", "--name", name)
    done = quarry(data_dir, "tokens", "revoke", "qry_", check=False)
    assert done.returncode != 0 and "quarry: " in done.stderr


def test_refresh_snapshots_and_sql(data_dir, fixture_drop, tmp_path):
    first = quarry(data_dir, "refresh", "--source", str(fixture_drop))
    assert "is current" in first.stdout and "checking contact rows" in first.stderr
    quarry(data_dir, "refresh", "--source", str(fixture_drop))
    listing = quarry(data_dir, "snapshots", "list").stdout.splitlines()
    assert len(listing) == 2 and listing[-1].split("\t")[-1] == "current"
    assert listing[0].split("\t")[-1] == ""
    version, created, companies, contacts, rejected, _ = listing[0].split("\t")
    assert created.endswith("Z") and int(companies) > 0 and int(contacts) > 0
    assert int(rejected) == 0
    quarry(data_dir, "snapshots", "use", version)
    assert quarry(data_dir, "snapshots", "list").stdout.splitlines()[0].endswith("\tcurrent")
    assert_refused(quarry(data_dir, "snapshots", "use", "nope", check=False), "no kept snapshot")

    script = tmp_path / "q.sql"
    script.write_text("SELECT 1;\nSELECT id, employee_count, created_at, technologies "
                      "FROM companies ORDER BY id LIMIT 3;")
    rows = json.loads(quarry(data_dir, "sql", str(script), "--format", "json").stdout)
    assert [r["id"] for r in rows] == ["cmp_0000", "cmp_0001", "cmp_0002"]
    assert rows[0]["created_at"].endswith("Z")
    assert all(isinstance(r["employee_count"], int | None) for r in rows)
    table = list(csv.reader(io.StringIO(quarry(data_dir, "sql", str(script), "--format",
                                               "csv").stdout)))
    assert table[0] == ["id", "employee_count", "created_at", "technologies"]
    assert len(table) == 4
    aligned = quarry(data_dir, "sql", str(script)).stdout.splitlines()
    assert aligned[0].startswith("id") and set(aligned[1]) <= {"-", " "}
    for analytics in sorted((REPO / "sql" / "analytics").glob("*.sql")):
        assert quarry(data_dir, "sql", str(analytics), "--format", "json").stdout.startswith("[")


def test_written_files_are_readable_by_their_owner_only(data_dir, tmp_path):
    """Snapshots, a drop, build folders and exports hold personal data: every file the commands
    write is 0600 and every folder 0700, though the caller's umask would allow 0644/0755."""
    drop, exports = tmp_path / "drop", tmp_path / "exports"
    exports.mkdir(mode=0o700)
    before = os.umask(0o022)
    try:
        quarry(data_dir, "generate", "--out", str(drop), "--companies", "50", "--contacts", "300")
        quarry(data_dir, "refresh", "--source", str(drop))
        quarry(data_dir, "refresh", "--source", str(drop))
        quarry(data_dir, "snapshots", "use", quarry(data_dir, "snapshots", "list")
               .stdout.split("\t")[0])
        for fmt in ("ndjson", "csv", "parquet", "arrow"):
            quarry(data_dir, "export", "--format", fmt, "--out", str(exports / f"all.{fmt}"))
    finally:
        os.umask(before)
    written = [data_dir, *data_dir.rglob("*"), drop, *drop.rglob("*"), *exports.iterdir()]
    assert len(list((data_dir / "snapshots").iterdir())) == 2 and len(written) > 20
    modes = {str(path.relative_to(tmp_path)): oct(path.stat().st_mode & 0o777)
             for path in written}
    assert modes == {name: "0o700" if (tmp_path / name).is_dir() else "0o600"
                     for name in modes}


@pytest.mark.parametrize(("args", "fragment"), [
    (["refresh", "--source", "/nonexistent/drop"], "does not exist"),
    (["sql", "/nonexistent.sql"], "cannot read"),
    (["snapshots", "use", "v1"], "no kept snapshot"),
    (["refresh", "--source", ".", "--max-bad-share", "2"], "--max-bad-share"),
])
def test_failures_are_one_line(data_dir, args, fragment):
    assert_refused(quarry(data_dir, *args, check=False), fragment)


def test_sql_errors_are_one_line(data_dir, fixture_drop, tmp_path):
    quarry(data_dir, "refresh", "--source", str(fixture_drop))
    bad = tmp_path / "bad.sql"
    bad.write_text("SELECT nope FROM companies;")
    assert_refused(quarry(data_dir, "sql", str(bad), check=False), "nope")
    reader = tmp_path / "escape.sql"
    reader.write_text("SELECT * FROM read_csv('/etc/passwd');")
    assert_refused(quarry(data_dir, "sql", str(reader), check=False), "escape.sql")


def test_bad_environment_is_one_line(data_dir):
    env = {**os.environ, "QUARRY_DATA_DIR": str(data_dir), "QUARRY_QUERY_TIMEOUT_MS": "soon"}
    done = subprocess.run([*QUARRY, "snapshots", "list"], capture_output=True, text=True,
                          env=env, cwd=REPO)
    assert_refused(done, "QUARRY_QUERY_TIMEOUT_MS")
