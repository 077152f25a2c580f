"""The gateway's own metrics, published as Sparkplug node metrics (declared in NBIRTH, sent in NDATA).

Names (all node metrics, so a dead device's statistics still reach the cloud):
- ``Gateway/…``: counters of the node itself (commands, bad input, publishing, history).
- ``Device/<device>/…``: per-device acquisition statistics (requests, timeouts, errors, latency).
- ``Bus/<bus>/…``: per-bus load — requests, achieved and configured requests per second, overruns.
- ``Interlock/…``: the local protection's state (written to history as events; see node.py).

Counters only grow (they survive reconnects, not restarts, except the history ones, which are
persistent); a consumer computes rates from differences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Protocol

from tapline.domain.model import DataType, PointSpec, Value

INTERLOCK_INHIBIT = "Interlock/PumpsInhibited"
INTERLOCK_TRIPS = "Interlock/Trips"


def interlock_active(rule: str) -> str:
    return f"Interlock/{rule}/Active"


@dataclass
class NodeCounters:
    """Counters of the edge node (``Gateway/<FieldName in CamelCase>``)."""

    commands_ok: int = 0
    commands_refused: int = 0
    commands_failed: int = 0
    commands_mismatch: int = 0
    commands_malformed: int = 0
    bad_messages: int = 0
    publish_failures: int = 0
    backfilled: int = 0
    backfill_skipped: int = 0
    replays: int = 0
    history_failures: int = 0
    interlock_writes: int = 0
    interlock_write_failures: int = 0
    task_restarts: int = 0

    def as_metrics(self) -> dict[str, Value]:
        return {f"Gateway/{_camel(f.name)}": getattr(self, f.name) for f in fields(self)}


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


@dataclass(frozen=True, slots=True)
class DeviceStatsView:
    online: bool
    requests: int
    timeouts: int
    errors: int
    block_errors: int
    retries: int
    latency_mean_ms: float
    latency_max_ms: float


@dataclass(frozen=True, slots=True)
class BusStatsView:
    requests: int
    configured_per_s: float
    overruns: int


class StatsSource(Protocol):
    """Where per-device and per-bus statistics come from (the gateway's pollers and buses)."""

    def devices(self) -> dict[str, DeviceStatsView]: ...

    def buses(self) -> dict[str, BusStatsView]: ...


_DEVICE_FIELDS: tuple[tuple[str, DataType], ...] = (
    ("Online", DataType.BOOL),
    ("Requests", DataType.INT),
    ("Timeouts", DataType.INT),
    ("Errors", DataType.INT),
    ("BlockErrors", DataType.INT),
    ("Retries", DataType.INT),
    ("LatencyMs", DataType.FLOAT),
    ("LatencyMaxMs", DataType.FLOAT),
)
_BUS_FIELDS: tuple[tuple[str, DataType], ...] = (
    ("Requests", DataType.INT),
    ("RequestsPerSecond", DataType.FLOAT),
    ("ConfiguredPerSecond", DataType.FLOAT),
    ("Overruns", DataType.INT),
)


class NodeMetrics:
    """Declares and evaluates every node metric of one gateway."""

    def __init__(
        self,
        counters: NodeCounters,
        history_counts: Callable[[], tuple[int, int]],
        *,
        device_names: Sequence[str] = (),
        bus_names: Sequence[str] = (),
        rules: Sequence[str] = (),
        stats: StatsSource | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.counters = counters
        self._history_counts = history_counts
        self._stats = stats
        self._monotonic = monotonic
        self._rate_base: dict[str, tuple[float, int]] = {}
        specs = [PointSpec("Gateway", name.split("/")[1], DataType.INT) for name in counters.as_metrics()]
        specs += [
            PointSpec("Gateway", "HistoryDropped", DataType.INT),
            PointSpec("Gateway", "HistoryPruned", DataType.INT),
        ]
        for device in device_names:
            specs += [PointSpec(f"Device/{device}", name, kind) for name, kind in _DEVICE_FIELDS]
        for bus in bus_names:
            specs += [PointSpec(f"Bus/{bus}", name, kind) for name, kind in _BUS_FIELDS]
        self.event_specs = [PointSpec("Interlock", "PumpsInhibited", DataType.BOOL)] if rules else []
        if rules:
            self.event_specs.append(PointSpec("Interlock", "Trips", DataType.INT))
            self.event_specs += [PointSpec(f"Interlock/{rule}", "Active", DataType.BOOL) for rule in rules]
        self.status_specs = specs
        self.specs = specs + self.event_specs
        self.declared = {spec.path for spec in self.specs}

    def status(self) -> dict[str, Value]:
        """Current values of every non-event node metric."""
        dropped, pruned = self._history_counts()
        values: dict[str, Value] = dict(self.counters.as_metrics())
        values["Gateway/HistoryDropped"] = dropped
        values["Gateway/HistoryPruned"] = pruned
        if self._stats is None:
            return values
        for device, view in self._stats.devices().items():
            prefix = f"Device/{device}/"
            values[prefix + "Online"] = view.online
            values[prefix + "Requests"] = view.requests
            values[prefix + "Timeouts"] = view.timeouts
            values[prefix + "Errors"] = view.errors
            values[prefix + "BlockErrors"] = view.block_errors
            values[prefix + "Retries"] = view.retries
            values[prefix + "LatencyMs"] = round(view.latency_mean_ms, 3)
            values[prefix + "LatencyMaxMs"] = round(view.latency_max_ms, 3)
        for bus, bus_view in self._stats.buses().items():
            prefix = f"Bus/{bus}/"
            values[prefix + "Requests"] = bus_view.requests
            values[prefix + "RequestsPerSecond"] = round(self._rate(bus, bus_view.requests), 3)
            values[prefix + "ConfiguredPerSecond"] = round(bus_view.configured_per_s, 3)
            values[prefix + "Overruns"] = bus_view.overruns
        return {path: value for path, value in values.items() if path in self.declared}

    def _rate(self, key: str, requests: int) -> float:
        """Requests per second since the previous report (0.0 on the first)."""
        if self._monotonic is None:
            return 0.0
        now = self._monotonic()
        base = self._rate_base.get(key)
        self._rate_base[key] = (now, requests)
        if base is None or now <= base[0]:
            return 0.0
        return (requests - base[1]) / (now - base[0])
