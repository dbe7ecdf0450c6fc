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
    assert_refused(quarry(data_dir, "tokens", "create", "--user", "ops@example.com",
                          "--name", "ci\u202eexe.pdf", check=False), "(it has U+202E)")
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


@pytest.mark.parametrize(("args", "fragment"), [
    (["export", "--format", "xlsx", "--out", "x.xlsx"], "export --format: invalid choice: 'xlsx'"),
    (["refresh", "--source", ".", "--max-bad-share", "abc"],
     "--max-bad-share: must be a number from 0 to 1, got 'abc'"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["export", "--out", "x.csv"], "required: --format"),
    (["tokens"], "tokens: give an action"),
    (["serve", "--port", "http"], "--port: must be a whole number"),
    (["generate", "--out", "d", "--contacts", "-5"], "--contacts: must be a whole number"),
])
def test_usage_errors_are_one_line(data_dir, args, fragment):
    done = quarry(data_dir, *args, check=False)
    assert_refused(done, fragment)
    assert done.returncode == 2 and "usage:" not in done.stderr


def _parsers(parser):
    """The parser and every (sub)command parser under it."""
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def test_help_describes_every_option_and_its_default():
    from service.cli import build_parser

    checked = 0
    for parser in _parsers(build_parser()):
        assert parser.description, parser.prog
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if action.dest == "help" or action.help is None and action.choices:
                continue
            assert action.help, f"{parser.prog} {action.dest} has no description"
            if action.option_strings and action.default not in (None, False):
                assert f"(default: {action.default})" in text, (parser.prog, action.dest)
                checked += 1
    assert checked >= 8
    shown = quarry(REPO, "refresh", "--help").stdout
    assert "(default: 0.01)" in " ".join(shown.split())


def test_export_checks_its_arguments_before_exporting(data_dir, fixture_drop, tmp_path):
    quarry(data_dir, "refresh", "--source", str(fixture_drop))
    out = tmp_path / "x.csv"
    conflict = quarry(data_dir, "export", "--format", "csv", "--out", str(out), "--filters",
                      '{"format": "parquet"}', check=False)
    assert_refused(conflict, "--filters has format 'parquet' and --format is 'csv'")
    assert not out.exists() and conflict.returncode == 2
    assert_refused(quarry(data_dir, "export", "--format", "csv", "--out", str(tmp_path),
                          check=False), f"--out {tmp_path} is a folder")
    missing = tmp_path / "nowhere" / "x.csv"
    done = quarry(data_dir, "export", "--format", "csv", "--out", str(missing), check=False)
    assert_refused(done, f"the folder {missing.parent} does not exist")
    assert "Errno" not in done.stderr
    # The same format named twice is no conflict.
    quarry(data_dir, "export", "--format", "csv", "--out", str(out), "--filters",
           '{"format": "csv", "limit": 3}')
    assert len(out.read_text().splitlines()) == 4


def test_paths_of_the_wrong_kind_are_named(data_dir, tmp_path):
    a_file = tmp_path / "drop.parquet"
    a_file.write_text("not a folder")
    assert_refused(quarry(data_dir, "generate", "--out", str(a_file), check=False),
                   f"--out {a_file} is a file; give a folder")
    assert_refused(quarry(data_dir, "refresh", "--source", str(a_file), check=False),
                   f"drop folder {a_file} is a file")


def test_commands_run_elsewhere_say_where_they_looked(tmp_path):
    """Run from a folder without data (no QUARRY_DATA_DIR): every error names the folder or
    database it looked in, and a command that only reads leaves nothing behind."""
    env = {k: v for k, v in os.environ.items() if k not in ("QUARRY_DATA_DIR", "QUARRY_DB")}
    script = tmp_path / "q.sql"
    script.write_text("SELECT 1;")

    def run(*args):
        return subprocess.run([*QUARRY, *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)

    data, db = tmp_path / "data", tmp_path / "data" / "quarry.db"
    assert_refused(run("sql", str(script)), f"no data snapshot in {data} yet")
    assert_refused(run("export", "--format", "csv", "--out", "x.csv"),
                   f"no data snapshot in {data}")
    for args in (["tokens", "list", "--user", "ana@example.com"],
                 ["tokens", "create", "--user", "ana@example.com", "--name", "x"],
                 ["tokens", "revoke", "qry_abcdefgh"]):
        assert_refused(run(*args), f"no users database at {db}")
    assert_refused(run("snapshots", "use", "20260101T000000Z-000000"),
                   f"no kept snapshot '20260101T000000Z-000000' in {data / 'snapshots'}")
    listing = run("snapshots", "list")
    assert listing.returncode == 0 and listing.stdout == ""
    assert str(data) in listing.stderr
    assert not data.exists()
    created = subprocess.run([*QUARRY, "users", "create", "ana@example.com", "--password-stdin"],
                             input="a long password\n", capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=120)
    assert created.returncode == 0, created.stderr
    assert_refused(run("tokens", "list", "--user", "bob@example.com"),
                   f"no user bob@example.com in the users database {db}")
    assert_refused(run("tokens", "revoke", "qry_abcdefgh"),
                   f"no key with prefix qry_abcdefgh in the users database {db}")
