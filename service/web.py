"""The "API tokens" pages: sign in, list, create and revoke one's own API keys (SPEC section 2).

Server-rendered (Jinja templates, one small static script for the copy button and the revoke
confirmation). Everything the app needs comes from `web_app_kwargs`, merged into the Litestar
constructor in `create_app`:

- the pages, in one Router that adds the security headers to every answer and answers its own
  errors as HTML (a refused CSRF check is a 403 page, never a 500);
- Litestar's CSRF protection (double-submit cookie signed with the session secret) for every
  form, with the JSON API paths (/v1, /health, /schema) excluded, so those answer as before;
- the template engine.

Who is signed in comes from a server-side session (see web_auth). The form that creates a key
is answered with a redirect (POST/redirect/GET), so reloading the page cannot create a second
key. The new key crosses that redirect server-side: held in the users database for the session
that created it, sealed with the session id (which only the browser's cookie holds), for at most
NEW_KEY_LIFETIME, and deleted by the page view that shows it, once. It never goes into a URL, a
cookie, a header or a log line; if the redirect is never followed, the key stays unseen (it is
listed, and can be revoked). Passwords and keys are never logged; a failed sign-in is logged
without the email, since people sometimes type their password into it.

The list shows active keys PAGE_SIZE to a page, newest first; revoked ones are folded away
below it, paged the same way.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from litestar import Request, Response, Router, get, post
from litestar.config.csrf import CSRFConfig
from litestar.exceptions import HTTPException, PermissionDeniedException
from litestar.file_system import BaseLocalFileSystem
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from .accounts import (
    MAX_KEY_NAME_LENGTH,
    AccountError,
    Accounts,
    KeyInfo,
    KeyLimitReached,
    User,
)
from .config import Settings
from .openapi import DOCS_STATIC, SWAGGER_FILES, SWAGGER_UI
from .web_auth import SESSION_LIFETIME, LoginThrottle, WebSessions, WebSettings

SESSION_COOKIE = "quarry_session"
CSRF_COOKIE = "quarry_csrf"
TOKENS_PATH = "/settings/tokens"
PAGE_SIZE = 10  # keys a page, in each of the two lists
MAX_PAGE_DIGITS = 6
HERE = Path(__file__).parent
TEMPLATES, STATIC = HERE / "templates", HERE / "static"
# The JSON API keeps its own rules: no CSRF check, no cookie set on it.
API_PATHS = [r"^/v1(/|$)", r"^/health$", r"^/schema(/|$)"]

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}

# The /schema page's: the same, but Swagger UI's stylesheet draws its icons as data: images
# (an image cannot run script or send anything; scripts still come from this origin only).
DOCS_SECURITY_HEADERS = {**SECURITY_HEADERS, "content-security-policy": SECURITY_HEADERS[
    "content-security-policy"].replace("img-src 'self'", "img-src 'self' data:")}

log = logging.getLogger("quarry.web")


def web_app_kwargs(settings: Settings, accounts: Accounts,
                   environ: Mapping[str, str] = os.environ,
                   clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Litestar constructor arguments for the pages: `route_handlers` (to append to the API's),
    `template_config` and `csrf_config`."""
    web = WebSettings.from_env(settings.data_dir, environ)
    pages = WebPages(accounts, WebSessions(settings.db_path), LoginThrottle(clock=clock), web)
    return {
        "route_handlers": [pages.router()],
        "template_config": TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine),
        "csrf_config": CSRFConfig(
            secret=web.derived("csrf"), cookie_name=CSRF_COOKIE, cookie_httponly=True,
            cookie_secure=web.secure_cookies, cookie_samesite="lax", exclude=API_PATHS),
    }


class WebPages:
    def __init__(self, accounts: Accounts, sessions: WebSessions, throttle: LoginThrottle,
                 web: WebSettings) -> None:
        self.accounts, self.sessions, self.throttle, self.web = accounts, sessions, throttle, web

    def router(self) -> Router:
        handlers = [self._login_page(), self._login(), self._logout(), self._settings(),
                    self._tokens_page(), self._create_key(), self._revoke_key()]
        static = create_static_files_router(path="/static", directories=[STATIC],
                                            file_system=ShippedFiles(STATIC), name="web-static")
        docs = create_static_files_router(  # Swagger UI's files for the /schema page
            path=DOCS_STATIC, directories=[SWAGGER_UI],
            file_system=ShippedFiles(SWAGGER_UI, names=SWAGGER_FILES), name="docs-static")
        return Router(path="/", route_handlers=[*handlers, static, docs],
                      middleware=[SecurityHeaders], exception_handlers={Exception: web_error},
                      include_in_schema=False)

    # --- signing in and out ------------------------------------------------------------------

    def _login_page(self):
        @get("/login", name="web-login-page")
        async def login_page(request: Request) -> Response:
            if await self.current_user(request) is not None:
                return Redirect(TOKENS_PATH, status_code=303)
            notice = "You have signed out." if "signed_out" in request.query_params else None
            return _page("login.html", notice=notice)
        return login_page

    def _login(self):
        @post("/login", name="web-login", status_code=200)
        async def login(request: Request) -> Response:
            form = await request.form()
            email, password = _field(form, "email").strip(), _field(form, "password")
            address = request.client.host if request.client else "unknown"
            if not email or not password:
                error = "Enter your email address." if not email else "Enter your password."
                return _page("login.html", 400, error=error, email=email)
            wait = self.throttle.retry_after(email, address)
            if wait:
                log.warning("web sign-in refused after repeated failures (from %s)", address)
                return _page("login.html", 429, {"retry-after": str(wait)}, email=email,
                             error="Too many failed sign-in attempts. Try again in "
                                   f"{_minutes(wait)}.")
            self.throttle.attempt(email, address)
            user = await anyio.to_thread.run_sync(self.accounts.check_password, email, password)
            if user is None:
                log.warning("web sign-in failed (from %s)", address)
                return _page("login.html", 400, email=email, error="Wrong email or password.")
            self.throttle.succeeded(email, address)
            old = request.cookies.get(SESSION_COOKIE)
            if old:
                await anyio.to_thread.run_sync(self.sessions.end, old)
            session_id = await anyio.to_thread.run_sync(self.sessions.start, user.id, user.email)
            log.info("web sign-in: user %s (from %s)", user.id, address)
            response = Redirect(TOKENS_PATH, status_code=303)
            response.set_cookie(SESSION_COOKIE, session_id, path="/", httponly=True,
                                samesite="lax", secure=self.web.secure_cookies,
                                max_age=int(SESSION_LIFETIME.total_seconds()))
            return response
        return login

    def _logout(self):
        @post("/logout", name="web-logout", status_code=303)
        async def logout(request: Request) -> Response:
            session_id = request.cookies.get(SESSION_COOKIE)
            if session_id:
                await anyio.to_thread.run_sync(self.sessions.end, session_id)
            response = Redirect("/login?signed_out", status_code=303)
            response.delete_cookie(SESSION_COOKIE, path="/")
            return response
        return logout

    # --- keys --------------------------------------------------------------------------------

    def _settings(self):
        @get("/settings", name="web-settings")
        async def settings() -> Response:
            return Redirect(TOKENS_PATH, status_code=303)
        return settings

    def _tokens_page(self):
        @get(TOKENS_PATH, name="web-tokens")
        async def tokens_page(request: Request) -> Response:
            user = await self.current_user(request)
            if user is None:
                return Redirect("/login", status_code=303)
            pages, error = _page_numbers(request.query_params)
            new_keys = await anyio.to_thread.run_sync(
                self.sessions.take_new_keys, request.cookies.get(SESSION_COOKIE, ""))
            return await self._tokens(user, 400 if error else 200, pages=pages,
                                      list_error=error, new_keys=new_keys)
        return tokens_page

    def _create_key(self):
        @post(TOKENS_PATH, name="web-create-key", status_code=200)
        async def create_key(request: Request) -> Response:
            user = await self.current_user(request)
            if user is None:
                return Redirect("/login", status_code=303)
            name = _field(await request.form(), "name").strip()
            if not name:
                error = "Give the token a name, such as the app or machine that will use it."
            elif len(name) > MAX_KEY_NAME_LENGTH:
                error = (f"The name is too long ({len(name)} characters); use at most "
                         f"{MAX_KEY_NAME_LENGTH}.")
            else:
                try:
                    key, info = await anyio.to_thread.run_sync(
                        self.accounts.create_key, user.email, name)
                except KeyLimitReached as exc:
                    return await self._tokens(
                        user, 409, name=name,
                        error=f"You already have {exc.limit} active tokens, the most an "
                              "account may have. Revoke one you no longer use, then create "
                              "the new one.")
                except AccountError as exc:
                    error = _sentence(str(exc).replace("key name", "the name"))
                else:
                    log.info("web: user %s created key %s", user.id, info.prefix)
                    await anyio.to_thread.run_sync(
                        self.sessions.hold_new_key, request.cookies[SESSION_COOKIE], user.id,
                        key, info.name)
                    return Redirect(TOKENS_PATH, status_code=303)
            return await self._tokens(user, 400, error=error, name=name)
        return create_key

    def _revoke_key(self):
        @post(f"{TOKENS_PATH}/revoke", name="web-revoke-key", status_code=200)
        async def revoke_key(request: Request) -> Response:
            user = await self.current_user(request)
            if user is None:
                return Redirect("/login", status_code=303)
            form = await request.form()
            prefix = _field(form, "prefix").strip()
            pages = _page_numbers(form)[0]  # back to the page the form was on
            keys = await anyio.to_thread.run_sync(self.accounts.list_keys, user.email)
            key = next((key for key in keys if key.prefix == prefix), None)
            if key is None:
                # Someone else's key, or a made-up prefix: the same answer, and nothing changes.
                log.warning("web: user %s asked to revoke a key they do not have", user.id)
                return await self._tokens(user, 404, pages=pages,
                                          error="There is no such token among yours.")
            if key.revoked_at is not None:
                return await self._tokens(
                    user, pages=pages,
                    notice=f"The token “{key.name}” ({key.prefix}…) was already revoked.")
            if _field(form, "confirmed") != "yes":
                return _page("revoke.html", title="Revoke token", user=user, key=_row(key),
                             page=pages[0])
            try:
                await anyio.to_thread.run_sync(
                    lambda: self.accounts.revoke_key(key.prefix, user_id=user.id))
            except AccountError as exc:
                return await self._tokens(user, 409, pages=pages, error=_sentence(str(exc)))
            log.info("web: user %s revoked key %s", user.id, key.prefix)
            return await self._tokens(
                user, pages=pages,
                notice=f"The token “{key.name}” ({key.prefix}…) is revoked: requests "
                       "with it are refused from now on.")
        return revoke_key

    # --- helpers -----------------------------------------------------------------------------

    async def current_user(self, request: Request) -> User | None:
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id:
            return None
        return await anyio.to_thread.run_sync(self._user_of_session, session_id)

    def _user_of_session(self, session_id: str) -> User | None:
        session = self.sessions.get(session_id)
        if session is None:
            return None
        user = self.accounts.get_user(session.email)
        return user if user is not None and user.id == session.user_id else None

    async def _tokens(self, user: User, status: int = 200, pages: tuple[int, int] = (1, 1),
                      **context: Any) -> Response:
        keys = await anyio.to_thread.run_sync(self.accounts.list_keys, user.email)
        active = [_row(key) for key in keys if key.revoked_at is None]
        revoked = [_row(key) for key in keys if key.revoked_at is not None]
        return _page("tokens.html", status, title="API tokens", user=user,
                     active=_paged(active, pages[0]), revoked=_paged(revoked, pages[1]),
                     revoked_open=pages[1] > 1, max_name=MAX_KEY_NAME_LENGTH,
                     max_keys=self.accounts.max_keys_per_user, **context)


def _page(template: str, status: int = 200, headers: dict[str, str] | None = None,
          **context: Any) -> Template:
    return Template(template_name=template, context=context, status_code=status,
                    headers=headers or {})


def _page_numbers(params: Any) -> tuple[tuple[int, int], str | None]:
    """The pages asked for (`page` of the active keys, `revoked_page` of the revoked ones), and
    an error for a malformed one (which then shows page 1). A page past the end shows the last
    one: revoking the last key of a page lands there."""
    numbers, error = [], None
    for name in ("page", "revoked_page"):
        text = _field(params, name).strip() or "1"
        if text.isascii() and text.isdigit() and len(text) <= MAX_PAGE_DIGITS and int(text):
            numbers.append(int(text))
        else:
            numbers.append(1)
            error = "The page number in the address must be a whole number from 1 up."
    return (numbers[0], numbers[1]), error


def _paged(rows: list[dict[str, Any]], number: int) -> dict[str, Any]:
    """One page of `rows`, with what the pager needs."""
    count = max(1, math.ceil(len(rows) / PAGE_SIZE))
    number = min(number, count)
    return {"rows": rows[(number - 1) * PAGE_SIZE: number * PAGE_SIZE], "total": len(rows),
            "number": number, "count": count}


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _minutes(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def _row(key: KeyInfo) -> dict[str, Any]:
    """A key as the page shows it (times in UTC)."""
    return {
        "name": key.name, "prefix": key.prefix, "state": key.state,
        "created": _when(key.created_at), "created_iso": _iso(key.created_at),
        "last_used": _ago(key.last_used_at) if key.last_used_at else "Never",
        "last_used_iso": _iso(key.last_used_at), "last_used_full": _when(key.last_used_at),
        "revoked": _when(key.revoked_at), "revoked_iso": _iso(key.revoked_at),
    }


def _iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def _ago(moment: datetime) -> str:
    seconds = (datetime.now(UTC) - moment).total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            if unit == "day" and count > 30:
                return _when(moment)
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "Just now"


class ShippedFiles(BaseLocalFileSystem):
    """The files that were in `folder` when the server started (those of `names`, if given),
    and nothing else: any other path (a NUL byte, a newline, `..`, a folder) is not found, a
    404, before it reaches the operating system, which would refuse some with an error (500)."""

    def __init__(self, folder: Path, names: tuple[str, ...] | None = None) -> None:
        self.files = {os.path.normpath(folder.resolve() / path.name) for path in folder.iterdir()
                      if path.is_file() and (names is None or path.name in names)}

    async def info(self, path: Any, **kwargs: Any) -> Any:
        if not isinstance(path, str | os.PathLike) or os.path.normpath(path) not in self.files:
            raise FileNotFoundError(path)
        return await super().info(path, **kwargs)


# --- security headers and errors ---------------------------------------------------------------


class SecurityHeaders:
    """Adds the security headers, and `Cache-Control: no-store` to pages, to every answer of
    the pages' router (errors get them from `web_error`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cache = "no-cache" if scope["path"].startswith(("/static/", f"{DOCS_STATIC}/")) \
            else "no-store"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_security_headers(message.get("headers", []), cache)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _with_security_headers(headers: Any, cache: str) -> list[tuple[bytes, bytes]]:
    headers = list(headers)
    present = {name.lower() for name, _ in headers}
    for name, value in (*SECURITY_HEADERS.items(), ("cache-control", cache)):
        if name.encode() not in present:
            headers.append((name.encode(), value.encode()))
    return headers


def web_error(request: Request, exc: Exception) -> Response:
    """Any failure on a page, as a small HTML page (the API's envelope is for the API)."""
    if isinstance(exc, PermissionDeniedException):
        status, title, message = 403, "Form expired", (
            "This form could not be verified: it may come from an old page or from another "
            "site. Go back, reload the page and try again.")
    elif isinstance(exc, HTTPException) and exc.status_code < 500:
        status, title, message = exc.status_code, "Request refused", (
            "The page could not handle this request. Go back and try again.")
        if status == 404:
            title, message = "Page not found", "There is no page at this address."
        elif status == 413:
            message = "The form sent was too large."
    else:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        status, title, message = 500, "Something went wrong", (
            "Something went wrong on our side; it has been logged. Please try again.")
    body = request.app.template_engine.get_template("error.html").render(
        title=title, message=message)
    headers = dict(_with_security_headers([], "no-store"))
    return Response(content=body, status_code=status, media_type="text/html",
                    headers={name.decode(): value.decode() for name, value in headers.items()})
