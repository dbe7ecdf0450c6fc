"""One log format for the whole `quarry serve` process: every line on stderr is one JSON object.

A line holds `time` (UTC), `level`, `logger` and `message`, then the fields a caller gave as
`extra={FIELDS: {...}}` (the access log's, see `service.access_log`), and `exc` with the
traceback when there is one. msgspec escapes every control character, and `_LINE_BREAKS` the
characters that JSON may leave raw but that some readers split lines on, so no value (a path, a
header) can end a line and forge the next. The root logger, uvicorn's and Litestar's all write
through it, so there is no plain-text logger left to forge lines in.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import msgspec

FIELDS = "quarry_fields"  # the `extra` member holding a record's own fields
# Valid raw inside a JSON string, but str.splitlines() (and some log viewers) break on them.
_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}
# Loggers that libraries give handlers of their own: theirs go, so that lines reach the root.
LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "litestar")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **(getattr(record, FIELDS, None) or {}),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return msgspec.json.encode(line, enc_hook=str).decode().translate(_LINE_BREAKS)


class CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each line."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(level: int = logging.INFO) -> None:
    """Every logger of the process to stderr as JSON lines (used by `quarry serve`): one
    handler, on the root; idempotent."""
    handler = CurrentStderr()
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for old in logger.handlers[:]:
            logger.removeHandler(old)
        logger.propagate = True
    logging.captureWarnings(True)  # warnings.warn(...) as lines too, not raw text on stderr
