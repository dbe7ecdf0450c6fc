"""Refresh is atomic and crash-safe: a refresh killed at any point, or stopped by a full disk,
changes nothing that is served or listed; the next refresh succeeds and removes its leftovers.
A snapshot pruned while a request still reads it keeps answering, then is let go of."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.generate import generate_drop
from service.refresh import RefreshError, refresh
from service.snapshots import ServingSnapshots, SnapshotError, SnapshotStore
from tests.fixture_drop import write_fixture_drop
from tests.serving import (
    assert_refresh_refused,
    assert_whole,
    env_for,
    leftovers,
    listed_versions,
    running_server,
    snapshots_held,
    start_refresh,
)
from tests.test_cli import QUARRY, REPO, assert_refused, quarry


@pytest.fixture(scope="module")
def slow_drop(tmp_path_factory) -> Path:
    """A drop whose refresh takes a few seconds (15k companies, 150k contacts)."""
    drop = tmp_path_factory.mktemp("slow") / "drop"
    generate_drop(drop, 15_000, 150_000, seed=5)
    return drop


def manifest(data_dir: Path, version: str) -> dict:
    return json.loads((data_dir / "snapshots" / version / "manifest.json").read_text())


def assert_serves_a_whole_snapshot(server, data_dir: Path) -> str:
    """CURRENT names a listed, whole snapshot, and the server answers from exactly it."""
    versions, current = listed_versions(data_dir)
    assert current == (data_dir / "CURRENT").read_text().strip()
    for version in versions:
        assert_whole(data_dir / "snapshots" / version)
    rows = manifest(data_dir, current)["rows"]
    health = httpx.get(f"{server.base}/health", timeout=10)
    assert health.status_code == 200
    data = health.json()["data"]
    assert (data["status"], data["dataset"], data["companies"], data["contacts"]) == (
        "ok", current, rows["companies"], rows["contacts"])
    answer = httpx.post(f"{server.base}/v1/contacts/search", headers=server.headers,
                        json={"per_page": 1}, timeout=10)
    assert answer.status_code == 200
    assert answer.json()["meta"]["dataset"] == current
    assert answer.json()["meta"]["total"] == rows["contacts"]
    return current


def test_killed_refresh_changes_nothing(tmp_path, fixture_drop, slow_drop):
    data_dir = tmp_path / "data"
    quarry(data_dir, "refresh", "--source", str(fixture_drop))
    old = (data_dir / "CURRENT").read_text().strip()
    # When to kill: seconds after start, or as soon as a stage line appears on stderr.
    points = [0.3, 1.0, 2.0, "publishing the snapshot"]
    with running_server(data_dir, tmp_path / "serve.log") as server:
        assert assert_serves_a_whole_snapshot(server, data_dir) == old
        killed_before_publishing = 0
        for point in points:
            process, pieces = start_refresh(data_dir, slow_drop)
            started = time.monotonic()
            while process.poll() is None and time.monotonic() < started + 60:
                if isinstance(point, float) and time.monotonic() - started >= point:
                    break
                if isinstance(point, str) and point in "".join(text for _, text in pieces):
                    break
                time.sleep(0.005)
            process.send_signal(signal.SIGKILL)
            process.wait()
            stderr = "".join(text for _, text in pieces)
            current = assert_serves_a_whole_snapshot(server, data_dir)
            if "publishing" not in stderr:
                assert process.returncode == -signal.SIGKILL, (point, stderr)
                killed_before_publishing += 1
                # Nothing changed: the old snapshot serves, nothing new is listed.
                assert current == old
                assert listed_versions(data_dir) == ([old], old)
        assert killed_before_publishing >= 3

        done = quarry(data_dir, "refresh", "--source", str(slow_drop))
        assert leftovers(data_dir) == []
        newest = assert_serves_a_whole_snapshot(server, data_dir)
        assert newest != old and f"snapshot {newest} is current" in done.stdout
        assert manifest(data_dir, newest)["rows"] == {"companies": 15_000, "contacts": 150_000}
        export_survives_prune(server, data_dir, newest, fixture_drop)


def export_survives_prune(server, data_dir: Path, version: str, next_drop: Path) -> None:
    """An export streaming from a snapshot that is switched away from and pruned mid-way still
    ends whole; afterwards the server has closed the pruned snapshot's file."""
    with httpx.stream("POST", f"{server.base}/v1/contacts/export", headers=server.headers,
                      json={"format": "ndjson"}, timeout=60) as answer:
        assert answer.status_code == 200
        total = int(answer.headers["quarry-total-count"])
        lines = answer.iter_lines()
        received = [next(lines)]  # the server now waits for this slow client, mid-stream
        refreshed = subprocess.run(
            [*QUARRY, "refresh", "--source", str(next_drop)], cwd=REPO, capture_output=True,
            text=True, env=env_for(data_dir, QUARRY_KEEP_SNAPSHOTS="1"), timeout=120)
        assert refreshed.returncode == 0, refreshed.stderr
        assert not (data_dir / "snapshots" / version).exists()  # pruned
        current = assert_serves_a_whole_snapshot(server, data_dir)  # the server switched
        assert current != version
        received.extend(lines)
    assert total == 150_000 and len(received) == total
    assert json.loads(received[-1])["id"] > json.loads(received[0])["id"]
    # The server lets go of the snapshot as its handler unwinds, just after the stream's last
    # bytes are written: a client that looks at once may be a few milliseconds early.
    deadline = time.monotonic() + 2
    while snapshots_held(server.process.pid) != {current} and time.monotonic() < deadline:
        time.sleep(0.02)
    assert snapshots_held(server.process.pid) == {current}


# Kill the refresh (SIGKILL, from inside) at exact points of publishing and switching.
CRASH_AT = """
import os, shutil, signal, sys
from pathlib import Path
from service import snapshots
from service.refresh import refresh

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

point = sys.argv[3]
fsyncs = []
real_fsync = os.fsync
def fsync_then_die(descriptor):
    fsyncs.append(descriptor)
    if len(fsyncs) == 3:
        die()
    real_fsync(descriptor)

real_prune = snapshots.SnapshotStore.prune
def prune_then_die(self):
    shutil.rmtree = die
    return real_prune(self)

if point == "fsync":       # some files of the build fsynced, not all
    os.fsync = fsync_then_die
elif point == "rename":    # the build complete, not renamed into place
    os.rename = die
elif point == "replace":   # published and the new pointer written, CURRENT not replaced
    os.replace = die
elif point == "prune":     # switched, nothing pruned
    snapshots.SnapshotStore.prune = die
elif point == "delete":    # the old snapshot renamed away for deletion, not deleted
    snapshots.SnapshotStore.prune = prune_then_die
refresh(snapshots.SnapshotStore(Path(sys.argv[1]), keep=1), Path(sys.argv[2]))
"""


@pytest.mark.parametrize("point, switched, listed, left", [
    ("fsync", False, 1, ".building-"),
    ("rename", False, 1, ".building-"),
    ("replace", False, 2, ".CURRENT."),
    ("prune", True, 2, None),
    ("delete", True, 1, ".deleting-"),
])
def test_kill_inside_publishing(data_dir, fixture_drop, point, switched, listed, left):
    store = SnapshotStore(data_dir, keep=1)
    old = refresh(store, fixture_drop).version
    done = subprocess.run([sys.executable, "-c", CRASH_AT, str(data_dir), str(fixture_drop),
                           point], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    versions = [m["version"] for m in store.versions()]  # what `quarry snapshots list` shows
    current = store.current_version()
    assert (current != old) == switched
    assert len(versions) == listed and current in versions
    for version in versions:
        assert_whole(store.path_of(version))
    assert [name.startswith(left) for name in leftovers(data_dir)] == ([True] if left else [])
    serving = ServingSnapshots(store, {})
    try:
        assert serving.current().version == current
        assert serving.current().cursor().execute("SELECT count(*) FROM contacts").fetchone()[0]
    finally:
        serving.close()

    newest = refresh(store, fixture_drop).version
    assert leftovers(data_dir) == []
    assert [m["version"] for m in store.versions()] == [newest] == [store.current_version()]


def test_pruned_snapshot_keeps_answering_then_is_closed(data_dir, fixture_drop, tmp_path):
    store = SnapshotStore(data_dir, keep=1)
    old = refresh(store, fixture_drop).version
    serving = ServingSnapshots(store, {"threads": 1})
    try:
        in_flight = serving.current()
        cursor = in_flight.cursor()
        smaller = tmp_path / "smaller"
        write_fixture_drop(smaller, companies=30, contacts=90, seed=3)
        new = refresh(store, smaller).version
        assert not store.path_of(old).exists()  # pruned while a request holds it
        assert serving.current().version == new and serving.current().contacts == 90
        assert cursor.execute("SELECT count(*) FROM contacts").fetchone()[0] == 1200
        assert old in snapshots_held(os.getpid())
        cursor.close()
        del cursor, in_flight
        # The last request let go of the old snapshot: its file is closed.
        assert old not in snapshots_held(os.getpid())
        assert new in snapshots_held(os.getpid())
    finally:
        serving.close()


def test_unopenable_current_keeps_the_old_snapshot_serving(data_dir, fixture_drop):
    store = SnapshotStore(data_dir)
    old = refresh(store, fixture_drop).version
    serving = ServingSnapshots(store, {})
    try:
        assert serving.current().version == old
        temporary = data_dir / "pointer.tmp"
        temporary.write_text("20000101T000000Z-000000\n")  # hand-edited to a missing version
        os.replace(temporary, store.pointer)
        assert serving.current().version == old
    finally:
        serving.close()
    with pytest.raises(SnapshotError, match="cannot be opened"):
        ServingSnapshots(store, {}).current()


def test_failed_switch_removes_the_new_snapshot(data_dir, fixture_drop, monkeypatch):
    store = SnapshotStore(data_dir)
    old = refresh(store, fixture_drop).version

    def full(version):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "switch_to", full)
    with pytest.raises(RefreshError, match="^no space left on device while switching CURRENT"):
        refresh(store, fixture_drop)
    assert [m["version"] for m in store.versions()] == [old] == [store.current_version()]
    assert leftovers(data_dir) == []


# --- a real full disk: a tmpfs of a few MB as QUARRY_DATA_DIR ---------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full disk is tested on a tmpfs, and mounting one needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path) -> Path:
    """Fill the file system to the last byte."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def test_full_disk_is_a_clean_refusal(tiny_disk, fixture_drop, slow_drop, tmp_path):
    data_dir = tiny_disk / "data"
    quarry(data_dir, "refresh", "--source", str(fixture_drop))
    second = tmp_path / "second"
    write_fixture_drop(second, companies=30, contacts=90, seed=3)
    quarry(data_dir, "refresh", "--source", str(second))
    versions, current = listed_versions(data_dir)
    assert len(versions) == 2 and current == versions[1]

    with running_server(data_dir, tmp_path / "serve.log") as server:
        free_before = os.statvfs(tiny_disk).f_bavail
        # The 150k-contact drop needs far more than the 16 MB this disk has.
        done = quarry(data_dir, "refresh", "--source", str(slow_drop), check=False)
        assert_refresh_refused(done, "no space left on device while ")
        assert "nothing was changed" in done.stderr
        assert listed_versions(data_dir) == (versions, current)
        assert leftovers(data_dir) == []
        assert os.statvfs(tiny_disk).f_bavail == free_before  # the partial build is gone
        assert assert_serves_a_whole_snapshot(server, data_dir) == current

        # Switching CURRENT on a disk full to the last byte: refused, CURRENT unchanged.
        filler = fill(tiny_disk)
        use = subprocess.run([*QUARRY, "snapshots", "use", versions[0]], cwd=REPO,
                             env=env_for(data_dir), capture_output=True, text=True, timeout=60)
        assert_refused(use, f"no space left on device while switching CURRENT to {versions[0]}")
        assert (data_dir / "CURRENT").read_text().strip() == current
        assert leftovers(data_dir) == []
        assert assert_serves_a_whole_snapshot(server, data_dir) == current
        # A refresh on the full disk is refused too, and leaves nothing behind.
        done = quarry(data_dir, "refresh", "--source", str(fixture_drop), check=False)
        assert_refresh_refused(done, "no space left on device while ")
        assert leftovers(data_dir) == []
        filler.unlink()
        quarry(data_dir, "snapshots", "use", versions[0])
        assert assert_serves_a_whole_snapshot(server, data_dir) == versions[0]


def test_a_snapshot_of_an_older_layout_is_refused_in_words(tmp_path, fixture_drop):
    """A snapshot built by an older Quarry (no `layout` in its manifest: before the v2 filters
    and match keys) is never served query by query into 500s: the server answers 503
    `unavailable` naming the fix, `snapshots use` and the offline commands refuse it in one
    line, and a refresh builds a snapshot that serves."""
    from litestar.testing import TestClient

    from service.app import create_app
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "data")
    store = SnapshotStore(settings.data_dir)
    refresh(store, fixture_drop)
    old_version = store.current_version()
    manifest_path = store.path_of(old_version) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["layout"]
    manifest_path.write_text(json.dumps(manifest))

    with TestClient(create_app(settings)) as client:
        for answer in (client.get("/health"), client.get("/v1/companies/search")):
            assert answer.status_code in (401, 503), answer.text
        health = client.get("/health").json()
        assert health["errors"][0]["id"] == "unavailable"
        assert "quarry refresh" in health["errors"][0]["details"]
    for command in (["snapshots", "use", old_version], ["sql", str(REPO / "sql" / "analytics" /
                                                                  "coverage_by_seniority.sql")]):
        done = subprocess.run([*QUARRY, *command], cwd=REPO, env=env_for(settings.data_dir),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "layout 1" in done.stderr and "quarry refresh" in done.stderr
    refresh(store, fixture_drop)  # a new snapshot of this layout serves again
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
