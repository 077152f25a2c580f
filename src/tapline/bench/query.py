"""``tapline bench query``: history latency of a console trend over days of stored 5 s data.

One run:
1. **Load** ``rooms × points`` series with ``days`` of samples every ``interval`` seconds, ending at the
   current hour, through the store's own write path (``TelemetryStore.write``: binary COPY on PostgreSQL,
   ``executemany`` in one transaction on SQLite) in time order, ``batch_rows`` rows a call, and run the
   rollup job (``Maintenance.rollup_once``) and the compaction job (``Maintenance.compact_once``: hours
   closed more than ``compact_after_ms`` ago become one block per series and hour) after every loaded
   hour, as the cloud's maintenance task would have; ``compact=False`` keeps every row (the layout before
   compaction, for comparison). The database should be fresh: the figures count what this run wrote.
2. **Measure** the database's size on disk (PostgreSQL: ``pg_total_relation_size`` summed over every
   partition of ``samples``, ``sample_blocks``, ``rollup_1m``, ``rollup_1m_blocks``, ``rollup_1h`` plus
   ``series`` and the small tables, i.e.
   heap + indexes + TOAST; SQLite: the file, its WAL and shared-memory files after a checkpoint, and
   per table from ``dbstat`` where SQLite has it) and divide by the raw rows stored.
3. **Query**, on a store closed and opened again (a fresh connection, no plan or statement cache; the
   operating system's page cache still holds what the load wrote — we cannot drop it without root):
   the windows of ``WINDOWS`` in turn, ``queries`` times each, a random room and point each time,
   through the service layer (``Services.point_history``, which every entry point calls) or with
   ``via="http"`` through ``GET /api/v1/sites/{id}/points/{device}/{name}/history`` on an in-process
   ASGI client. Each query is timed wall-clock; the first query of the phase (cold) is reported apart
   from the rest (warm), and the CPU time of this process and of the PostgreSQL backend is given per
   query.

Windows end at the end of the loaded data (a trend of "the last 7 days") and ask for the step a chart of
``CHART_PIXELS`` pixels needs: the largest of ``NICE_STEPS_S`` not above window / pixels (at least the
sampling interval); a step below the sampling interval means raw values (no step).
"""

from __future__ import annotations

import asyncio
import math
import random
import resource
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tapline.bench.ingest import percentile, postgres_backend_pids
from tapline.bench.procstat import cpu_seconds, machine_busy_seconds
from tapline.ingest.live import LiveState, PointInfo
from tapline.ingest.maintenance import Maintenance
from tapline.services import Services
from tapline.store.telemetry import (
    DAY_MS,
    HOUR_MS,
    Sample,
    SeriesKey,
    TelemetryStore,
    bucket_start,
    open_telemetry_store,
    parse_store_url,
)

__all__ = ["QueryBench", "Window", "chart_step_ms", "point_names", "run_query_bench"]

CHART_PIXELS = 1_000
NICE_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
# Trended points of the standard room (DESIGN §5), in the order a bench with fewer points takes them.
TRENDED = (
    "plc/OutletPressure",
    "plc/InletPressure",
    "plc/Flow",
    "plc/TankLevel",
    "vfd1/Frequency",
    "vfd2/Frequency",
    "vfd1/Current",
    "vfd2/Current",
    "wq/Chlorine",
    "wq/Turbidity",
    "wq/PH",
    "env/Temperature",
    "env/Humidity",
    "power/Voltage",
    "vfd1/Power",
    "vfd2/Power",
)
DISTRICT = "bench"


@dataclass(frozen=True, slots=True)
class Window:
    name: str
    span_ms: int
    step_ms: int | None  # None: raw values


@dataclass(frozen=True)
class QueryBench:
    db: str
    rooms: int = 100
    days: float = 7.0
    interval_s: float = 5.0
    points: int = 2
    queries: int = 200
    via: str = "service"  # or "http"
    batch_rows: int = 50_000
    seed: int = 1
    analyze: bool = True
    """PostgreSQL: ``ANALYZE`` the telemetry tables after loading, as autovacuum would (``_statistics``)."""
    compact: bool = True
    """Run the compaction job after every loaded hour, as the cloud does (False: every value a row)."""


def point_names(count: int) -> list[str]:
    """The first ``count`` trended points of the standard room, then ``aux/AI01``… if more are asked."""
    names = list(TRENDED[:count])
    names += [f"aux/AI{k:02d}" for k in range(1, count - len(names) + 1)]
    return names


def chart_step_ms(span_ms: int, interval_ms: int, pixels: int = CHART_PIXELS) -> int | None:
    """The step a chart of ``pixels`` asks for (see the module docstring); None for raw values."""
    wanted = span_ms / pixels
    if wanted < interval_ms:
        return None
    step_s = max((s for s in NICE_STEPS_S if s * 1000 <= wanted), default=NICE_STEPS_S[0])
    return max(step_s * 1000, interval_ms)


def windows(days: float, interval_ms: int) -> list[Window]:
    """7 days (or the loaded span if shorter) at chart step and at 1 hour, 1 day, 1 hour."""
    loaded = int(days * DAY_MS)
    week = min(7 * DAY_MS, loaded)
    return [
        Window("7d" if week == 7 * DAY_MS else f"{week // HOUR_MS}h", week, chart_step_ms(week, interval_ms)),
        Window("7d@1h" if week == 7 * DAY_MS else f"{week // HOUR_MS}h@1h", week, HOUR_MS),
        Window("1d", min(DAY_MS, loaded), chart_step_ms(min(DAY_MS, loaded), interval_ms)),
        Window("1h", HOUR_MS, chart_step_ms(HOUR_MS, interval_ms)),
    ]


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class _Load:
    rows: int = 0
    write_s: float = 0.0
    rollup_s: float = 0.0
    rollup_rows: int = 0
    compact_s: float = 0.0
    blocks: int = 0
    wall_s: float = 0.0
    cpu_self_s: float = 0.0
    cpu_db_s: float = 0.0


async def _load(
    bench: QueryBench, store: TelemetryStore, ids: dict[SeriesKey, int], start: int, end: int
) -> tuple[_Load, Maintenance]:
    """Write every sample in time order, hour by hour, with a rollup after each hour."""
    interval_ms = round(bench.interval_s * 1000)
    maintenance = Maintenance(store, lambda: end)
    rng = random.Random(bench.seed)  # noqa: S311 - synthetic data, not cryptography
    series = sorted(ids.values())
    # Each series: base + scale × (a daily wave + a little noise); cheap to generate, realistic enough
    # to keep min/max/avg different (the store does not compress, so the values do not change its cost).
    shape = {sid: (rng.uniform(0.2, 40.0), rng.uniform(0.01, 2.0)) for sid in series}
    result = _Load()
    db_pids = postgres_backend_pids(bench.db)
    cpu0, db0, wall0 = _cpu_self(), cpu_seconds(db_pids), time.perf_counter()
    batch: list[Sample] = []

    async def flush() -> None:
        began = time.perf_counter()
        result.rows += await store.write(batch)
        result.write_s += time.perf_counter() - began
        batch.clear()

    for hour in range(start, end, HOUR_MS):
        stamps = range(hour, min(hour + HOUR_MS, end), interval_ms)
        wave = [math.sin(2 * math.pi * (ts % DAY_MS) / DAY_MS) for ts in stamps]
        noise = [rng.random() - 0.5 for _ in range(64)]
        for sid in series:
            base, scale = shape[sid]
            batch += [
                Sample(sid, ts, base + scale * (w + 0.1 * noise[k & 63]), 0)
                for k, (ts, w) in enumerate(zip(stamps, wave, strict=True))
            ]
            if len(batch) >= bench.batch_rows:
                await flush()
        if batch:
            await flush()
        began = time.perf_counter()
        rows = await maintenance.rollup_once(min(hour + HOUR_MS, end))
        result.rollup_s += time.perf_counter() - began
        result.rollup_rows += rows or 0
        if bench.compact:
            began = time.perf_counter()
            blocks = await maintenance.compact_once(min(hour + HOUR_MS, end))
            result.compact_s += time.perf_counter() - began
            result.blocks += blocks or 0
    result.wall_s = time.perf_counter() - wall0
    result.cpu_self_s = _cpu_self() - cpu0
    result.cpu_db_s = cpu_seconds(db_pids) - db0
    return result, maintenance


def _statistics(db: str, analyze: bool) -> dict[str, Any]:
    """PostgreSQL plans the rollup self-join from table statistics; with none (a partition autovacuum has
    not analysed yet, or autovacuum off as on the benchmark box) it estimates 2 rows and picks a nested
    loop that is quadratic in the buckets read. ``analyze`` gives the planner what autovacuum would."""
    parsed = parse_store_url(db)
    if parsed.backend == "sqlite":
        return {"analyze": None, "note": "SQLite: the store never runs ANALYZE; none run here either"}
    import psycopg

    with psycopg.connect(parsed.target, autocommit=True) as pg:
        row = pg.execute("SHOW autovacuum").fetchone()
        autovacuum = str(row[0]) if row else "unknown"
        took = None
        if analyze:
            began = time.perf_counter()
            pg.execute("ANALYZE samples, sample_blocks, rollup_1m, rollup_1h, series")
            took = round(time.perf_counter() - began, 2)
    return {"analyze": analyze, "analyze_s": took, "server_autovacuum": autovacuum}


def disk_usage(db: str) -> dict[str, Any]:
    """Bytes on disk of the telemetry tables (see the module docstring for what is counted)."""
    parsed = parse_store_url(db)
    if parsed.backend == "sqlite":
        path = Path(parsed.target)
        connection = sqlite3.connect(path)
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            tables: dict[str, int] = {}
            try:
                for name, size in connection.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
                    tables[str(name)] = int(size)
            except sqlite3.OperationalError:  # SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
                tables = {}
        finally:
            connection.close()
        files = {p.name: p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file()}
        return {
            "method": "file sizes (db + -wal + -shm) after a WAL checkpoint",
            "total_bytes": sum(files.values()),
            "files": files,
            "tables": tables,
        }
    import psycopg

    with psycopg.connect(parsed.target) as pg:
        tables = {}
        tables_measured = (
            "samples",
            "sample_blocks",
            "rollup_1m",
            "rollup_1m_blocks",
            "rollup_1h",
            "series",
            "rollup_dirty",
            "compact_dirty",
            "rollup_pack_dirty",
            "telemetry_meta",
        )
        for table in tables_measured:
            row = pg.execute(
                "SELECT coalesce(sum(pg_total_relation_size(relid)), pg_total_relation_size(%s::regclass))"
                " FROM pg_partition_tree(%s::regclass)",
                (table, table),
            ).fetchone()
            tables[table] = int(row[0]) if row else 0
    return {
        "method": "pg_total_relation_size (heap + indexes + TOAST) summed over every partition of each"
        " telemetry table",
        "total_bytes": sum(tables.values()),
        "tables": tables,
    }


def _summary(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "p50_ms": rounded(percentile(latencies_ms, 50)),
        "p95_ms": rounded(percentile(latencies_ms, 95)),
        "p99_ms": rounded(percentile(latencies_ms, 99)),
        "max_ms": rounded(max(latencies_ms) if latencies_ms else None),
    }


class _Querier:
    """One history query through the service layer or the HTTP route; returns (rows, source)."""

    def __init__(self, services: Services, via: str) -> None:
        self.services = services
        self.via = via
        self._client: Any = None

    async def __aenter__(self) -> _Querier:
        if self.via == "http":
            import httpx

            from tapline.api.app import create_app
            from tapline.bootstrap import demo_users

            app = create_app(self.services, demo_users("bench"), public_read=True)
            self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def query(self, site: str, point: str, start: int, end: int, step: int | None) -> tuple[int, str]:
        if self._client is None:
            answer = await self.services.point_history(site, point, start, end, step)
            return len(answer.values), answer.resolution
        params: dict[str, int] = {"start": start, "end": end}
        if step is not None:
            params["step"] = step
        response = await self._client.get(f"/api/v1/sites/{site}/points/{point}/history", params=params)
        response.raise_for_status()
        body = response.json()
        return len(body["values"]), str(body["resolution"])


async def _queries(
    bench: QueryBench, store: TelemetryStore, live: LiveState, rolled_up_to: int, end: int
) -> dict[str, Any]:
    services = Services(live, store)
    services.rolled_up_to = lambda: rolled_up_to
    interval_ms = round(bench.interval_s * 1000)
    rng = random.Random(bench.seed + 1)  # noqa: S311 - picks rooms and points, not cryptography
    sites = sorted(live.sites)
    names = point_names(bench.points)
    db_pids = postgres_backend_pids(bench.db)  # the reopened store's connection (PostgreSQL)
    out: dict[str, Any] = {"via": bench.via, "windows": {}}
    async with _Querier(services, bench.via) as querier:
        cold: dict[str, Any] | None = None
        for window in windows(bench.days, interval_ms):
            latencies: list[float] = []
            rows: list[int] = []
            sources: dict[str, int] = {}
            cpu0, db0 = _cpu_self(), cpu_seconds(db_pids)
            for _ in range(bench.queries):
                site, point = rng.choice(sites), rng.choice(names)
                began = time.perf_counter()
                count, source = await querier.query(site, point, end - window.span_ms, end, window.step_ms)
                elapsed = (time.perf_counter() - began) * 1000
                if cold is None:
                    cold = {"window": window.name, "ms": round(elapsed, 3), "rows": count, "source": source}
                    continue  # the cold query is reported alone, not in the warm statistics
                latencies.append(elapsed)
                rows.append(count)
                sources[source] = sources.get(source, 0) + 1
            n = max(len(latencies), 1)
            out["windows"][window.name] = {
                "span_s": window.span_ms // 1000,
                "step_s": None if window.step_ms is None else window.step_ms / 1000,
                "queries": len(latencies),
                **_summary(latencies),
                "mean_ms": round(sum(latencies) / n, 3),
                "rows_min": min(rows, default=0),
                "rows_max": max(rows, default=0),
                "sources": sources,
                "cpu_ms_per_query": {
                    "bench_process": round((_cpu_self() - cpu0) * 1000 / n, 3),
                    "database": round((cpu_seconds(db_pids) - db0) * 1000 / n, 3)
                    if db_pids
                    else "in-process",
                },
            }
        out["cold_first_query"] = cold
    return out


async def run_query_bench(bench: QueryBench) -> dict[str, Any]:
    """Load, measure the size, query (see the module docstring); the figures as a JSON-able dict."""
    if bench.via not in ("service", "http"):
        raise ValueError(f"via must be 'service' or 'http', got {bench.via!r}")
    if bench.rooms < 1 or bench.points < 1 or bench.days <= 0 or bench.interval_s <= 0 or bench.queries < 2:
        raise ValueError("rooms, points, days, interval must be positive and queries at least 2")
    interval_ms = round(bench.interval_s * 1000)
    end = bucket_start(int(time.time() * 1000), HOUR_MS)
    start = end - int(bench.days * DAY_MS)
    sites = [f"PR-{k:04d}" for k in range(1, bench.rooms + 1)]
    names = point_names(bench.points)
    live = LiveState()
    by_device: dict[str, dict[str, PointInfo]] = {}
    for name in names:
        device, _, point = name.partition("/")
        by_device.setdefault(device, {})[point] = PointInfo()
    for site in sites:  # what the rooms' births would have declared (the service checks the point)
        live.register(site, DISTRICT, site)
        for device, points in by_device.items():
            live.declare(site, DISTRICT, device, dict(points))
    machine0 = machine_busy_seconds()
    store = open_telemetry_store(bench.db)
    async with store:
        ids = await store.ensure_series([SeriesKey(s, n) for s in sites for n in names])
        load, maintenance = await _load(bench, store, ids, start, end)
        stored = await store.count()
    statistics = await asyncio.to_thread(_statistics, bench.db, bench.analyze)
    disk = await asyncio.to_thread(disk_usage, bench.db)
    reopened = open_telemetry_store(bench.db)
    async with reopened:
        query_started = time.perf_counter()
        query = await _queries(bench, reopened, live, maintenance.rolled_up_to or end, end)
        query_wall = time.perf_counter() - query_started
    expected = bench.rooms * len(names) * len(range(start, end, interval_ms))
    return {
        "db": parse_store_url(bench.db).backend,
        "rooms": bench.rooms,
        "points": bench.points,
        "point_names": names,
        "days": bench.days,
        "interval_s": bench.interval_s,
        "start_ms": start,
        "end_ms": end,
        "load": {
            "expected_rows": expected,
            "rows": load.rows,
            "stored_rows": stored,
            "batch_rows": bench.batch_rows,
            "wall_s": round(load.wall_s, 2),
            "write_s": round(load.write_s, 2),
            "rollup_s": round(load.rollup_s, 2),
            "rollup_rows": load.rollup_rows,
            "compact": bench.compact,
            "compact_s": round(load.compact_s, 2),
            "blocks": load.blocks,
            "rows_per_s": round(load.rows / load.wall_s) if load.wall_s else None,
            "rows_per_s_in_write": round(load.rows / load.write_s) if load.write_s else None,
            "cpu_s": {
                "bench_process": round(load.cpu_self_s, 2),
                "database": round(load.cpu_db_s, 2) if load.cpu_db_s else "in-process",
            },
        },
        "statistics": statistics,
        "disk": {**disk, "bytes_per_value": round(disk["total_bytes"] / stored, 2) if stored else None},
        "query": {**query, "wall_s": round(query_wall, 2)},
        "machine_busy_cpu_s": round(machine_busy_seconds() - machine0, 2),
    }
