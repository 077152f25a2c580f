"""The latest-value cache: what every room looks like right now, with quality and session status.

Rules:
- Only live (non-historical) values update the cache, and only if they are not older than what the
  cache holds (Sparkplug: historical values are stored but never overwrite the live value).
- A node death marks the room offline and every point STALE, keeping value and timestamp (the host
  receive time of the death is recorded as ``stale_since``); a device death does the same for that
  device's points.
- Room status: ``online`` (node and every device alive), ``degraded`` (node alive, a device dead or
  not yet born in this session), ``offline`` (node dead or never seen).
- Warm start: after a host restart the cache is filled from the store (``warm``) with the last stored
  values marked STALE and the devices known from earlier births marked offline, so a room shows its
  last known picture, clearly stale, until its births arrive.
- Pure in-memory structure; the ingest service mutates it from one task, the API reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from tapline.domain.model import Quality, Reading, Value, rows_of


@dataclass(slots=True)
class PointState:
    value: Value
    ts: int
    quality: Quality


class PointInfo(NamedTuple):
    """What the birth declared about a point.

    A NamedTuple (immutable: a new birth replaces the device's whole mapping): births make one per
    point declared — 400,000 when a city comes online — at half a slotted dataclass's cost."""

    datatype: str = ""
    unit: str = ""
    low: float | None = None
    high: float | None = None


@dataclass
class DeviceState:
    name: str
    online: bool = False
    since: int = 0
    points: dict[str, PointInfo] = field(default_factory=dict)


@dataclass
class SiteState:
    site: str
    district: str
    name: str = ""
    node_online: bool = False
    since: int = 0
    bd_seq: int | None = None
    last_message: int = 0
    devices: dict[str, DeviceState] = field(default_factory=dict)
    points: dict[str, PointState] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if not self.node_online:
            return "offline"
        if any(not device.online for device in self.devices.values()):
            return "degraded"
        return "online"


class LiveState:
    """Every known room's current picture."""

    def __init__(self) -> None:
        self.sites: dict[str, SiteState] = {}

    def site(self, site: str, district: str) -> SiteState:
        state = self.sites.get(site)
        if state is None:
            state = self.sites[site] = SiteState(site=site, district=district, name=site)
        return state

    def register(self, site: str, district: str, name: str) -> None:
        """Declare a room known from configuration (it shows as offline until it is born)."""
        self.site(site, district).name = name

    def node_online(self, site: str, district: str, bd_seq: int, at: int) -> None:
        state = self.site(site, district)
        state.node_online, state.since, state.bd_seq, state.last_message = True, at, bd_seq, at

    def node_offline(self, site: str, district: str, at: int) -> None:
        state = self.site(site, district)
        state.node_online, state.since = False, at
        for device in state.devices.values():
            device.online = False
            device.since = at
        for point in state.points.values():
            point.quality = Quality.STALE

    def device_online(
        self, site: str, district: str, device: str, points: dict[str, PointInfo], at: int
    ) -> None:
        state = self.site(site, district)
        entry = state.devices.setdefault(device, DeviceState(device))
        entry.online, entry.since, entry.points = True, at, points
        state.last_message = at

    def device_offline(self, site: str, district: str, device: str, at: int) -> None:
        state = self.site(site, district)
        entry = state.devices.setdefault(device, DeviceState(device))
        entry.online, entry.since = False, at
        prefix = device + "/"
        for path, point in state.points.items():
            if path.startswith(prefix):
                point.quality = Quality.STALE

    def declare(self, site: str, district: str, device: str, points: dict[str, PointInfo]) -> None:
        """Record a device known from an earlier birth without marking it online (warm start)."""
        state = self.site(site, district)
        entry = state.devices.setdefault(device, DeviceState(device))
        if not entry.points:
            entry.points = points

    def warm(self, site: str, district: str, values: Iterable[tuple[str, Value, int]]) -> None:
        """Last stored ``(point, value, ts)`` of a room, as STALE; never replaces a newer cached value."""
        points = self.site(site, district).points
        for point, value, ts in values:
            current = points.get(point)
            if current is None or current.ts < ts:
                points[point] = PointState(value, ts, Quality.STALE)

    def update(self, site: str, district: str, readings: Iterable[Reading], at: int) -> int:
        """Apply live readings (older ones than cached are ignored); return the newest reading ts."""
        state = self.site(site, district)
        state.last_message = at
        points = state.points
        newest = -1
        for point, ts, value, quality in rows_of(readings):
            if ts > newest:
                newest = ts
            current = points.get(point)
            if current is None:
                points[point] = PointState(value, ts, quality)
            elif ts >= current.ts:
                current.value, current.ts, current.quality = value, ts, quality
        return newest

    def counts(self) -> dict[str, int]:
        """Number of rooms by status (for /metrics)."""
        out = {"online": 0, "degraded": 0, "offline": 0}
        for state in self.sites.values():
            out[state.status] += 1
        return out
