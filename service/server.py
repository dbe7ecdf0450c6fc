"""What `quarry serve` sets on uvicorn so that a client cannot make it hold or parse much.

- Request line and headers together: at most MAX_HEADER_BYTES. h11 buffers no more than that
  while a request head is incomplete, and a complete head over it is refused too (h11 alone
  accepts any head that arrives whole in one read, up to 256 KiB). Such a request, or one that
  is not valid HTTP/1.1, is answered 400 `invalid_input` in the envelope and the connection is
  closed; uvicorn's own answer would be plain text.
- Bodies: the app refuses any over 64 KiB (413), see `service.app.MAX_BODY`.
- Time: a request head (line and headers) must be whole within `QUARRY_HEADER_TIMEOUT_S` of
  the connection opening, or of the answer before it on a kept-alive connection; else the
  connection is closed without an answer (as nginx does on its client_header_timeout): uvicorn's
  h11 protocol has no such deadline, and its keep-alive timer stops at the first byte, so one
  byte now and then held a connection open for ever. A connection idle after an answer is
  closed after `QUARRY_KEEP_ALIVE_S` (uvicorn's keep-alive timeout).
- Connections: at most `QUARRY_MAX_CONNECTIONS` open at once. One over it is answered 503
  `unavailable` with `Retry-After: 1` in the envelope and closed, without reading its request,
  so that it costs no task and holds nothing. (uvicorn's limit_concurrency would answer in
  plain text, and only once the request head has come.)
- Forwarded headers: uvicorn believes `X-Forwarded-For` from 127.0.0.1 by default, which
  would let anyone on the host, or any local proxy's client, choose the address that the
  failed-key limit and the sign-in lockout count by. They are read only from the proxies that
  `QUARRY_TRUSTED_PROXIES` names.
- uvicorn's access log is off: `service.access_log` writes one JSON line per request instead.
- A large body chunk (an export's) goes to the transport as it is, beside its chunk framing:
  h11 would join the three into one new `bytes`, a copy of every byte an export sends.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import Settings
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
    """uvicorn's h11 protocol, with the bounded head, the head deadline and the connection cap,
    answering unreadable requests in the envelope. `uvicorn_options` makes a subclass with the
    settings' limits."""

    header_timeout_s = 10.0
    max_connections = 1000

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.conn = BoundedConnection(h11.SERVER, MAX_HEADER_BYTES)
        self.head_deadline: asyncio.TimerHandle | None = None
        self.refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self.conn.transport = transport
        if len(self.connections) > self.max_connections:
            self._refuse()
        else:
            self._watch_head()

    def data_received(self, data: bytes) -> None:
        if not self.refused:  # a refused connection's request is dropped unread
            super().data_received(data)
            self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may take up a pipelined request
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watch()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """The deadline runs while no request is being served: from the connection's start, or
        from the end of an answer, until a whole request head has come (uvicorn then starts
        serving it). Called after uvicorn has handled each event, so its own state says
        whether a request is being served; no hook inside h11's connection is needed."""
        serving = self.cycle is not None and not self.cycle.response_complete
        if serving or self.transport.is_closing():
            self._stop_watch()
        elif self.head_deadline is None:
            self.head_deadline = self.loop.call_later(self.header_timeout_s, self._too_late)

    def _stop_watch(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _too_late(self) -> None:
        self.head_deadline = None
        self.transport.close()

    def _refuse(self) -> None:
        """503 at once; not counted as open, so uvicorn's shutdown does not wait for it. The
        write side is shut first, and what the client sends is read and dropped until it
        closes (or for a second): closing with its request unread would send a reset, which
        may destroy the answer before the client reads it."""
        self.refused = True
        self.connections.discard(self)
        body = error_body([problem(
            "unavailable", f"the server holds {self.max_connections} connections, its "
            "most; retry in 1 s")])
        self.transport.write(b"".join([
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nretry-after: 1\r\nconnection: close\r\n\r\n" % len(body),
            body]))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(1.0, self.transport.close)

    def eof_received(self) -> bool | None:
        if self.refused:
            self.transport.close()
        return super().eof_received()

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


def uvicorn_options(settings: Settings) -> dict:
    """Keyword arguments for `uvicorn.Config`."""
    protocol = type("EnvelopeH11Protocol", (EnvelopeH11Protocol,), {
        "header_timeout_s": settings.header_timeout_s,
        "max_connections": settings.max_connections})
    proxies = {"proxy_headers": True, "forwarded_allow_ips": list(settings.trusted_proxies)}
    return {"http": protocol, "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
            "access_log": False, "timeout_keep_alive": settings.keep_alive_s,
            **(proxies if settings.trusted_proxies else {"proxy_headers": False})}
