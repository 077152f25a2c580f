"""``tapline bench ingest`` end to end on a small city: the fleet through the real Mosquitto into two
ingest workers (this process and a ``tapline serve --groups`` subprocess) and a fresh PostgreSQL
database; every recorded value is accounted for."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tapline.bench.ingest import IngestBench, run_ingest_bench
from tests.conftest import PG_ADMIN_URL

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres]


@pytest.fixture
def fresh_db(pg_url: str) -> Iterator[str]:
    """A database of its own: the bench counts every row of its rooms as stored by this run."""
    name = f"tapline_bench_t{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(PG_ADMIN_URL)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_two_workers_store_every_recorded_value_once(
    mqtt_url: str, fresh_db: str, tmp_path: Path
) -> None:
    result = await run_ingest_bench(
        IngestBench(
            sites=16,
            points=20,
            interval=1.0,
            duration=4.0,
            broker=mqtt_url,
            db=fresh_db,
            districts=4,
            references=False,
            workdir=tmp_path,
            workers=2,
            drain_timeout_s=20.0,
        )
    )
    assert result["workers"] == 2
    assert result["recorded_keys"] > 16 * 20 * 3
    assert result["lost"] == 0
    assert result["duplicated"] == 0
    assert result["unexpected"] == 0
    assert result["stored_values"] == result["recorded_keys"]
    assert result["published_values"] == result["recorded_keys"]  # the fleet's own exact count
    assert result["drain_s"] < 5.0  # caught up, not "the count stopped moving for 5 s"
    assert result["cpu_s"]["other_workers"] > 0  # the second worker really ingested its districts
