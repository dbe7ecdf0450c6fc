"""Immutable data snapshots on disk, and the one pointer that says which is current.

Layout under QUARRY_DATA_DIR:

    CURRENT                     the current version, replaced atomically (os.replace + fsync)
    refresh.lock                held by the one refresh that may run at a time
    snapshots/<version>/        companies.parquet, contacts.parquet (data of record),
                                rejects.parquet, manifest.json, quarry.duckdb (query tables)
    snapshots/.building-<v>/    a refresh in progress; never read, removed when left behind
    snapshots/.deleting-<v>/    a pruned snapshot being deleted; likewise
    pointer.lock                held for a moment while CURRENT is replaced or snapshots pruned
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from .export import ExportSource

BUILDING_PREFIX = ".building-"
DELETING_PREFIX = ".deleting-"
TEMPORARY_POINTER = ".CURRENT."
# The tables and files a snapshot holds, as this code reads them. A snapshot of another layout
# (one built before the v2 filters and match keys has none in its manifest) is refused when it
# is opened, in words, rather than failing query by query.
SNAPSHOT_LAYOUT = 2
log = logging.getLogger("quarry")


class SnapshotError(Exception):
    """A one-line reason a snapshot operation was refused."""


class NoSnapshot(SnapshotError):
    """No snapshot has been loaded yet."""


def missing_snapshot(data_dir: Path) -> NoSnapshot:
    """For an offline command: where it looked, since the usual cause is the wrong folder."""
    return NoSnapshot(f"no data snapshot in {data_dir} yet (QUARRY_DATA_DIR); run 'quarry "
                      "refresh --source DIR' first")


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
        """Point the service at a kept snapshot, in one atomic step. A failure (a full disk)
        leaves CURRENT as it was and no temporary file behind."""
        self._check_kept(version)  # before the lock, which makes the data folder
        with self._pointer_lock():
            self._check_kept(version)
            temporary = self.data_dir / f"{TEMPORARY_POINTER}{os.getpid()}"
            try:
                with open(temporary, "w") as handle:
                    handle.write(version + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self.pointer)
            except OSError as exc:
                temporary.unlink(missing_ok=True)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise SnapshotError(f"no space left on device while switching CURRENT to "
                                        f"{version}; CURRENT is unchanged") from None
                raise
            _fsync_dir(self.data_dir)

    def _check_kept(self, version: str) -> None:
        if not (self.path_of(version) / "manifest.json").is_file():
            raise SnapshotError(f"no kept snapshot {version!r} in {self.snapshots_dir}; see "
                                "'quarry snapshots list'")
        check_layout(version, json.loads((self.path_of(version) / "manifest.json").read_text()))

    @contextlib.contextmanager
    def _pointer_lock(self) -> Iterator[None]:
        """Held briefly by switch_to and prune, so that a snapshot being switched to is never
        one being pruned (`quarry snapshots use` may run during a refresh)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "pointer.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

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
            for prefix in (BUILDING_PREFIX, DELETING_PREFIX):
                for path in self.snapshots_dir.glob(f"{prefix}*"):
                    shutil.rmtree(path, ignore_errors=True)
        with self._pointer_lock():  # not the temporary file of a `snapshots use` running now
            for path in self.data_dir.glob(f"{TEMPORARY_POINTER}*"):
                path.unlink(missing_ok=True)

    def publish(self, work: Path, version: str) -> None:
        """Make a finished build visible under its version, durably."""
        for path in work.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(work)
        os.rename(work, self.path_of(version))
        _fsync_dir(self.snapshots_dir)

    def prune(self) -> list[str]:
        """Delete all but the newest `keep` snapshots; the current one is always kept.

        A doomed snapshot is first renamed to a hidden name, at once, so that a deletion cut
        short never leaves a half-deleted snapshot listed (the next refresh finishes it). A
        server that still has it open keeps reading it (an open file outlives its name) until
        its last request lets go of it, then closes it."""
        with self._pointer_lock():
            manifests = self.versions()
            doomed = [m["version"] for m in manifests[: max(0, len(manifests) - self.keep)]
                      if not m["current"]]
            for version in doomed:
                os.rename(self.path_of(version), self.snapshots_dir / f"{DELETING_PREFIX}{version}")
        for version in doomed:
            shutil.rmtree(self.snapshots_dir / f"{DELETING_PREFIX}{version}", ignore_errors=True)
        return doomed


@dataclass
class Snapshot:
    """An open snapshot: its version, counts and a read-only DuckDB connection (and, once an
    export asks for it, the exports' own reader)."""

    version: str
    path: Path
    manifest: dict[str, Any]
    connection: duckdb.DuckDBPyConnection = field(repr=False)
    _exports: ExportSource | None = field(default=None, repr=False)
    _exports_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def companies(self) -> int:
        return self.manifest["rows"]["companies"]

    @property
    def contacts(self) -> int:
        return self.manifest["rows"]["contacts"]

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.connection.cursor()

    def exports(self) -> ExportSource:
        with self._exports_lock:
            if self._exports is None:
                self._exports = ExportSource(self.path)
            return self._exports

    def close(self) -> None:
        if self._exports is not None:
            self._exports.close()
        self.connection.close()


class ServingSnapshots:
    """Hands the server the current snapshot, noticing a switch on the next request.

    A request keeps the Snapshot it started with, so it finishes on the old data while new
    requests see the new one; the old connection closes when the last request lets go of it
    (nothing else holds a Snapshot: the reference count frees it, and DuckDB closes the file).
    A pointer to a snapshot that cannot be opened keeps the one in use serving.
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
                try:
                    self._snapshot = self._open_current()
                    self._seen = seen
                except (OSError, ValueError, duckdb.Error) as exc:
                    if self._snapshot is None:
                        reason = f": {exc}" if isinstance(exc, OldLayout) else ""
                        raise NoSnapshot(
                            f"the current data snapshot cannot be opened{reason}") from exc
                    # Keep answering from the snapshot in use; try again on the next request.
                    log.warning("cannot open the current snapshot (%s); still serving %s",
                                exc, self._snapshot.version)
            if self._snapshot is None:
                raise NoSnapshot("no data snapshot has been loaded yet; run 'quarry refresh'")
            return self._snapshot

    def close(self) -> None:
        """Let go of the open snapshot (at shutdown); DuckDB allows one configuration per file
        and process, so a later app in the same process can then open it with its own."""
        with self._lock:
            if self._snapshot is not None:
                self._snapshot.close()
            self._snapshot, self._seen = None, None

    def _open_current(self) -> Snapshot | None:
        version = self.store.current_version()
        if version is None:
            return None
        if self._snapshot is not None and self._snapshot.version == version:
            return self._snapshot
        return open_snapshot(self.store, version, self.duckdb_config)


# Every reader of a snapshot: UTC, no extension ever installed (loading the built-in ones stays
# on: the TimeZone setting needs ICU). File access is shut off once the snapshot's two
# databases are open (see open_snapshot).
READER_CONFIG = {
    "TimeZone": "UTC",
    "autoinstall_known_extensions": False,
}


def open_snapshot(store: SnapshotStore, version: str, duckdb_config: dict[str, Any]) -> Snapshot:
    """Open a kept snapshot read-only: the query tables, with the records store attached as
    `rec`; then no more file access and, for the server, a locked configuration.
    `duckdb_config` adds to READER_CONFIG; its `lock_configuration` is applied last."""
    path = store.path_of(version)
    manifest = json.loads((path / "manifest.json").read_text())
    check_layout(version, manifest)
    config = {**READER_CONFIG, **duckdb_config}
    lock = config.pop("lock_configuration", False)
    connection = duckdb.connect(str(path / "quarry.duckdb"), read_only=True, config=config)
    # DuckDB shares one database instance per file and process: a second open of the same
    # snapshot finds it attached and locked already.
    attached = {row[0] for row in connection.execute(
        "SELECT database_name FROM duckdb_databases()").fetchall()}
    if "rec" not in attached:
        connection.execute("ATTACH ? AS rec (READ_ONLY)", [str(path / "records.duckdb")])
    if connection.execute("SELECT current_setting('enable_external_access')").fetchone()[0]:
        connection.execute("SET enable_external_access = false")
    if lock and not connection.execute(
            "SELECT current_setting('lock_configuration')").fetchone()[0]:
        connection.execute("SET lock_configuration = true")
    return Snapshot(version, path, manifest, connection)


class OldLayout(SnapshotError, ValueError):
    """A snapshot built by a Quarry that laid its tables out otherwise."""


def check_layout(version: str, manifest: dict[str, Any]) -> None:
    layout = manifest.get("layout", 1)
    if layout != SNAPSHOT_LAYOUT:
        raise OldLayout(f"snapshot {version} has layout {layout}, and this Quarry reads layout "
                        f"{SNAPSHOT_LAYOUT}; run 'quarry refresh' to build a new snapshot")


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
        raise missing_snapshot(settings.data_dir)
    return open_snapshot(store, version, {"memory_limit": settings.refresh_memory_limit})
