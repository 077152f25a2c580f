"""``tapline bench ingest``: the fleet generator through the broker into the real cloud ingest.

One run: the cloud (ingest, alarm engine, stores, as ``build_cloud`` wires them) runs in this process,
subscribed to this run's Sparkplug groups only (a unique group prefix, so other hosts' traffic on a
shared broker is not counted); ``tapline sim fleet --cycle K --report all --record FILE`` runs as a
subprocess. Figures:

- ``values_per_s``: values stored (ingest counters) per second over the steady window, from the end of
  the births ramp to the generator's exit; ``drain_s``: how long the store then took to catch up.
- ``lost`` / ``duplicated`` / ``unexpected``: every recorded (site, point, ts) against the rows in the
  store (the database is expected to be fresh: rows are matched by the run's sites and time range).
- ``cpu_s``: generator (rusage of the reaped subprocess tree), broker (``/proc`` of the mosquitto
  process: on a shared broker this includes other clients' traffic), ingest (this process), database
  (PostgreSQL backends of the database, or ``in-process`` for SQLite).
- ``ingest_us_per_value``: ingest CPU over the whole run per value received (births included);
  ``ingest_steady_us_per_value``: the same over the steady window only (what a value costs).
- ``cloud_rss_mb``: this process's peak RSS (``VmHWM``) before the loss accounting starts.
- ``alarm_p50_ms`` / ``alarm_p99_ms``: for every alarm event the engine emits from data or time
  (``AlarmEngine.evaluate`` / ``tick`` in the ingest, not link events), the wall clock when the engine
  returned it minus the event's ``at`` — the sample timestamp the fleet put on the value that made the
  alarm due (plus its rule's on-delay, if any). Generator, broker and cloud share this machine's clock.
  The events are whatever the fleet's physics raises (no injected violations), counted in ``alarm_events``.
- ``references`` (unless ``--no-references``): performance.md §8's R1, R2, R2 with decode, R7, R5 and R9
  measured after the run with its message shape, rate and row count (``bench.references``), and the §9
  ratios: ``ratio_*`` = stored ``values_per_s`` over each reference's values/s (``ratio_r2_decode``,
  goal ≥ 0.7), ``r7_p50_ms`` / ``r7_p99_ms`` and ``ratio_alarm_p99_r7`` (stretch goal ≤ 100).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tapline.alarms.engine import AlarmEngine
from tapline.alarms.events import AlarmEvent
from tapline.bench.procstat import cpu_seconds, machine_busy_seconds, pids_named, rss_mb
from tapline.bootstrap import build_cloud
from tapline.domain.model import Reading
from tapline.ingest.host import IngestSettings
from tapline.mqtt import BrokerUrl
from tapline.runtime import tune_gc
from tapline.sim.fleet_record import read_record
from tapline.sim.names import DISTRICTS
from tapline.store.telemetry import parse_store_url

__all__ = [
    "IngestBench",
    "Loss",
    "ReferenceCounts",
    "account_loss",
    "measure_references",
    "percentile",
    "reference_ratios",
    "run_ingest_bench",
]

Key = tuple[str, str, int]


@dataclass(frozen=True)
class IngestBench:
    sites: int
    points: int
    interval: float
    duration: float
    broker: str
    db: str
    processes: int = 1
    cycle: int = 10
    districts: int = 8
    warmup_s: float = 0.0
    """Seconds after the generator starts that the steady window begins (default: births ramp + 2 s)."""
    drain_timeout_s: float = 60.0
    references: bool = True
    workdir: Path | None = None
    workers: int = 1
    """Ingest workers: this process plus ``workers - 1`` ``tapline serve --groups`` subprocesses, the
    districts dealt round-robin (DESIGN §8 scale-out on one machine)."""
    gc_tuned: bool = True
    """Tune the garbage collector of the in-process cloud as ``tapline serve`` does (``runtime.py``);
    False measures CPython's defaults."""


@dataclass(frozen=True)
class Loss:
    recorded: int
    """Distinct (site, point, ts) keys in the record."""
    stored: int
    """Rows in the store for the run's sites and time range."""
    lost: int
    duplicated: int
    """Rows beyond one per key (the primary key should make this 0)."""
    unexpected: int
    """Stored keys that were never recorded."""


def account_loss(recorded: Iterable[Key], stored: Iterable[Key]) -> Loss:
    """Compare recorded keys (a rebirth may record a key twice: it counts once) with stored rows."""
    wanted = set(recorded)
    rows = Counter(stored)
    found = sum(1 for key in rows if key in wanted)
    return Loss(
        recorded=len(wanted),
        stored=sum(rows.values()),
        lost=len(wanted) - found,
        duplicated=sum(n - 1 for n in rows.values() if n > 1),
        unexpected=sum(1 for key in rows if key not in wanted),
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def stored_keys(db: str, sites: set[str], since_ms: int) -> list[Key]:
    """(site, point, ts) of every stored sample of ``sites`` at or after ``since_ms``."""
    parsed = parse_store_url(db)
    query = "SELECT s.site, s.point, x.ts FROM samples x JOIN series s ON s.id = x.series_id WHERE x.ts >= "
    if parsed.backend == "sqlite":
        connection = sqlite3.connect(parsed.target)
        try:
            rows = connection.execute(query + "?", (since_ms,)).fetchall()
        finally:
            connection.close()
    else:
        import psycopg

        with psycopg.connect(parsed.target) as pg:
            rows = pg.execute(query + "%s", (since_ms,)).fetchall()
    return [(str(site), str(point), int(ts)) for site, point, ts in rows if site in sites]


def postgres_backend_pids(db: str) -> list[int]:
    parsed = parse_store_url(db)
    if parsed.backend == "sqlite":
        return []
    import psycopg

    with psycopg.connect(parsed.target) as pg:
        rows = pg.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(pid) for (pid,) in rows]


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class AlarmLatency:
    """Times the alarm events an ``AlarmEngine`` emits from data and time (see the module docstring)."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []

    def watch(self, engine: AlarmEngine) -> None:
        evaluate, tick = engine.evaluate, engine.tick

        def timed_evaluate(
            site: str, district: str, readings: Iterable[Reading], now_ms: int
        ) -> list[AlarmEvent]:
            return self._record(evaluate(site, district, readings, now_ms))

        def timed_tick(now_ms: int) -> list[AlarmEvent]:
            return self._record(tick(now_ms))

        engine.evaluate = timed_evaluate  # type: ignore[method-assign]
        engine.tick = timed_tick  # type: ignore[method-assign]

    def _record(self, events: list[AlarmEvent]) -> list[AlarmEvent]:
        if events:
            now_ms = time.time() * 1000.0
            self.latencies_ms.extend(now_ms - event.at for event in events)
        return events


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass
class _Progress:
    samples: list[tuple[float, int]] = field(default_factory=list)
    received: list[tuple[float, int, float]] = field(default_factory=list)
    """(time, values received, ingest process CPU seconds) while the generator runs."""

    def steady_cpu_us_per_value(self, warm: float) -> float | None:
        """Ingest CPU per value received from ``warm`` to the generator's exit (births excluded)."""
        window = [entry for entry in self.received if entry[0] >= warm]
        if len(window) < 2 or window[-1][1] <= window[0][1]:
            return None
        return (window[-1][2] - window[0][2]) / (window[-1][1] - window[0][1]) * 1e6

    def at(self, when: float) -> int:
        """Stored count at the last sample taken at or before ``when``."""
        best = 0
        for t, n in self.samples:
            if t <= when:
                best = n
        return best


class _Workers:
    """The extra ingest workers: ``tapline serve`` subprocesses, each owning some districts, read
    through their ``/metrics`` (counters) and ``/proc`` (CPU)."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []
        self.ports: list[int] = []
        self.http = httpx.AsyncClient(timeout=5.0)
        self.last: dict[int, dict[str, float]] = {}

    async def start(self, bench: IngestBench, run_id: str, shares: list[tuple[str, ...]]) -> None:
        env = {**os.environ, "TAPLINE_SECRET": secrets.token_hex(16)}
        for n, share in enumerate(shares, start=2):
            port = _free_port()
            command = [
                sys.executable, "-m", "tapline.cli", "--log-level", "warning", "serve", "--db", bench.db,
                "--broker", bench.broker, "--host-id", f"bench-{run_id}-w{n}", "--groups", ",".join(share),
                "--port", str(port), "--public-read",
            ]  # fmt: skip
            self.processes.append(
                await asyncio.create_subprocess_exec(*command, env=env, stdout=asyncio.subprocess.DEVNULL)
            )
            self.ports.append(port)
        for port in self.ports:
            async with asyncio.timeout(30):
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await self.http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.2)

    async def counters(self) -> dict[str, float]:
        """Sum over the workers of the ingest counters this bench reads (the last good scrape)."""
        total: dict[str, float] = {}
        for port in self.ports:
            with contextlib.suppress(httpx.HTTPError):
                text = (await self.http.get(f"http://127.0.0.1:{port}/metrics")).text
                self.last[port] = _scrape(text)
            for key, value in self.last.get(port, {}).items():
                total[key] = total.get(key, 0.0) + value
        return total

    def cpu(self) -> float:
        return cpu_seconds(p.pid for p in self.processes)

    async def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for process in self.processes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 15)
            if process.returncode is None:
                process.kill()
                await process.wait()
        await self.http.aclose()


_SCRAPED = ("rows_stored_total", "duplicates_total", "readings_total", "messages_total", "shed_total")


def _scrape(text: str) -> dict[str, float]:
    """The ingest counters of one ``/metrics`` page (``tapline_ingest_<name> <value>`` lines)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("tapline_ingest_") and name[15:] in _SCRAPED:
            out[name[15:]] = float(value)
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_ingest_bench(bench: IngestBench) -> dict[str, Any]:
    run_id = f"bi{int(time.time()) % 10**7}"
    prefix = f"{run_id}-"
    all_groups = tuple(prefix + name for name in DISTRICTS[: bench.districts])
    if not 1 <= bench.workers <= len(all_groups):
        raise ValueError(f"workers must be between 1 and the {len(all_groups)} districts")
    groups = all_groups[:: bench.workers]
    workers = _Workers()
    shares = [all_groups[k :: bench.workers] for k in range(1, bench.workers)]
    workdir = bench.workdir or Path(tempfile.mkdtemp(prefix="tapline-bench-"))
    record = workdir / f"{run_id}.rec"
    fleet_json = workdir / f"{run_id}-fleet.json"
    settings = IngestSettings(host_id=f"bench-{run_id}", groups=groups)
    cloud = await build_cloud(bench.db, BrokerUrl.parse(bench.broker), settings.host_id, settings)
    counters = cloud.ingest.counters
    alarms = AlarmLatency()
    if cloud.ingest.alarms is not None:
        alarms.watch(cloud.ingest.alarms.engine)
    db_pids = postgres_backend_pids(bench.db)
    broker_pids = pids_named("mosquitto")[:1]
    progress = _Progress()
    since_ms = int(time.time() * 1000) - 1000
    restore_gc = tune_gc() if bench.gc_tuned else None
    cloud_task = asyncio.create_task(cloud.run(), name="bench-cloud")
    try:
        await workers.start(bench, run_id, shares)
        await asyncio.sleep(2.0)  # connected and subscribed before the first birth
        cpu0 = {
            "workers": workers.cpu(),
            "ingest": _self_cpu(),
            "broker": cpu_seconds(broker_pids),
            "database": cpu_seconds(db_pids),
            "generator": _children_cpu(),
            "machine": machine_busy_seconds(),
        }
        command = [
            sys.executable, "-m", "tapline.cli", "--log-level", "warning", "sim", "fleet",
            "--sites", str(bench.sites), "--points", str(bench.points), "--interval", str(bench.interval),
            "--duration", str(bench.duration), "--broker", bench.broker, "--report", "all",
            "--districts", str(bench.districts), "--group-prefix", prefix, "--ignore-commands",
            "--processes", str(bench.processes), "--record", str(record), "--json", str(fleet_json),
        ]  # fmt: skip
        if bench.cycle:
            command += ["--cycle", str(bench.cycle)]
        started = time.monotonic()
        generator = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.DEVNULL)
        waiter = asyncio.create_task(generator.wait())
        while not waiter.done():
            extra = await workers.counters()
            stored_now = counters.stored + counters.duplicates
            stored_now += round(extra.get("rows_stored_total", 0) + extra.get("duplicates_total", 0))
            progress.samples.append((time.monotonic(), stored_now))
            received = counters.readings + round(extra.get("readings_total", 0))
            progress.received.append((time.monotonic(), received, _self_cpu() + workers.cpu()))
            await asyncio.wait({waiter}, timeout=0.5)
        ended = time.monotonic()
        if generator.returncode != 0:
            raise RuntimeError(f"the fleet generator exited with {generator.returncode}")
        generator_cpu = _children_cpu() - cpu0["generator"]
        published = 0
        with contextlib.suppress(OSError, ValueError):
            import json

            report = json.loads(fleet_json.read_text())
            published = int(report["values"])  # exact: a rate × a time, rounded, was 1 over at times
        # drain: until the stored count reaches what was published or stops moving for 5 s (then the
        # 5 s are counted: a drain of 5.2 s means the count never reached ``published``)
        last, still_since = -1, time.monotonic()
        while time.monotonic() - ended < bench.drain_timeout_s:
            extra = await workers.counters()
            stored_now = counters.stored + counters.duplicates
            stored_now += round(extra.get("rows_stored_total", 0) + extra.get("duplicates_total", 0))
            progress.samples.append((time.monotonic(), stored_now))
            if published and stored_now >= published and not cloud.ingest.writer.has_work:
                break
            if stored_now != last:
                last, still_since = stored_now, time.monotonic()
            elif time.monotonic() - still_since > 5.0:
                break
            await asyncio.sleep(0.2)
        drained = time.monotonic()
        extra = await workers.counters()
        cpu_workers = workers.cpu() - cpu0["workers"]
        cpu_ingest = _self_cpu() - cpu0["ingest"]
        cpu_broker = cpu_seconds(broker_pids) - cpu0["broker"]
        cpu_db = cpu_seconds(db_pids) - cpu0["database"]
        cpu_machine = machine_busy_seconds() - cpu0["machine"]
        cloud_rss = rss_mb(os.getpid(), "VmHWM")
    finally:
        cloud_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cloud_task
        await workers.stop()
        await cloud.close()
        if restore_gc is not None:
            restore_gc()
    births_s = bench.sites / 1000.0 / max(bench.processes, 1)  # --birth-rate 1000 rooms/s per process
    warm = started + (bench.warmup_s or births_s + 2.0)
    window = max(ended - warm, 1e-9)
    values_per_s = (progress.at(ended) - progress.at(warm)) / window
    recorded = ((v.site, v.point, v.ts) for v in read_record(record))
    sites = {f"PR-{k:04d}" for k in range(1, bench.sites + 1)}
    loss = account_loss(recorded, stored_keys(bench.db, sites, since_ms))
    with contextlib.suppress(OSError):
        record.unlink()
    result: dict[str, Any] = {
        "sites": bench.sites,
        "points": bench.points,
        "interval_s": bench.interval,
        "duration_s": bench.duration,
        "db": parse_store_url(bench.db).backend,
        "offered_values_per_s": bench.sites * bench.points / bench.interval,
        "values_per_s": round(values_per_s),
        "published_values": published,
        "stored_values": counters.stored + round(extra.get("rows_stored_total", 0)),
        "ingest_duplicates": counters.duplicates,
        "steady_window_s": round(window, 2),
        "drain_s": round(drained - ended, 2),
        "lost": loss.lost,
        "duplicated": loss.duplicated,
        "unexpected": loss.unexpected,
        "recorded_keys": loss.recorded,
        "stored_rows": loss.stored,
        "alarm_p50_ms": _rounded(percentile(alarms.latencies_ms, 50)),
        "alarm_p99_ms": _rounded(percentile(alarms.latencies_ms, 99)),
        "alarm_events": len(alarms.latencies_ms),
        "cloud_rss_mb": None if cloud_rss is None else round(cloud_rss, 1),
        "workers": bench.workers,
        "gc_tuned": bench.gc_tuned,
        "cpu_s": {
            "generator": round(generator_cpu, 2),
            "broker": round(cpu_broker, 2) if broker_pids else None,
            "ingest": round(cpu_ingest, 2),
            "other_workers": round(cpu_workers, 2),
            "database": round(cpu_db, 2) if db_pids else "in-process",
        },
        "machine_busy_cpu_s": round(cpu_machine, 2),
        "other_cpu_s": round(
            cpu_machine
            - generator_cpu
            - cpu_ingest
            - cpu_workers
            - cpu_broker
            - (cpu_db if db_pids else 0.0),
            2,
        ),
        "ingest_us_per_value": round(
            (cpu_ingest + cpu_workers)
            / max(counters.readings + round(extra.get("readings_total", 0)), 1)
            * 1e6,
            2,
        ),
        "ingest_steady_us_per_value": _rounded(progress.steady_cpu_us_per_value(warm)),
        "ingest_counters": {
            "rejected_by_code": dict(counters.rejected_by_code),
            "messages": counters.messages,
            "readings": counters.readings,
            "rejected": counters.rejected,
            "shed": counters.shed,
            "rebirths_requested": counters.rebirths_requested,
            "store_failures": counters.store_failures,
        },
        "wall_s": round(drained - started, 2),
        "references": {},
    }
    try:
        if bench.references:
            result["references"] = await asyncio.to_thread(
                measure_references,
                bench,
                fleet_json,
                run_id,
                loss.stored,
                values_per_s,
                result["alarm_p99_ms"],
            )
    finally:
        if bench.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def measure_references(
    bench: IngestBench,
    fleet_json: Path,
    tag: str,
    rows: int,
    values_per_s: float,
    alarm_p99_ms: float | None,
    counts: ReferenceCounts | None = None,
) -> dict[str, Any]:
    """R1, R2, R2 with decode, R7, R5, R5w (the ingest's writer alone), R9 of performance.md §8 with
    this run's message shape, message rate and row count, and the ratios (``reference_ratios``)."""
    import json

    from tapline.bench import references as refs
    from tapline.bench.naive import naive_pipeline_reference

    n = counts or ReferenceCounts()
    report = json.loads(fleet_json.read_text())
    msgs = float(report["messages_per_s"]) or 1.0
    shape = refs.MessageShape(
        payload_bytes=round(float(report["bytes_per_s"]) / msgs),
        values_per_message=float(report["values_per_s"]) / msgs,
    )
    broker = BrokerUrl.parse(bench.broker)
    latency = refs.transport_latency_reference(broker, shape, refs.latency_rate(msgs), n.latency_s, tag)
    out: dict[str, Any] = {
        "payload_bytes": shape.payload_bytes,
        "values_per_message": round(shape.values_per_message, 2),
        "broker": refs.broker_reference(broker, shape, n.messages, tag),
        "python_receive": refs.python_receive_reference(broker, shape, n.messages, tag),
        "python_decode": refs.python_decode_reference(broker, shape, n.decoded_messages, tag),
        "transport_latency": latency,
        "r7_p50_ms": latency["p50_ms"],
        "r7_p99_ms": latency["p99_ms"],
        "db_copy": refs.db_copy_reference(bench.db, max(rows, 1)),
        "storage_writer": _writer_reference(bench, max(rows, 1)),
        "naive_pipeline": naive_pipeline_reference(
            broker, bench.db, max(round(shape.values_per_message), 1), n.messages, tag
        ),
    }
    out.update(reference_ratios(out, values_per_s, alarm_p99_ms))
    return out


def _writer_reference(bench: IngestBench, rows: int) -> dict[str, Any]:
    """R5w under the garbage-collector settings the run's cloud had (``serve`` tunes them). The
    references run after the run, in this process, beside what it left on the heap; with CPython's
    default thresholds a full collection every ~70,000 allocations scanned that heap and measured
    the writer at 0.34–0.40 of R5 where it reaches 0.48–0.59 as the cloud runs it."""
    from tapline.bench.writer_ref import writer_reference

    restore = tune_gc() if bench.gc_tuned else None
    try:
        result = asyncio.run(writer_reference(bench.db, rows))
    finally:
        if restore is not None:
            restore()
    result["gc_tuned"] = bench.gc_tuned
    return result


@dataclass(frozen=True)
class ReferenceCounts:
    """How much each reference handles: bounded, so all of them take about half a minute beside a run
    (they share its cores). R2 with decode gets fewer messages: it is the slowest per message."""

    messages: int = 200_000
    """R1, R2, R9."""
    decoded_messages: int = 50_000
    latency_s: float = 3.0


def reference_ratios(
    references: dict[str, Any], values_per_s: float, alarm_p99_ms: float | None
) -> dict[str, float | None]:
    """The §9 ratios: stored values/s over each reference's values/s (``ratio_r2_decode``: goal
    ≥ 0.7, one worker against the receive + decode floor), the storage writer alone over the COPY
    ceiling (``ratio_writer_copy``: goal ≥ 0.5, §9.4), and the alarm p99 over R7's p99 (stretch
    goal ≤ 100). None where a figure is missing."""

    def ratio(name: str) -> float | None:
        reference = references.get(name)
        denominator = reference.get("values_per_s") if isinstance(reference, dict) else None
        return round(values_per_s / denominator, 4) if denominator else None

    r7 = references.get("r7_p99_ms")
    writer, copy = references.get("storage_writer"), references.get("db_copy")
    writer_copy = None
    if isinstance(writer, dict) and isinstance(copy, dict) and copy.get("values_per_s"):
        writer_copy = round(writer["values_per_s"] / copy["values_per_s"], 4)
    return {
        "ratio_broker": ratio("broker"),
        "ratio_python_receive": ratio("python_receive"),
        "ratio_r2_decode": ratio("python_decode"),
        "ratio_copy": ratio("db_copy"),
        "ratio_writer_copy": writer_copy,
        "ratio_naive": ratio("naive_pipeline"),
        "ratio_alarm_p99_r7": round(alarm_p99_ms / r7, 1) if alarm_p99_ms is not None and r7 else None,
    }
