"""What the benchmarks share: the cached drop and snapshot under data/bench/, and running
`quarry` as a child process."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUARRY = [sys.executable, "-m", "service.cli"]


def prepare_drop(work: Path, companies: int, contacts: int) -> Path:
    """The synthetic drop (seed 1), generated once and kept."""
    drop = work / "drop"
    if not (drop / "contacts.parquet").is_file():
        print(f"generating {companies:,} companies and {contacts:,} contacts into {drop}",
              flush=True)
        run([*QUARRY, "generate", "--out", str(drop), "--companies", str(companies),
             "--contacts", str(contacts), "--seed", "1"])
    return drop


def prepare_snapshot(work: Path, drop: Path, prefix: str) -> Path:
    """A data folder holding a snapshot of the drop, refreshed again only when the refresh code
    changed: the snapshot's layout is part of what is measured."""
    code = hashlib.sha256()
    for path in sorted([*(REPO / "sql").rglob("*.sql"), REPO / "service" / "refresh.py",
                        REPO / "service" / "match_index.py", REPO / "service" / "snapshots.py"]):
        code.update(path.read_bytes())
    data_dir = work / f"{prefix}-{code.hexdigest()[:12]}"
    if not (data_dir / "CURRENT").is_file():
        for old in work.glob(f"{prefix}-*"):
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        print(f"refreshing {drop} into {data_dir}", flush=True)
        run([*QUARRY, "refresh", "--source", str(drop)], env={"QUARRY_DATA_DIR": str(data_dir)},
            capture=False)
    return data_dir


def run(command: list[str], env: dict[str, str] | None = None, stdin: str | None = None,
        capture: bool = True) -> str:
    """Run a command from the repository; a failure ends the benchmark with its reason."""
    done = subprocess.run(command, cwd=REPO, env={**os.environ, **(env or {})}, input=stdin,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.PIPE if capture else None, text=True)
    if done.returncode != 0:
        reason = (done.stderr or "").strip().splitlines()[-1:] or ["see above"]
        raise SystemExit(f"bench: {' '.join(command[2:4])} failed: {reason[0]}")
    return done.stdout or ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
