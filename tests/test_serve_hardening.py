"""`quarry serve` as a real process: header limits, a log that never leaks a secret, and a
SIGTERM that lets the requests in flight finish."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import h11
import httpx
import pytest

from service.accounts import Accounts
from service.generate import generate_drop
from service.refresh import refresh
from service.server import MAX_HEADER_BYTES, PASS_THROUGH_BYTES, BoundedConnection
from service.snapshots import SnapshotStore
from tests.serving import free_port
from tests.test_cli import QUARRY, REPO

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def bigger_data(tmp_path_factory) -> tuple[Path, str]:
    """A data folder with a snapshot of 40,000 contacts (an export of it takes a while to
    read) and a user with a key."""
    root = tmp_path_factory.mktemp("serve")
    generate_drop(root / "drop", 2_000, 40_000, seed=3)
    data_dir = root / "data"
    refresh(SnapshotStore(data_dir), root / "drop")
    accounts = Accounts(data_dir / "quarry.db")
    accounts.create_user("ops@example.com", PASSWORD)
    key, _ = accounts.create_key("ops@example.com", "serve-tests")
    return data_dir, key


class Served:
    def __init__(self, data_dir: Path, log_path: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            [*QUARRY, "serve", "--port", str(self.port)], cwd=REPO,
            env={**os.environ, "QUARRY_DATA_DIR": str(data_dir), "QUARRY_RATE_LIMIT": "1000"},
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"quarry serve did not start: {self.stderr()}")

    def stderr(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def served(bigger_data, tmp_path):
    server = Served(bigger_data[0], tmp_path / "stderr.log")
    yield server, bigger_data[1]
    server.stop()


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_oversized_or_broken_requests_get_a_400_envelope(served):
    server, key = served
    fits = httpx.get(f"{server.base}/health", headers={"X-Padding": "a" * 8_000})
    assert fits.status_code == 200
    padding = b"X-Padding: " + b"a" * (MAX_HEADER_BYTES + 1024) + b"\r\n"
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(300))
    for request in (b"GET /health HTTP/1.1\r\nHost: x\r\n" + padding + b"\r\n",
                    b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n",
                    b"GET /" + b"p" * (MAX_HEADER_BYTES + 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"NONSENSE\x00\x01 \r\n\r\n"):
        answer = raw_request(server.port, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b"content-type: application/json" in head.lower()
        envelope = json.loads(body)
        assert envelope["data"] is None and envelope["errors"][0]["id"] == "invalid_input"
    assert httpx.get(f"{server.base}/health").status_code == 200  # still serving
    assert server.process.poll() is None


def test_the_log_holds_no_key_password_or_cookie(served):
    server, key = served
    secrets_sent = [key, PASSWORD]
    good = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.base, timeout=10) as web:
        assert web.get("/v1/contacts/search?per_page=3", headers=good).status_code == 200
        assert web.post("/v1/companies/search", json={"per_page": 2},
                        headers={**good, "X-Request-ID": "abc-123"}).status_code == 200
        assert web.get(f"/v1/contacts/search?exclude_job_titles={key}",
                       headers=good).status_code == 200
        wrong = "qry_" + "W" * 43
        secrets_sent.append(wrong)
        assert web.get("/v1/contacts/search", headers={
            "Authorization": f"Bearer {wrong}"}).status_code == 401
        assert web.get("/v1/contacts/search", headers={
            "Authorization": f"Basic {PASSWORD}"}).status_code == 401
        assert web.post("/v1/contacts/search", content=b"{bad json",
                        headers={**good, "content-type": "application/json"}).status_code == 400
        secrets_sent += _sign_in(web)
    exit_code = server.terminate()
    log = server.stderr()
    assert exit_code == 0, log
    for secret in secrets_sent:
        assert secret not in log, f"a secret reached the log: {secret[:6]}..."
    lines = [json.loads(line) for line in log.splitlines()]
    lines = [line for line in lines if line["logger"] == "quarry.access"
             and line["path"] != "/health"]  # the start-up probes
    assert len(lines) >= 6
    assert all(re.fullmatch(r"-|qry_.{8}", line["key"]) for line in lines)
    assert {"abc-123"} <= {line["request_id"] for line in lines}
    assert not any("?" in line["path"] for line in lines)
    assert [line["rows"] for line in lines[:2]] == [3, 2]


def _sign_in(web: httpx.Client) -> list[str]:
    """Signs in through the web page, when there is one; the cookie values it got."""
    page = web.get("/login")
    if page.status_code == 404:
        return []
    token = re.search(r'name="_csrf_token"\s+value="([^"]+)"', page.text)
    form = {"email": "ops@example.com", "_csrf_token": token.group(1) if token else ""}
    web.post("/login", data={**form, "password": "not the password"})
    web.post("/login", data={**form, "password": PASSWORD})
    assert web.get("/settings/tokens").status_code == 200, "signing in failed"
    values = [cookie.value for cookie in web.cookies.jar if cookie.value]
    assert values, "signing in set no cookie"
    return values


def test_sigterm_finishes_the_requests_in_flight(served):
    server, key = served
    with httpx.Client(base_url=server.base, timeout=30) as slow:
        with slow.stream("POST", "/v1/contacts/export", json={"format": "ndjson"},
                         headers={"Authorization": f"Bearer {key}"}) as export:
            assert export.status_code == 200
            total = int(export.headers["quarry-total-count"])
            assert total == 40_000
            chunks = export.iter_bytes()
            received = [next(chunks)]  # the export is under way, far from done
            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while True:  # the server stops accepting new connections...
                try:
                    with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                        pass
                except OSError:
                    break
                assert time.monotonic() < deadline, "still accepting after SIGTERM"
                time.sleep(0.05)
            assert server.process.poll() is None  # ...but still serves this one
            received.extend(chunks)
    lines = b"".join(received).splitlines()
    assert len(lines) == total
    assert json.loads(lines[-1])["id"] > json.loads(lines[0])["id"]
    assert server.process.wait(timeout=15) == 0


def test_a_key_runs_at_most_two_exports_at_once(served):
    import threading

    server, key = served
    headers = {"Authorization": f"Bearer {key}"}
    clients = [httpx.Client(base_url=server.base, headers=headers, timeout=30) for _ in range(4)]
    opened, statuses, barrier = [], [], threading.Barrier(4)

    def start(client: httpx.Client) -> None:
        barrier.wait()  # all four at once: the limit must hold under a race, too
        stream = client.stream("POST", "/v1/contacts/export", json={"format": "ndjson"})
        answer = stream.__enter__()  # headers only: the 40,000 records stay unread
        statuses.append(answer.status_code)
        opened.append((stream, answer))

    threads = [threading.Thread(target=start, args=(client,)) for client in clients]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(statuses) == [200, 200, 429, 429]
        # Searches keep answering while the two exports are open (their windows built ahead
        # and waiting for the unread connections).
        search = httpx.post(f"{server.base}/v1/contacts/search", headers=headers,
                            json={"seniorities": ["VP"]}, timeout=10)
        assert search.status_code == 200 and search.json()["data"]
        refused = next(answer for _, answer in opened if answer.status_code == 429)
        refused.read()
        assert refused.json()["errors"][0]["id"] == "rate_limited"
        for stream, _ in opened:  # the two running exports go away mid-stream
            stream.__exit__(None, None, None)
        deadline = time.monotonic() + 10
        while True:  # their slots come back once the server notices
            again = httpx.post(f"{server.base}/v1/contacts/export", headers=headers,
                               json={"format": "ndjson", "limit": 5}, timeout=30)
            if again.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert again.status_code == 200 and len(again.text.splitlines()) == 5
    finally:
        for client in clients:
            client.close()


def test_a_client_that_goes_away_stops_its_export(served):
    """The export stops where the client left: the access log counts the records handed to
    the connection, and an export that went on would count them all."""
    server, key = served
    headers = {"Authorization": f"Bearer {key}", "X-Request-ID": "goes-away"}
    with httpx.Client(base_url=server.base, timeout=30) as client:
        with client.stream("POST", "/v1/contacts/export", json={"format": "arrow"},
                           headers=headers) as export:
            assert export.status_code == 200
            total = int(export.headers["quarry-total-count"])
            next(export.iter_raw())  # under way; the rest stays unread
    deadline = time.monotonic() + 10
    while True:  # logged when the server has noticed and stopped
        lines = [json.loads(line) for line in server.stderr().splitlines()
                 if "goes-away" in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert lines, "the export never ended"
    assert 0 < lines[0]["rows"] < total


def test_a_large_chunk_goes_out_as_it_is_beside_its_framing():
    """BoundedConnection writes a large chunk's framing and the chunk itself to the transport
    (no joined copy) and returns the closing framing for uvicorn to write next: a real h11
    client reads the bytes back as the same body, chunk by chunk."""

    class Transport:  # the asyncio transport's one method the connection uses
        def __init__(self) -> None:
            self.written: list = []

        def write(self, data) -> None:
            self.written.append(data)

    server, client, transport = BoundedConnection(h11.SERVER), h11.Connection(h11.CLIENT), \
        Transport()
    server.transport = transport
    server.receive_data(client.send(h11.Request(method="POST", target="/", headers=[
        ("Host", "quarry"), ("Content-Length", "0")])) + client.send(h11.EndOfMessage()))
    assert isinstance(server.next_event(), h11.Request)
    assert isinstance(server.next_event(), h11.EndOfMessage)
    large = memoryview(os.urandom(PASS_THROUGH_BYTES))
    sent = [large, b"small", large[1:]]
    transport.write(server.send(h11.Response(status_code=200, headers=[])))  # chunked
    for data in sent:
        transport.write(server.send(h11.Data(data=data)))
    transport.write(server.send(h11.EndOfMessage()))
    assert any(part is large for part in transport.written)  # passed on, not copied
    client.receive_data(b"".join(bytes(part) for part in transport.written))
    received = []
    while not isinstance(event := client.next_event(), h11.EndOfMessage):
        if isinstance(event, h11.Data):
            received.append(event.data)
    assert b"".join(received) == b"".join(bytes(data) for data in sent)


def test_every_format_exports_all_40000_records_alike(served):
    """Past the 10,000 records paging serves: every format holds the same records, in id
    order, and the first 10,000 are the search's."""
    import csv
    import io

    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    from tests.test_export import as_json_values, flatten

    server, key = served
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.base, headers=headers, timeout=60) as client:
        answers = {fmt: client.post("/v1/contacts/export", json={"format": fmt})
                   for fmt in ("ndjson", "csv", "parquet", "arrow")}
        searched = []
        for page in range(1, 101):
            searched += client.post("/v1/contacts/search",
                                    json={"page": page, "per_page": 100}).json()["data"]
    for answer in answers.values():
        assert answer.status_code == 200
        assert answer.headers["quarry-total-count"] == "40000"
    records = [json.loads(line) for line in answers["ndjson"].text.splitlines()]
    assert len(records) == 40_000
    assert records[:10_000] == searched
    ids = [record["id"] for record in records]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert list(csv.DictReader(io.StringIO(answers["csv"].text))) == [
        flatten(record) for record in records]
    parquet = pq.read_table(io.BytesIO(answers["parquet"].content))
    assert as_json_values(parquet.to_pylist()) == records
    arrow = ipc.open_stream(answers["arrow"].content).read_all()
    assert as_json_values(arrow.to_pylist()) == records


def test_many_exports_at_once_stay_within_the_export_memory(bigger_data):
    """Exports share their DuckDB instance and its memory limit (EXPORT_MEMORY_LIMIT): six at
    once, of every format and both kinds, all finish whole. (With a limit of 8 MB two of them
    run out of memory.)"""
    import threading

    from service.export import ExportSource, ExportStream, compile_export_query
    from service.search_requests import CompanyExport, ContactExport

    store = SnapshotStore(bigger_data[0])
    source = ExportSource(store.path_of(store.current_version()))
    requests = [ContactExport(format="ndjson"), ContactExport(format="csv"),
                ContactExport(format="arrow"), ContactExport(format="parquet"),
                CompanyExport(format="ndjson"), ContactExport(format="ndjson")]
    rows, errors = {}, []

    def export(number: int) -> None:
        try:
            stream = ExportStream(source, compile_export_query(requests[number]))
            while stream.next_chunk() is not None:
                pass
            stream.close(wait=True)
            rows[number] = stream.rows
        except Exception as error:  # noqa: BLE001 - the test reports what failed
            errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=export, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert rows == {0: 40_000, 1: 40_000, 2: 40_000, 3: 40_000, 4: 2_000, 5: 40_000}
