"""`make soak`: a real `quarry serve` under a steady mixed load; nothing breaks and memory holds.

Generates (and caches, under data/bench/1m/drop, the drop `make bench SCALE=1` uses too) a drop
of 100,000 companies and 1,000,000 contacts, refreshes it into the soak's own data folder (kept
while the refresh code is unchanged), starts `quarry serve` with QUARRY_RATE_LIMIT raised so the
good traffic is not throttled, and runs 8 concurrent clients for 60 s (after a warm-up) on
loopback only. The mix: searches with varied filters, GET and POST, deep pages; lookups of
existing and missing ids; bad requests (invalid JSON, unknown fields, out-of-range paging,
wrong media type, an oversized body, unknown paths, wrong methods); and unknown keys, sent from
another loopback address (127.0.0.2) so that the limit on failed keys per address (429 after a
burst) meets them and not the good traffic from 127.0.0.1. Before the clock starts, the warm-up
exports every record once and runs the mix until the server's memory is steady (grew less
than 3% in 30 s; at least 40 s, at most 4 minutes): memory that fills DuckDB's block cache is
not the growth this looks for, and the warm-up says how long it took.

Prints requests served, answers by kind, p50/p99 latency, and the server's resident memory
after the warm-up and at the end; PASS/FAIL lines for the targets; exits 1 on a FAIL.

    make soak                                   # 8 clients, 60 s, 1,000,000 contacts
    python bench/soak.py --seconds 20 --clients 4
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import statistics
import string
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
from shared import QUARRY, REPO, free_port, prepare_drop, prepare_snapshot, run

TARGETS = {"rss_growth": 0.10}
STEADY = 0.03  # RSS growth over 30 s under which the warm-up counts as done
BAD_KEY_ADDRESS = "127.0.0.2"

# Filters with values the generated data holds (and a few it does not).
CONTACT_FILTERS = {
    "seniorities": ["VP", "Director", "Senior", "C-Level", "manager", "Owner"],
    "departments": ["Engineering", "Sales", "Finance", "marketing", "Human Resources"],
    "job_titles": ["manager", "engineer", "chief", "Account Executive", "intern", "50%_\\"],
    "exclude_job_titles": ["intern", "assistant"],
    "has_personal_emails": [True, False],
    "has_linkedin_profile": [True, False],
    "is_decision_maker": [True, False],
}
COMPANY_FILTERS = {
    "industries": ["Software Development", "Financial Services", "Retail",
                   "hospitals and health care", "No Such Industry"],
    "functions": ["Technology", "Finance", "Healthcare"],
    "technologies": ["Salesforce", "HubSpot", "React", "Amazon Web Services", "WordPress"],
    "exclude_technologies": ["WordPress", "Google Analytics"],
    "tlds": ["io", ".com", "de", "co.uk"],
    "locations": ["country:United States", "state:California||United States",
                  "city:London||||United Kingdom", "city:New York", "country:Germany",
                  "city:Paris||||France"],
    "exclude_locations": ["country:India", "state:Texas||United States"],
    "exclude_industries": ["Retail", "Software Development"],
    "added_after": ["2020-01-01", "2024-06-30T12:00:00Z", "2025-01-01T00:00:00+02:00"],
    "added_before": ["2026-01-01", "2023-12-31T23:59:59Z"],
}
ARRAY_FIELDS = {name for name, values in {**CONTACT_FILTERS, **COMPANY_FILTERS}.items()
                if isinstance(values[0], str) and not name.startswith("added")}

# (kind, method, path, request keyword arguments, the statuses that are right)
BAD_REQUESTS = [
    ("invalid json", "POST", "/v1/contacts/search",
     {"content": b"{not json", "headers": {"content-type": "application/json"}}, {400}),
    ("unknown field", "POST", "/v1/contacts/search", {"json": {"job_title": ["x"]}}, {400}),
    ("per_page out of range", "GET", "/v1/companies/search?per_page=1000", {}, {400}),
    ("past the paging window", "POST", "/v1/contacts/search",
     {"json": {"page": 101, "per_page": 100}}, {400}),
    ("bad location", "GET", "/v1/contacts/search?locations=town:Nowhere", {}, {400}),
    ("wrong media type", "POST", "/v1/companies/search",
     {"content": b"{}", "headers": {"content-type": "text/plain"}}, {415}),
    ("body too large", "POST", "/v1/contacts/search",
     {"content": b'{"industries": ["' + b"a" * 70_000 + b'"]}',
      "headers": {"content-type": "application/json"}}, {413}),
    ("unknown path", "GET", "/v1/nothing/here", {}, {404}),
    ("wrong method", "DELETE", "/v1/contacts/search", {}, {405}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-warmup", type=float, default=240,
                        help="seconds of mixed traffic at most before the soak")
    parser.add_argument("--scale", type=int, default=1, help="millions of contacts")
    args = parser.parse_args()
    contacts = args.scale * 1_000_000
    work = REPO / "data" / "bench" / f"{args.scale}m"
    drop = prepare_drop(work, contacts // 10, contacts)
    data_dir = prepare_snapshot(work, drop, "soak")
    server = Server(data_dir, work / "soak-serve.log")
    try:
        server.start()
        warm_up(server)
        warmed = run_until_steady(server, args.clients, contacts, args.max_warmup)
        rss_start = server.rss_mib()
        print(f"soaking: {args.clients} clients for {args.seconds:.0f} s "
              f"(server RSS {rss_start:.0f} MiB)", flush=True)
        samples: list[float] = []
        load = run_load(server, args.clients, args.seconds, contacts, seed=2,
                        on_tick=lambda: samples.append(server.rss_mib()))
        rss_end = server.rss_mib()
        logged = server.stop()
    finally:
        server.kill()
    print(f"(warm-up: {warmed:.0f} s of the mix)")
    return report(load, args, rss_start, rss_end, max(samples, default=rss_end), logged)


# --- data and server -------------------------------------------------------------------------


class Server:
    def __init__(self, data_dir: Path, log_path: Path):
        self.env = {**os.environ, "QUARRY_DATA_DIR": str(data_dir),
                    "QUARRY_RATE_LIMIT": "100000"}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.key = ""

    def start(self) -> None:
        email = "soak@quarry.local"
        subprocess.run([*QUARRY, "users", "create", email, "--password-stdin"], cwd=REPO,
                       env=self.env, input="soak password\n", capture_output=True, text=True)
        self.key = run([*QUARRY, "tokens", "create", "--user", email, "--name", "soak"],
                       env=self.env).strip().splitlines()[-1]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen([*QUARRY, "serve", "--port", str(self.port)],
                                            cwd=REPO, env=self.env, stdout=subprocess.DEVNULL,
                                            stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise SystemExit(f"soak: quarry serve did not start; see {self.log_path}")

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines()
                        if line.startswith("VmRSS"))) / 1024

    def stop(self) -> int:
        """SIGTERM, as an operator would; the number of access-log lines it wrote."""
        self.process.terminate()
        code = self.process.wait(timeout=30)
        if code != 0:
            print(f"FAIL  quarry serve exited {code} on SIGTERM")
        return sum(1 for line in self.log_path.open() if '"logger":"quarry.access"' in line)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# --- load ------------------------------------------------------------------------------------


def warm_up(server: Server) -> None:
    """Read every record once (a Parquet export of each kind), so that DuckDB's block cache is
    full before the first RSS reading: its filling up is not growth of the kind looked for."""
    with httpx.Client(base_url=server.base, timeout=600,
                      headers={"Authorization": f"Bearer {server.key}"}) as client:
        for kind in ("contacts", "companies"):
            started, size = time.monotonic(), 0
            with client.stream("POST", f"/v1/{kind}/export", json={"format": "parquet"}) as answer:
                if answer.status_code != 200:
                    raise SystemExit(f"soak: the {kind} export answered {answer.status_code}")
                for chunk in answer.iter_bytes():
                    size += len(chunk)
            print(f"warming up: exported all {kind} ({size / 2**20:.0f} MiB Parquet) in "
                  f"{time.monotonic() - started:.1f} s; server RSS {server.rss_mib():.0f} MiB",
                  flush=True)


@dataclass
class Load:
    answers: collections.Counter = field(default_factory=collections.Counter)  # (kind, status)
    wrong: collections.Counter = field(default_factory=collections.Counter)    # unexpected
    latency_ms: list[float] = field(default_factory=list)                      # good requests
    transport_errors: int = 0
    seconds: float = 0.0

    def merge(self, other: Load) -> None:
        self.answers.update(other.answers)
        self.wrong.update(other.wrong)
        self.latency_ms.extend(other.latency_ms)
        self.transport_errors += other.transport_errors


def run_until_steady(server: Server, clients: int, contacts: int, limit: float) -> float:
    """Runs the mix in 10 s steps until the server's RSS grew less than STEADY over the last
    30 s (at least 40 s, at most `limit`); the seconds it took."""
    readings = [server.rss_mib()]
    started = time.monotonic()
    while True:
        run_load(server, clients, 10, contacts, seed=100 + len(readings))
        readings.append(server.rss_mib())
        spent = time.monotonic() - started
        print(f"warming up: {spent:4.0f} s of the mix, server RSS {readings[-1]:.0f} MiB",
              flush=True)
        steady = len(readings) >= 5 and readings[-1] <= readings[-4] * (1 + STEADY)
        if steady or spent >= limit:
            return spent


def run_load(server: Server, clients: int, seconds: float, contacts: int, seed: int,
             on_tick=None) -> Load:
    total = Load()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(slot: int) -> None:
        rng = random.Random(seed * 1000 + slot)
        mine = Load()
        auth = {"Authorization": f"Bearer {server.key}"}
        bad_key_transport = httpx.HTTPTransport(local_address=BAD_KEY_ADDRESS)
        with httpx.Client(base_url=server.base, headers=auth, timeout=30) as good, \
                httpx.Client(base_url=server.base, timeout=30,
                             transport=bad_key_transport) as stranger:
            while time.monotonic() < deadline:
                kind, send, expected = next_request(rng, good, stranger, contacts)
                started = time.perf_counter()
                try:
                    answer = send()
                except httpx.TransportError:
                    mine.transport_errors += 1
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                status = answer.status_code
                error_id = "" if status < 300 else error_of(answer)
                mine.answers[(kind, status, error_id)] += 1
                if status not in expected:
                    mine.wrong[(kind, status, error_id)] += 1
                if kind.startswith(("search", "lookup")):
                    mine.latency_ms.append(elapsed)
        with lock:
            total.merge(mine)

    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        time.sleep(1)
        if on_tick and time.monotonic() < deadline:
            on_tick()
    for thread in threads:
        thread.join()
    total.seconds = time.monotonic() - started
    return total


def next_request(rng: random.Random, good: httpx.Client, stranger: httpx.Client, contacts: int):
    """(kind, a call that sends it, the statuses that are right)."""
    roll = rng.random()
    if roll < 0.80:
        return search(rng, good)
    if roll < 0.87:
        number = rng.randint(1, contacts * 11 // 10)  # about one in eleven does not exist
        kind = "lookup" if number <= contacts else "lookup (missing)"
        return (kind, lambda: good.get(f"/v1/contacts/ctc_{number:07d}"),
                {200} if number <= contacts else {404})
    if roll < 0.95:
        kind, method, path, kwargs, expected = rng.choice(BAD_REQUESTS)
        return f"bad request: {kind}", lambda: good.request(method, path, **kwargs), expected
    key = "qry_" + "".join(rng.choices(string.ascii_letters + string.digits, k=43))
    return ("bad key", lambda: stranger.get("/v1/contacts/search",
                                            headers={"Authorization": f"Bearer {key}"}),
            {401, 429})


def search(rng: random.Random, good: httpx.Client):
    contacts = rng.random() < 0.7
    pool = {**COMPANY_FILTERS, **(CONTACT_FILTERS if contacts else {})}
    fields: dict = {}
    for name in rng.sample(sorted(pool), rng.choice([0, 1, 1, 2, 2, 3])):
        values = pool[name]
        if name in ARRAY_FIELDS:
            fields[name] = rng.sample(values, rng.randint(1, min(2, len(values))))
        else:
            fields[name] = rng.choice(values)
    if fields.get("added_after", "") > fields.get("added_before", "9999"):
        del fields["added_before"]
    depth = rng.random()
    if depth < 0.1:  # a deep page, at the edge of the paging window
        fields["per_page"] = rng.choice([25, 100])
        fields["page"] = 10_000 // fields["per_page"] - rng.randint(0, 3)
    elif depth < 0.4:
        fields["page"] = rng.randint(2, 40)
        fields["per_page"] = rng.choice([10, 25, 50, 100])
    path = f"/v1/{'contacts' if contacts else 'companies'}/search"
    if rng.random() < 0.5:
        pairs = [(name, str(v).lower() if isinstance(v, bool) else str(v))
                 for name, value in fields.items()
                 for v in (value if isinstance(value, list) else [value])]
        return "search GET", lambda: good.get(f"{path}?{urlencode(pairs)}"), {200}
    return "search POST", lambda: good.post(path, json=fields), {200}


def error_of(answer: httpx.Response) -> str:
    try:
        return answer.json()["errors"][0]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        return "not an envelope"


# --- report ----------------------------------------------------------------------------------


def report(load: Load, args, rss_start: float, rss_end: float, rss_peak: float,
           logged: int) -> int:
    served = sum(load.answers.values())
    print(f"\n{served:,} requests answered in {load.seconds:.1f} s "
          f"({served / load.seconds:,.0f}/s) by {args.clients} clients; "
          f"{load.transport_errors} transport errors; {logged:,} access-log lines "
          "(warm-up and health checks included)")
    print(f"\n{'answers by kind':<44} {'status':>6}  {'error id':<24} {'count':>8}")
    for (kind, status, error_id), count in sorted(load.answers.items()):
        print(f"{kind:<44} {status:>6}  {error_id:<24} {count:>8,}")
    lat = sorted(load.latency_ms)
    p50 = statistics.median(lat) if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    print(f"\nsearches and lookups: {len(lat):,}; latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    growth = (rss_end - rss_start) / rss_start
    print(f"server RSS: {rss_start:.0f} MiB after the warm-up, {rss_end:.0f} MiB at the end "
          f"({growth:+.1%}), {rss_peak:.0f} MiB at most during the soak")
    server_errors = sum(count for (_, status, error_id), count in load.answers.items()
                        if status >= 500 and error_id != "query_timeout")
    good_throttled = sum(count for (kind, status, _), count in load.answers.items()
                         if status == 429 and kind != "bad key")
    checks = [
        ("no 5xx but deliberate query timeouts", server_errors == 0, f"{server_errors} 5xx"),
        ("every answer as expected", not load.wrong and load.transport_errors == 0,
         ", ".join(f"{k[0]} -> {k[1]} {k[2]} x{n}" for k, n in load.wrong.items())
         or f"{served:,} answers, no transport error"),
        ("good traffic never throttled", good_throttled == 0, f"{good_throttled} 429s"),
        ("server RSS growth", growth <= TARGETS["rss_growth"],
         f"{growth:+.1%} <= +{TARGETS['rss_growth']:.0%}"),
    ]
    print()
    for what, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {what}: {detail}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
