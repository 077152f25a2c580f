"""Fixtures of the telemetry store suites: one store URL per backend, each test its own database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from tapline.store.telemetry import StoreSettings, TelemetryStore, open_telemetry_store
from tests.integration.store.common import MakeStore


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL with nothing in it yet, for each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'telemetry.db'}"
        return
    yield fresh_schema_url(request.getfixturevalue("pg_url"))


def fresh_schema_url(base: str) -> str:
    """``base`` with a new, empty schema first on its ``search_path``."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{base}?options=-csearch_path%3D{schema}&application_name={schema}"


@pytest.fixture
def make_pg_store(pg_url: str) -> MakeStore:
    """PostgreSQL only: stores on one fresh schema (for races between connections)."""
    url = fresh_schema_url(pg_url)

    def make(settings: StoreSettings | None = None) -> TelemetryStore:
        return open_telemetry_store(url, settings)

    return make


@pytest.fixture
def make_store(store_url: str) -> MakeStore:
    def make(settings: StoreSettings | None = None) -> TelemetryStore:
        return open_telemetry_store(store_url, settings)

    return make


@pytest.fixture
async def store(make_store: MakeStore) -> AsyncIterator[TelemetryStore]:
    async with make_store() as opened:
        yield opened
