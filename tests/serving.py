"""Helpers for tests that run `quarry serve` and `quarry refresh` as real processes."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx

from service.accounts import Accounts
from tests.test_cli import QUARRY, REPO

VERSION = re.compile(r"^\d{8}T\d{6}Z-\d{6}$")


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "QUARRY_DATA_DIR": str(data_dir), "QUARRY_RATE_LIMIT": "100000",
            "QUARRY_DUCKDB_THREADS": "2", **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    base: str
    key: str
    process: subprocess.Popen

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@contextlib.contextmanager
def running_server(data_dir: Path, log: Path, **extra_env: str) -> Iterator[Server]:
    """`quarry serve` on a free loopback port over `data_dir`, with a fresh key."""
    accounts = Accounts(data_dir / "quarry.db")
    email = f"ops{time.monotonic_ns()}@example.com"
    accounts.create_user(email, "a long password")
    key, _ = accounts.create_key(email, "tests")
    port = free_port()
    with open(log, "w") as output:
        process = subprocess.Popen([*QUARRY, "serve", "--port", str(port)], cwd=REPO,
                                   env=env_for(data_dir, **extra_env), stdout=output, stderr=output)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"quarry serve did not start: {log.read_text()}")
            time.sleep(0.1)
        yield Server(base, key, process)
    finally:
        process.kill()
        process.wait()


def start_refresh(data_dir: Path, source: Path, **extra: str) -> tuple[subprocess.Popen, list]:
    """`quarry refresh` as a process; the second item collects its stderr as it comes, as
    (seconds since start, text) pieces, so that a test can time a kill by the stage lines."""
    process = subprocess.Popen([*QUARRY, "refresh", "--source", str(source)], cwd=REPO,
                               env=env_for(data_dir, **extra), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    started, pieces = time.monotonic(), []

    def pump() -> None:
        while chunk := os.read(process.stderr.fileno(), 4096):
            pieces.append((time.monotonic() - started, chunk.decode(errors="replace")))

    threading.Thread(target=pump, daemon=True).start()
    return process, pieces


def listed_versions(data_dir: Path) -> tuple[list[str], str | None]:
    """The versions `quarry snapshots list` shows, and the one marked current."""
    done = subprocess.run([*QUARRY, "snapshots", "list"], cwd=REPO, env=env_for(data_dir),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    versions, current = [], None
    for line in done.stdout.splitlines():
        cells = line.split()
        if cells and VERSION.match(cells[0]):
            versions.append(cells[0])
            if cells[-1] == "current":
                current = cells[0]
    return versions, current


def assert_whole(snapshot_dir: Path) -> dict[str, int]:
    """A listed snapshot is whole: its views open and hold the manifest's row counts."""
    import json

    manifest = json.loads((snapshot_dir / "manifest.json").read_text())
    db = duckdb.connect(str(snapshot_dir / "quarry.duckdb"), read_only=True)
    try:
        counts = {name: db.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                  for name in ("companies", "contacts")}
    finally:
        db.close()
    assert counts == manifest["rows"], snapshot_dir
    return counts


def leftovers(data_dir: Path) -> list[str]:
    hidden = [p.name for p in (data_dir / "snapshots").glob(".*")]
    return hidden + [p.name for p in data_dir.glob(".CURRENT.*")]


def open_snapshot_files(pid: int) -> set[str]:
    """The files under a `snapshots/` folder that process `pid` has open (Linux /proc); an
    unlinked one ends in ' (deleted)'."""
    names = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if "/snapshots/" in target:
                names.add(target)
    return names


def snapshots_held(pid: int) -> set[str]:
    """The snapshot folders (versions) whose files process `pid` has open."""
    return {Path(name.removesuffix(" (deleted)")).parent.name.removeprefix(".deleting-")
            for name in open_snapshot_files(pid)}


def assert_refresh_refused(done, fragment: str) -> None:
    """A refused refresh: non-zero exit, and on stderr its progress lines (two spaces, a stage)
    followed by exactly one line `quarry: <reason>`."""
    assert done.returncode not in (0, None), done.stderr
    lines = done.stderr.rstrip("\n").splitlines()
    assert lines and lines[-1].startswith("quarry: "), done.stderr
    assert fragment in lines[-1], lines[-1]
    assert all(line.startswith("  ") and " ..." in line for line in lines[:-1]), done.stderr
    assert "Traceback" not in done.stderr
