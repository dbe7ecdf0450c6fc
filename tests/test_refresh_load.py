"""Refresh under load: a real `quarry serve` answers concurrent clients without a single failure
while refreshes and a rollback switch it between snapshots, and every answer comes from exactly
one whole snapshot. A snapshot pruned while requests read it is closed once they are done."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tests.fixture_drop import write_fixture_drop
from tests.serving import leftovers, listed_versions, running_server, snapshots_held
from tests.test_cli import quarry

CLIENTS = 4
MAX_REQUESTS = 3000  # per client; the clients stop earlier, when the switching is done


def expected_answers(drop: Path) -> dict:
    """What a snapshot of this drop must answer: computed from the drop, not the service."""
    companies = pq.read_table(drop / "companies.parquet")
    contacts = pq.read_table(drop / "contacts.parquet")
    first = contacts.filter(pc.equal(contacts.column("id"), "ctc_00000"))
    return {
        "companies": companies.num_rows,
        "contacts": contacts.num_rows,
        "decision_makers": pc.sum(pc.fill_null(contacts.column("is_decision_maker"),
                                               False)).as_py(),
        "ctc_00000 company": first.column("company_id")[0].as_py(),
    }


def client_loop(server, stop: threading.Event, seen: list, failures: list) -> None:
    """Ask three questions in turn; keep (dataset, question, answer) for checking afterwards."""
    with httpx.Client(base_url=server.base, headers=server.headers, timeout=30) as client:
        for turn in range(MAX_REQUESTS):
            if stop.is_set():
                return
            question = ("decision_makers", "companies", "ctc_00000 company", "health")[turn % 4]
            try:
                if question == "decision_makers":
                    answer = client.post("/v1/contacts/search",
                                         json={"is_decision_maker": True, "per_page": 5})
                elif question == "companies":
                    answer = client.get("/v1/companies/search", params={"per_page": 3})
                elif question == "health":
                    answer = client.get("/health")
                else:
                    answer = client.get("/v1/contacts/ctc_00000")
            except httpx.HTTPError as exc:
                failures.append((question, repr(exc)))
                continue
            if answer.status_code != 200:
                failures.append((question, answer.status_code, answer.text[:300]))
                continue
            body = answer.json()
            if question == "health":
                data = body["data"]
                seen.append((data["dataset"], "health", (data["companies"], data["contacts"])))
            elif question == "ctc_00000 company":
                seen.append((body["meta"]["dataset"], question, body["data"]["company"]["id"]))
            else:
                seen.append((body["meta"]["dataset"], question, body["meta"]["total"]))


def test_refreshes_and_rollback_under_load(data_dir, fixture_drop, tmp_path):
    drops = [fixture_drop]
    for seed, (companies, contacts) in zip((11, 12, 13), ((200, 1000), (260, 1400), (180, 900)),
                                           strict=True):
        drops.append(tmp_path / f"drop-{seed}")
        write_fixture_drop(drops[-1], companies=companies, contacts=contacts, seed=seed)
    expected_by_drop = [expected_answers(drop) for drop in drops]
    assert len({e["contacts"] for e in expected_by_drop}) == len(drops)

    expected: dict[str, dict] = {}  # version -> what it must answer

    def refresh(index: int) -> str:
        done = quarry(data_dir, "refresh", "--source", str(drops[index]))
        version = re.search(r"snapshot (\S+) is current", done.stdout).group(1)
        expected[version] = expected_by_drop[index]
        return version

    first = refresh(0)
    with running_server(data_dir, tmp_path / "serve.log") as server:
        stop, seen, failures = threading.Event(), [], []
        clients = [threading.Thread(target=client_loop, args=(server, stop, seen, failures))
                   for _ in range(CLIENTS)]
        for client in clients:
            client.start()
        try:
            time.sleep(0.5)
            refresh(1)
            time.sleep(0.3)
            refresh(2)
            time.sleep(0.3)
            quarry(data_dir, "snapshots", "use", first)  # roll back while clients ask
            time.sleep(0.3)
            last = refresh(3)  # prunes `first` (3 kept), which the server still has open
            time.sleep(0.5)
        finally:
            stop.set()
            for client in clients:
                client.join(60)

        assert failures == []
        assert len(seen) > 100
        for dataset, question, answer in seen:
            assert dataset in expected, dataset
            if question == "health":
                answer = {"companies": answer[0], "contacts": answer[1]}
                assert answer == {k: expected[dataset][k] for k in ("companies", "contacts")}
            else:
                assert answer == expected[dataset][question], (dataset, question)
        assert len({dataset for dataset, _, _ in seen}) >= 3  # the switches were seen

        versions, current = listed_versions(data_dir)
        assert current == last and first not in versions and len(versions) == 3
        assert leftovers(data_dir) == []
        # The pruned and replaced snapshots are let go of once no request uses them.
        for _ in range(5):
            assert httpx.get(f"{server.base}/health").json()["data"]["dataset"] == last
        deadline = time.monotonic() + 10
        while (held := snapshots_held(server.process.pid)) != {last}:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert held == {last}
