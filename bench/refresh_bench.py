"""`make bench-refresh`: wall time per stage, total time, peak memory and peak disk of a refresh.

Generates (and caches, under data/bench/<scale>m/drop, the drop `make bench` uses too) a drop
with `quarry generate`, runs `quarry refresh` on it as a child process into a fresh data folder,
and prints each stage's time as the refresh reports it, the total wall time, the child's peak
resident memory (its own rusage from wait4, the kernel's VmHWM), the data folder's peak size
and the finished snapshot's size. Ends with PASS/FAIL against the targets and exits 1 on a FAIL.

    make bench-refresh                                # 1,000,000 companies, 10,000,000 contacts
    make bench-refresh SCALE=1                        # 100,000 / 1,000,000
    python bench/refresh_bench.py --memory-limit 1GB  # QUARRY_REFRESH_MEMORY_LIMIT for the run
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUARRY = [sys.executable, "-m", "service.cli"]
TARGETS = {"seconds": 180.0, "memory_gib": 4.0}  # set for 10 million contacts
STAGE = re.compile(r"^\s*(?P<stage>.+?) \.\.\. (?P<outcome>done|failed) in (?P<seconds>[\d.]+)s$")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10, help="millions of contacts")
    parser.add_argument("--memory-limit", help="QUARRY_REFRESH_MEMORY_LIMIT for this run")
    parser.add_argument("--keep", action="store_true", help="keep the data folder afterwards")
    args = parser.parse_args()
    if args.scale < 1:
        parser.error("--scale must be at least 1")
    contacts = args.scale * 1_000_000
    work = REPO / "data" / "bench" / f"{args.scale}m"
    drop = prepare_drop(work, contacts // 10, contacts)
    data_dir = work / "refresh-run"
    shutil.rmtree(data_dir, ignore_errors=True)
    env = {**os.environ, "QUARRY_DATA_DIR": str(data_dir)}
    if args.memory_limit:
        env["QUARRY_REFRESH_MEMORY_LIMIT"] = args.memory_limit
    limit = env.get("QUARRY_REFRESH_MEMORY_LIMIT", "3GB (default)")
    print(f"refreshing {drop} into {data_dir} (QUARRY_REFRESH_MEMORY_LIMIT={limit})", flush=True)
    try:
        figures = measure_refresh(drop, env, data_dir)
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return report(figures, args.scale)


def prepare_drop(work: Path, companies: int, contacts: int) -> Path:
    drop = work / "drop"
    if not (drop / "contacts.parquet").is_file():
        print(f"generating {companies:,} companies and {contacts:,} contacts into {drop}",
              flush=True)
        done = subprocess.run([*QUARRY, "generate", "--out", str(drop), "--companies",
                               str(companies), "--contacts", str(contacts), "--seed", "1"],
                              cwd=REPO)
        if done.returncode != 0:
            raise SystemExit("bench-refresh: quarry generate failed")
    return drop


def measure_refresh(drop: Path, env: dict[str, str], data_dir: Path) -> dict:
    started = time.monotonic()
    process = subprocess.Popen([*QUARRY, "refresh", "--source", str(drop)], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    text: list[str] = []
    disk = {"peak": 0}
    done = threading.Event()

    def read_stderr() -> None:  # echo the stage lines as they come, keep them
        while piece := process.stderr.read(1):
            sys.stdout.write(piece)
            sys.stdout.flush()
            text.append(piece)

    def sample_disk() -> None:
        while not done.wait(0.5):
            disk["peak"] = max(disk["peak"], folder_bytes(data_dir))

    readers = [threading.Thread(target=read_stderr, daemon=True),
               threading.Thread(target=sample_disk, daemon=True)]
    for reader in readers:
        reader.start()
    stdout = process.stdout.read()
    # wait4 gives this child's own rusage: ru_maxrss is its peak resident set (KiB on Linux).
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    done.set()
    for reader in readers:
        reader.join(5)
    snapshot = folder_bytes(data_dir / "snapshots")  # what stays: the one snapshot
    stages = [(m["stage"], float(m["seconds"])) for m in
              map(STAGE.match, "".join(text).splitlines()) if m]
    return {"returncode": process.returncode, "stdout": stdout, "stages": stages, "wall": wall,
            "peak_rss_gib": usage.ru_maxrss / 2**20, "peak_disk_gib": disk["peak"] / 2**30,
            "snapshot_gib": snapshot / 2**30,
            "cpu": usage.ru_utime + usage.ru_stime}


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass  # removed while walking
    return total


def report(figures: dict, scale: int) -> int:
    print()
    if figures["returncode"] != 0:
        print(f"FAIL  quarry refresh exited {figures['returncode']}")
        return 1
    print(figures["stdout"].strip())
    print(f"\n{'stage':<36} {'seconds':>8}")
    for stage, seconds in figures["stages"]:
        print(f"{stage:<36} {seconds:>8.1f}")
    print(f"{'total (wall, process start to exit)':<36} {figures['wall']:>8.1f}")
    print(f"\ncpu time {figures['cpu']:.0f} s; peak resident memory "
          f"{figures['peak_rss_gib']:.2f} GiB; peak data folder size "
          f"{figures['peak_disk_gib']:.2f} GiB; the snapshot {figures['snapshot_gib']:.2f} GiB")
    checks = [("refresh wall time", figures["wall"] <= TARGETS["seconds"],
               f"{figures['wall']:.1f} s <= {TARGETS['seconds']:.0f} s"),
              ("refresh peak memory", figures["peak_rss_gib"] <= TARGETS["memory_gib"],
               f"{figures['peak_rss_gib']:.2f} GiB <= {TARGETS['memory_gib']:.0f} GiB")]
    if scale != 10:
        print(f"(the targets are set for 10 million contacts; this run had {scale} million)")
    for what, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {what}: {detail}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
