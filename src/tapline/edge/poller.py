"""Acquisition: one coordinator per bus is the only thing that polls that bus's devices.

Rules:
- Each device's points are planned once into block reads: the fast plan (fast points only) and the
  full plan (fast + slow points merged, used when the slow class is due, so a slow total next to a
  fast pressure costs no extra request). A cycle walks one plan.
- The poller awaits every request before the next, and all requests go through ``ExclusiveBus``, so
  with commands and interlock writes on the same bus there is still one request in flight per bus.
  Devices' first polls are staggered over the fast period so a bus never sees a burst.
- Devices that share a unit id (a concentrator mirroring the room's devices into one table) are one
  *plan*: their points are planned together, so one request may carry several devices' points, and
  each cycle reports a ``Sample`` per device. They answer or fail together (one unit on the wire), so
  they are found and lost together; besides, such a device whose ``Online`` point (the concentrator's
  link to it) reads false is reported lost, and its values (the last the concentrator read) withheld,
  until it reads true: the cloud sees the same DDEATH/DBIRTH as when it polls the device directly.
- A timeout is retried up to the bus's ``retries`` with a short doubling backoff. A device that fails
  ``offline_after_failures`` cycles in a row is reported lost (→ DDEATH) and is then retried with
  capped exponential backoff; its first good cycle reports it found (→ DBIRTH).
- A Modbus exception (or garbage) on one block (e.g. illegal address after a firmware change) drops that
  block's points for the cycle and is counted; it does not take the device offline. It is logged when
  the block starts failing and when it recovers, never per poll.
- Results go to a sink as ``Sample`` events; this module never publishes or stores anything itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tapline.domain.model import Value
from tapline.edge.config import DeviceConfig, PollConfig
from tapline.edge.modbus_io import BusClient, DeviceException, DeviceTimeout, LinkDown
from tapline.logs import get_logger
from tapline.registers.blocks import Block, plan_blocks
from tapline.registers.maps import RegisterMap

log = get_logger(__name__)

PollClass = Literal["fast", "slow"]
RETRY_BACKOFF_S = 0.05
LINK_POINT = "Online"
"""A device sharing a concentrator's unit id is lost while this point of it reads false."""


@dataclass(frozen=True, slots=True)
class Sample:
    """Values read from one device in one cycle (only the points whose blocks succeeded)."""

    device: str
    ts: int
    values: dict[str, Value]
    poll_class: PollClass


@dataclass(frozen=True, slots=True)
class DeviceLost:
    device: str
    ts: int
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceFound:
    device: str
    ts: int


PollEvent = Sample | DeviceLost | DeviceFound
Sink = Callable[[PollEvent], Awaitable[None]]


@dataclass
class DeviceStats:
    """What the poller knows about one device, besides the bus's per-unit request counters."""

    cycles: int = 0
    failures: int = 0
    block_errors: int = 0
    retries: int = 0


@dataclass
class DevicePlan:
    """One unit id's block plans and polling state: one device's, or those of several devices sharing
    the unit (``members``; their points are keyed ``device/Name`` in the blocks)."""

    config: DeviceConfig
    fast: list[Block]
    full: list[Block]
    members: tuple[DeviceConfig, ...] = ()
    announced: dict[str, bool] = field(default_factory=dict)  # per member: last reported found/lost
    online: bool | None = None  # None until the first cycle decides
    consecutive_failures: int = 0
    next_due: dict[PollClass, float] = field(default_factory=dict)
    retry_delay: float = 0.0
    failing_blocks: set[int] = field(default_factory=set)
    stats: DeviceStats = field(default_factory=DeviceStats)

    def __post_init__(self) -> None:
        if not self.members:
            self.members = (self.config,)


def plan_unit(
    members: Sequence[tuple[DeviceConfig, RegisterMap]], max_gap: int
) -> tuple[list[Block], list[Block]]:
    """Fast and full block plans of one unit: a lone device's points by name, shared ones by path."""
    if len(members) == 1:
        points = list(members[0][1].points)
    else:
        # Keyed by ``device/Name`` so vfd1/Frequency and vfd2/Frequency stay apart in one block; the
        # copy skips validation on purpose (a path is not a valid point name, and needs not be one).
        points = [
            point.model_copy(update={"name": f"{config.name}/{point.name}"})
            for config, register_map in members
            for point in register_map.points
        ]
    fast = plan_blocks((p for p in points if p.poll == "fast"), max_gap=max_gap)
    return fast, plan_blocks(points, max_gap=max_gap)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class BusPoller:
    """Polls every device on one bus by its poll classes and reports to ``sink``."""

    def __init__(
        self,
        bus: BusClient,
        devices: Sequence[tuple[DeviceConfig, RegisterMap]],
        poll: PollConfig,
        sink: Sink,
        *,
        retries: int = 1,
        max_gap: int = 8,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.bus = bus
        self.poll = poll
        self.sink = sink
        self.retries = retries
        self.clock_ms = clock_ms
        self.overruns = 0  # cycles that started a full fast period late: the bus cannot keep up
        units: dict[int, list[tuple[DeviceConfig, RegisterMap]]] = {}
        for config, register_map in devices:
            units.setdefault(config.unit, []).append((config, register_map))
        self.devices = []
        for members in units.values():
            fast, full = plan_unit(members, max_gap)
            configs = tuple(config for config, _ in members)
            self.devices.append(DevicePlan(config=configs[0], fast=fast, full=full, members=configs))

    def period(self, poll_class: PollClass) -> float:
        return self.poll.fast_s if poll_class == "fast" else self.poll.slow_s

    def requests_per_cycle(self) -> int:
        """Block reads of one fast cycle over every device on this bus."""
        return sum(len(plan.fast) for plan in self.devices)

    def configured_rate(self) -> float:
        """Requests per second this bus needs when every device answers (the plan's demand)."""
        rate = 0.0
        for plan in self.devices:
            slow_extra = len(plan.full) - len(plan.fast)
            rate += len(plan.fast) / self.poll.fast_s + max(slow_extra, 0) / self.poll.slow_s
        return rate

    async def _read(self, plan: DevicePlan, block: Block) -> dict[str, Value]:
        attempt = 0
        while True:
            try:
                data = await self.bus.read(plan.config.unit, block.table, block.address, block.count)
                return block.decode(data)
            except DeviceTimeout:
                if attempt >= self.retries:
                    raise
                attempt += 1
                plan.stats.retries += 1
                await asyncio.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))

    async def poll_device(self, plan: DevicePlan, slow_due: bool) -> None:
        """One cycle for one device: read its blocks, report values or a loss."""
        values: dict[str, Value] = {}
        failure: str | None = None
        blocks = plan.full if slow_due else plan.fast
        for index, block in enumerate(blocks):
            key = index if not slow_due else 1000 + index
            try:
                values.update(await self._read(plan, block))
            except (DeviceTimeout, LinkDown) as exc:
                failure = str(exc)
                break
            except (DeviceException, ValueError) as exc:
                plan.stats.block_errors += 1
                if key not in plan.failing_blocks:
                    plan.failing_blocks.add(key)
                    log.warning("block_read_failing", device=plan.config.name, error=str(exc))
                continue
            if key in plan.failing_blocks:
                plan.failing_blocks.discard(key)
                log.info("block_read_recovered", device=plan.config.name, address=block.address)
        plan.stats.cycles += 1
        now = self.clock_ms()
        if failure is None:
            plan.consecutive_failures = 0
            plan.retry_delay = 0.0
            plan.online = True
            await self._report(plan, values, now, "slow" if slow_due else "fast")
            return
        plan.stats.failures += 1
        plan.consecutive_failures += 1
        if plan.online is not False and (
            plan.consecutive_failures >= self.poll.offline_after_failures or plan.online is None
        ):
            plan.online = False
            for member in plan.members:
                await self._announce(plan, member.name, False, now, failure)
        if plan.online is False:
            plan.retry_delay = min(max(plan.retry_delay * 2, self.poll.fast_s), self.poll.offline_retry_max_s)

    async def _report(
        self, plan: DevicePlan, values: dict[str, Value], now: int, poll_class: PollClass
    ) -> None:
        """A good cycle: each member found (unless its concentrator reports its link down) and sampled."""
        if len(plan.members) == 1:
            await self._announce(plan, plan.config.name, True, now)
            if values:
                await self.sink(Sample(plan.config.name, now, values, poll_class))
            return
        by_device: dict[str, dict[str, Value]] = {}
        for path, value in values.items():
            device, _, name = path.partition("/")
            by_device.setdefault(device, {})[name] = value
        for member in plan.members:
            own = by_device.get(member.name, {})
            link = own.get(LINK_POINT)
            if link is not None and not link:
                await self._announce(plan, member.name, False, now, "its concentrator has lost it")
                continue  # the concentrator serves that device's last values: not live, not published
            await self._announce(plan, member.name, True, now)
            if own:
                await self.sink(Sample(member.name, now, own, poll_class))

    async def _announce(
        self, plan: DevicePlan, device: str, online: bool, now: int, reason: str = ""
    ) -> None:
        """Report a device found or lost, once per transition."""
        if plan.announced.get(device) is online:
            return
        plan.announced[device] = online
        if online:
            log.info("device_found", device=device)
            await self.sink(DeviceFound(device, now))
        else:
            log.warning("device_lost", device=device, reason=reason)
            await self.sink(DeviceLost(device, now, reason))

    async def run(self) -> None:
        """Poll forever (until cancelled)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        count = max(len(self.devices), 1)
        for index, plan in enumerate(self.devices):
            offset = self.poll.fast_s * index / count
            plan.next_due = {"fast": start + offset, "slow": start + offset}
        if not self.devices:
            await asyncio.Event().wait()
        while True:
            now = loop.time()
            for plan in self.devices:
                slow_due = plan.next_due["slow"] <= now
                if not slow_due and plan.next_due["fast"] > now:
                    continue
                if not slow_due and not plan.fast:
                    plan.next_due["fast"] = now + self.poll.fast_s
                    continue
                if now - plan.next_due["fast"] > self.poll.fast_s:
                    self.overruns += 1
                await self.poll_device(plan, slow_due)
                fast_delay = self.poll.fast_s
                if plan.online is False:
                    fast_delay = max(plan.retry_delay, fast_delay)
                plan.next_due["fast"] = max(plan.next_due["fast"] + fast_delay, loop.time())
                if slow_due:
                    plan.next_due["slow"] = max(plan.next_due["slow"] + self.poll.slow_s, loop.time())
                    if plan.online is False:
                        plan.next_due["slow"] = max(plan.next_due["slow"], plan.next_due["fast"])
            next_time = min(min(plan.next_due.values()) for plan in self.devices)
            await asyncio.sleep(max(0.0, next_time - loop.time()))
