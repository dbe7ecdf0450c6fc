"""A Python client generated from the served OpenAPI document with openapi-python-client, used
unmodified against a real `quarry serve`: what a client's developer does first.

The generator runs offline on the document the server answers at /schema/openapi.json (its
post hooks, which format the code with ruff, are switched off: formatting changes nothing the
client does). The client's own types are used throughout: typed requests, typed answers, typed
errors, and an export that comes back as bytes.
"""

from __future__ import annotations

import datetime
import importlib
import io
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from tests.serving import running_server
from tests.test_cli import REPO

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "quarry_client"


@pytest.fixture(scope="module")
def server(served, tmp_path_factory):
    settings_, _ = served
    with running_server(settings_.data_dir, tmp_path_factory.mktemp("log") / "serve.log") as s:
        yield s


@pytest.fixture(scope="module")
def generated(server, tmp_path_factory):
    """The client package, generated from the served document and imported as it is."""
    folder = tmp_path_factory.mktemp("client")
    document = folder / "openapi.json"
    document.write_bytes(httpx.get(f"{server.base}/schema/openapi.json").content)
    config = folder / "config.yaml"
    config.write_text("post_hooks: []\n")
    done = subprocess.run([str(GENERATOR), "generate", "--path", str(document), "--output-path",
                           str(folder / PACKAGE), "--meta", "none", "--config", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # The generator warns about every part of the document it could not turn into code.
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(folder))
    try:
        yield lambda name: importlib.import_module(f"{PACKAGE}.{name}")
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def api(server, generated):
    client = generated("client").AuthenticatedClient(base_url=server.base, token=server.key)
    with client as opened:
        yield opened


def test_operations_are_named_by_what_they_do(generated):
    for module in ("api.contacts.search_contacts", "api.contacts.search_contacts_by_query",
                   "api.contacts.export_contacts", "api.contacts.get_contact",
                   "api.companies.search_companies", "api.companies.get_company",
                   "api.companies.export_companies", "api.operations.get_health",
                   "api.operations.get_metrics"):
        assert callable(generated(module).sync_detailed), module


def test_a_search_with_several_filters(generated, api):
    models = generated("models")
    search = generated("api.contacts.search_contacts")
    request = models.ContactSearch(
        seniorities=["VP", "Manager", "Director"], exclude_industries=["Retail"],
        locations=["country:United States", "city:London||||United Kingdom"],
        added_after=datetime.datetime(2015, 6, 1, tzinfo=datetime.UTC),
        per_page=5, page=None)
    answer = search.sync_detailed(client=api, body=request)
    assert answer.status_code == 200, answer.content
    page = answer.parsed
    assert isinstance(page, models.ContactPage)
    assert page.meta.page == 1 and page.meta.per_page == 5 and 0 < len(page.data) <= 5
    for contact in page.data:
        assert isinstance(contact, models.Contact)
        assert contact.seniority.lower() in ("vp", "manager", "director")
        assert isinstance(contact.company.created_at, datetime.datetime)
        assert contact.company.created_at >= datetime.datetime(2015, 6, 1,
                                                               tzinfo=datetime.UTC)
        assert contact.company.location.country in ("United States", "United Kingdom")
    # The GET form, through its own generated function, answers the same page.
    by_query = generated("api.contacts.search_contacts_by_query").sync_detailed(
        client=api, seniorities=["VP", "Manager", "Director"], exclude_industries=["Retail"],
        locations=["country:United States", "city:London||||United Kingdom"],
        added_after=datetime.datetime(2015, 6, 1, tzinfo=datetime.UTC), per_page=5)
    assert by_query.status_code == 200 and by_query.content == answer.content


def test_a_lookup(generated, api):
    first = generated("api.companies.search_companies").sync(
        client=api, body=generated("models").CompanySearch(per_page=1)).data[0]
    company = generated("api.companies.get_company").sync(client=api, id=first.id)
    assert isinstance(company, generated("models").CompanyAnswer)
    assert company.data.id == first.id and company.meta.dataset


def test_a_typed_400(generated, api):
    models = generated("models")
    answer = generated("api.contacts.search_contacts").sync_detailed(
        client=api, body=models.ContactSearch(per_page=100, page=101))
    assert answer.status_code == 400
    error = answer.parsed.errors[0]
    assert isinstance(answer.parsed, models.ErrorAnswer) and answer.parsed.data is None
    assert error.id == models.ErrorObjectId.INVALID_INPUT and error.field == "page"


def test_a_typed_401(server, generated):
    models = generated("models")
    client = generated("client").AuthenticatedClient(base_url=server.base,
                                                     token="qry_not-a-key")
    with client as opened:
        answer = generated("api.contacts.get_contact").sync_detailed(client=opened,
                                                                     id="ctc_0001")
    assert answer.status_code == 401
    assert answer.parsed.errors[0].id == models.ErrorObjectId.UNAUTHORIZED
    assert answer.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "csv"])
def test_an_export_read_as_bytes(generated, api, fmt):
    models = generated("models")
    answer = generated("api.companies.export_companies").sync_detailed(
        client=api, body=models.CompanyExport(format_=models.ExportFormat(fmt),
                                              exclude_industries=["Retail"]))
    assert answer.status_code == 200
    exported = answer.parsed.payload.read()
    assert isinstance(exported, bytes) and exported == answer.content
    total = int(answer.headers["quarry-total-count"])
    if fmt == "parquet":
        assert pq.read_table(io.BytesIO(exported)).num_rows == total
    elif fmt == "arrow":
        assert ipc.open_stream(exported).read_all().num_rows == total
    else:
        assert exported.decode().count("\n") == total + 1
    assert total > 10
