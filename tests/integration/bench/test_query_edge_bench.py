"""``tapline bench query`` and ``tapline bench edge`` through the CLI, at tiny sizes (no timing asserted)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from tapline import cli

WINDOWS = {"24h": "1m", "24h@1h": "1h", "1d": "1m", "1h": "raw"}  # 1 day loaded: the week is 24 h
TWO_ROOMS_ONE_DAY_TWO_POINTS = 2 * 2 * 17_280


def run_query(db: str, out: Path) -> dict[str, Any]:
    args = ["--log-level", "warning", "bench", "query", "--db", db, "--rooms", "2", "--days", "1"]
    args += ["--points", "2", "--queries", "4", "--json", str(out)]
    assert cli.main(args) == 0
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def check_query_result(result: dict[str, Any], backend: str) -> None:
    assert result["db"] == backend
    assert result["point_names"] == ["plc/OutletPressure", "plc/InletPressure"]
    load = result["load"]
    assert load["expected_rows"] == load["rows"] == load["stored_rows"] == TWO_ROOMS_ONE_DAY_TWO_POINTS
    assert load["rollup_rows"] > 0
    assert load["rows_per_s"] > 0
    assert result["disk"]["total_bytes"] > 0
    assert result["disk"]["bytes_per_value"] > 0
    windows = result["query"]["windows"]
    assert set(windows) == set(WINDOWS)
    for name, source in WINDOWS.items():
        window = windows[name]
        assert window["sources"] == {source: window["queries"]}, name
        assert {"p50_ms", "p95_ms", "p99_ms", "max_ms", "rows_min", "rows_max", "cpu_ms_per_query"} <= set(
            window
        )
    assert windows["24h"]["rows_min"] == 1_440  # one bucket a minute: every minute of the day is there
    assert windows["1h"]["rows_max"] == 720  # raw 5 s values
    cold = result["query"]["cold_first_query"]
    assert (cold["window"], cold["source"], cold["rows"]) == ("24h", "1m", 1_440)


def test_bench_query_on_sqlite(tmp_path: Path) -> None:
    result = run_query(f"sqlite:///{tmp_path / 'query.db'}", tmp_path / "query.json")
    check_query_result(result, "sqlite")
    assert result["statistics"]["analyze"] is None


@pytest.mark.postgres
def test_bench_query_on_postgres(pg_url: str, tmp_path: Path) -> None:
    schema = f"bench_{uuid.uuid4().hex[:10]}"  # its own schema: other tests of the session share pg_url
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = f"{pg_url}?options={quote(f'-csearch_path={schema}')}"
        result = run_query(url, tmp_path / "query.json")
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    check_query_result(result, "postgresql")
    assert result["statistics"]["analyze"] is True
    assert set(result["disk"]["tables"]) >= {"samples", "rollup_1m", "rollup_1h"}


def test_bench_edge_reads_the_standard_room_in_few_blocks(tmp_path: Path) -> None:
    out = tmp_path / "edge.json"
    args = ["--log-level", "warning", "bench", "edge", "--duration", "5", "--warmup", "3", "--json", str(out)]
    assert cli.main(args) == 0
    result = json.loads(out.read_text())
    assert {"points", "block_reads_per_cycle", "cycle", "devices", "modbus_requests_per_s", "gateway"} <= set(
        result
    )
    assert result["points"] > 0
    assert result["unknown_units"] == []
    for name, device in result["devices"].items():
        assert device["planned_reads_full_cycle"] <= 4, name
        if device["cycles"]:
            assert device["reads_per_cycle_max"] <= 4, name
    reads = result["block_reads_per_cycle"]
    assert reads["measured_scan_median"] == reads["planned_fast"]
    assert {"p50_ms", "p99_ms", "max_ms"} <= set(result["cycle"]["device"])
    gateway = result["gateway"]
    assert gateway["births"] == 1
    assert gateway["rss_mb"] > 0
    assert gateway["cpu_percent_of_one_core"] is not None
    assert result["modbus_requests_per_s"]["configured_gateway_metric"] > 0
