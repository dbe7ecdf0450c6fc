"""Shared fixtures: a real fixture drop, refreshed into a real snapshot, served by the real app."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from litestar.testing import TestClient

from service.accounts import Accounts
from service.app import create_app
from service.config import Settings
from service.refresh import refresh
from service.snapshots import SnapshotStore
from tests.fixture_drop import write_fixture_drop
from tests.oracle import load


def make_settings(data_dir: Path, **overrides: str) -> Settings:
    env = {"QUARRY_DATA_DIR": str(data_dir), "QUARRY_DUCKDB_THREADS": "2",
           "QUARRY_RATE_LIMIT": "100000",
           "QUARRY_DUCKDB_MEMORY_LIMIT": "1GB", **overrides}
    return Settings.from_env(env)


@contextmanager
def keyed_client(settings: Settings, email: str) -> Iterator[TestClient]:
    """The real app over `settings`' data folder, sending a new key of a new user `email` on
    every request."""
    accounts = Accounts(settings.db_path)
    accounts.create_user(email, "correct horse battery")
    key, _ = accounts.create_key(email, "tests")
    with TestClient(create_app(settings)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {key}"
        yield test_client


@pytest.fixture(scope="session")
def fixture_drop(tmp_path_factory) -> Path:
    drop = tmp_path_factory.mktemp("drop")
    write_fixture_drop(drop)
    return drop


@pytest.fixture(scope="session")
def oracle_rows(fixture_drop):
    return load(fixture_drop)


@pytest.fixture(scope="session")
def served(tmp_path_factory, fixture_drop):
    """(settings, api key) for a data folder holding one snapshot of the fixture drop."""
    settings = make_settings(tmp_path_factory.mktemp("data"))
    refresh(SnapshotStore(settings.data_dir), fixture_drop)
    accounts = Accounts(settings.db_path)
    accounts.create_user("tester@example.com", "correct horse battery")
    key, _ = accounts.create_key("tester@example.com", "tests")
    return settings, key


@pytest.fixture(scope="session")
def client(served):
    settings, key = served
    with TestClient(create_app(settings)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {key}"
        yield test_client


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"
