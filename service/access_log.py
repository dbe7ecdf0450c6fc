"""One JSON access-log line per request, on the logger `quarry.access`, and an X-Request-ID on
every answer.

A line is written by `service.logs` like every other line of the process (`level`, `logger`,
`message`: method, path and status) and holds: `time` (start, UTC), `request_id`, `client` (the
peer address), `key` (the first 12 characters of a `qry_` key sent as Bearer, else `-`),
`method`, `path` (never the query string, whose values could hold secrets), `status`,
`duration_ms` and `rows` (records answered by a search, or streamed by an export; null
otherwise). Headers, bodies and cookies are never logged, so no key, password or cookie value
can reach a log.

The request id is the caller's `X-Request-ID` when it is 1 to 64 safe characters
(`A-Z a-z 0-9 . _ : -`), else a new random one; the answer echoes it either way.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from .logs import FIELDS

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("quarry.access")

KEY_SHOWN = 12          # characters of a key that a log line may show, never more
MAX_PATH_LOGGED = 300   # characters of the path kept in a line
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
RECORD = "quarry.access"  # scope member holding what handlers add to the line (rows)


def note_rows(scope: Scope, rows: int) -> None:
    """Called by a handler: the number of records it answered or streamed."""
    record = scope.get(RECORD)
    if record is not None:
        record["rows"] = rows


class AccessLog:
    """ASGI wrapper: outermost, so that it sees every answer, the key gate's included."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None):
        self.app = app
        self.metrics = metrics  # the same answer, counted for /metrics (service.metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, wall = time.perf_counter(), time.time()
        request_id = request_id_of(scope)
        record: dict[str, Any] = {"status": None, "rows": None}
        scope[RECORD] = record  # type: ignore[literal-required]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
                headers = [(name, value) for name, value in message.get("headers", [])
                           if name.lower() != b"x-request-id"]
                message = {**message,  # type: ignore[assignment]
                           "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            if record["status"] is None:
                record["status"] = 500  # what the server answers for an app that raised
            raise
        finally:
            seconds = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.observe(scope, record["status"] or 0, seconds, record["rows"])
            if log.isEnabledFor(logging.INFO):
                line = access_line(scope, request_id, record, wall, seconds * 1000)
                log.info("%s %s %s", line["method"], line["path"], line["status"],
                         extra={FIELDS: line})


def access_line(scope: Scope, request_id: str, record: dict[str, Any], wall: float,
                duration_ms: float) -> dict[str, Any]:
    client = scope.get("client")
    line = {
        "time": datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "request_id": request_id,
        "client": str(client[0]) if client else "-",
        "key": key_shown(scope),
        "method": scope.get("method", "-"),
        "path": scope.get("path", "")[:MAX_PATH_LOGGED],
        "status": record["status"],
        "duration_ms": round(duration_ms, 1),
        "rows": record["rows"],
    }
    return line


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name.lower() == b"x-request-id":
            text = value.decode("latin-1").strip()
            if SAFE_REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


def key_shown(scope: Scope) -> str:
    """The first characters of a `qry_` key sent as Bearer; `-` for anything else, so that a
    password pasted into the header by mistake is not logged either."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            scheme, _, credential = value.decode("latin-1").strip().partition(" ")
            credential = credential.strip()
            if scheme.lower() == "bearer" and credential.startswith("qry_"):
                return credential[:KEY_SHOWN]
            return "-"
    return "-"


def configure_access_log() -> None:
    """Write the access lines (INFO) whatever the root logger's level; they go out through the
    process's one handler (`service.logs`, set up by `quarry serve`)."""
    log.setLevel(logging.INFO)
    log.propagate = True
