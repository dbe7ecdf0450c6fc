"""`quarry sql`: run an SQL file against the current snapshot and format the last result."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import msgspec

from .config import Settings
from .snapshots import open_current_snapshot


def run_sql_file(settings: Settings, path: Path) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run every statement of the file; return the column names and rows of the last one."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    connection = open_current_snapshot(settings).connection
    try:
        statements = duckdb.extract_statements(text)
        if not statements:
            raise ValueError(f"{path} holds no SQL statement")
        result = None
        for statement in statements:
            result = connection.execute(statement)
        columns = [column[0] for column in result.description or []]
        return columns, result.fetchall() if columns else []
    except duckdb.Error as exc:
        raise ValueError(f"{path.name}: {str(exc).strip().splitlines()[0]}") from None
    finally:
        connection.close()


def format_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    if fmt == "json":
        objects = [dict(zip(columns, (_json_value(v) for v in row), strict=True))
                   for row in rows]
        return _JSON.encode(objects).decode() + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_text(value, list_separator=";") for value in row] for row in rows])
        return out.getvalue()
    return _table(columns, rows)


def _table(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    cells = [[_text(value) for value in row] for row in rows]
    widths = [max([len(name)] + [len(row[i]) for row in cells]) for i, name in enumerate(columns)]
    numeric = [all(isinstance(row[i], (int, float, Decimal)) or row[i] is None for row in rows)
               and rows for i in range(len(columns))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    return "\n".join(out) + "\n"


def _text(value: Any, list_separator: str = ", ") -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, list):
        return list_separator.join(_text(item) for item in value)
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    return value


def _iso(moment: datetime) -> str:
    # Snapshot timestamps are UTC; a naive one is UTC too.
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat() + "Z"


_JSON = msgspec.json.Encoder(decimal_format="number")
