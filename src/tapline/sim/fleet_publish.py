"""The fleet simulator's IO: processes, MQTT connections, the sampling schedule, the record.

Topology (why): one MQTT connection per edge node is what the field looks like and the only way each
node gets its own NDEATH Will, so ``connections="node"`` does exactly that. It costs a socket, a paho
client and a keepalive per room; past a few hundred rooms per process that is memory and file
descriptors spent on realism a load test does not need, so ``"shared"`` (the default above
``NODE_MODE_MAX_ROOMS`` rooms a process) publishes for all of a process's rooms over one connection.
Everything on the wire is the same except the Wills: a shared connection carries none, because MQTT
allows one Will per connection. On a clean stop every node still publishes its NDEATH; if a shared
process dies, hosts see its nodes fall silent instead of dead.

Rules:
- ``processes`` worker processes (spawned) each own every ``processes``-th room; each room samples at
  ``start + offset + k × interval`` with the offset spread over the period by its global index, so
  values and timestamps do not depend on how many processes share the work, and the load is even.
- Workers build their rooms first, then the parent hands every worker the same start time.
- A room is born at its first sample after its connection is live (and, with ``primary_host``, after
  that host's STATE says online); a host going offline makes every node of the connection publish its
  NDEATH and reconnect with a new bdSeq, as the gateway does.
- When a worker falls behind it keeps the schedule's timestamps and catches up; lateness is reported.
- ``record``: each worker writes its own TLREC1 member, the parent concatenates them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import resource
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from tapline import logs
from tapline.logs import get_logger
from tapline.mqtt import BrokerUnavailable, BrokerUrl, Message, WillMessage
from tapline.mqtt_fast import FastClient, run_fast_session
from tapline.sim.district import DistrictSupply
from tapline.sim.fleet import FleetSpec, RoomFeed, plan_rooms
from tapline.sim.fleet_record import RecordWriter, merge_parts
from tapline.sim.fleet_report import Connections, FleetReport, WorkerReport
from tapline.sparkplug.errors import SparkplugError
from tapline.sparkplug.topics import parse_state, state_topic

log = get_logger(__name__)

NODE_MODE_MAX_ROOMS = 200
"""Above this many rooms per process the default is one shared connection per process."""


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """Everything ``tapline sim fleet`` needs; validated on construction."""

    spec: FleetSpec
    broker: str = "mqtt://127.0.0.1:1883"
    processes: int = 1
    connections: Connections | None = None  # None: node for small fleets, shared otherwise
    duration_s: float | None = None
    record: Path | None = None
    primary_host: str | None = None
    client_prefix: str = "tapline-fleet"
    keepalive_s: int = 30
    start_ms: int | None = None  # fixed start (tests, reproducible traces); default: when all are ready
    obey_commands: bool = True  # False: subscribe to no NCMD (a load generator other hosts cannot steer)
    birth_rate: int = 1000  # rooms born per second and process at most (0: no limit)
    log_level: str = "info"

    def __post_init__(self) -> None:
        BrokerUrl.parse(self.broker)
        if not 1 <= self.processes <= 64:
            raise ValueError(f"processes must be 1..64, got {self.processes}")
        if self.processes > self.spec.sites:
            raise ValueError(f"processes ({self.processes}) must not exceed sites ({self.spec.sites})")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("duration must be > 0 seconds")
        if self.birth_rate < 0:
            raise ValueError(f"birth rate must be >= 0 rooms a second, got {self.birth_rate}")
        if self.connections not in (None, "node", "shared"):
            raise ValueError(f"connections must be 'node' or 'shared', got {self.connections!r}")

    @property
    def mode(self) -> Connections:
        if self.connections is not None:
            return self.connections
        per_process = -(-self.spec.sites // self.processes)
        return "node" if per_process <= NODE_MODE_MAX_ROOMS else "shared"


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class _Link:
    """One MQTT connection and the rooms that publish over it."""

    def __init__(self, worker: _Worker, feeds: Sequence[RoomFeed], client_id: str, per_node: bool) -> None:
        self.worker = worker
        self.feeds = list(feeds)
        self.by_node = {(feed.group, feed.site): feed for feed in feeds}
        self.client_id = client_id
        self.per_node = per_node
        self.client: FastClient | None = None
        self.live = False
        self.host_state_ts = 0

    async def run(self) -> None:
        settings = self.worker.settings
        await run_fast_session(
            self.worker.url,
            self.client_id,
            session=self._session,
            will_factory=self._will,
            on_disconnect=self._lost,
            keepalive_s=settings.keepalive_s,
        )

    def _will(self) -> WillMessage | None:
        wills = [feed.new_session() for feed in self.feeds]
        if self.per_node:
            topic, payload = wills[0]
            return WillMessage(topic, payload, qos=1, retain=False)
        return None

    async def _lost(self, reason: str) -> None:
        self.live = False
        self.client = None
        self.worker.report.reconnects += 1

    async def _session(self, client: FastClient) -> None:
        self.client = client
        host = self.worker.settings.primary_host
        topics = []
        if self.worker.settings.obey_commands:
            topics = [f"spBv1.0/{feed.group}/NCMD/{feed.site}" for feed in self.feeds]
        if host:
            topics.append(state_topic(host))
        if topics:
            await client.subscribe(topics, qos=1)
        self.live = not host
        try:
            async for message in client.messages():
                self._on_message(message)
        finally:
            self.live = False

    def _on_message(self, message: Message) -> None:
        host = self.worker.settings.primary_host
        if host and message.topic == state_topic(host):
            self._on_state(message.payload)
            return
        parts = message.topic.split("/")
        feed = self.by_node.get((parts[1], parts[3])) if len(parts) >= 4 else None
        if feed is None:
            return
        self.publish(feed.command(message.topic, message.payload, wall_ms()))

    def _on_state(self, payload: bytes) -> None:
        try:
            online, timestamp = parse_state(payload)
        except SparkplugError:
            return
        if timestamp < self.host_state_ts:
            return  # the late Will of an older host session
        self.host_state_ts = timestamp
        if online and not self.live:
            self.live = True
            log.info("primary_host_online", link=self.client_id)
        elif not online and self.live:
            self.goodbye()
            self.live = False
            log.warning("primary_host_offline", link=self.client_id)
            raise BrokerUnavailable("primary host went offline: reconnecting as the spec requires")

    def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        client = self.client
        if client is None or not messages:
            return
        report = self.worker.report
        try:
            client.publish_batch(messages)
        except BrokerUnavailable:
            report.publish_failures += 1
            return
        report.messages += len(messages)
        report.bytes += sum(len(payload) for _, payload in messages)

    def goodbye(self) -> None:
        """Every born node of this connection publishes its NDEATH (an intentional stop)."""
        now = wall_ms()
        deaths = [death for feed in self.feeds if (death := feed.death(now)) is not None]
        if self.client is not None:
            with contextlib.suppress(BrokerUnavailable):
                for topic, payload in deaths:
                    self.client.publish(topic, payload)


class _Worker:
    """One process's share of the fleet: its rooms, connections and schedule."""

    def __init__(self, settings: FleetSettings, part: int, parts: int) -> None:
        self.settings = settings
        self.url = BrokerUrl.parse(settings.broker)
        spec = settings.spec
        self.part = part
        plans = plan_rooms(spec)[part::parts]
        supplies = {name: DistrictSupply(name, spec.seed) for name in {plan.district for plan in plans}}
        self.recorder: RecordWriter | None = None
        if settings.record is not None:
            path = settings.record if parts == 1 else _part_path(settings.record, part)
            self.recorder = RecordWriter(path)
        sink = self.recorder.values_at if self.recorder is not None else None
        self.feeds = [
            RoomFeed(plan, spec, supplies[plan.district], spec.offset_ms(plan.index, spec.sites), sink)
            for plan in plans
        ]
        if self.recorder is not None:
            for feed in self.feeds:
                self.recorder.node(feed.plan.index, feed.site, feed.group)
                for index, point in enumerate(feed.points):
                    self.recorder.point(feed.plan.index, index, point.path, point.datatype)
        prefix = f"{settings.client_prefix}-{spec.group_prefix or 'g'}"
        if settings.mode == "node":
            self.links = [_Link(self, [feed], f"{prefix}-{feed.site}", True) for feed in self.feeds]
        else:
            self.links = [_Link(self, self.feeds, f"{prefix}-p{part}of{parts}", False)]
        self.link_of = {id(feed): link for link in self.links for feed in link.feeds}
        self.report = WorkerReport(part, len(self.feeds), len(self.links))
        self.stop = asyncio.Event()

    async def run(self, start_ms: int) -> None:
        async with asyncio.TaskGroup() as tasks:
            link_tasks = [
                tasks.create_task(link.run(), name=f"fleet-link-{link.client_id}") for link in self.links
            ]
            try:
                await self._schedule(start_ms)
            finally:
                for link in self.links:
                    link.goodbye()
                for task in link_tasks:
                    task.cancel()

    async def _schedule(self, start_ms: int) -> None:
        """Sample every room on its slot of every period; birth rooms at most ``birth_rate`` a second.

        CPU and lateness are also measured from the end of the first period in which every room was
        born ("steady"): births cost far more than data (about 0.5 ms a room) and come once.
        """
        spec, report = self.settings.spec, self.report
        interval = spec.interval_ms
        duration = self.settings.duration_s
        stop_at = start_ms + round(duration * 1000) if duration is not None else None
        feeds = sorted(self.feeds, key=lambda feed: feed.offset_ms)
        links = [self.link_of[id(feed)] for feed in feeds]
        rate = self.settings.birth_rate
        tokens, refilled = float(rate or 1), wall_ms()
        period = 0
        steady_from: tuple[float, int] | None = None
        try:
            while not self.stop.is_set():
                unborn = 0
                for feed, link in zip(feeds, links, strict=True):
                    due = start_ms + feed.offset_ms + period * interval
                    if stop_at is not None and due >= stop_at:
                        return
                    ahead = due - wall_ms()
                    if ahead > 2:
                        await self._idle(ahead / 1000.0)
                        if self.stop.is_set():
                            return
                    feed.sample(due, step=period > 0)
                    report.samples += 1
                    if link.live and link.client is not None:
                        if feed.born:
                            link.publish(feed.report())
                        else:
                            if rate:
                                now = wall_ms()
                                tokens = min(float(rate), tokens + (now - refilled) * rate / 1000.0)
                                refilled = now
                            if not rate or tokens >= 1.0:
                                tokens -= 1.0
                                link.publish(feed.births(due))
                    unborn += not feed.born
                    lag = wall_ms() - due
                    if lag > interval:
                        report.late_samples += 1
                        report.steady_late_samples += steady_from is not None
                    report.max_lag_ms = max(report.max_lag_ms, lag)
                    if steady_from is not None:
                        report.steady_max_lag_ms = max(report.steady_max_lag_ms, lag)
                    if report.samples % 64 == 0:
                        await self._breathe()
                period += 1
                if steady_from is None and unborn == 0:
                    steady_from = (_cpu_s(), wall_ms())
        finally:
            report.run_s = max(0.0, (wall_ms() - start_ms) / 1000.0)
            if steady_from is not None:
                report.steady_cpu_s = _cpu_s() - steady_from[0]
                report.steady_s = (wall_ms() - steady_from[1]) / 1000.0

    async def _idle(self, seconds: float) -> None:
        """Sleep until the next sample is due (or stop), after letting the sockets drain."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._drain()
                await self.stop.wait()

    async def _breathe(self) -> None:
        """Let inbound commands and socket writes run, and wait for a backlogged connection."""
        await asyncio.sleep(0)
        await self._drain()

    async def _drain(self) -> None:
        for link in self.links:
            client = link.client
            if client is not None and client.backlogged:
                with contextlib.suppress(BrokerUnavailable):
                    await client.drained()

    def finish(self) -> None:
        report = self.report
        for feed in self.feeds:
            counters = feed.counters
            report.births += counters.births
            report.rebirths += counters.rebirths
            report.replays += counters.replays
            report.commands_refused += counters.refused
            report.commands_malformed += counters.malformed
        report.values = sum(feed.published_values for feed in self.feeds)
        if self.recorder is not None:
            self.recorder.close()
            report.recorded = self.recorder.values


def _part_path(record: Path, part: int) -> Path:
    return record.with_name(f"{record.name}.part{part}")


async def run_worker(
    settings: FleetSettings,
    part: int = 0,
    parts: int = 1,
    *,
    start: Callable[[], Awaitable[int]] | None = None,
    stop: asyncio.Event | None = None,
) -> WorkerReport:
    """Run one worker in this process: build its rooms, wait for the start time (``start``; default
    ``settings.start_ms`` or the next whole second), publish until the duration ends or ``stop``."""
    cpu0 = _cpu_s()
    worker = _Worker(settings, part, parts)
    if stop is not None:
        worker.stop = stop
    gc.collect()
    gc.freeze()  # the rooms live for the whole run: keep the collector from rescanning them
    worker.report.setup_cpu_s = _cpu_s() - cpu0
    if start is not None:
        start_ms = await start()
    else:
        start_ms = settings.start_ms if settings.start_ms is not None else (wall_ms() // 1000 + 1) * 1000
    cpu1 = _cpu_s()
    log.info("fleet_worker_started", part=part, rooms=len(worker.feeds), connections=len(worker.links))
    try:
        await worker.run(start_ms)
    finally:
        worker.finish()
        worker.report.run_cpu_s = _cpu_s() - cpu1
        worker.report.max_rss_mb = round(_rss_mb(), 1)
        log.info("fleet_worker_stopped", part=part, messages=worker.report.messages)
    return worker.report


def _worker_process(settings: FleetSettings, part: int, parts: int, pipe: Pipe) -> None:
    """Entry point of a spawned worker: report readiness, take the start time, send the report."""
    logs.configure(settings.log_level)

    async def main() -> WorkerReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)

        async def start() -> int:
            pipe.send("ready")
            answered = asyncio.Event()
            loop.add_reader(pipe.fileno(), answered.set)
            try:
                await answered.wait()
            finally:
                loop.remove_reader(pipe.fileno())
            start_ms: int = pipe.recv()
            return start_ms

        return await run_worker(settings, part, parts, start=start, stop=stop)

    pipe.send(asyncio.run(main()))
    pipe.close()


async def run_fleet(settings: FleetSettings) -> FleetReport:
    """Run the whole fleet: inline for one process, else spawn workers and wait for their reports."""
    spec = settings.spec
    result = FleetReport(
        spec.sites, spec.points, spec.interval_s, settings.processes, settings.mode, spec.report
    )
    cpu0 = _cpu_s()
    if settings.processes == 1:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            result.workers.append(await run_worker(settings, stop=stop))
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        return result
    result.workers = await _run_processes(settings)
    if settings.record is not None:
        merge_parts(
            [_part_path(settings.record, part) for part in range(settings.processes)], settings.record
        )
    result.parent_cpu_s = _cpu_s() - cpu0
    result.parent_rss_mb = round(_rss_mb(), 1)
    return result


async def _run_processes(settings: FleetSettings) -> list[WorkerReport]:
    context = multiprocessing.get_context("spawn")
    parts = settings.processes
    pipes: list[Pipe] = []
    processes = []
    for part in range(parts):
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_worker_process, args=(settings, part, parts, theirs), name=f"tapline-fleet-{part}"
        )
        process.start()
        theirs.close()
        pipes.append(ours)
        processes.append(process)
    loop = asyncio.get_running_loop()
    stopping = False

    def stop_workers() -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_workers)
    try:
        await _receive_all(pipes, processes, "ready")
        start_ms = settings.start_ms if settings.start_ms is not None else wall_ms() + 500
        for pipe in pipes:
            pipe.send(start_ms)
        reports = await _receive_all(pipes, processes, None)
        return [report for report in reports if isinstance(report, WorkerReport)]
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        for pipe in pipes:
            pipe.close()


async def _receive_all(pipes: Sequence[Pipe], processes: Sequence[Any], expected: str | None) -> list[object]:
    """One message from every worker; a worker that dies first is an error."""
    received: list[object | None] = [None] * len(pipes)
    while any(item is None for item in received):
        for index, pipe in enumerate(pipes):
            if received[index] is None and pipe.poll():
                try:
                    received[index] = pipe.recv()
                except EOFError:
                    raise RuntimeError(f"fleet worker {index} exited without reporting") from None
                if expected is not None and received[index] != expected:
                    raise RuntimeError(f"fleet worker {index} sent {received[index]!r}, not {expected!r}")
            elif received[index] is None and not processes[index].is_alive():
                raise RuntimeError(f"fleet worker {index} exited with code {processes[index].exitcode}")
        await asyncio.sleep(0.05)
    return [item for item in received if item is not None]
