"""`quarry serve` as a real process against clients that misbehave at the HTTP level: slow or
idle request heads, too many connections, forwarded addresses from anyone, and bodies that once
got a 500. A well-behaved client is served meanwhile."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.refresh import refresh
from service.snapshots import SnapshotStore
from tests.serving import env_for, free_port, running_server
from tests.test_cli import QUARRY, REPO

HEAD_TIMEOUT = 2.0
KEEP_ALIVE = 0.5
MARGIN = 1.5  # the server's timer, the scheduler of a busy 2-core machine


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, fixture_drop) -> Path:
    data_dir = tmp_path_factory.mktemp("limits") / "data"
    refresh(SnapshotStore(data_dir), fixture_drop)
    return data_dir


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                    source_address=(source, 0))
    sock.setblocking(False)
    return sock


def closed_by_server(sock: socket.socket) -> bytes | None:
    """What the server sent before closing, or None while the connection is open."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except BlockingIOError:
        return None
    except ConnectionResetError:
        pass
    return received


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer on a blocking socket (a small one, with Content-Length)."""
    sock.setblocking(True)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += sock.recv(65536)
    sock.setblocking(False)
    return data


def dribble(sock: socket.socket, rounds: int) -> None:
    """The next byte of an endless run of `X-A: b` header lines: never a whole head."""
    try:
        sock.send(HEADER_LINE[rounds % len(HEADER_LINE):][:1])
    except (BrokenPipeError, ConnectionResetError):
        pass


HEADER_LINE = b"X-A: b\r\n"


class SteadyClient(threading.Thread):
    """A normal client asking for /health every 50 ms; records status and latency."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.base, self.answers, self.failures = base, [], []
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as client:
            while not self.stopping.is_set():
                started = time.monotonic()
                try:
                    status = client.get("/health").status_code
                    self.answers.append((status, time.monotonic() - started))
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                time.sleep(0.05)

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def test_slow_idle_and_dribbling_heads_are_closed_while_others_are_served(data_dir, tmp_path):
    with running_server(data_dir, tmp_path / "serve.log", QUARRY_HEADER_TIMEOUT_S=str(HEAD_TIMEOUT),
                        QUARRY_KEEP_ALIVE_S=str(KEEP_ALIVE)) as server:
        port = port_of(server.base)
        steady = SteadyClient(server.base)
        steady.start()
        # 50 slow heads: a request line, then one header byte every 0.3 s (uvicorn stopped its
        # keep-alive timer at each byte and had no deadline for a head); 5 idle connections
        # that never send a byte; 5 that ask once, then dribble the next head; 5 that ask once,
        # then say nothing (closed after the keep-alive time, sooner than the head deadline).
        slow = [connect(port) for _ in range(50)]
        for sock in slow:
            sock.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        idle = [connect(port) for _ in range(5)]
        kept = [connect(port) for _ in range(10)]
        for sock in kept:
            sock.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(sock).startswith(b"HTTP/1.1 200 ")
        for sock in kept[:5]:
            sock.send(b"G")
        opened = time.monotonic()
        closed: dict[int, tuple[float, bytes]] = {}
        everyone, rounds = slow + idle + kept, 0
        while len(closed) < len(everyone) and time.monotonic() - opened < HEAD_TIMEOUT + 6:
            for i, sock in enumerate(everyone):
                if i in closed:
                    continue
                sent = closed_by_server(sock)
                if sent is not None:
                    closed[i] = (time.monotonic() - opened, sent)
                    continue
                if i < len(slow) or len(slow) + len(idle) <= i < len(everyone) - 5:
                    dribble(sock, rounds)
            time.sleep(0.3)
            rounds += 1
        steady.stop()
        for sock in everyone:
            sock.close()
        assert server.process.poll() is None
    assert len(closed) == len(everyone), f"{len(everyone) - len(closed)} still open"
    latest = max(seconds for seconds, _ in closed.values())
    assert latest < HEAD_TIMEOUT + MARGIN, latest
    assert all(sent == b"" for _, sent in closed.values())  # closed without an answer
    quiet = [closed[i][0] for i in range(len(everyone) - 5, len(everyone))]
    assert max(quiet) < HEAD_TIMEOUT - 0.2, quiet
    assert not steady.failures, steady.failures[:3]
    assert len(steady.answers) >= 20
    assert {status for status, _ in steady.answers} == {200}
    assert max(seconds for _, seconds in steady.answers) < 1.0


def test_connections_over_the_cap_get_503_in_the_envelope(data_dir, tmp_path):
    cap = 20
    with running_server(data_dir, tmp_path / "serve.log", QUARRY_MAX_CONNECTIONS=str(cap),
                        QUARRY_HEADER_TIMEOUT_S="60") as server:
        port = port_of(server.base)
        held = [connect(port) for _ in range(cap)]
        time.sleep(0.5)  # all accepted
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 "), answer[:200]
            assert b"retry-after: 1" in head.lower()
            assert b"content-type: application/json" in head.lower()
            envelope = json.loads(body)
            assert envelope["data"] is None
            assert [e["id"] for e in envelope["errors"]] == ["unavailable"]
        # over the cap a POST with a body is refused the same way, its body dropped unread
        refused = httpx.post(f"{server.base}/v1/contacts/search", json={"per_page": 1},
                             headers=server.headers)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        held.pop().close()
        time.sleep(0.3)
        answer = httpx.get(f"{server.base}/v1/contacts/search?per_page=1",
                           headers=server.headers)
        assert answer.status_code == 200  # a freed place serves the next client
        for sock in held:
            sock.close()
        assert server.process.poll() is None


def spray_sign_ins(base: str, attempts: int, source: str = "127.0.0.1",
                   forwarded=lambda i: f"203.0.113.{i}") -> list[int]:
    """Wrong passwords for `attempts` different emails, each with another X-Forwarded-For:
    the statuses of the sign-in answers."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=base, transport=transport, timeout=10) as web:
        page = web.get("/login")
        token = page.text.split('name="_csrf_token" value="', 1)[1].split('"', 1)[0]
        return [web.post("/login", headers={"X-Forwarded-For": forwarded(i)}, data={
            "email": f"user{i}@example.com", "password": "Spring2026!",
            "_csrf_token": token}).status_code for i in range(attempts)]


def logged_clients(log: Path, method: str = "") -> set[str]:
    """The `client` of the access log's lines (those of `method` only, if given)."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return {line["client"] for line in lines if line["logger"] == "quarry.access"
            and line["path"] != "/health" and line["method"].startswith(method)}


def test_forwarded_for_is_not_believed_unless_its_proxy_is_named(data_dir, tmp_path):
    log = tmp_path / "serve.log"
    with running_server(data_dir, log) as server:
        # a password spray with a new address on every attempt is still one client address
        statuses = spray_sign_ins(server.base, 20)
        assert statuses[:5] == [400] * 5 and statuses[5:] == [429] * 15, statuses
        # and so is a flood of bad keys: the failed-key brake meets it after its burst of 200
        # (a slowed 401 with Retry-After; it refills at 20 a second meanwhile)
        with httpx.Client(base_url=server.base, timeout=10) as api:
            for sent in range(1, 300):
                answer = api.get("/v1/contacts/search", headers={
                    "Authorization": f"Bearer qry_{'x' * 43}",
                    "X-Forwarded-For": f"198.51.100.{sent % 250}, 10.0.0.{sent % 250}"})
                if "retry-after" in answer.headers:
                    assert answer.status_code == 401
                    break
            else:
                pytest.fail("299 bad keys with rotating X-Forwarded-For were never braked")
        assert sent > 200
    assert logged_clients(log) == {"127.0.0.1"}


def test_forwarded_for_is_believed_from_the_trusted_proxies(data_dir, tmp_path):
    log = tmp_path / "serve.log"
    with running_server(data_dir, log, QUARRY_TRUSTED_PROXIES="127.0.0.2, 10.9.0.0/16") as server:
        # from the named proxy, each forwarded address counts for itself...
        per_client = spray_sign_ins(server.base, 6, source="127.0.0.2")
        assert per_client == [400] * 6, per_client
        one_client = spray_sign_ins(server.base, 6, source="127.0.0.2",
                                    forwarded=lambda i: "192.0.2.7")
        assert one_client == [400] * 5 + [429], one_client
        # ...the proxy's own address in the chain is skipped, a client's forged entry is not
        chain = spray_sign_ins(server.base, 1, source="127.0.0.2",
                               forwarded=lambda i: "192.0.2.7, 10.9.3.4")
        assert chain == [429], chain
        # from anywhere else the header is ignored (uvicorn believed it from 127.0.0.1)
        direct = spray_sign_ins(server.base, 6, forwarded=lambda i: f"192.0.2.{100 + i}")
        assert direct == [400] * 5 + [429], direct
    signing_in = logged_clients(log, "POST")  # each of them sent an X-Forwarded-For
    assert {"203.0.113.0", "203.0.113.5", "192.0.2.7", "127.0.0.1"} <= signing_in
    assert "127.0.0.2" not in signing_in and "10.9.3.4" not in signing_in


@pytest.mark.parametrize(("variable", "value"), [
    ("QUARRY_TRUSTED_PROXIES", "proxy.internal"), ("QUARRY_TRUSTED_PROXIES", "10.0.0.1/33"),
    ("QUARRY_HEADER_TIMEOUT_S", "soon"), ("QUARRY_HEADER_TIMEOUT_S", "nan"),
    ("QUARRY_KEEP_ALIVE_S", "0"), ("QUARRY_MAX_CONNECTIONS", "0"),
])
def test_serve_refuses_a_bad_limit_setting_in_one_line(tmp_path, variable, value):
    done = subprocess.run([*QUARRY, "serve", "--port", str(free_port())], cwd=REPO,
                          env=env_for(tmp_path / "data", **{variable: value}),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"quarry: {variable} "), done.stderr
    assert value in lines[0]


def test_malformed_input_is_400_and_leaves_no_traceback(data_dir, tmp_path):
    log = tmp_path / "serve.log"
    json_type = {"content-type": "application/json"}
    with running_server(data_dir, log) as server, httpx.Client(
            base_url=server.base, headers=server.headers, timeout=10) as api:
        bodies = [
            ("/v1/contacts/search", b'{"industries": ["S\xe3o Paulo"]}', json_type),
            ("/v1/contacts/search", b'{"industries": ["S\xe3o Paulo"]}',
             {"content-type": "application/json; charset=latin-1"}),
            ("/v1/companies/search", b"[" * 1_000 + b"]" * 1_000, json_type),
            ("/v1/contacts/export", b'{"locations": ' + b"[" * 1_000 + b"]" * 1_000 + b"}",
             json_type),
        ]
        for path, body, headers in bodies:
            answer = api.post(path, content=body, headers=headers)
            assert answer.status_code == 400, (path, body[:40], answer.text)
            assert answer.json()["errors"][0]["id"] == "invalid_json"
        for limit in (2**63, 2**64 - 1):
            for fmt in ("ndjson", "csv", "parquet", "arrow"):
                answer = api.post("/v1/contacts/export", json={"limit": limit, "format": fmt})
                assert answer.status_code == 400, (limit, fmt, answer.text)
                assert answer.json()["errors"][0]["field"] == "limit"
        for query in ("page=9223372036854775808", "per_page=18446744073709551616",
                      "page=%EF%BC%92", "industries=%FF%FE", "%C3=1", "page=1%00",
                      "industries=%ED%A0%80"):
            answer = api.get(f"/v1/contacts/search?{query}")
            assert answer.status_code == 400, (query, answer.text)
            assert answer.json()["errors"][0]["id"] == "invalid_input"
        assert api.get("/v1/contacts/search?per_page=1").status_code == 200
    assert "Traceback" not in log.read_text()
    assert '"status":500' not in log.read_text()
