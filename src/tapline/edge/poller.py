"""Acquisition: one coordinator per bus is the only thing that talks to that bus's devices.

Rules:
- Each device's points are planned once into block reads per poll class (fast, slow); a cycle walks
  the plan. Devices on one bus are polled one request at a time (the bus lock) and their first polls
  are staggered over the period so a bus never sees a burst.
- A device that fails ``offline_after_failures`` cycles in a row is reported lost (→ DDEATH) and is
  then retried with capped exponential backoff; its first good cycle reports it found (→ DBIRTH).
- A Modbus exception on one block (e.g. illegal address after a firmware change) drops that block's
  points for the cycle and is counted; it does not take the device offline.
- Results go to a sink as ``Sample`` events; this module never publishes or stores anything itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
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
    cycles: int = 0
    failures: int = 0
    block_errors: int = 0


@dataclass
class _DevicePlan:
    config: DeviceConfig
    blocks: dict[PollClass, list[Block]]
    online: bool | None = None  # None until the first cycle decides
    consecutive_failures: int = 0
    next_due: dict[PollClass, float] = field(default_factory=dict)
    retry_delay: float = 0.0
    stats: DeviceStats = field(default_factory=DeviceStats)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class BusPoller:
    """Polls every device on one bus by its poll classes and reports to ``sink``."""

    def __init__(
        self,
        bus: BusClient,
        devices: list[tuple[DeviceConfig, RegisterMap]],
        poll: PollConfig,
        sink: Sink,
        *,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.bus = bus
        self.poll = poll
        self.sink = sink
        self.clock_ms = clock_ms
        self.devices = [
            _DevicePlan(
                config=config,
                blocks={
                    "fast": plan_blocks(p for p in register_map.points if p.poll == "fast"),
                    "slow": plan_blocks(p for p in register_map.points if p.poll == "slow"),
                },
            )
            for config, register_map in devices
        ]

    def period(self, poll_class: PollClass) -> float:
        return self.poll.fast_s if poll_class == "fast" else self.poll.slow_s

    def requests_per_cycle(self) -> int:
        return sum(len(plan.blocks["fast"]) for plan in self.devices)

    async def poll_device(self, plan: _DevicePlan, classes: tuple[PollClass, ...]) -> None:
        """One cycle for one device: read its blocks, report values or a loss."""
        values: dict[str, Value] = {}
        failure: str | None = None
        for poll_class in classes:
            for block in plan.blocks[poll_class]:
                try:
                    data = await self.bus.read(plan.config.unit, block.table, block.address, block.count)
                    values.update(block.decode(data))
                except (DeviceTimeout, LinkDown) as exc:
                    failure = str(exc)
                    break
                except (DeviceException, ValueError) as exc:
                    plan.stats.block_errors += 1
                    if plan.stats.block_errors == 1:
                        log.warning("block_read_error", device=plan.config.name, error=str(exc))
            if failure:
                break
        plan.stats.cycles += 1
        now = self.clock_ms()
        if failure is None:
            plan.consecutive_failures = 0
            plan.retry_delay = 0.0
            if plan.online is not True:
                plan.online = True
                log.info("device_found", device=plan.config.name)
                await self.sink(DeviceFound(plan.config.name, now))
            if values:
                await self.sink(Sample(plan.config.name, now, values, classes[-1]))
            return
        plan.stats.failures += 1
        plan.consecutive_failures += 1
        if plan.online is not False and (
            plan.consecutive_failures >= self.poll.offline_after_failures or plan.online is None
        ):
            plan.online = False
            log.warning("device_lost", device=plan.config.name, reason=failure)
            await self.sink(DeviceLost(plan.config.name, now, failure))
        if plan.online is False:
            plan.retry_delay = min(max(plan.retry_delay * 2, self.poll.fast_s), 30.0)

    async def run(self) -> None:
        """Poll forever (until cancelled)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        count = max(len(self.devices), 1)
        for index, plan in enumerate(self.devices):
            offset = self.poll.fast_s * index / count
            plan.next_due = {"fast": start + offset, "slow": start + offset}
        while True:
            now = loop.time()
            for plan in self.devices:
                due: list[PollClass] = [c for c in ("slow", "fast") if plan.next_due[c] <= now]
                if not due:
                    continue
                if "fast" in due and "slow" not in due and not plan.blocks["fast"]:
                    plan.next_due["fast"] = now + self.period("fast")
                    continue
                await self.poll_device(plan, tuple(due))
                for poll_class in due:
                    delay = self.period(poll_class)
                    if plan.online is False:
                        delay = max(plan.retry_delay, delay) if poll_class == "fast" else delay
                    plan.next_due[poll_class] = max(plan.next_due[poll_class] + delay, loop.time())
            next_time = min(min(plan.next_due.values()) for plan in self.devices) if self.devices else now + 1
            await asyncio.sleep(max(0.0, next_time - loop.time()))
