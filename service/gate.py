"""What every request passes before a handler runs: one view of its path, the key gate, and the
methods a path takes.

The layers, outermost first (see `service.app.create_app`):

- `CanonicalPath` rewrites the scope's path, once, into the form Litestar's router routes
  (`routed_path`). Every later decision (the key gate, the access log, the router itself) reads
  that one path, so no spelling of a /v1 path (`//v1/...`, `/%2Fv1/...`, `/v1//x/`) can be
  routed to a /v1 handler while the gate took it for something else.
- `KeyGate` answers 401 for any /v1 path without a valid key, before routing (an unknown path,
  a wrong method or a body too large included: SPEC 1), and applies the key's request rate.
- `MethodPolicy` answers HEAD as the GET without its body, OPTIONS with 405, and puts on every
  405 the methods the router really has for the path.
- `key_required`, a Litestar guard on every handler, refuses to run a /v1 handler that has no
  key identity from the gate: a second lock, so that a future gap in the first is a 401 and a
  logged error, never an answer.
"""

from __future__ import annotations

import logging

import anyio
from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.exceptions import MethodNotAllowedException, NotFoundException
from litestar.handlers import BaseRouteHandler
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from litestar.utils import normalize_path

from .accounts import Accounts
from .envelope import ApiError, ErrorObject, error_body, problem
from .guard import FailedAuths
from .ratelimit import TokenBuckets

JSON = b"application/json"
WWW_AUTHENTICATE = 'Bearer realm="quarry"'
API_KEY = "api_key"  # the scope state member holding the caller's KeyInfo, set by the gate
BRAKE_DELAY = 1.0    # seconds an answer to a braked address is held back (service.guard)
log = logging.getLogger("quarry")


def routed_path(scope: Scope) -> str:
    """The path as Litestar's router matches it: the root path taken off, repeated and
    surrounding slashes collapsed (`litestar.utils.normalize_path`, the router's own)."""
    path = scope.get("path", "")
    if root_path := scope.get("root_path", ""):
        path = path.split(root_path, maxsplit=1)[-1]
    return normalize_path(path)


def is_api_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


class CanonicalPath:
    """Outermost layer: the scope's path becomes the one the router routes, for every layer
    after it. Normalising twice gives the same path, so the router's own pass changes nothing."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope["path"] = routed_path(scope)
            scope["root_path"] = ""  # taken off above; the router must not take it off again
        await self.app(scope, receive, send)


class KeyGate:
    """Checks the Bearer key and the key's request rate of every /v1 request, before Litestar
    routes it, and adds the RateLimit-* headers to the answer. An address that sends very many
    requests without a valid key has its 401 answers slowed for a while (`service.guard`)."""

    def __init__(self, app: ASGIApp, accounts: Accounts, buckets: TokenBuckets,
                 failed_auths: FailedAuths | None = None):
        self.app = app
        self.accounts = accounts
        self.buckets = buckets
        self.failed_auths = failed_auths or FailedAuths()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_api_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = bearer_key(scope)
        info = await anyio.to_thread.run_sync(self.accounts.authenticate, key) if key else None
        if info is None:
            details = ("the API key is unknown or revoked" if key else
                       "send a valid API key as 'Authorization: Bearer qry_...'")
            if braked := self.failed_auths.failed(scope):
                details, retry_after = braked
                await anyio.sleep(BRAKE_DELAY)
                extra = [(b"retry-after", str(retry_after).encode())]
            else:
                extra = []
            await send_error(send, problem("unauthorized", details, "Authorization"),
                             [(b"www-authenticate", WWW_AUTHENTICATE.encode()), *extra])
            return
        decision = self.buckets.take(f"key:{info.id}")
        headers = [(b"ratelimit-limit", str(decision.limit).encode()),
                   (b"ratelimit-remaining", str(decision.remaining).encode()),
                   (b"ratelimit-reset", str(decision.reset).encode())]
        if not decision.allowed:
            details = (f"this key is over its rate of {self.buckets.rate:g} requests per "
                       f"second; retry in {decision.retry_after} s")
            await send_error(send, problem("rate_limited", details),
                             [*headers, (b"retry-after", str(decision.retry_after).encode())])
            return
        scope["state"] = {**scope.get("state", {}), API_KEY: info}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message,  # type: ignore[assignment]
                           "headers": [*message.get("headers", []), *headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def key_required(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Litestar guard of every handler: a /v1 handler runs only with the gate's key identity."""
    if any(is_api_path(path) for path in handler.paths) and \
            API_KEY not in connection.scope.get("state", {}):
        log.error("a /v1 handler was reached without a key: %r", connection.scope.get("path"))
        raise ApiError.one("unauthorized", "send a valid API key as 'Authorization: Bearer "
                           "qry_...'", "Authorization", headers={
                               "WWW-Authenticate": WWW_AUTHENTICATE})


class MethodPolicy:
    """HEAD is answered as the GET of the same path, without the body. OPTIONS is refused like
    any method a path does not take (the API serves no browser cross-origin, and Litestar's
    own OPTIONS answer is an empty 204 outside the envelope). Every 405, the router's and this
    layer's, carries in `Allow` the methods the router has for the path (`allowed_methods`)."""

    def __init__(self, app: ASGIApp, router: Litestar):
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        # Looked up only where it is needed: a search's GET or POST does not pay for it.
        allowed = allowed_methods(self.router, path) if method in ("OPTIONS", "HEAD") else None
        if method == "OPTIONS" and allowed is not None:
            await send_error(send, method_not_allowed(method, path, allowed),
                             [(b"allow", ", ".join(allowed).encode())])
            return
        head = method == "HEAD" and allowed is not None and "GET" in allowed
        if head:
            scope["method"] = "GET"

        async def policed(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                methods = allowed_methods(self.router, path) or []
                headers = [(name, value) for name, value in message.get("headers", [])
                           if name.lower() != b"allow"]
                message = {**message,  # type: ignore[assignment]
                           "headers": [*headers, (b"allow", ", ".join(methods).encode())]}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}  # type: ignore[assignment]
            await send(message)

        await self.app(scope, receive, policed)


def allowed_methods(router: Litestar, path: str) -> list[str] | None:
    """The methods a client may send to `path`, as the router decides (None: no such path).
    OPTIONS is left out, HEAD is in wherever GET is."""
    try:
        # A method no route has: the router answers with the methods it has for the path.
        router.asgi_router.handle_routing(path=path, method="QUARRY-ALLOW")  # type: ignore[arg-type]
    except MethodNotAllowedException as exc:
        methods = {method.strip() for method in (exc.headers or {}).get("allow", "").split(",")}
    except NotFoundException:
        return None
    else:  # a mount (the static files) takes any method; it answers for itself
        return None
    methods.discard("OPTIONS")
    methods.discard("")
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def method_not_allowed(method: str, path: str, allowed: list[str]) -> ErrorObject:
    return problem("method_not_allowed",
                   f"{method} is not allowed on {path}; allowed: {', '.join(allowed)}")


def bearer_key(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and key.strip():
                return key.strip()
            return None
    return None


async def send_error(send: Send, error: ErrorObject, headers: list[tuple[bytes, bytes]]) -> None:
    body = error_body([error])
    await send({"type": "http.response.start", "status": error.code, "headers": [
        (b"content-type", JSON), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
