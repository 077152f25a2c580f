"""Composition of one gateway: buses → pollers → queue → edge node (interlocks, history) → MQTT uplink.

``Gateway.run`` is what ``tapline edge`` and the demo run. Every task is named, runs under one
TaskGroup, and is supervised: an unexpected exception (a bug, or input nobody foresaw) is logged with
its traceback, counted as ``Gateway/TaskRestarts`` and the task restarted after a short pause, so one
bad frame or message never stops the room's acquisition and protection. Cancelling ``run`` is an
intentional shutdown: the node publishes NDEATH while the uplink is still up, then everything stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from tapline.edge.config import RoomConfig
from tapline.edge.history import History
from tapline.edge.interlocks import Interlocks
from tapline.edge.metrics import BusStatsView, DeviceStatsView, NodeCounters, NodeMetrics
from tapline.edge.modbus_io import BusClient, ExclusiveBus, PymodbusBus
from tapline.edge.node import DevicePoints, EdgeNode
from tapline.edge.poller import BusPoller, PollEvent, wall_ms
from tapline.logs import get_logger
from tapline.mqtt import BrokerUrl, run_session
from tapline.registers.maps import RegisterMap

log = get_logger(__name__)

RESTART_PAUSE_S = 1.0
STOP_TIMEOUT_S = 3.0
"""Longest wait for each step of a stop (NDEATH, closing a bus): a stop must always finish."""


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    broker: BrokerUrl
    data_dir: Path
    primary_host: str | None = "tapline"
    keepalive_s: int = 15
    counters_period_s: float = 30.0
    prune_period_s: float = 300.0
    mark_period_s: float = 5.0  # how often the resume mark is persisted
    reconnect_max_s: float = 10.0
    backfill_rate_msgs: float = 20.0


class _Stats:
    """Per-device and per-bus statistics for the node metrics (metrics.StatsSource)."""

    def __init__(self, pollers: list[BusPoller], buses: Mapping[str, ExclusiveBus]) -> None:
        self.pollers = pollers
        self.buses_by_name = buses

    def devices(self) -> dict[str, DeviceStatsView]:
        views: dict[str, DeviceStatsView] = {}
        for poller in self.pollers:
            bus = self.buses_by_name[poller.bus.name]
            for plan in poller.devices:
                unit = bus.unit_stats(plan.config.unit)
                # Devices sharing a unit id (a concentrator) share its requests and latency.
                view = DeviceStatsView(
                    online=plan.online is True,
                    requests=unit.requests,
                    timeouts=unit.timeouts,
                    errors=unit.errors,
                    block_errors=plan.stats.block_errors,
                    retries=plan.stats.retries,
                    latency_mean_ms=unit.latency_mean_ms,
                    latency_max_ms=unit.latency_max_s * 1000.0,
                )
                for member in plan.members:
                    link_up = plan.announced.get(member.name) is not False
                    views[member.name] = replace(view, online=view.online and link_up)
        return views

    def buses(self) -> dict[str, BusStatsView]:
        views: dict[str, BusStatsView] = {}
        for poller in self.pollers:
            bus = self.buses_by_name[poller.bus.name]
            views[bus.name] = BusStatsView(bus.stats.requests, poller.configured_rate(), poller.overruns)
        return views


class Gateway:
    """One pump room's edge gateway."""

    def __init__(
        self,
        room: RoomConfig,
        maps: Mapping[str, RegisterMap],
        settings: GatewaySettings,
        *,
        buses: Mapping[str, BusClient] | None = None,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.room = room
        self.settings = settings
        self.clock_ms = clock_ms
        raw = dict(buses) if buses else {b.name: PymodbusBus(b) for b in room.buses}
        self.buses = {name: ExclusiveBus(bus) for name, bus in raw.items()}
        history_path = (
            Path(room.history.path) if room.history.path else settings.data_dir / f"{room.site}.history.db"
        )
        self.history = History(
            history_path, max_rows=room.history.max_rows, max_age_ms=int(room.history.max_age_h * 3600_000)
        )
        self.queue: asyncio.Queue[PollEvent] = asyncio.Queue(maxsize=10_000)
        self.pollers = [
            BusPoller(
                self.buses[bus.name],
                [(d, maps[d.name]) for d in room.devices if d.bus == bus.name],
                room.poll,
                self.queue.put,
                retries=bus.retries,
                max_gap=bus.max_gap,
                clock_ms=clock_ms,
            )
            for bus in room.buses
        ]
        self.interlocks = Interlocks(room.interlocks) if room.interlocks is not None else None
        self.counters = NodeCounters()
        metrics = NodeMetrics(
            self.counters,
            lambda: (self.history.dropped, self.history.pruned),
            device_names=[d.name for d in room.devices],
            bus_names=[b.name for b in room.buses],
            rules=list(self.interlocks.rules) if self.interlocks is not None else [],
            stats=_Stats(self.pollers, self.buses),
            monotonic=time.monotonic,
        )
        devices = [DevicePoints(d.name, d.unit, self.buses[d.bus], maps[d.name]) for d in room.devices]
        self.node = EdgeNode(
            group=room.district,
            node=room.site,
            devices=devices,
            history=self.history,
            full_refresh_ms=int(room.poll.full_refresh_s * 1000),
            primary_host=settings.primary_host,
            keepalive_s=settings.keepalive_s,
            clock_ms=clock_ms,
            interlocks=self.interlocks,
            metrics=metrics,
            backfill_rate_msgs=settings.backfill_rate_msgs,
        )
        self.node.restore_interlocks()

    async def _process(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self.node.handle(event)
            finally:
                self.queue.task_done()

    async def _stop_acquisition(self, pollers: list[asyncio.Task[None]], timeout_s: float = 2.0) -> None:
        """Stop polling and let the node record and publish what was already read.

        Every wait is bounded: a poller stuck inside the Modbus client (a request that ignores its
        cancellation) must not keep the gateway from stopping; it is abandoned, and logged."""
        for task in pollers:
            task.cancel()
        if pollers:
            _, stuck = await asyncio.wait(pollers, timeout=timeout_s)
            if stuck:
                log.warning("pollers_did_not_stop", site=self.room.site, pollers=len(stuck))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout_s)

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        next_status = loop.time() + self.settings.counters_period_s
        next_prune = loop.time() + self.settings.prune_period_s
        while True:
            await asyncio.sleep(min(self.settings.mark_period_s, self.settings.counters_period_s))
            self.node.persist_mark()
            if loop.time() >= next_status:
                next_status = loop.time() + self.settings.counters_period_s
                await self.node.publish_status()
            if loop.time() >= next_prune:
                next_prune = loop.time() + self.settings.prune_period_s
                await self.prune()

    async def prune(self) -> None:
        """Apply the history bounds now (history.py states the policy)."""
        result = await self.history.prune(self.clock_ms(), self.node.resume_mark())
        if result.dropped:
            log.error(
                "history_dropped_unsent",
                rows=result.dropped,
                dropped_total=self.history.dropped,
                max_rows=self.history.max_rows,
                max_age_h=self.room.history.max_age_h,
            )
        if result.pruned:
            log.info("history_pruned", rows=result.pruned, pruned_total=self.history.pruned)

    async def _uplink(self) -> None:
        await run_session(
            self.settings.broker,
            f"tapline-edge-{self.room.district}-{self.room.site}",
            on_connect=self.node.on_connect,
            on_message=self.node.on_message,
            on_disconnect=self.node.on_disconnect,
            will_factory=self.node.will,
            keepalive_s=self.settings.keepalive_s,
            backoff_max_s=self.settings.reconnect_max_s,
        )

    async def _supervised(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` forever; on an unexpected error log it, count it and start it again."""
        while True:
            try:
                await work()
                return
            except Exception:  # the supervisor is the one place allowed to catch everything (STYLE §6)
                self.counters.task_restarts += 1
                log.exception("task_crashed", task=name, restarts=self.counters.task_restarts)
                if name.startswith("uplink"):
                    await self.node.on_disconnect("uplink task crashed")
                await asyncio.sleep(RESTART_PAUSE_S)

    async def run(self) -> None:
        site = self.room.site
        log.info("gateway_start", site=site, district=self.room.district, devices=len(self.node.devices))
        try:
            async with asyncio.TaskGroup() as tasks:
                polling = []
                for poller in self.pollers:
                    name = f"poll-{site}-{poller.bus.name}"
                    polling.append(tasks.create_task(self._supervised(name, poller.run), name=name))
                for name, work in (
                    (f"process-{site}", self._process),
                    (f"housekeeping-{site}", self._housekeeping),
                    (f"uplink-{site}", self._uplink),
                ):
                    tasks.create_task(self._supervised(name, work), name=name)
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    # An orderly stop: what was read is recorded and published, then NDEATH goes
                    # out while the uplink task is still connected, then everything is cancelled.
                    await self._stop_acquisition(polling)
                    with contextlib.suppress(TimeoutError):  # its send lock may be held by a dead publish
                        async with asyncio.timeout(STOP_TIMEOUT_S):
                            await self.node.goodbye()
                    raise
        finally:
            for bus in self.buses.values():
                try:
                    async with asyncio.timeout(STOP_TIMEOUT_S):  # a request stuck holding the bus lock
                        await bus.close()
                except TimeoutError:
                    log.warning("bus_close_timed_out", site=site, bus=bus.name)
            self.node.persist_mark()
            self.history.close()
            log.info("gateway_stopped", site=site)
