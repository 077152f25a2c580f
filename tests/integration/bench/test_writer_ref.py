"""R5w: the ingest's writer alone stores every value it is given, in a scratch store that it removes."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tapline.bench.writer_ref import writer_reference
from tapline.store.telemetry import parse_store_url


async def test_the_writer_reference_stores_every_value_and_cleans_up(db_url: str) -> None:
    parsed = parse_store_url(db_url)
    before = _scratch_names(parsed.backend, parsed.target)

    out = await writer_reference(db_url, 12_345, batch_size=2_000)

    assert out["rows"] == 12_345
    assert out["values_per_s"] > 0
    assert _scratch_names(parsed.backend, parsed.target) == before


def _scratch_names(backend: str, target: str) -> set[str]:
    if backend == "sqlite":
        return {p.name for p in Path(target).parent.glob("tapline-wref-*")}
    with psycopg.connect(target) as pg:
        rows = pg.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_wref_%'").fetchall()
    return {str(r[0]) for r in rows}
