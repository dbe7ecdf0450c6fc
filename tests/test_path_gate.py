"""No data without a key, however the path is spelled: a real `quarry serve` is sent /v1 paths in
every spelling an attacker would try, without a key, on a raw socket (an HTTP client would
tidy the path before sending it).

The oracle is a plain reading of SPEC 1 and of how a request path is read: percent-decoded
once, repeated slashes counting as one. Whatever decodes to a /v1 path must get 401 in the
envelope with `WWW-Authenticate`; nothing else may answer records; nothing answers 5xx; and the
server never logs that a /v1 handler ran without a key (the second lock, `gate.key_required`).
"""

from __future__ import annotations

import json
import re
import socket
import string
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from service.app import create_app
from tests.serving import running_server
from tests.test_errors import assert_envelope
from tests.test_hardening import litestar_of

ROUTES = ["/v1/contacts/search", "/v1/companies/search", "/v1/contacts/ctc_0000001",
          "/v1/companies/cmp_00001", "/v1/contacts/export", "/v1/companies/export",
          "/v1", "/v1/"]


def raw_request(base: str, method: str, target: str, headers: dict[str, str] | None = None,
                body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request with `target` sent byte for byte as given; (status, headers, body)."""
    host, port = base.removeprefix("http://").split(":")
    head = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close",
            f"Content-Length: {len(body)}", "Content-Type: application/json"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    header_block, _, payload = rest.partition(b"\r\n\r\n")
    names = {}
    for line in header_block.split(b"\r\n"):
        name, _, value = line.decode("latin-1").partition(":")
        names[name.strip().lower()] = value.strip()
    if names.get("transfer-encoding") == "chunked":
        payload = dechunk(payload)
    return int(status_line.split()[1]), names, payload


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


def decodes_to_api_path(target: str) -> bool:
    """Whether a server reading `target` as HTTP says (decoded once, `//` as `/`) is at /v1."""
    path = re.sub("/+", "/", unquote(target.split("?", 1)[0])).strip("/")
    return path == "v1" or path.startswith("v1/")


def assert_no_key_refused(status: int, headers: dict[str, str], body: bytes, target: str) -> None:
    assert status == 401, (target, status, body[:300])
    assert headers["content-type"].startswith("application/json"), target
    assert headers["www-authenticate"].startswith("Bearer"), target
    envelope = json.loads(body)
    assert envelope["data"] is None and envelope["errors"][0]["id"] == "unauthorized", target


def assert_gave_no_records(status: int, body: bytes, target: str) -> None:
    assert status < 500, (target, status, body[:300])
    if status == 200 and body[:1] == b"{":
        data = json.loads(body).get("data")
        assert not isinstance(data, list) and not (isinstance(data, dict) and "id" in data), \
            (target, body[:300])


@pytest.fixture(scope="module")
def server(served, tmp_path_factory):
    settings_, _ = served
    log = tmp_path_factory.mktemp("gate") / "serve.log"
    with running_server(settings_.data_dir, log) as running:
        yield running, log
    text = log.read_text()
    assert "reached without a key" not in text and "Traceback" not in text, text[-3000:]


# --- the probes of the report, one by one -----------------------------------------------------

PROBES = [
    ("GET", "//v1/contacts/search?per_page=100&page=100"),
    ("POST", "//v1/contacts/search"),
    ("GET", "//v1/companies/search"),
    ("POST", "//v1/companies/search"),
    ("GET", "//v1/companies/cmp_00001"),
    ("GET", "//v1/contacts/ctc_0000001"),
    ("GET", "///v1/contacts/search"),
    ("GET", "/%2Fv1/contacts/search"),
    ("GET", "/%2fv1/companies/search"),
    ("POST", "//v1/contacts/export"),
    ("POST", "//v1/companies/export"),
    ("GET", "/v1//contacts//search/"),
    ("GET", "/%76%31/contacts/search"),
]


@pytest.mark.parametrize(("method", "target"), PROBES)
def test_a_respelled_v1_path_without_a_key_gets_401(server, method, target):
    running, _ = server
    status, headers, body = raw_request(running.base, method, target, body=b"{}")
    assert_no_key_refused(status, headers, body, target)


def test_a_respelled_v1_path_is_served_with_a_key_and_counts_against_its_rate(served, tmp_path):
    settings_, _ = served
    with running_server(settings_.data_dir, tmp_path / "serve.log",
                        QUARRY_RATE_LIMIT="5") as running:
        auth = {"Authorization": f"Bearer {running.key}"}
        statuses = [raw_request(running.base, "GET", "//v1/companies/search?per_page=1",
                                auth)[0] for _ in range(40)]
    # A burst of 10 at 5 requests/s: most of 40 requests sent at once are refused.
    assert statuses.count(200) >= 10 and statuses.count(429) >= 20, statuses
    lines = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()
             if line.startswith("{") and '"request_id"' in line]
    assert {line["path"] for line in lines if line["status"] == 429} == {"/v1/companies/search"}


def test_a_v1_handler_never_runs_without_the_gate_key(served, caplog):
    """The second lock: the Litestar app alone, without the gate in front, refuses every /v1
    handler with 401 and logs it, and still serves the paths outside /v1."""
    settings_, _ = served
    with TestClient(litestar_of(create_app(settings_))) as ungated:
        for method, path in [("GET", "/v1/contacts/search"), ("POST", "/v1/companies/search"),
                             ("GET", "/v1/companies/cmp_00001"), ("POST", "/v1/contacts/export")]:
            answer = ungated.request(method, path, json={})
            assert_envelope(answer, 401, "unauthorized")
            assert answer.headers["www-authenticate"].startswith("Bearer")
        assert ungated.get("/health").status_code == 200
    assert "a /v1 handler was reached without a key" in caplog.text


# --- the property: any spelling -------------------------------------------------------------


def respell(path: str, data: st.DataObject) -> str:
    """`path` with its slashes and characters spelled in ways a server may read as the same."""
    slash = st.sampled_from(["/", "/", "//", "///", "%2F", "%2f", "%252F", "/./", "/x/../",
                             "/;p=1/", "/%00/"])
    out = []
    for char in path:
        if char == "/":
            out.append(data.draw(slash))
            continue
        how = data.draw(st.sampled_from(["plain", "plain", "plain", "upper", "lower", "double",
                                         "case", "nul"]))
        code = f"{ord(char):02X}"
        out.append({"plain": char, "upper": f"%{code}", "lower": f"%{code.lower()}",
                    "double": f"%25{code}", "case": char.swapcase(),
                    "nul": f"{char}%00"}[how])
    tail = data.draw(st.sampled_from(["", "", "/", "//", ";x", "%2F", "?per_page=100", "/.",
                                      "/../v1"]))
    return "".join(out) + tail


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(route=st.sampled_from(ROUTES), method=st.sampled_from(["GET", "POST", "HEAD", "DELETE",
                                                              "OPTIONS", "PUT"]),
       prefix=st.sampled_from(["", "", "/", "//", "%2F"]), data=st.data())
def test_no_spelling_of_a_v1_path_reaches_a_handler_without_a_key(server, route, method, prefix,
                                                                  data):
    running, _ = server
    target = respell(prefix + route, data)
    if not target.startswith("/"):
        target = "/" + target
    if not set(target) <= set(string.printable) - set(" \t\r\n\x0b\x0c"):
        return
    status, headers, body = raw_request(running.base, method, target, body=b"{}")
    if method == "HEAD":
        body = b""  # a HEAD answer has no body to read
    if decodes_to_api_path(target):
        if method == "HEAD":
            assert status == 401 and headers["www-authenticate"].startswith("Bearer"), target
        else:
            assert_no_key_refused(status, headers, body, target)
    else:
        assert_gave_no_records(status, body, target)
