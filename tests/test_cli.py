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


def quarry(data_dir: Path, *args: str, stdin: str | None = None, check: bool = True,
           **extra_env: str):
    env = {**os.environ, "QUARRY_DATA_DIR": str(data_dir), **extra_env}
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
    quarry(data_dir, "users", "set-password", "ops@example.com", "--password-stdin",
           stdin="a brand new password\n")
    assert_refused(quarry(data_dir, "users", "set-password", "who@example.com",
                          "--password-stdin", stdin="whatever123\n", check=False), "no user")


def test_tokens_create_refuses_past_the_active_keys_of_a_user(data_dir):
    quarry(data_dir, "users", "create", "ops@example.com", "--password-stdin",
           stdin="a long password\n")
    create = ("tokens", "create", "--user", "ops@example.com", "--name")
    first = quarry(data_dir, *create, "one", QUARRY_MAX_KEYS_PER_USER="2")
    quarry(data_dir, *create, "two", QUARRY_MAX_KEYS_PER_USER="2")
    refused = quarry(data_dir, *create, "three", check=False, QUARRY_MAX_KEYS_PER_USER="2")
    assert_refused(refused, "ops@example.com already has 2 active keys, the most a user may "
                            "have (QUARRY_MAX_KEYS_PER_USER); revoke one before creating another")
    assert refused.returncode == 2 and refused.stdout == ""
    quarry(data_dir, "tokens", "revoke", first.stdout.strip().splitlines()[-1][:12])
    quarry(data_dir, *create, "three", QUARRY_MAX_KEYS_PER_USER="2")
    for n in range(3, 21):  # 20 active with the default of 20
        quarry(data_dir, *create, f"key {n}")
    assert_refused(quarry(data_dir, *create, "one too many", check=False),
                   "already has 20 active keys")


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
