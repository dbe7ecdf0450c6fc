"""The `{data, meta, errors}` envelope that every API answer travels in (SPEC section 1)."""

from __future__ import annotations

from typing import Any

import msgspec

# Error id -> HTTP status. The contract's table, written once.
ERROR_STATUS: dict[str, int] = {
    "invalid_input": 400,
    "invalid_json": 400,
    "unauthorized": 401,
    "not_found": 404,
    "dataset_gone": 410,  # SPEC 1 (v2): a `dataset` that is not kept
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "query_timeout": 503,
    "unavailable": 503,
    "internal_error": 500,
}


class ErrorObject(msgspec.Struct, omit_defaults=True):
    id: str
    code: int
    details: str
    field: str | None = None


class Envelope(msgspec.Struct):
    data: Any
    meta: dict[str, Any]
    errors: list[ErrorObject]


class ApiError(Exception):
    """A failure the client should see: one or more error objects sharing one status."""

    def __init__(self, errors: list[ErrorObject], headers: dict[str, str] | None = None):
        super().__init__("; ".join(e.details for e in errors))
        self.errors = errors
        self.status = errors[0].code
        self.headers = headers or {}

    @classmethod
    def one(
        cls, error_id: str, details: str, field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> ApiError:
        return cls([problem(error_id, details, field)], headers)


def problem(error_id: str, details: str, field: str | None = None) -> ErrorObject:
    return ErrorObject(id=error_id, code=ERROR_STATUS[error_id], details=details, field=field)


def success_body(data: Any, meta: dict[str, Any]) -> bytes:
    return ENCODER.encode(Envelope(data=data, meta=meta, errors=[]))


def records_body(records: list[str] | str, meta: dict[str, Any]) -> bytes:
    """The success envelope around records that are JSON text already (the records store):
    a list of them for a search, one for a lookup."""
    data = "[" + ",".join(records) + "]" if isinstance(records, list) else records
    return b'{"data":' + data.encode() + b',"meta":' + ENCODER.encode(meta) + b',"errors":[]}'


def error_body(errors: list[ErrorObject]) -> bytes:
    return ENCODER.encode(Envelope(data=None, meta={}, errors=errors))


ENCODER = msgspec.json.Encoder()
