"""`GET /`: where a browser lands. A small page that links the API documentation, the sign-in
for API tokens and the health check, rather than a redirect to one of them: whoever opens the
bare address is either about to read the docs or to get a key, and a JSON 404 helps neither.
Served like the token pages (service/web.py): their security headers, `no-store`, their HTML
error pages."""

from __future__ import annotations

from litestar import Router, get
from litestar.response import Template

from .web import SecurityHeaders, web_error


@get("/", name="front-page")
async def front_page() -> Template:
    return Template(template_name="front.html")


def front_router() -> Router:
    return Router(path="/", route_handlers=[front_page], middleware=[SecurityHeaders],
                  exception_handlers={Exception: web_error}, include_in_schema=False)
