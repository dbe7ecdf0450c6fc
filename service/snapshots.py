"""Immutable data snapshots on disk, and the one pointer that says which is current.

Layout under QUARRY_DATA_DIR:

    CURRENT                     the current version, replaced atomically (os.replace + fsync)
    refresh.lock                held by the one refresh that may run at a time
    snapshots/<version>/        companies.parquet, contacts.parquet (data of record),
                                rejects.parquet, manifest.json, quarry.duckdb (query tables)
    snapshots/.building-<v>/    a refresh in progress; never read, removed when left behind
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

BUILDING_PREFIX = ".building-"


class SnapshotError(Exception):
    """A one-line reason a snapshot operation was refused."""


class NoSnapshot(SnapshotError):
    """No snapshot has been loaded yet."""


def new_version() -> str:
    """Sorts by creation time; refreshes run one at a time, so microseconds make it unique."""
    now = time.time()
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + f"-{int(now * 1e6) % 10**6:06d}"


class SnapshotStore:
    def __init__(self, data_dir: Path, keep: int = 3):
        self.data_dir = data_dir
        self.snapshots_dir = data_dir / "snapshots"
        self.pointer = data_dir / "CURRENT"
        self.keep = keep

    def current_version(self) -> str | None:
        try:
            return self.pointer.read_text().strip() or None
        except FileNotFoundError:
            return None

    def path_of(self, version: str) -> Path:
        return self.snapshots_dir / version

    def versions(self) -> list[dict[str, Any]]:
        """Manifests of the kept snapshots, oldest first, each with `current` set."""
        current = self.current_version()
        manifests = []
        if self.snapshots_dir.is_dir():
            for path in self.snapshots_dir.iterdir():
                if path.name.startswith(".") or not (path / "manifest.json").is_file():
                    continue
                manifest = json.loads((path / "manifest.json").read_text())
                manifest["current"] = manifest["version"] == current
                manifests.append(manifest)
        return sorted(manifests, key=lambda m: m["version"])

    def switch_to(self, version: str) -> None:
        """Point the service at a kept snapshot, in one atomic step."""
        if not (self.path_of(version) / "manifest.json").is_file():
            raise SnapshotError(f"no kept snapshot {version!r}; see 'quarry snapshots list'")
        temporary = self.data_dir / f".CURRENT.{os.getpid()}"
        with open(temporary, "w") as handle:
            handle.write(version + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.pointer)
        _fsync_dir(self.data_dir)

    @contextlib.contextmanager
    def refresh_lock(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "refresh.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SnapshotError("another refresh is running; try again when it has "
                                    "finished") from None
            yield

    def building_dir(self, version: str) -> Path:
        return self.snapshots_dir / f"{BUILDING_PREFIX}{version}"

    def remove_leftovers(self) -> None:
        """Remove what a killed refresh left behind. Call only while holding the lock."""
        if self.snapshots_dir.is_dir():
            for path in self.snapshots_dir.glob(f"{BUILDING_PREFIX}*"):
                shutil.rmtree(path, ignore_errors=True)

    def publish(self, work: Path, version: str) -> None:
        """Make a finished build visible under its version, durably."""
        for path in work.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(work)
        os.rename(work, self.path_of(version))
        _fsync_dir(self.snapshots_dir)

    def prune(self) -> list[str]:
        """Delete all but the newest `keep` snapshots; the current one is always kept."""
        manifests = self.versions()
        doomed = [m["version"] for m in manifests[: max(0, len(manifests) - self.keep)]
                  if not m["current"]]
        for version in doomed:
            shutil.rmtree(self.path_of(version), ignore_errors=True)
        return doomed


@dataclass
class Snapshot:
    """An open snapshot: its version, counts and a read-only DuckDB connection."""

    version: str
    path: Path
    manifest: dict[str, Any]
    connection: duckdb.DuckDBPyConnection = field(repr=False)

    @property
    def companies(self) -> int:
        return self.manifest["rows"]["companies"]

    @property
    def contacts(self) -> int:
        return self.manifest["rows"]["contacts"]

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.connection.cursor()


class ServingSnapshots:
    """Hands the server the current snapshot, noticing a switch on the next request.

    A request keeps the Snapshot it started with, so it finishes on the old data while new
    requests see the new one; the old connection closes when the last request lets go of it.
    """

    def __init__(self, store: SnapshotStore, duckdb_config: dict[str, Any]):
        self.store = store
        self.duckdb_config = duckdb_config
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._snapshot: Snapshot | None = None

    def current(self) -> Snapshot:
        try:
            stat = self.store.pointer.stat()
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = None
        snapshot = self._snapshot
        if seen == self._seen and snapshot is not None:
            return snapshot
        with self._lock:
            if seen != self._seen or self._snapshot is None:
                self._snapshot = self._open_current()
                self._seen = seen
            if self._snapshot is None:
                raise NoSnapshot("no data snapshot has been loaded yet; run 'quarry refresh'")
            return self._snapshot

    def close(self) -> None:
        """Let go of the open snapshot (at shutdown); DuckDB allows one configuration per file
        and process, so a later app in the same process can then open it with its own."""
        with self._lock:
            if self._snapshot is not None:
                self._snapshot.connection.close()
            self._snapshot, self._seen = None, None

    def _open_current(self) -> Snapshot | None:
        version = self.store.current_version()
        if version is None:
            return None
        if self._snapshot is not None and self._snapshot.version == version:
            return self._snapshot
        return open_snapshot(self.store, version, self.duckdb_config)


# Every reader of a snapshot: UTC, no extension ever installed (loading the built-in ones stays
# on: the TimeZone setting needs ICU), no file access beyond the snapshot's own database.
READER_CONFIG = {
    "TimeZone": "UTC",
    "autoinstall_known_extensions": False,
    "enable_external_access": False,
}


def open_snapshot(store: SnapshotStore, version: str, duckdb_config: dict[str, Any]) -> Snapshot:
    """Open a kept snapshot read-only; `duckdb_config` adds to READER_CONFIG."""
    path = store.path_of(version)
    manifest = json.loads((path / "manifest.json").read_text())
    connection = duckdb.connect(str(path / "quarry.duckdb"), read_only=True,
                                config={**READER_CONFIG, **duckdb_config})
    return Snapshot(version, path, manifest, connection)


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def open_current_snapshot(settings: Any) -> Snapshot:
    """The current snapshot for an offline command (`quarry sql`, `quarry export`)."""
    store = SnapshotStore(settings.data_dir)
    version = store.current_version()
    if version is None:
        raise NoSnapshot("no data snapshot has been loaded yet; run 'quarry refresh' first")
    return open_snapshot(store, version, {"memory_limit": settings.refresh_memory_limit})
