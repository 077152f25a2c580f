"""Shared fixtures: real services for integration tests.

Tests that need PostgreSQL are marked ``postgres`` and use ``pg_url`` (a fresh database per test
session, dropped afterwards); tests that need Mosquitto are marked ``mosquitto`` and use ``mqtt_url``
plus ``unique_group`` so parallel or repeated runs never share Sparkplug topics.
With ``CI=true`` a missing service fails the test instead of skipping it (the brief: CI must run them).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.helpers import service_missing

PG_ADMIN_URL = os.environ.get("TAPLINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MQTT_URL = os.environ.get("TAPLINE_TEST_MQTT", "mqtt://127.0.0.1:1883")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), 2):
            return True
    except OSError:
        return False


def _missing(service: str, url: str) -> None:
    service_missing(f"{service} is not reachable at {url}")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; dropped at the end."""
    if not _reachable(PG_ADMIN_URL, 5432):
        _missing("PostgreSQL", PG_ADMIN_URL)
    import psycopg

    name = f"tapline_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(PG_ADMIN_URL)
    url = parts._replace(path=f"/{name}").geturl()
    try:
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    """URL of the real Mosquitto broker used by integration tests."""
    if not _reachable(MQTT_URL, 1883):
        _missing("Mosquitto", MQTT_URL)
    return MQTT_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store URL, once a fresh SQLite file and once the session's PostgreSQL database (shared by the
    tests of a session: give rows unique names)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'tapline.db'}"
    pg: str = request.getfixturevalue("pg_url")
    return pg


@pytest.fixture
def unique_group() -> str:
    """A Sparkplug group id no other test (or test run) uses."""
    return f"t{uuid.uuid4().hex[:10]}"
