"""The exact Content-Type of every kind of answer: one media type, its charset at most once."""

from __future__ import annotations

import pytest

EXPORT_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8",
                "parquet": "application/vnd.apache.parquet",
                "arrow": "application/vnd.apache.arrow.stream"}


@pytest.mark.parametrize("fmt", EXPORT_TYPES)
def test_export_content_type(client, fmt):
    answer = client.post("/v1/companies/export", json={"format": fmt, "limit": 3})
    assert answer.status_code == 200
    assert answer.headers.get_list("content-type") == [EXPORT_TYPES[fmt]]


@pytest.mark.parametrize(("path", "expected"), [
    ("/schema", "text/html; charset=utf-8"),
    ("/schema/openapi.json", "application/json"),
    ("/health", "application/json"),
    ("/v1/companies/search", "application/json"),
    ("/v1/companies/search?per_page=0", "application/json"),
])
def test_page_content_type(client, path, expected):
    answer = client.get(path)
    assert answer.headers.get_list("content-type") == [expected]
