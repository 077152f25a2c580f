"""The pump room's Sparkplug B edge node: history first, then publish; births, backfill, replay, commands.

Rules (DESIGN §2a, Sparkplug B 3.0):
- Every reported value is appended to the durable history *before* it is published; while the link is
  down or the primary host is offline the node keeps recording and publishes nothing but its death.
- On (re)connect: subscribe NCMD/DCMD (and the primary host's STATE), wait for the host to be online,
  publish NBIRTH then one DBIRTH per answering device, then backfill from history in order with
  ``is_historical=true`` at a bounded rate, while live data continues.
- The backfill starts from the last row published live before the link was lost, rewound by the time
  it takes to detect a dead link (1.5 × keepalive): QoS 0 gives no proof of delivery, so anything
  published in that window is sent again. Duplicates are harmless (the host writes idempotently).
- A host's ``Node Control/Replay`` (from ms) is answered from history the same way.
- A host's offline STATE (newer than its last online STATE) makes the node publish NDEATH and
  reconnect, as the spec requires; an older offline STATE (a stale will) is ignored.
- DCMD writes only whitelisted (``writable``) points, then reads the device back; the confirmed value
  is reported in the next DDATA. Everything else is refused and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tapline.domain.model import DataType, PointSpec, Quality, Reading, Value
from tapline.edge.history import History, HistoryRow
from tapline.edge.modbus_io import BusClient, ModbusIOError
from tapline.edge.poller import DeviceFound, DeviceLost, PollEvent, Sample, wall_ms
from tapline.edge.rbe import ReportByException
from tapline.logs import get_logger
from tapline.mqtt import BrokerUnavailable, Connection, Message, WillMessage
from tapline.registers.blocks import plan_blocks
from tapline.registers.codec import EncodeError, encode_bit, encode_registers
from tapline.registers.maps import RegisterMap, RegisterPoint
from tapline.sparkplug import topics
from tapline.sparkplug.edge_session import EdgeNodeSession, Rebirth, Replay, WritePoint
from tapline.sparkplug.errors import SparkplugError

log = get_logger(__name__)

BACKFILL_BATCH = 500  # readings per historical DDATA message
BACKFILL_RATE_MSGS = 20.0  # historical messages per second at most; live data is never queued behind


@dataclass
class NodeCounters:
    """Gateway health counters, published as node metrics (``Gateway/…``)."""

    commands_ok: int = 0
    commands_refused: int = 0
    commands_malformed: int = 0
    publish_failures: int = 0
    backfilled: int = 0

    def as_metrics(self, dropped: int) -> dict[str, int]:
        return {
            "Gateway/CommandsOk": self.commands_ok,
            "Gateway/CommandsRefused": self.commands_refused,
            "Gateway/CommandsMalformed": self.commands_malformed,
            "Gateway/PublishFailures": self.publish_failures,
            "Gateway/Backfilled": self.backfilled,
            "Gateway/HistoryDropped": dropped,
        }


NODE_METRICS = [
    PointSpec("Gateway", name.split("/")[1], DataType.INT) for name in NodeCounters().as_metrics(0)
]


@dataclass
class DevicePoints:
    """One device's points: specs for births, register points for writes and read-back."""

    name: str
    unit: int
    bus: BusClient
    register_map: RegisterMap
    specs: dict[str, PointSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.specs = {p.name: p.spec(self.name) for p in self.register_map.points}


class EdgeNode:
    """Glue between acquisition, history and the MQTT uplink for one room."""

    def __init__(
        self,
        *,
        group: str,
        node: str,
        devices: Sequence[DevicePoints],
        history: History,
        full_refresh_ms: int,
        primary_host: str | None = "tapline",
        keepalive_s: int = 15,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.group = group
        self.node = node
        self.devices = {d.name: d for d in devices}
        self.history = history
        self.primary_host = primary_host
        self.keepalive_s = keepalive_s
        self.clock_ms = clock_ms
        self.counters = NodeCounters()
        deadbands = {
            f"{d.name}/{p.name}": p.deadband for d in devices for p in d.register_map.points if p.deadband > 0
        }
        self.rbe = ReportByException(deadbands, full_refresh_ms)
        self.latest: dict[str, tuple[Value, int, Quality]] = {}
        self.online_devices: set[str] = set()
        self.session: EdgeNodeSession | None = None
        self.conn: Connection | None = None
        self.live = False
        self.host_online = primary_host is None
        self.host_state_ts = 0
        self.born: set[str] = set()
        self.sent_mark = 0  # last history id published live in the current session
        self.lost_mark: int | None = None  # sent_mark when the link was lost; backfill starts there
        self._backfill: asyncio.Task[None] | None = None
        self._publish_lock = asyncio.Lock()

    # --- MQTT session callbacks ---------------------------------------------------------------
    def will(self) -> WillMessage:
        """The NDEATH will of a new connection (a new bdSeq, persisted before connecting)."""
        bd_seq = self.history.next_bd_seq()
        self.session = EdgeNodeSession(self.group, self.node, bd_seq)
        topic, payload = self.session.will()
        return WillMessage(topic, payload, qos=1, retain=False)

    async def on_connect(self, conn: Connection) -> None:
        self.conn = conn
        await conn.subscribe(str(topics.Topic(self.group, topics.MessageType.NCMD, self.node, None)), qos=1)
        await conn.subscribe(f"spBv1.0/{self.group}/DCMD/{self.node}/+", qos=1)
        if self.primary_host:
            self.host_online = False
            await conn.subscribe(topics.state_topic(self.primary_host), qos=1)
        else:
            await self._go_live()

    async def on_disconnect(self, reason: str) -> None:
        if self.live:
            self.lost_mark = self.sent_mark if self.lost_mark is None else min(self.lost_mark, self.sent_mark)
        self.live = False
        self.conn = None
        self.born.clear()
        if self._backfill is not None:
            self._backfill.cancel()
            self._backfill = None

    async def on_message(self, message: Message) -> None:
        try:
            topic = topics.Topic.parse(message.topic)
        except SparkplugError:
            return
        if topic.type is topics.MessageType.STATE:
            await self._on_state(message.payload)
            return
        if self.session is None:
            return
        try:
            command = self.session.parse_command(message.topic, message.payload)
        except SparkplugError as exc:
            self.counters.commands_malformed += 1
            log.warning("command_malformed", topic=message.topic, error=str(exc))
            return
        if isinstance(command, Rebirth):
            log.info("rebirth_requested")
            if self.live:
                await self._births()
        elif isinstance(command, Replay):
            log.info("replay_requested", from_ms=command.from_ms, to_ms=command.to_ms)
            self._start_backfill(from_ms=command.from_ms, to_ms=command.to_ms)
        elif isinstance(command, WritePoint):
            await self._write(command)

    async def _on_state(self, payload: bytes) -> None:
        try:
            online, timestamp = topics.parse_state(payload)
        except SparkplugError:
            return
        if timestamp < self.host_state_ts:
            return  # a stale will from an older host session
        self.host_state_ts = timestamp
        if online and not self.host_online:
            self.host_online = True
            log.info("primary_host_online", host=self.primary_host)
            await self._go_live()
        elif not online and self.host_online:
            self.host_online = False
            log.warning("primary_host_offline", host=self.primary_host)
            if self.conn is not None and self.session is not None:
                with contextlib.suppress(BrokerUnavailable):
                    topic, body = self.session.ndeath(self.clock_ms())
                    await self.conn.publish(topic, body, qos=0)
            raise BrokerUnavailable("primary host went offline: reconnecting as the spec requires")

    async def _go_live(self) -> None:
        await self._births()
        self.live = True
        if self.lost_mark is not None:
            rewind_ms = int(1.5 * self.keepalive_s * 1000)
            self._start_backfill(after_id=self.lost_mark, rewind_ms=rewind_ms)
            self.lost_mark = None
        self.sent_mark = await self.history.append([])

    # --- births -------------------------------------------------------------------------------
    async def _births(self) -> None:
        if self.session is None or self.conn is None:
            return
        now = self.clock_ms()
        self.session.rebirth()
        counters = self.counters.as_metrics(self.history.dropped)
        node_values = [(spec, counters[spec.path], now) for spec in NODE_METRICS]
        topic, body = self.session.nbirth(node_values, now)
        await self._publish(topic, body)
        self.born.clear()
        for name in sorted(self.online_devices):
            await self._dbirth(name, now)

    async def _dbirth(self, name: str, now: int) -> None:
        assert self.session is not None
        device = self.devices[name]
        points: list[tuple[PointSpec, Value | None, int]] = []
        for spec in device.specs.values():
            latest = self.latest.get(spec.path)
            points.append((spec, latest[0] if latest else None, latest[1] if latest else now))
        topic, body = self.session.dbirth(name, points, now)
        await self._publish(topic, body)
        self.born.add(name)

    async def _publish(self, topic: str, body: bytes) -> bool:
        if self.conn is None:
            return False
        try:
            async with self._publish_lock:
                await self.conn.publish(topic, body, qos=0)
        except BrokerUnavailable:
            self.counters.publish_failures += 1
            return False
        return True

    # --- acquisition events --------------------------------------------------------------------
    async def handle(self, event: PollEvent) -> None:
        """Process one acquisition event: record, then publish if live."""
        if isinstance(event, DeviceFound):
            self.online_devices.add(event.device)
            return
        if isinstance(event, DeviceLost):
            self.online_devices.discard(event.device)
            self.rbe.forget(event.device)
            if self.live and event.device in self.born and self.session is not None:
                self.born.discard(event.device)
                await self._publish(*self.session.ddeath(event.device, event.ts))
            return
        await self._sample(event)

    async def _sample(self, sample: Sample, force: set[str] | None = None) -> None:
        device = self.devices[sample.device]
        values = {f"{sample.device}/{name}": value for name, value in sample.values.items()}
        report = self.rbe.filter(values, sample.ts)
        for path in force or ():
            if path in values:
                report[path] = values[path]
        readings = [
            Reading(path, sample.ts, value, _quality(device.specs[path.split("/", 1)[1]], value))
            for path, value in report.items()
        ]
        for reading in readings:
            self.latest[reading.point] = (reading.value, reading.ts, reading.quality)
        last_id = await self.history.append(readings)
        if not self.live or self.session is None:
            return
        if sample.device not in self.born:
            await self._dbirth(sample.device, sample.ts)
        elif readings:
            await self._publish(*self.session.ddata(sample.device, readings, sample.ts))
        self.sent_mark = last_id

    # --- backfill and replay -------------------------------------------------------------------
    def _start_backfill(
        self, *, after_id: int = 0, rewind_ms: int = 0, from_ms: int | None = None, to_ms: int | None = None
    ) -> None:
        if self._backfill is not None and not self._backfill.done():
            self._backfill.cancel()
        self._backfill = asyncio.create_task(
            self._run_backfill(after_id, rewind_ms, from_ms, to_ms), name=f"backfill-{self.node}"
        )

    async def _run_backfill(
        self, after_id: int, rewind_ms: int, from_ms: int | None, to_ms: int | None
    ) -> None:
        end_id = await self.history.append([])
        if from_ms is None:
            first = await self.history.after_id(after_id, 1)
            if not first:
                return
            from_ms = first[0].reading.ts - rewind_ms
        end_ms = to_ms if to_ms is not None else self.clock_ms() + 1
        cursor = 0
        sent = 0
        while self.live and self.session is not None:
            rows = await self.history.between(from_ms, end_ms, cursor, BACKFILL_BATCH)
            rows = [row for row in rows if row.id <= end_id]
            if not rows:
                break
            cursor = rows[-1].id
            for device, readings in _by_device(rows).items():
                if device in self.devices:
                    await self._publish(
                        *self.session.ddata(device, readings, self.clock_ms(), historical=True)
                    )
            sent += len(rows)
            self.counters.backfilled += len(rows)
            await asyncio.sleep(1.0 / BACKFILL_RATE_MSGS)
        log.info("backfill_done", readings=sent)

    # --- commands ------------------------------------------------------------------------------
    async def _write(self, command: WritePoint) -> None:
        device = self.devices.get(command.device) if command.device else None
        point = _find(device.register_map, command.point_name) if device else None
        if device is None or point is None or not point.writable:
            self.counters.commands_refused += 1
            log.warning(
                "command_refused", device=command.device, point=command.point_name, reason="not writable"
            )
            return
        try:
            if point.table.is_bit:
                await device.bus.write(
                    device.unit, point.table, point.address, [encode_bit(point, command.value)]
                )
            else:
                await device.bus.write(
                    device.unit, point.table, point.address, encode_registers(point, command.value)
                )
            block = plan_blocks([point])[0]
            data = await device.bus.read(device.unit, block.table, block.address, block.count)
        except (EncodeError, ModbusIOError) as exc:
            self.counters.commands_refused += 1
            log.warning("command_failed", device=command.device, point=command.point_name, error=str(exc))
            return
        self.counters.commands_ok += 1
        values = block.decode(data)
        log.info(
            "command_written", device=command.device, point=command.point_name, readback=values[point.name]
        )
        path = f"{device.name}/{point.name}"
        await self._sample(Sample(device.name, self.clock_ms(), values, "fast"), force={path})

    async def publish_counters(self) -> None:
        """Send the gateway counters as NDATA (called periodically by the app)."""
        if not self.live or self.session is None:
            return
        now = self.clock_ms()
        counters = self.counters.as_metrics(self.history.dropped)
        readings = [Reading(name, now, value) for name, value in counters.items()]
        await self._publish(*self.session.ndata(readings, now))


def _find(register_map: RegisterMap, name: str) -> RegisterPoint | None:
    for point in register_map.points:
        if point.name == name:
            return point
    return None


def _quality(spec: PointSpec, value: Value) -> Quality:
    """UNCERTAIN outside the engineering range: e.g. a 4–20 mA transmitter below 4 mA reads negative."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Quality.GOOD
    if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
        return Quality.UNCERTAIN
    return Quality.GOOD


def _by_device(rows: Sequence[HistoryRow]) -> dict[str, list[Reading]]:
    out: dict[str, list[Reading]] = {}
    for row in rows:
        device = row.reading.point.split("/", 1)[0]
        out.setdefault(device, []).append(row.reading)
    return out
