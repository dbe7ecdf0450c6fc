"""The HTTP API: Litestar routes, the gate in front of them, and one error layer.

Request flow: CanonicalPath (the one path every later layer reads) -> AccessLog -> KeyGate (401
for any /v1 request without a valid key, before routing, so nothing is revealed to a caller
without a key) -> MethodPolicy (HEAD, OPTIONS, Allow) -> Litestar routing (404/405) -> the
`key_required` guard -> handler: parse and
validate the request into a Struct -> compile -> run on a worker thread against the snapshot
the request started with -> msgspec-encoded envelope. Every exception on the way becomes an
envelope in `error_response`.
"""

from __future__ import annotations

import logging
import threading
import time
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import anyio
import duckdb
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import ASGIApp, Receive, Scope, Send

from .access_log import AccessLog, note_rows
from .accounts import Accounts
from .compiler import (
    COMPANY_POSITION_SQL,
    COMPANY_RECORDS_SQL,
    CONTACT_POSITION_SQL,
    CONTACT_RECORDS_SQL,
    CompiledQuery,
    compile_companies_query,
    compile_contacts_query,
)
from .config import Settings
from .envelope import (
    ERROR_STATUS,
    ApiError,
    error_body,
    problem,
    records_body,
    success_body,
)
from .export import MEDIA_TYPES, ExportStream, compile_export_query
from .export_slots import ExportSlot, ExportSlots
from .front import front_router
from .gate import (
    API_KEY,
    CanonicalPath,
    KeyGate,
    MethodPolicy,
    allowed_methods,
    key_required,
    method_not_allowed,
)
from .match import COMPANIES, CONTACTS, MatchKind, match_body, match_inputs, parse_match_body
from .match_index import match_index
from .metrics import MEDIA_TYPE as METRICS_TYPE
from .metrics import Metrics, route_template
from .openapi import openapi_document, swagger_page
from .query_slots import QuerySlots, run_query
from .ratelimit import TokenBuckets
from .search_requests import (
    CompanyExport,
    CompanySearch,
    ContactExport,
    ContactSearch,
    SearchRequest,
    parse_json_body,
    parse_query_string,
)
from .snapshots import NoSnapshot, ServingSnapshots, Snapshot, SnapshotStore
from .web import DOCS_SECURITY_HEADERS, web_app_kwargs

MAX_BODY = 64 * 1024
JSON = "application/json"
log = logging.getLogger("quarry")


def create_app(settings: Settings) -> ASGIApp:
    """The whole service as one ASGI app."""
    snapshots = ServingSnapshots(
        SnapshotStore(settings.data_dir, settings.keep_snapshots), duckdb_config(settings))
    accounts = Accounts(settings.db_path, settings.max_keys_per_user)
    web = web_app_kwargs(settings, accounts)  # the "API tokens" pages (service/web.py)
    app = Litestar(
        route_handlers=[
            contacts_search_post, contacts_search_get, companies_search_post,
            companies_search_get, contact_lookup, company_lookup, contacts_export,
            companies_export, contacts_match, companies_match, health, metrics_page,
            schema_json, schema_page, front_router(),
            *web.pop("route_handlers"),
        ],
        **web,
        exception_handlers={Exception: error_response},
        guards=[key_required],
        request_max_body_size=MAX_BODY,
        openapi_config=None,
        logging_config=None,  # the process's logging is the command's (service.logs), not the app's
        on_shutdown=[lambda: snapshots.close(), lambda: metrics.close()],
        state={"snapshots": snapshots,
               "query_slots": QuerySlots(settings.duckdb_threads),
               "query_budget": settings.query_timeout_ms / 1000,
               "exports": ExportSlots(settings.max_exports_per_user, settings.max_exports),
               # An export's worker-thread calls (its start, each chunk) wait mostly for
               # windows built on the export's own threads: they get threads of their own,
               # one per export the server runs, and never hold a search's query slot.
               "export_threads": anyio.CapacityLimiter(settings.max_exports)},
    )
    metrics = Metrics(snapshots, lambda path: route_template(app, path))
    app.state["metrics"] = metrics
    gate = KeyGate(MethodPolicy(app, app), accounts, TokenBuckets(settings.rate_limit))
    return CanonicalPath(AccessLog(gate, metrics))


def duckdb_config(settings: Settings) -> dict[str, Any]:
    """Per-connection limits; locked so that no query can loosen them. The time budget is not
    among them: searches get it from a timer (see `_in_worker`), exports may run long."""
    return {
        "threads": settings.duckdb_threads,
        "memory_limit": settings.duckdb_memory_limit,
        "lock_configuration": True,
    }


# --- searches --------------------------------------------------------------------------------


@post("/v1/contacts/search", status_code=200)
async def contacts_search_post(request: Request) -> Response:
    search = parse_json_body(await _json_body(request), ContactSearch, "contacts search")
    return await _search(request, search, compile_contacts_query)


@get("/v1/contacts/search")
async def contacts_search_get(request: Request) -> Response:
    search = parse_query_string(_query_pairs(request), ContactSearch, "contacts search")
    return await _search(request, search, compile_contacts_query)


@post("/v1/companies/search", status_code=200)
async def companies_search_post(request: Request) -> Response:
    search = parse_json_body(await _json_body(request), CompanySearch, "companies search")
    return await _search(request, search, compile_companies_query)


@get("/v1/companies/search")
async def companies_search_get(request: Request) -> Response:
    search = parse_query_string(_query_pairs(request), CompanySearch, "companies search")
    return await _search(request, search, compile_companies_query)


@get("/v1/contacts/{record_id:str}")
async def contact_lookup(request: Request) -> Response:
    record_id = request.path_params["record_id"]
    return await _lookup(request, "contact", record_id, CONTACT_POSITION_SQL, CONTACT_RECORDS_SQL)


@get("/v1/companies/{record_id:str}")
async def company_lookup(request: Request) -> Response:
    record_id = request.path_params["record_id"]
    return await _lookup(request, "company", record_id, COMPANY_POSITION_SQL, COMPANY_RECORDS_SQL)


async def _search(request: Request, search: SearchRequest,
                  compile_query: Callable[[Any], CompiledQuery]) -> Response:
    snapshot = _snapshot(request)
    compiled = compile_query(search)

    def run(cursor: duckdb.DuckDBPyConnection) -> tuple[list[str], int]:
        positions = [row[0] for row in cursor.execute(compiled.page_sql,
                                                      compiled.page_params).fetchall()]
        records = _records(cursor, compiled.records_sql, positions)
        total = cursor.execute(compiled.count_sql, compiled.count_params).fetchone()[0]
        return records, total

    records, total = await _in_worker(request, snapshot, run)
    note_rows(request.scope, len(records))
    meta = {"page": search.page, "per_page": search.per_page, "total": total,
            "total_pages": -(-total // search.per_page), "dataset": snapshot.version}
    return _raw_ok(records_body(records, meta))


async def _lookup(request: Request, kind: str, record_id: str, position_sql: str,
                  records_sql: str) -> Response:
    snapshot = _snapshot(request)
    record_id = unicodedata.normalize("NFC", record_id)  # ids are NFC, as all text (refresh)

    def run(cursor: duckdb.DuckDBPyConnection) -> list[str]:
        positions = [row[0] for row in cursor.execute(position_sql, [record_id]).fetchall()]
        return _records(cursor, records_sql, positions)

    records = await _in_worker(request, snapshot, run)
    if not records:
        raise ApiError.one("not_found", f"no {kind} with id {record_id!r}", "id")
    note_rows(request.scope, 1)
    return _raw_ok(records_body(records[0], {"dataset": snapshot.version}))


def _records(cursor: duckdb.DuckDBPyConnection, records_sql: str,
             positions: list[int]) -> list[str]:
    if not positions:
        return []
    return [row[0] for row in cursor.execute(records_sql, [positions]).fetchall()]


# --- match ------------------------------------------------------------------------------------


@post("/v1/contacts/match", status_code=200)
async def contacts_match(request: Request) -> Response:
    return await _match(request, CONTACTS)


@post("/v1/companies/match", status_code=200)
async def companies_match(request: Request) -> Response:
    return await _match(request, COMPANIES)


async def _match(request: Request, kind: MatchKind) -> Response:
    inputs = parse_match_body(await _json_body(request), kind)
    snapshot = _snapshot(request)
    keys = snapshot.manifest.get("match_keys")
    if keys is None:
        raise ApiError.one("unavailable", "the current snapshot was built before match keys "
                           "existed; refresh the data to match against it")
    index = match_index(snapshot)
    outcomes, records = await _in_worker(request, snapshot, lambda cursor: match_inputs(
        cursor, index, kind, inputs, keys["hash_check"]))
    note_rows(request.scope, len(records))
    return _raw_ok(match_body(outcomes, records, inputs, snapshot.version))


# --- bulk export ------------------------------------------------------------------------------


@post("/v1/contacts/export", status_code=200)
async def contacts_export(request: Request) -> ASGIApp:
    export = parse_json_body(await _json_body(request), ContactExport, "contacts export")
    return await _export(request, export)


@post("/v1/companies/export", status_code=200)
async def companies_export(request: Request) -> ASGIApp:
    export = parse_json_body(await _json_body(request), CompanyExport, "companies export")
    return await _export(request, export)


async def _export(request: Request, export: ContactExport | CompanyExport) -> ExportBody:
    snapshot = _snapshot(request)
    query = compile_export_query(export)
    key = request.scope["state"][API_KEY]
    # Taken before the first await, so that concurrent requests cannot all pass the check
    # while each is still counting its rows (429 beyond the key's, user's or server's limit).
    slot = request.app.state["exports"].take(key.user_id, key.id)
    running = request.app.state["metrics"].exports
    running.inc()
    slot.on_release = running.dec
    threads = request.app.state["export_threads"]
    try:
        total = await _in_worker(request, snapshot, lambda count_cursor: count_cursor.execute(
            query.count_sql, query.count_params).fetchone()[0])
        stream = await anyio.to_thread.run_sync(
            lambda: ExportStream(snapshot.exports(), query), limiter=threads)
    except BaseException:
        slot.release()
        raise
    return ExportBody(stream, slot, threads, request.scope, media_type=MEDIA_TYPES[export.format],
                      headers={"Quarry-Total-Count": str(total)})


class ExportBody(ASGIStreamingResponse):
    """An export's answer: its chunks (memoryviews of the encoded windows) go to the server
    as they are. Litestar's Stream would copy each into `bytes`, a third of the copying an
    Arrow export did (README, Exports); the server writes them to the socket without joining
    them to the chunk framing (service.server). A client that goes away still cancels the
    stream (ASGIStreamingResponse.send_body listens for the disconnect).

    However the answer ends (whole, the client gone before or during the body, an error
    sending the headers), the stream is closed and the export slot given back, once: at the
    end of the body, before its last message (a client that has it all finds the export
    closed), or else when `__call__` ends. A generator's `finally` would not run for a body
    never started."""

    __slots__ = ("export", "slot", "threads", "scope", "ended")

    def __init__(self, export: ExportStream, slot: ExportSlot, threads: anyio.CapacityLimiter,
                 scope: Scope, **kwargs: Any):
        super().__init__(iterator=(), **kwargs)
        self.export, self.slot, self.threads, self.scope = export, slot, threads, scope
        self.ended = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._end()

    async def _stream(self, send: Send) -> None:
        while (chunk := await anyio.to_thread.run_sync(self.export.next_chunk,
                                                       limiter=self.threads)) is not None:
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        self._end()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.slot.release()
            note_rows(self.scope, self.export.rows)
            # A client that went away stops the export: windows not begun are dropped and
            # the queries running are interrupted.
            self.export.close()


# --- operations ------------------------------------------------------------------------------


@get("/health")
async def health(request: Request) -> Response:
    snapshot = _snapshot(request)
    data = {"status": "ok", "dataset": snapshot.version, "companies": snapshot.companies,
            "contacts": snapshot.contacts}
    return _ok(data, {"dataset": snapshot.version})


@get("/metrics")
async def metrics_page(request: Request) -> Response:
    """SPEC 5: Prometheus text format, no key (service.metrics)."""
    return Response(content=request.app.state["metrics"].text(), media_type=METRICS_TYPE)


@get("/schema/openapi.json")
async def schema_json() -> Response:
    return Response(content=openapi_document(), media_type=JSON)


@get("/schema")
async def schema_page() -> Response:
    return Response(content=swagger_page(), media_type="text/html",  # Litestar adds the charset
                    headers=DOCS_SECURITY_HEADERS)  # scripts from this origin only


# --- helpers ---------------------------------------------------------------------------------


def _snapshot(request: Request) -> Snapshot:
    return request.app.state["snapshots"].current()


async def _in_worker(request: Request, snapshot: Snapshot,
                     work: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
    """Run `work` on its own cursor in a worker thread, within the time budget.

    DuckDB releases the GIL, so worker threads use every core the query slots allow. The budget
    covers the whole of `work` (a page and its count): a timer interrupts the cursor, which
    really stops the query, and an answer that arrives after the deadline is not sent.
    """
    budget = request.app.state["query_budget"]

    def run() -> Any:
        cursor = snapshot.cursor()
        deadline = time.monotonic() + budget
        timer = threading.Timer(budget, cursor.interrupt)
        timer.start()
        try:
            result = work(cursor)
        finally:
            timer.cancel()
            cursor.close()
        if time.monotonic() > deadline:
            raise QueryTimeout()
        return result

    # One of the query slots, shared fairly between users (service.query_slots): 429 rather
    # than a long wait when this user's share is taken or no slot comes free in time.
    key = request.scope["state"][API_KEY]
    async with request.app.state["query_slots"].slot(key.user_id, key.id):
        return await run_query(run)


class QueryTimeout(Exception):
    """The search ran past QUARRY_QUERY_TIMEOUT_MS."""


async def _json_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY:
        raise _too_large()
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != JSON:
        raise ApiError.one("unsupported_media_type",
                           f"send the body as {JSON} (Content-Type was "
                           f"{media_type or 'missing'})")
    return await request.body()


def _too_large() -> ApiError:
    return ApiError.one("payload_too_large",
                        f"the request body is larger than {MAX_BODY // 1024} KiB")


def _query_pairs(request: Request) -> list[tuple[str, str]]:
    query = request.scope.get("query_string", b"").decode("latin-1")
    try:
        return parse_qsl(query, keep_blank_values=True, strict_parsing=False,
                         encoding="utf-8", errors="strict", max_num_fields=1000)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError.one("invalid_input", f"the query string cannot be read: {exc}") from None


def _ok(data: Any, meta: dict[str, Any]) -> Response:
    return Response(content=success_body(data, meta), media_type=JSON, status_code=200)


def _raw_ok(body: bytes) -> Response:
    return Response(content=body, media_type=JSON, status_code=200)


def error_response(request: Request, exc: Exception) -> Response:
    """Every failure, of any kind, as an envelope with the right id and status."""
    if isinstance(exc, ApiError):
        errors, headers = exc.errors, exc.headers
    elif isinstance(exc, NoSnapshot):
        errors, headers = [problem("unavailable", str(exc))], {}
    elif isinstance(exc, (QueryTimeout, duckdb.InterruptException)):
        errors, headers = [problem(
            "query_timeout", "the query ran past the server's time budget and was stopped; "
            "narrow the filters or try again")], {}
    elif isinstance(exc, HTTPException):
        errors, headers = [_http_problem(request, exc)], dict(exc.headers or {})
    else:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        errors, headers = [problem("internal_error",
                                   "an unexpected error occurred; it has been logged")], {}
    return Response(content=error_body(errors), media_type=JSON,
                    status_code=errors[0].code, headers=headers)


def _http_problem(request: Request, exc: HTTPException):
    status = exc.status_code
    if status == 404:
        return problem("not_found", f"no such path: {request.url.path}")
    if status == 405:
        path = request.scope["path"]
        return method_not_allowed(request.method, path,
                                  allowed_methods(request.app, path) or [])
    if status == 413:
        return _too_large().errors[0]
    if status == 415:
        return problem("unsupported_media_type", f"send the body as {JSON}")
    by_status = {code: error_id for error_id, code in ERROR_STATUS.items()}
    if 400 <= status < 500 and status in by_status:
        return problem(by_status[status], str(exc.detail))
    log.error("unexpected HTTP exception %s on %s", status, request.url.path)
    return problem("internal_error", "an unexpected error occurred; it has been logged")
