"""`make bench`: search latency, throughput, memory and cold start of a real `quarry serve`.

Generates (and caches) a drop with `quarry generate`, refreshes it into its own data folder
(cached while the drop and the refresh code are unchanged), starts `quarry serve`, and runs a
fixed mix of searches over HTTP after a warm-up. In the same run it times a baseline: the same
searches as hand-written DuckDB SQL, in this process, straight over the drop's Parquet files
(views with a join at query time), and prints service/baseline per search. Then it streams
exports in every format. Targets are printed as PASS/FAIL lines.

    make bench            # 1,000,000 companies, 10,000,000 contacts; then exports at 1M
    make bench SCALE=1    # 100,000 companies, 1,000,000 contacts, a few minutes
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import httpx
from shared import QUARRY, REPO, free_port, prepare_drop, prepare_snapshot, run

# (name, endpoint, request fields, baseline WHERE over contacts k JOIN companies c / companies c)
MIX = [
    ("contacts: seniority VP", "contacts", {"seniorities": ["VP"]},
     "lower(k.seniority) = 'vp'"),
    ("contacts: title contains manager", "contacts", {"job_titles": ["manager"]},
     "contains(lower(k.job_title), 'manager')"),
    ("contacts: industry + country", "contacts",
     {"industries": ["Software Development"], "locations": ["country:United States"]},
     "lower(c.industry) = 'software development' AND lower(c.country) = 'united states'"),
    ("contacts: technologies overlap", "contacts", {"technologies": ["Salesforce", "HubSpot"]},
     "list_has_any(list_transform(c.technologies, lambda t: lower(t)), ['salesforce', 'hubspot'])"),
    ("contacts: city + decision makers", "contacts",
     {"locations": ["city:London||||United Kingdom"], "is_decision_maker": True},
     "lower(c.city) = 'london' AND lower(c.country) = 'united kingdom' AND k.is_decision_maker"),
    ("contacts: exclusions + linkedin", "contacts",
     {"exclude_industries": ["Retail"], "exclude_job_titles": ["intern"],
      "has_linkedin_profile": True},
     "NOT coalesce(lower(c.industry) = 'retail', false) AND "
     "NOT coalesce(contains(lower(k.job_title), 'intern'), false) AND k.linkedin_url IS NOT NULL"),
    ("contacts: deep page 400", "contacts",
     {"seniorities": ["Senior"], "page": 400, "per_page": 25},
     "lower(k.seniority) = 'senior'"),
    ("contacts: rare title + department", "contacts",
     {"job_titles": ["chief"], "departments": ["Finance"]},
     "contains(lower(k.job_title), 'chief') AND lower(k.department) = 'finance'"),
    ("contacts: added after + personal email", "contacts",
     {"added_after": "2024-01-01", "has_personal_emails": True},
     "c.created_at >= TIMESTAMPTZ '2024-01-01 00:00:00+00' AND len(k.personal_emails) > 0"),
    ("contacts: tld + function", "contacts", {"tlds": [".io"], "functions": ["Technology"]},
     "c.domain ILIKE '%.io' AND lower(c.function) = 'technology'"),
    ("contacts: exclude technology + director", "contacts",
     {"exclude_technologies": ["Salesforce"], "seniorities": ["Director"]},
     "NOT list_contains(list_transform(coalesce(c.technologies, []), lambda t: lower(t)), "
     "'salesforce') AND lower(k.seniority) = 'director'"),
    ("contacts: everything, page 1", "contacts", {}, "true"),
    ("companies: technology + tld", "companies", {"technologies": ["React"], "tlds": ["io"]},
     "list_contains(list_transform(c.technologies, lambda t: lower(t)), 'react') "
     "AND c.domain ILIKE '%.io'"),
    ("companies: industry + added after", "companies",
     {"industries": ["Financial Services"], "added_after": "2024-01-01"},
     "lower(c.industry) = 'financial services' "
     "AND c.created_at >= TIMESTAMPTZ '2024-01-01 00:00:00+00'"),
    ("companies: state, excluding a technology", "companies",
     {"locations": ["state:California||United States"], "exclude_technologies": ["WordPress"]},
     "lower(c.state) = 'california' AND lower(c.country) = 'united states' AND NOT "
     "list_contains(list_transform(coalesce(c.technologies, []), lambda t: lower(t)), "
     "'wordpress')"),
]

TARGETS = {"p50": 40.0, "p95": 100.0, "p99": 200.0, "rps2": 30.0, "memory_gib": 2.0,
           "cold_start_s": 2.0, "match_batch_p95": 50.0, "match_single_p95": 15.0,
           "domains_p95": 100.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10, help="millions of contacts")
    parser.add_argument("--rounds", type=int, default=12, help="timed passes over the mix")
    parser.add_argument("--seconds", type=float, default=15, help="per throughput run")
    parser.add_argument("--no-export", action="store_true")
    args = parser.parse_args()
    contacts = args.scale * 1_000_000
    companies = contacts // 10
    work = REPO / "data" / "bench" / f"{args.scale}m"
    drop = prepare_drop(work, companies, contacts)
    data_dir = prepare_snapshot(work, drop, "data")

    server = Server(data_dir)
    try:
        cold = server.start()
        print(f"\ncold start (process start to first search answered): {cold:.2f} s")
        service = time_service(server, args.rounds)
        rps = {n: throughput(server, n, args.seconds) for n in (1, 2)}
        baseline = time_baseline(drop, rounds=max(3, args.rounds // 4))
        report(service, baseline, rps, cold)
        time_match(server, drop, args.rounds)
        if not args.no_export:
            exports(server, contacts)
            searches_during_export(server, service)
        peak = server.peak_memory_gib()
        print(f"\nserver peak memory (VmHWM): {peak:.2f} GiB")
        verdict("server peak memory", peak <= TARGETS["memory_gib"],
                f"{peak:.2f} GiB <= {TARGETS['memory_gib']} GiB")
    finally:
        server.stop()
    if not args.no_export and args.scale != 1:
        export_only(1)  # the issue asks for export figures at 1M and 10M contacts
    return 0


def export_only(scale: int) -> None:
    """Exports alone, from a fresh server over the SCALE million contacts snapshot."""
    work = REPO / "data" / "bench" / f"{scale}m"
    drop = prepare_drop(work, scale * 100_000, scale * 1_000_000)
    server = Server(prepare_snapshot(work, drop, "data"))
    try:
        server.start()
        exports(server, scale * 1_000_000)
    finally:
        server.stop()


# --- the server ------------------------------------------------------------------------------


class Server:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.key = ""

    def start(self) -> float:
        env = {**os.environ, "QUARRY_DATA_DIR": str(self.data_dir),
               "QUARRY_RATE_LIMIT": "100000", "QUARRY_QUERY_TIMEOUT_MS": "30000"}
        self.key = create_key(env)
        started = time.monotonic()
        self.process = subprocess.Popen([*QUARRY, "serve", "--port", str(self.port)], env=env,
                                        cwd=REPO, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        with self.client() as client:
            while True:
                try:
                    answer = client.post("/v1/contacts/search", json={"seniorities": ["VP"]})
                    if answer.status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass
                if time.monotonic() - started > 120 or self.process.poll() is not None:
                    raise SystemExit("bench: quarry serve did not answer")
                time.sleep(0.01)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=120,
                            headers={"Authorization": f"Bearer {self.key}"})

    def peak_memory_gib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = int(next(line.split()[1] for line in status.splitlines()
                       if line.startswith("VmHWM")))
        return kib / 1024 / 1024

    def rss_gib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = int(next(line.split()[1] for line in status.splitlines()
                       if line.startswith("VmRSS")))
        return kib / 1024 / 1024

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def create_key(env: dict[str, str]) -> str:
    email = "bench@quarry.local"
    subprocess.run([*QUARRY, "users", "create", email, "--password-stdin"], env=env,
                   input="bench password\n", capture_output=True, text=True, cwd=REPO)
    done = run([*QUARRY, "tokens", "create", "--user", email, "--name", "bench"], env=env)
    return done.strip().splitlines()[-1]


# --- measurements ----------------------------------------------------------------------------


def time_service(server: Server, rounds: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {name: [] for name, *_ in MIX}
    with server.client() as client:
        for _ in range(2):  # warm-up
            for name, endpoint, fields, _ in MIX:
                check(client.post(f"/v1/{endpoint}/search", json=fields), name)
        for _ in range(rounds):
            for name, endpoint, fields, _ in MIX:
                started = time.perf_counter()
                check(client.post(f"/v1/{endpoint}/search", json=fields), name)
                timings[name].append((time.perf_counter() - started) * 1000)
    return timings


def throughput(server: Server, clients: int, seconds: float) -> float:
    done = [0] * clients
    deadline = time.monotonic() + seconds

    def worker(slot: int) -> None:
        with server.client() as client:
            i = slot
            while time.monotonic() < deadline:
                name, endpoint, fields, _ = MIX[i % len(MIX)]
                check(client.post(f"/v1/{endpoint}/search", json=fields), name)
                done[slot] += 1
                i += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - started)


def time_baseline(drop: Path, rounds: int) -> dict[str, float]:
    """The naive design: views over the drop's Parquet, a join at query time, ORDER BY id."""
    db = duckdb.connect(config={"threads": 2, "memory_limit": "2GB", "TimeZone": "UTC",
                                "autoinstall_known_extensions": False})
    db.execute(f"CREATE VIEW companies AS SELECT * FROM read_parquet('{drop}/companies.parquet')")
    db.execute(f"CREATE VIEW contacts AS SELECT * FROM read_parquet('{drop}/contacts.parquet')")
    medians = {}
    for name, endpoint, fields, where in MIX:
        page, per_page = fields.get("page", 1), fields.get("per_page", 25)
        window = f"ORDER BY {'k' if endpoint == 'contacts' else 'c'}.id LIMIT {per_page} " \
                 f"OFFSET {(page - 1) * per_page}"
        if endpoint == "contacts":
            source = "contacts k JOIN companies c ON c.id = k.company_id"
            page_sql = f"SELECT k.*, c.* FROM {source} WHERE {where} {window}"
        else:
            source = "companies c"
            page_sql = f"SELECT c.* FROM {source} WHERE {where} {window}"
        count_sql = f"SELECT count(*) FROM {source} WHERE {where}"
        timings = []
        for _ in range(rounds):
            started = time.perf_counter()
            db.execute(page_sql).fetchall()
            db.execute(count_sql).fetchall()
            timings.append((time.perf_counter() - started) * 1000)
        medians[name] = statistics.median(timings)
    return medians


def match_inputs(drop: Path, rng, count: int) -> list[dict]:
    """Contact inputs as a CRM holds them: mixed keys (email, LinkedIn URL re-spelled, name and
    company domain), a third of them matching nothing."""
    import pyarrow.parquet as pq

    contacts = pq.ParquetFile(drop / "contacts.parquet")
    group = contacts.read_row_group(rng.randrange(contacts.num_row_groups),
                                    columns=["first_name", "last_name", "work_email",
                                             "linkedin_url", "company_id"]).to_pylist()
    inputs = []
    for i in range(count):
        row = rng.choice(group)
        if i % 3 == 2:
            inputs.append({"email": f"nobody{rng.randrange(10**9)}@nowhere.example"})
        elif i % 3 == 0 and row["work_email"]:
            inputs.append({"ref": str(i), "email": row["work_email"].upper()})
        elif row["linkedin_url"] and rng.random() < 0.5:
            inputs.append({"ref": str(i), "linkedin_url": row["linkedin_url"].replace(
                "https://www.", "http://uk.") + "/"})
        else:
            inputs.append({"ref": str(i), "first_name": row["first_name"] or "x",
                           "last_name": row["last_name"] or "y",
                           "company_domain": (row["work_email"] or "@x.io").split("@")[-1]})
    return inputs


def time_match(server: Server, drop: Path, rounds: int) -> None:
    """Match batches of 100 contact inputs and single inputs, and a contacts search with
    1,000 domains (an account list), over HTTP."""
    import random

    import pyarrow.parquet as pq

    rng = random.Random(1)
    domains = [d for d in pq.read_table(drop / "companies.parquet", columns=["domain"])
               .column(0).to_pylist() if d]
    figures: dict[str, list[float]] = {"batch": [], "single": [], "domains": []}
    matched = 0
    with server.client() as client:
        for warm in (True, False):
            for _ in range(rounds * 2 if not warm else 2):
                batch = match_inputs(drop, rng, 100)
                for name, path, body in (
                        ("batch", "/v1/contacts/match", {"inputs": batch}),
                        ("single", "/v1/contacts/match", {"inputs": batch[:1]}),
                        ("domains", "/v1/contacts/search",
                         {"domains": rng.sample(domains, 1000)})):
                    started = time.perf_counter()
                    answer = client.post(path, json=body)
                    elapsed = (time.perf_counter() - started) * 1000
                    check(answer, name)
                    if not warm:
                        figures[name].append(elapsed)
                        if name == "batch":
                            matched += answer.json()["meta"]["matched"]
    print(f"\nmatch and account lists (n={len(figures['batch'])} each, over HTTP):")
    for name, label in (("batch", "match, 100 contact inputs (mixed keys, a third unmatched)"),
                        ("single", "match, 1 contact input"),
                        ("domains", "contacts search, 1,000 domains")):
        ordered = sorted(figures[name])
        print(f"  {label:58s} p50 {percentile(ordered, 50):6.1f} ms, "
              f"p95 {percentile(ordered, 95):6.1f} ms")
    print(f"  matched {matched} of {100 * len(figures['batch'])} batch inputs")
    for name, target in (("batch", "match_batch_p95"), ("single", "match_single_p95"),
                         ("domains", "domains_p95")):
        p95 = percentile(sorted(figures[name]), 95)
        verdict(f"{name} p95", p95 <= TARGETS[target], f"{p95:.1f} ms <= {TARGETS[target]} ms")


EXPORT_TARGETS = {"arrow": 1_000_000, "parquet": 1_000_000, "csv": 300_000, "ndjson": 300_000}


def exports(server: Server, contacts: int) -> None:
    """Every contact in each format, fetched by curl into /dev/null: a client written in C, so
    the figure is the server's rate rather than a Python client's."""
    print(f"\nexport of every contact ({contacts:,}), streamed over loopback to curl:")
    # The first contacts export of a snapshot loads the companies into memory (kept for the
    # next ones): timed on its own, as a one-record export, before the timed exports.
    started = time.perf_counter()
    with server.client() as client:
        check(client.post("/v1/contacts/export", json={"format": "arrow", "limit": 1}),
              "first export")
    print(f"  first export after start (loads the companies): {time.perf_counter() - started:.2f} s"
          f", server RSS now {server.rss_gib():.2f} GiB")
    for fmt, target in EXPORT_TARGETS.items():
        time.sleep(1)  # the previous export's memory is given back within ~50 ms of its end
        before = server.rss_gib()
        peak = [before]
        stop = threading.Event()
        sampler = threading.Thread(target=sample_peak, args=(server, peak, stop))
        sampler.start()
        started = time.perf_counter()
        fetched = subprocess.run(
            curl_export(server, fmt, "-D", "-", "-w", "%{size_download}\n"),
            capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        stop.set()
        sampler.join()
        if fetched.returncode != 0:
            raise SystemExit(f"bench: export {fmt} failed: {fetched.stderr.strip()}")
        lines = fetched.stdout.splitlines()
        total = int(next(line.split(":", 1)[1] for line in lines
                         if line.lower().startswith("quarry-total-count:")))
        size = int(lines[-1])
        rate = total / elapsed
        print(f"  {fmt:8s} {total:,} rows in {elapsed:6.1f} s = {rate:12,.0f} rows/s, "
              f"{size / 2**20:8.0f} MiB, server RSS {before:.2f} -> peak {peak[0]:.2f} GiB")
        if contacts >= 10_000_000:  # the targets are set for exporting 10M contacts
            verdict(f"export {fmt} throughput", rate >= target,
                    f"{rate:,.0f} rows/s >= {target:,}")
            verdict(f"export {fmt} memory", peak[0] < 1.0, f"{peak[0]:.2f} GiB < 1 GiB")


def curl_export(server: Server, fmt: str, *options: str) -> list[str]:
    """curl exporting every contact in `fmt` into /dev/null, with `options` of its own."""
    return ["curl", "-sS", "--fail", "-o", "/dev/null", *options,
            "-H", f"Authorization: Bearer {server.key}", "-H", "Content-Type: application/json",
            "--data", f'{{"format": "{fmt}"}}', f"{server.base}/v1/contacts/export"]


def searches_during_export(server: Server, idle: dict[str, list[float]]) -> None:
    """The search mix, one client, while another client exports every contact as Parquet:
    an export shares the server (its threads run below the searches' priority)."""
    time.sleep(1)
    export = subprocess.Popen(curl_export(server, "parquet"), stderr=subprocess.PIPE)
    timings: list[float] = []
    with server.client() as client:
        while export.poll() is None:
            for name, endpoint, fields, _ in MIX:
                started = time.perf_counter()
                check(client.post(f"/v1/{endpoint}/search", json=fields), name)
                timings.append((time.perf_counter() - started) * 1000)
    if export.returncode != 0:
        raise SystemExit(f"bench: export during searches failed: {export.stderr.read()!r}")
    during = sorted(timings)
    alone = sorted(t for values in idle.values() for t in values)
    print(f"\nsearches while a Parquet export of every contact runs (n={len(during)}, all "
          f"answered): p50 {percentile(during, 50):.1f} ms, p95 {percentile(during, 95):.1f} ms"
          f" (without an export: p50 {percentile(alone, 50):.1f} ms, "
          f"p95 {percentile(alone, 95):.1f} ms)")


def sample_peak(server: Server, peak: list[float], stop: threading.Event) -> None:
    while not stop.wait(0.2):
        peak[0] = max(peak[0], server.rss_gib())


def report(service: dict[str, list[float]], baseline: dict[str, float],
           rps: dict[int, float], cold: float) -> None:
    print(f"\n{'search':44s} {'median ms':>10s} {'baseline ms':>12s} {'ratio':>7s}")
    for name, timings in service.items():
        median = statistics.median(timings)
        print(f"{name:44s} {median:10.1f} {baseline[name]:12.1f} "
              f"{median / baseline[name]:7.2f}")
    every = sorted(t for timings in service.values() for t in timings)
    p50, p95, p99 = (percentile(every, q) for q in (50, 95, 99))
    print(f"\nall searches (n={len(every)}): p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
          f"p99 {p99:.1f} ms")
    print(f"requests per second: {rps[1]:.1f} with 1 client, {rps[2]:.1f} with 2 clients")
    total_service = sum(statistics.median(t) for t in service.values())
    total_baseline = sum(baseline.values())
    print(f"whole mix: service {total_service:.0f} ms, baseline {total_baseline:.0f} ms, "
          f"ratio {total_service / total_baseline:.2f}")
    verdict("p50", p50 <= TARGETS["p50"], f"{p50:.1f} ms <= {TARGETS['p50']} ms")
    verdict("p95", p95 <= TARGETS["p95"], f"{p95:.1f} ms <= {TARGETS['p95']} ms")
    verdict("p99", p99 <= TARGETS["p99"], f"{p99:.1f} ms <= {TARGETS['p99']} ms")
    verdict("throughput, 2 clients", rps[2] >= TARGETS["rps2"],
            f"{rps[2]:.1f} req/s >= {TARGETS['rps2']}")
    verdict("cold start", cold <= TARGETS["cold_start_s"],
            f"{cold:.2f} s <= {TARGETS['cold_start_s']} s")
    deep = statistics.median(service["contacts: deep page 400"])
    verdict("deep page within p95 target", deep <= TARGETS["p95"], f"{deep:.1f} ms")


def percentile(ordered: list[float], q: float) -> float:
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def verdict(what: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {what}: {detail}")


def check(answer: httpx.Response, name: str) -> None:
    if answer.status_code != 200:
        raise SystemExit(f"bench: {name} answered {answer.status_code}: {answer.text[:200]}")


if __name__ == "__main__":
    sys.exit(main())

