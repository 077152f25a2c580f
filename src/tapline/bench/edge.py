"""``tapline bench edge``: one ``tapline edge`` gateway polling one simulated room on loopback.

``layout`` is the room's Modbus layout: ``standard`` (the simulator's room as it comes, one unit id
per device) or ``concentrator`` (a 4-pump room whose PLC mirrors every device into one holding table
on one unit id, 80 points; see ``registers.layout``). Block reads are planned and reported per unit id,
the way the gateway polls: devices sharing a unit are read together.

Processes (so each one's CPU is its own):
- the room: ``tapline sim rooms --sites 1`` (the simulator's Modbus TCP server, physics stepped every
  second), a subprocess; it writes the gateway's room file, which the bench copies with two changes:
  the Sparkplug group becomes a unique ``bench-e…`` id (other hosts on a shared broker never command
  this node) and the bus points at the bench's Modbus tap;
- the gateway: ``tapline edge --config … --primary-host ''`` (no host to wait for), a subprocess, the
  process measured;
- this process: the MQTT broker when none is given (the embedded amqtt broker, as in ``tapline demo``),
  a subscriber to the node's births and node data (the gateway's own metrics), and the tap.

The tap is a TCP forwarder between the gateway and the Modbus server that reads the MBAP headers
(unit id, function, transaction id) and timestamps each request as it arrives and each response as it
is passed on. It adds one loopback hop to every request (so cycle times here are, if anything, longer
than without it) and gives what the gateway's metrics do not: block reads per device per cycle and the
distribution of cycle times. A device's *cycle* is a run of consecutive requests to its unit id with
less than half a fast period between them (the poller staggers devices over the period, so runs never
merge); its time is from the first request's arrival to the last response's departure. A *room scan*
is the k-th cycle of every device together: reads summed, and the bus time they need summed (what one
cycle would take if the devices were polled back to back).

From ``/proc`` of the gateway over the measured window (after ``warmup_s``): CPU (utime + stime) as a
percentage of one core, ``VmRSS`` at the end and ``VmHWM`` (peak). From its node metrics (NBIRTH, then
NDATA every 30 s): per-device requests, mean and max latency, the bus's achieved and configured
requests per second and overruns. From its log (stderr at level warning): warnings and errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tapline.bench.ingest import percentile
from tapline.bench.procstat import cpu_seconds, machine_busy_seconds, rss_mb
from tapline.broker import EmbeddedBroker, pick_port
from tapline.edge.config import DeviceConfig, load_room
from tapline.edge.poller import plan_unit
from tapline.mqtt import BrokerUrl, Connection, Message, run_session
from tapline.sparkplug.codec import decode_payload

__all__ = ["Cycle", "EdgeBench", "ModbusTap", "cycles_of", "room_scans", "run_edge_bench"]

MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length (unit id + PDU), unit id


@dataclass(frozen=True)
class EdgeBench:
    duration_s: float = 60.0
    warmup_s: float = 15.0
    broker: str | None = None  # None: an embedded amqtt broker in this process
    seed: int = 1
    workdir: Path | None = None
    layout: str = "standard"  # or "concentrator" (see the module docstring)


@dataclass(frozen=True, slots=True)
class Request:
    unit: int
    function: int
    sent: float  # arrival at the tap from the gateway (monotonic s)
    answered: float  # departure of the response towards the gateway


@dataclass(frozen=True, slots=True)
class Cycle:
    unit: int
    start: float
    end: float
    reads: int


def cycles_of(requests: Sequence[Request], gap_s: float) -> dict[int, list[Cycle]]:
    """Per unit, its cycles: runs of its requests less than ``gap_s`` apart (see the module docstring)."""
    out: dict[int, list[Cycle]] = {}
    open_runs: dict[int, list[Request]] = {}

    def close(unit: int) -> None:
        run = open_runs.pop(unit)
        out.setdefault(unit, []).append(Cycle(unit, run[0].sent, run[-1].answered, len(run)))

    previous: int | None = None
    for request in sorted(requests, key=lambda r: r.sent):
        run = open_runs.get(request.unit)
        if run is not None and (previous != request.unit or request.sent - run[-1].answered >= gap_s):
            close(request.unit)
        open_runs.setdefault(request.unit, []).append(request)
        previous = request.unit
    for unit in list(open_runs):
        close(unit)
    return out


def room_scans(cycles: Sequence[Cycle], fast_s: float, window: tuple[float, float]) -> list[list[Cycle]]:
    """The cycles started in each whole fast period of ``window``: every device is polled once a period,
    so each holds one cycle per fast-polled device (plus the slow-only ones when their class is due)."""
    periods = int((window[1] - window[0]) // fast_s)
    scans: list[list[Cycle]] = [[] for _ in range(periods)]
    for cycle in cycles:
        index = int((cycle.start - window[0]) // fast_s)
        if 0 <= index < periods:
            scans[index].append(cycle)
    return scans


class ModbusTap:
    """TCP forwarder to a Modbus TCP server that records every request/response pair (``requests``)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.requests: list[Request] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        pending: dict[int, tuple[int, int, float]] = {}
        loop = asyncio.get_running_loop()

        async def frames(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
                while True:
                    header = await src.readexactly(MBAP.size)
                    tid, _, length, unit = MBAP.unpack(header)
                    body = await src.readexactly(length - 1)
                    now = loop.time()
                    if upstream:
                        pending[tid] = (unit, body[0] if body else 0, now)
                    dst.write(header + body)
                    await dst.drain()
                    if not upstream and tid in pending:
                        unit_id, function, sent = pending.pop(tid)
                        self.requests.append(Request(unit_id, function, sent, loop.time()))
            dst.close()

        self._spawn(frames(reader, up_writer, True))
        self._spawn(frames(up_reader, writer, False))


@dataclass
class NodeWatch:
    """The gateway's node metrics from NBIRTH and NDATA: ``reports`` of (monotonic time, {name: value})."""

    names: dict[int, str] = field(default_factory=dict)
    reports: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    device_points: dict[str, int] = field(default_factory=dict)
    births: int = 0

    async def on_message(self, message: Message) -> None:
        parts = message.topic.split("/")
        if len(parts) < 4:
            return
        kind = parts[2]
        payload = decode_payload(message.payload)
        if kind == "NBIRTH":
            self.births += 1
            self.names = {m.alias: m.name for m in payload.metrics if m.alias is not None and m.name}
        elif kind == "DBIRTH" and len(parts) == 5:
            self.device_points[parts[4]] = sum(
                1 for m in payload.metrics if m.name and not m.name.startswith("Device Control/")
            )
            return
        elif kind != "NDATA":
            return
        values = {}
        for metric in payload.metrics:
            name = metric.name or self.names.get(metric.alias or -1)
            if name and (name.startswith("Device/") or name.startswith("Bus/")):
                values[name] = metric.value
        if values:
            self.reports.append((time.monotonic(), values))

    def last(self, before: float | None = None) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for at, values in self.reports:
            if before is None or at <= before:
                merged.update(values)
        return merged


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {
        "p50_ms": ms(percentile(values, 50)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(max(values) if values else None),
    }


async def _wait_for(path: Path, process: asyncio.subprocess.Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(path.exists):
        if process.returncode is not None:
            raise RuntimeError(f"the simulated room exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path} after {timeout_s} s")
        await asyncio.sleep(0.1)


async def _stop(process: asyncio.subprocess.Process, timeout_s: float = 10.0) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tapline.cli", "--log-level", "warning", *args]


async def run_edge_bench(bench: EdgeBench) -> dict[str, Any]:
    """Run the room, the gateway and the tap for ``warmup_s + duration_s``; the figures as a dict."""
    workdir = bench.workdir or Path(tempfile.mkdtemp(prefix="tapline-bench-edge-"))
    broker: EmbeddedBroker | None = None
    if bench.broker is None:
        port, _ = pick_port("127.0.0.1", 18830)
        broker = EmbeddedBroker("127.0.0.1", port)
        await broker.start()
        broker_url = broker.url
    else:
        broker_url = bench.broker
    group = f"bench-e{uuid.uuid4().hex[:8]}"
    room_port, _ = pick_port("127.0.0.1", 15620)
    layout = ["--layout", bench.layout] + (["--pumps", "4"] if bench.layout == "concentrator" else [])
    sim = await asyncio.create_subprocess_exec(
        *_cli("sim", "rooms", "--sites", "1", "--base-port", str(room_port), "--seed", str(bench.seed),
              "--write-configs", str(workdir / "rooms"), *layout),
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    tap = ModbusTap("127.0.0.1", room_port)
    gateway: asyncio.subprocess.Process | None = None
    watch_task: asyncio.Task[None] | None = None
    log_path = workdir / "gateway.log"
    try:
        written = workdir / "rooms" / "PR-0001.yaml"
        await _wait_for(written, sim, 30.0)
        await tap.start()
        document = yaml.safe_load(written.read_text(encoding="utf-8"))
        document["district"] = group
        for bus in document["buses"]:
            bus["port"] = tap.port
        config = workdir / "room.yaml"
        config.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
        room, maps = load_room(config)
        watch = NodeWatch()

        async def subscribe(conn: Connection) -> None:
            await conn.subscribe(f"spBv1.0/{group}/#", qos=0)
            subscribed.set()

        async def nothing(_: str) -> None:
            return None

        subscribed = asyncio.Event()
        watch_task = asyncio.create_task(
            run_session(
                BrokerUrl.parse(broker_url),
                f"{group}-watch",
                on_connect=subscribe,
                on_message=watch.on_message,
                on_disconnect=nothing,
            ),
            name="bench-edge-watch",
        )
        await asyncio.wait_for(subscribed.wait(), 10.0)
        with log_path.open("wb") as log_file:
            gateway = await asyncio.create_subprocess_exec(
                *_cli("edge", "--config", str(config), "--broker", broker_url, "--data-dir",
                      str(workdir / "edge"), "--primary-host", ""),
                stdout=asyncio.subprocess.DEVNULL, stderr=log_file,
            )  # fmt: skip
        await asyncio.sleep(bench.warmup_s)
        if gateway.returncode is not None:
            raise RuntimeError(
                f"the gateway exited with {gateway.returncode}: {log_path.read_text()[-2000:]}"
            )
        window_start = time.monotonic()
        loop_start = asyncio.get_running_loop().time()
        cpu0, machine0 = cpu_seconds([gateway.pid]), machine_busy_seconds()
        metrics0 = watch.last()
        await asyncio.sleep(bench.duration_s)
        window = time.monotonic() - window_start
        loop_end = asyncio.get_running_loop().time()
        cpu = cpu_seconds([gateway.pid]) - cpu0
        machine = machine_busy_seconds() - machine0
        rss_now, rss_peak = rss_mb(gateway.pid, "VmRSS"), rss_mb(gateway.pid, "VmHWM")
        metrics1 = watch.last()
    finally:
        if gateway is not None:
            await _stop(gateway)
        await _stop(sim)
        await tap.stop()
        if watch_task is not None:
            watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch_task
        if broker is not None:
            await broker.stop()
    log_lines = (
        log_path.read_text(encoding="utf-8", errors="replace").splitlines() if log_path.exists() else []
    )
    if bench.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return _report(
        bench, room, maps, tap.requests, (loop_start, loop_end), watch, metrics0, metrics1,
        window, cpu, machine, rss_now, rss_peak, log_lines, broker_url, window_start,
    )  # fmt: skip


def _report(
    bench: EdgeBench,
    room: Any,
    maps: Any,
    requests: Sequence[Request],
    loop_window: tuple[float, float],
    watch: NodeWatch,
    metrics0: dict[str, Any],
    metrics1: dict[str, Any],
    window: float,
    cpu: float,
    machine: float,
    rss_now: float | None,
    rss_peak: float | None,
    log_lines: Sequence[str],
    broker_url: str,
    window_start: float,
) -> dict[str, Any]:
    fast_s = float(room.poll.fast_s)
    measured = [r for r in requests if loop_window[0] <= r.sent < loop_window[1]]
    by_unit = cycles_of(measured, fast_s / 2)
    units: dict[int, list[DeviceConfig]] = {}
    for device in room.devices:
        units.setdefault(device.unit, []).append(device)
    unit_reports: dict[str, Any] = {}
    planned: dict[int, tuple[int, int]] = {}
    planned_fast = planned_full = 0
    for unit, members in units.items():
        fast, full = plan_unit([(d, maps[d.name]) for d in members], room.buses[0].max_gap)
        planned[unit] = (len(fast), len(full))
        planned_fast += len(fast)
        planned_full += len(full)
        cycles = by_unit.get(unit, [])
        reads = sorted(c.reads for c in cycles)
        unit_reports[str(unit)] = {
            "devices": [d.name for d in members],
            "points": sum(len(maps[d.name].points) for d in members),
            "planned_reads_fast_cycle": len(fast),
            "planned_reads_full_cycle": len(full),
            "planned_blocks_full": [f"{b.table.value}@{b.address}+{b.count}" for b in full],
            "cycles": len(cycles),
            "reads_per_cycle_median": percentile(reads, 50),
            "reads_per_cycle_max": max(reads, default=None),
            "cycle": _stats([c.end - c.start for c in cycles]),
        }
    devices: dict[str, Any] = {}
    points = 0
    for device in room.devices:
        register_map = maps[device.name]
        points += len(register_map.points)
        unit_report = unit_reports[str(device.unit)]
        prefix = f"Device/{device.name}/"
        devices[device.name] = {
            "unit": device.unit,
            "points": len(register_map.points),
            "points_in_birth": watch.device_points.get(device.name),
            # A device sharing its unit id is read with the others: these are the unit's figures.
            "shares_unit_with": [name for name in unit_report["devices"] if name != device.name],
            "planned_reads_fast_cycle": unit_report["planned_reads_fast_cycle"],
            "planned_reads_full_cycle": unit_report["planned_reads_full_cycle"],
            "planned_blocks_full": unit_report["planned_blocks_full"],
            "cycles": unit_report["cycles"],
            "reads_per_cycle_median": unit_report["reads_per_cycle_median"],
            "reads_per_cycle_max": unit_report["reads_per_cycle_max"],
            "cycle": unit_report["cycle"],
            "gateway_latency_mean_ms": metrics1.get(prefix + "LatencyMs"),
            "gateway_latency_max_ms": metrics1.get(prefix + "LatencyMaxMs"),
            "gateway_requests": metrics1.get(prefix + "Requests"),
            "gateway_timeouts": metrics1.get(prefix + "Timeouts"),
        }
    scans = room_scans([c for cycles in by_unit.values() for c in cycles], fast_s, loop_window)
    scan_reads = sorted(sum(c.reads for c in scan) for scan in scans)
    bus = room.buses[0].name
    requests_key = f"Bus/{bus}/Requests"
    reports = [(at, values) for at, values in watch.reports if requests_key in values]
    in_window = [(at, v[requests_key]) for at, v in reports if window_start <= at]
    gateway_rate = None
    if len(in_window) >= 2:
        (t0, n0), (t1, n1) = in_window[0], in_window[-1]
        gateway_rate = round((n1 - n0) / (t1 - t0), 3) if t1 > t0 else None
    warnings = [line for line in log_lines if "warning" in line.lower() or "error" in line.lower()]
    return {
        "site": room.site,
        "layout": bench.layout,
        "devices_count": len(room.devices),
        "units_count": len(units),
        "points": points,
        "fast_s": fast_s,
        "slow_s": float(room.poll.slow_s),
        "duration_s": round(window, 2),
        "warmup_s": bench.warmup_s,
        "broker": broker_url if bench.broker else f"embedded amqtt ({broker_url})",
        "block_reads_per_cycle": {
            "planned_fast": planned_fast,
            "planned_full": planned_full,
            "measured_scan_median": percentile(scan_reads, 50),
            "measured_scan_max": max(scan_reads, default=None),
            "per_unit_max": max((fast for fast, _ in planned.values()), default=0),
        },
        "cycle": {
            "device": _stats([c.end - c.start for cycles in by_unit.values() for c in cycles]),
            "scan_bus_time": _stats([sum(c.end - c.start for c in scan) for scan in scans]),
            "scans": len(scans),
        },
        "units": unit_reports,
        "devices": devices,
        "unknown_units": sorted(set(by_unit) - set(units)),
        "modbus_requests_per_s": {
            "achieved_at_tap": round(len(measured) / (loop_window[1] - loop_window[0]), 3),
            "achieved_gateway_metric": gateway_rate,
            "configured_gateway_metric": metrics1.get(f"Bus/{bus}/ConfiguredPerSecond"),
            "overruns": metrics1.get(f"Bus/{bus}/Overruns"),
            "overruns_in_window": (
                None
                if metrics1.get(f"Bus/{bus}/Overruns") is None
                else metrics1[f"Bus/{bus}/Overruns"] - metrics0.get(f"Bus/{bus}/Overruns", 0)
            ),
        },
        "gateway": {
            "cpu_s": round(cpu, 3),
            "cpu_percent_of_one_core": round(100.0 * cpu / window, 3) if window else None,
            "rss_mb": None if rss_now is None else round(rss_now, 1),
            "rss_peak_mb": None if rss_peak is None else round(rss_peak, 1),
            "births": watch.births,
            "status_reports": len(reports),
            "log_warnings": len(warnings),
            "log_tail": list(warnings[-5:]),
        },
        "machine_busy_cpu_s": round(machine, 2),
        "machine_cores": os.cpu_count(),
    }
