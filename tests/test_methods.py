"""HEAD, OPTIONS and the `Allow` header: HEAD is the GET without its body, OPTIONS is 405 like
any method a path does not take, and every 405 lists exactly the methods the path answers."""

from __future__ import annotations

import httpx
import pytest

from tests.serving import running_server
from tests.test_errors import assert_envelope

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
PATHS = {  # path -> the methods it takes
    "/v1/contacts/search": ["GET", "HEAD", "POST"],
    "/v1/companies/search": ["GET", "HEAD", "POST"],
    "/v1/contacts/ctc_0000001": ["GET", "HEAD"],
    "/v1/companies/cmp_00001": ["GET", "HEAD"],
    "/v1/contacts/export": ["POST"],
    "/v1/companies/export": ["POST"],
    "/health": ["GET", "HEAD"],
    "/schema/openapi.json": ["GET", "HEAD"],
}


@pytest.mark.parametrize("path", PATHS)
def test_every_405_lists_the_methods_the_path_takes(client, path):
    allowed = PATHS[path]
    for method in METHODS:
        answer = client.request(method, path, json={} if method == "POST" else None)
        if method in allowed:
            assert answer.status_code != 405, (method, path, answer.text)
            continue
        if method == "HEAD":
            assert answer.status_code == 405 and answer.content == b""
        else:
            body = assert_envelope(answer, 405, "method_not_allowed")
            assert f"allowed: {', '.join(allowed)}" in body["errors"][0]["details"]
        assert answer.headers["allow"] == ", ".join(allowed), (method, path)


def test_head_is_the_get_without_its_body(client):
    for path in ["/v1/contacts/search?per_page=3", "/v1/companies/search?per_page=2",
                 "/health", "/schema/openapi.json"]:
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == str(len(got.content))


def test_head_and_options_on_a_real_server(served, tmp_path):
    settings_, _ = served
    with running_server(settings_.data_dir, tmp_path / "serve.log") as server:
        with httpx.Client(base_url=server.base, headers=server.headers) as http:
            head = http.head("/v1/companies/search?per_page=2")
            assert head.status_code == 200 and head.content == b""
            assert int(head.headers["content-length"]) == len(
                http.get("/v1/companies/search?per_page=2").content)
            assert http.head("/v1/companies/search", headers={"Authorization": ""}
                             ).status_code == 401
            options = http.options("/v1/contacts/search")
            assert_envelope(options, 405, "method_not_allowed")
            assert options.headers["allow"] == "GET, HEAD, POST"
            assert http.get("/health").status_code == 200  # the connection still serves
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
