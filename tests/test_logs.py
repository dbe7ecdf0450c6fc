"""The server's log: every line on its stderr is one JSON object, whatever a request holds."""

from __future__ import annotations

import json
import logging
import signal
import socket
import sys

import httpx

from service.logs import FIELDS, JsonLines
from tests.serving import running_server

FORGED = "INFO - 2026-01-01 00:00:00 - quarry.web - forged line"
# Paths whose decoded form holds a line break, a NUL byte or a separator that splitlines() breaks.
INJECTIONS = [
    "/static/x%0AINFO%20-%202026-01-01%2000:00:00%20-%20quarry.web%20-%20forged%20line%00",
    "/static/x%00", "/static/%0D%0Ax.css", "/static/a%E2%80%A8b%C2%85c.js", "/static/..%2Fapp.py",
    "/static/nothing-here.css", "/v1/contacts/x%0A" + "INFO%20-%20forged",
]


def test_every_line_of_the_server_is_one_json_object(served, tmp_path):
    settings, _ = served
    log = tmp_path / "serve.log"
    with running_server(settings.data_dir, log) as server:
        with httpx.Client(base_url=server.base, timeout=10) as client:
            for path in INJECTIONS[:-1]:
                answer = client.get(path)
                assert answer.status_code == 404, (path, answer.text[:200])
                assert answer.headers["content-type"].startswith("text/html"), path
                assert "Page not found" in answer.text
                assert answer.headers["content-security-policy"]
            answer = client.get(INJECTIONS[-1], headers=server.headers)
            assert answer.status_code == 404 and answer.json()["errors"][0]["id"] == "not_found"
            assert client.get("/static/quarry.css").status_code == 200
            # A failed sign-in is a warning of `quarry.web`.
            page = client.get("/login")
            token = client.cookies.get("quarry_csrf")
            assert page.status_code == 200 and token
            client.post("/login", data={"email": f"x\n{FORGED}@example.com", "password": "wrong",
                                        "_csrf_token": token})
        # Not HTTP at all: uvicorn's own logger warns about it.
        with socket.create_connection(("127.0.0.1", int(server.base.rsplit(":", 1)[1]))) as sock:
            sock.sendall(b"NOT HTTP\r\n\x00\r\n\r\n")
            sock.settimeout(5)
            assert sock.recv(100).startswith(b"HTTP/1.1 400")
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=20) == 0
    text = log.read_text()
    lines = [json.loads(line) for line in text.split("\n")[:-1]]  # raises on any other line
    assert text.endswith("\n") and len(text.splitlines()) == len(lines)  # no U+2028 left raw
    assert all(isinstance(line, dict) and {"time", "level", "logger", "message"} <= set(line)
               for line in lines)
    assert not any(line.startswith("INFO") for line in text.splitlines())
    loggers = {line["logger"] for line in lines}
    assert {"quarry", "quarry.access", "quarry.web", "uvicorn.error"} <= loggers, loggers
    paths = {line["path"]: line["status"] for line in lines if line["logger"] == "quarry.access"}
    assert paths["/static/x\nINFO - 2026-01-01 00:00:00 - quarry.web - forged line\x00"] == 404
    assert paths["/static/a\u2028b\u0085c.js"] == 404
    assert 500 not in paths.values()


def _record(message: str, *args, **extra) -> logging.LogRecord:
    return logging.LogRecord("quarry.web", logging.WARNING, __file__, 1, message, args, None,
                             **extra)


def test_a_line_escapes_control_characters_and_line_separators():
    line = JsonLines().format(_record("on %s", "/x\nINFO - forged\r\x00\x1b[31m\u2028\u2029\x85"))
    assert "\n" not in line and "\r" not in line and "\x00" not in line and "\x1b" not in line
    assert len(line.splitlines()) == 1
    parsed = json.loads(line)
    assert parsed["message"] == "on /x\nINFO - forged\r\x00\x1b[31m\u2028\u2029\x85"
    assert parsed["level"] == "WARNING" and parsed["logger"] == "quarry.web"
    assert parsed["time"].endswith("Z")


def test_a_line_holds_the_callers_fields_and_the_exception_as_one_value():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    setattr(record, FIELDS, {"status": 500, "path": "/a\nb"})
    parsed = json.loads(JsonLines().format(record))
    assert parsed["status"] == 500 and parsed["path"] == "/a\nb"
    assert parsed["exc"].startswith("Traceback") and "ValueError: bad\nvalue" in parsed["exc"]
