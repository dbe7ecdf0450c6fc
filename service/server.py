"""What `quarry serve` sets on uvicorn so that a client cannot make it hold or parse much.

- Request line and headers together: at most MAX_HEADER_BYTES. h11 buffers no more than that
  while a request head is incomplete, and a complete head over it is refused too (h11 alone
  accepts any head that arrives whole in one read, up to 256 KiB). Such a request, or one that
  is not valid HTTP/1.1, is answered 400 `invalid_input` in the envelope and the connection is
  closed; uvicorn's own answer would be plain text.
- Bodies: the app refuses any over 64 KiB (413), see `service.app.MAX_BODY`.
- uvicorn's access log is off: `service.access_log` writes one JSON line per request instead.
- A large body chunk (an export's) goes to the transport as it is, beside its chunk framing:
  h11 would join the three into one new `bytes`, a copy of every byte an export sends.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .envelope import error_body, problem

MAX_HEADER_BYTES = 16 * 1024
PASS_THROUGH_BYTES = 256 * 1024


class BoundedConnection(h11.Connection):
    """An h11 server connection that refuses a request head over MAX_HEADER_BYTES, and writes
    large body chunks to its transport itself (`send`)."""

    transport: asyncio.Transport | None = None  # set once the connection is made

    def send(self, event):
        """As h11's, but a Data event of PASS_THROUGH_BYTES or more is written to the
        transport in its parts (framing, the data itself, framing): what is returned, the last
        part, is written next by uvicorn, so the order on the wire is h11's."""
        if (self.transport is None or not isinstance(event, h11.Data)
                or len(event.data) < PASS_THROUGH_BYTES):
            return super().send(event)
        *parts, last = self.send_with_data_passthrough(event)
        for part in parts:
            self.transport.write(part)
        return last

    def next_event(self):
        event = super().next_event()
        if isinstance(event, h11.Request) and head_size(event) > MAX_HEADER_BYTES:
            raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        return event


def head_size(request: h11.Request) -> int:
    return len(request.method) + len(request.target) + 12 + sum(
        len(name) + len(value) + 4 for name, value in request.headers)


class EnvelopeH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with the bounded head, answering unreadable requests in the
    envelope."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.conn = BoundedConnection(h11.SERVER, MAX_HEADER_BYTES)

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self.conn.transport = transport

    def send_400_response(self, msg: str) -> None:
        body = error_body([problem(
            "invalid_input", "the request is not valid HTTP/1.1, or its request line and "
            f"headers are larger than {MAX_HEADER_BYTES // 1024} KiB")])
        start = h11.Response(status_code=400, reason=b"Bad Request", headers=[
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")])
        for event in (start, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def uvicorn_options() -> dict:
    """Keyword arguments for `uvicorn.Config`."""
    return {"http": EnvelopeH11Protocol, "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
            "access_log": False}
