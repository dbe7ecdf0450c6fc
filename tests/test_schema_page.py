"""The API reference page (/schema): Swagger UI from the package's own files, on this origin,
under the tokens page's security headers. (tests/test_web_browser.py renders it in Chromium.)"""

from __future__ import annotations

import re

from service.web import SECURITY_HEADERS

MEDIA = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def _csp(answer) -> dict[str, str]:
    policy = answer.headers["content-security-policy"]
    return {part.split()[0]: part.partition(" ")[2] for part in policy.split("; ")}


def test_the_page_loads_nothing_from_elsewhere_and_no_inline_script(client):
    page = client.get("/schema")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    references = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert references and all(re.match(r"/[^/]", ref) for ref in references), references
    assert "//" not in page.text.replace("</", "")  # no URL of another host anywhere
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert len(scripts) == 2 and all('src="/' in attrs and body == "" for attrs, body in scripts)
    policy = _csp(page)
    assert policy["script-src"] == "'self'" and policy["connect-src"] == "'self'"
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in page.headers["content-security-policy"]
    for name, value in SECURITY_HEADERS.items():
        if name != "content-security-policy":
            assert page.headers[name] == value, name


def test_every_file_the_page_loads_is_served_here_with_the_security_headers(client):
    page = client.get("/schema")
    for ref in re.findall(r'(?:src|href)="(/[^"]*)"', page.text):
        if ref == "/schema/openapi.json":
            continue  # the document itself (a link of the <noscript> text)
        answer = client.get(ref)
        assert answer.status_code == 200, ref
        suffix = ref[ref.rindex("."):]
        assert answer.headers["content-type"].startswith(MEDIA[suffix]), ref
        assert answer.headers["content-security-policy"] == SECURITY_HEADERS[
            "content-security-policy"], ref
        assert answer.headers["x-content-type-options"] == "nosniff", ref
    bundle = client.get("/schema/static/swagger-ui-bundle.js")
    assert len(bundle.content) > 500_000 and b"SwaggerUIBundle" in bundle.content
    assert b"SwaggerUIBundle(" in client.get("/static/schema.js").content


def test_only_the_files_the_page_needs_are_served_from_the_package(client):
    for path in ("/schema/static/index.html", "/schema/static/swagger-initializer.js",
                 "/schema/static/swagger-ui-bundle.js.map", "/schema/static/..%2Fopenapi.py",
                 "/schema/static/x%00", "/schema/static/x%0Ay"):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"].startswith("text/html"), path
