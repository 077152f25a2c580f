"""Test kit for the host application: a sans-IO edge double, a fake MQTT connection, store helpers.

``EdgeDouble`` is a Sparkplug edge node reduced to what the host's exactly-once machinery needs: it keeps
every value it "records" in its own history (as a real gateway does before publishing), publishes live
DDATA while born, answers ``Rebirth`` with a birth sequence and ``Replay`` with historical DDATA from its
history followed by the ``replay_done`` confirmation. It returns messages instead of sending them, so a
test decides what is delivered, lost, duplicated or reordered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tapline.domain.model import DataType, PointSpec, Reading, Value
from tapline.ingest.host import IngestService, IngestSettings
from tapline.ingest.live import LiveState
from tapline.mqtt import Connection, Message
from tapline.sparkplug.edge_session import EdgeNodeSession, Rebirth, Replay
from tapline.sparkplug.edge_session import Message as Wire
from tapline.store.errors import StoreUnavailable
from tapline.store.relational import RelationalStore
from tapline.store.telemetry import (
    HistoryPoint,
    Sample,
    SampleRow,
    SeriesKey,
    StoreLifecycle,
    TelemetryStore,
    open_telemetry_store,
)

POINTS: dict[str, list[PointSpec]] = {
    "plc": [
        PointSpec("plc", "OutletPressure", DataType.FLOAT, "MPa", 0.0, 1.6),
        PointSpec("plc", "Flow", DataType.FLOAT, "m3/h"),
        PointSpec("plc", "Mode", DataType.INT),
    ],
    "vfd1": [
        PointSpec("vfd1", "Running", DataType.BOOL),
        PointSpec("vfd1", "Frequency", DataType.FLOAT, "Hz"),
    ],
}


def value_of(spec: PointSpec, step: int) -> float | int | bool:
    if spec.datatype is DataType.BOOL:
        return step % 2 == 0
    if spec.datatype is DataType.INT:
        return step % 3
    return round(0.1 + step * 0.001, 6)


@dataclass
class EdgeDouble:
    """A minimal edge node with a durable history (see the module docstring)."""

    group: str
    node: str
    bd_seq: int = 0
    confirm_replays: bool = True
    devices: dict[str, list[PointSpec]] = field(default_factory=lambda: POINTS)
    history: list[Reading] = field(default_factory=list)
    step: int = 0

    def __post_init__(self) -> None:
        self.session = EdgeNodeSession(self.group, self.node, self.bd_seq)
        self.latest: dict[str, Reading] = {}

    def reconnect(self) -> Wire:
        """A new MQTT connection: next bdSeq; returns that connection's will (NDEATH)."""
        self.bd_seq = (self.bd_seq + 1) % 256
        self.session = EdgeNodeSession(self.group, self.node, self.bd_seq)
        return self.session.will()

    def will(self) -> Wire:
        return self.session.will()

    def births(self, now: int) -> list[Wire]:
        if self.session.born:
            self.session.rebirth()
        out = [self.session.nbirth([], now)]
        for device, specs in self.devices.items():
            values: list[tuple[PointSpec, Value | None, int]] = []
            for spec in specs:
                last = self.latest.get(spec.path)
                values.append((spec, None, now) if last is None else (spec, last.value, last.ts))
            out.append(self.session.dbirth(device, values, now))
        return out

    def record(self, ts: int) -> list[Wire]:
        """Record one value of every point at ``ts`` (history first), then the live DDATA if born."""
        self.step += 1
        out = []
        for device, specs in self.devices.items():
            readings = [Reading(s.path, ts, value_of(s, self.step)) for s in specs]
            self.history.extend(readings)
            for reading in readings:
                self.latest[reading.point] = reading
            if self.session.born:
                out.append(self.session.ddata(device, readings, ts))
        return out

    def command(self, topic: str, payload: bytes, now: int, chunk: int = 7) -> list[Wire]:
        """Answer an NCMD addressed to this node."""
        command = self.session.parse_command(topic, payload)
        if isinstance(command, Rebirth):
            return self.births(now)
        if isinstance(command, Replay) and self.session.born:
            return self.replay(command, now, chunk)
        return []

    def replay(self, command: Replay, now: int, chunk: int = 7) -> list[Wire]:
        rows = [
            r
            for r in self.history
            if r.ts >= command.from_ms and (command.to_ms is None or r.ts < command.to_ms)
        ]
        out = []
        for device in self.devices:
            mine = [r for r in rows if r.point.startswith(device + "/")]
            for start in range(0, len(mine), chunk):
                out.append(self.session.ddata(device, mine[start : start + chunk], now, historical=True))
        if self.confirm_replays:
            out.append(self.session.replay_done(command, now))
        return out

    def expected(self) -> set[tuple[str, int]]:
        """(point, ts) of every value this edge ever recorded."""
        return {(r.point, r.ts) for r in self.history}


class FakeConnection(Connection):
    """Records what the host publishes; never touches a network."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, int, bool]] = []
        self.subscriptions: list[tuple[str, int]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload, qos, retain))

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        self.subscriptions.append((topic, qos))

    def take(self) -> list[tuple[str, bytes]]:
        """Commands published since the last call (NCMD/DCMD only)."""
        out = [(t, p) for t, p, _, _ in self.published if "/NCMD/" in t or "/DCMD/" in t]
        self.published = [m for m in self.published if "/NCMD/" not in m[0] and "/DCMD/" not in m[0]]
        return out


class Clock:
    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def deliver(host: IngestService, wires: Sequence[Wire]) -> None:
    for topic, payload in wires:
        await host.on_message(Message(topic, payload))


async def converse(
    host: IngestService, conn: FakeConnection, edge: EdgeDouble, now: int, rounds: int = 5
) -> None:
    """Let the edge answer the host's commands (and the host the answers) until they fall silent."""
    for _ in range(rounds):
        commands = [c for c in conn.take() if f"/{edge.node}" in c[0]]
        if not commands:
            return
        for topic, payload in commands:
            await deliver(host, edge.command(topic, payload, now))


async def stored_points(store: TelemetryStore, site: str, edge: EdgeDouble) -> list[tuple[str, int]]:
    """Every stored (point, ts) of the edge's numeric points, with repeats if there were any."""
    keys = [SeriesKey(site, s.path) for specs in edge.devices.values() for s in specs]
    ids = await store.ensure_series(keys)
    out: list[tuple[str, int]] = []
    for key, series_id in ids.items():
        rows = await store.history(series_id, 0, 2**62)
        out += [(key.point, row.ts) for row in rows]
    return out


@dataclass
class Host:
    """An ingest service on real stores (SQLite file or PostgreSQL) with a fake connection."""

    service: IngestService
    conn: FakeConnection
    store: TelemetryStore
    relational: RelationalStore

    async def close(self) -> None:
        await self.relational.close()
        await self.store.close()


async def open_host(url: str, clock: Clock, settings: IngestSettings | None = None) -> Host:
    store = open_telemetry_store(url)
    await store.open()
    relational = RelationalStore(url)
    await relational.open()
    service = IngestService(
        store,
        LiveState(),
        settings or IngestSettings(reorder_timeout_ms=500),
        relational=relational,
        clock_ms=clock,
    )
    await service.start()
    conn = FakeConnection()
    await service.on_connect(conn)
    return Host(service, conn, store, relational)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tapline.db'}"


class MemoryStore(StoreLifecycle):
    """A ``TelemetryStore`` in a dict, idempotent on (series, ts); ``fail`` makes writes unavailable."""

    def __init__(self) -> None:
        self.series: dict[SeriesKey, int] = {}
        self.rows: dict[tuple[int, int], Sample] = {}
        self.writes = 0
        self.fail = False

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ensure_series(self, keys: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
        for key in keys:
            self.series.setdefault(key, len(self.series) + 1)
        return {key: self.series[key] for key in keys}

    async def write(self, samples: Sequence[SampleRow]) -> int:
        if self.fail:
            raise StoreUnavailable("memory store told to fail")
        self.writes += 1
        before = len(self.rows)
        for row in samples:
            self.rows.setdefault((row[0], row[1]), Sample(*row))
        return len(self.rows) - before

    async def latest(self, series_ids: Sequence[int] | None = None) -> dict[int, Sample]:
        out: dict[int, Sample] = {}
        for (series_id, _ts), sample in sorted(self.rows.items()):
            if series_ids is None or series_id in series_ids:
                out[series_id] = sample
        return out

    async def history(
        self, series_id: int, start: int, end: int, step_ms: int | None = None
    ) -> list[HistoryPoint]:
        rows = sorted(s for (sid, ts), s in self.rows.items() if sid == series_id and start <= ts < end)
        return [HistoryPoint(s.ts, s.value, s.value, s.value, s.value, 1, s.quality) for s in rows]

    async def rollup(self, now_ms: int) -> int:
        return 0

    async def compact(self, now_ms: int) -> int:
        return 0  # rows in a dict: there is nothing to pack

    async def apply_retention(self, now_ms: int) -> int:
        return 0

    async def count(self) -> int:
        return len(self.rows)

    def points(self) -> list[tuple[str, int]]:
        names = {series_id: key.point for key, series_id in self.series.items()}
        return [(names[series_id], ts) for series_id, ts in self.rows]
