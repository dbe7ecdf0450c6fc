"""What a new user meets first: `make run`'s demo key, and the page at `/`."""

from __future__ import annotations

import re
import subprocess
import sys

from service.accounts import Accounts
from service.refresh import refresh
from service.snapshots import SnapshotStore
from service.web import SECURITY_HEADERS
from tests.serving import env_for
from tests.test_cli import REPO, quarry

KEY = re.compile(r"qry_[A-Za-z0-9_-]{43}")


def demo(data_dir):
    """`make run`'s set-up step, as `make run` runs it."""
    done = subprocess.run([sys.executable, "-m", "service.demo"], cwd=REPO,
                          env=env_for(data_dir), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_key_is_printed_once_and_never_stored(data_dir, fixture_drop):
    refresh(SnapshotStore(data_dir), fixture_drop)  # so that the set-up makes no demo drop
    first = demo(data_dir)
    keys = KEY.findall(first)
    assert keys and set(keys) == {keys[0]}, first
    key = keys[0]
    accounts = Accounts(data_dir / "quarry.db")
    assert accounts.authenticate(key) is not None
    for path in data_dir.rglob("*"):  # stored only as a hash (SPEC 2)
        assert not path.is_file() or key.encode() not in path.read_bytes(), path

    again = demo(data_dir)
    assert not KEY.search(again), again
    assert "quarry tokens create --user demo@quarry.local --name demo" in again
    made = quarry(data_dir, "tokens", "create", "--user", "demo@quarry.local", "--name", "demo")
    assert accounts.authenticate(made.stdout.strip().splitlines()[-1]) is not None
    assert accounts.authenticate(key) is not None  # the first key still works


def test_old_plain_text_demo_key_is_removed(data_dir, fixture_drop):
    refresh(SnapshotStore(data_dir), fixture_drop)
    accounts = Accounts(data_dir / "quarry.db")
    accounts.create_user("demo@quarry.local", "a long password")
    key, _ = accounts.create_key("demo@quarry.local", "demo")
    (data_dir / "demo-key").write_text(key + "\n")  # as earlier versions left it
    assert not KEY.search(demo(data_dir))
    assert not (data_dir / "demo-key").exists()


def test_the_root_is_a_front_page(client):
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value
    assert page.headers["cache-control"] == "no-store"
    links = set(re.findall(r'href="([^"]+)"', page.text))
    assert {"/schema", "/login", "/health"} <= links
    for link in ("/schema", "/login", "/health", "/schema/openapi.json"):
        assert client.get(link).status_code == 200, link
    assert client.head("/").status_code == 200
