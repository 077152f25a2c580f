"""The pump room's Sparkplug B edge node: history first, then publish; births, backfill, replay, commands.

Rules (DESIGN §2a, Sparkplug B 3.0):
- Every reported value is appended to the durable history *before* it is published; while the link is
  down or the primary host is offline the node keeps recording and publishes nothing but its death.
- Two locks order everything. The *lane* lock covers append + live publish, so live rows go out in id
  order and the resume bookkeeping (backfill.py) can trust that; the *send* lock covers building a
  message with the session (which assigns seq) and publishing it, so seq order is publish order. Births
  hold the send lock for the whole NBIRTH + DBIRTH sequence.
- On (re)connect: subscribe NCMD/DCMD (and the primary host's STATE), wait for the host to be online,
  publish NBIRTH then one DBIRTH per answering device, then backfill from the resume mark in id order
  with ``is_historical=true``, rate-limited, while live data continues. A host's ``Node
  Control/Replay`` is queued behind it. Rows of a device that is dead when they come up wait until its
  DBIRTH. Jobs are never cancelled by new requests, only by a disconnect (the resume mark covers them).
- A host's offline STATE (newer than its last online STATE) makes the node publish NDEATH and
  reconnect, as the spec requires; an older offline STATE (a stale will) is ignored.
- Interlocks see every polled value (before report-by-exception) and act on the devices directly,
  whatever the uplink does; their transitions are recorded in history as ``Interlock/…`` node metrics
  and published like data, so they are backfilled too.
- DCMD writes only whitelisted points (commands.py), reads them back, and reports the read-back in the
  next DDATA. Malformed or unknown commands and messages are counted, logged once per kind, ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from tapline.domain.model import PointSpec, Quality, Reading, Value
from tapline.edge import interlocks as il
from tapline.edge.backfill import Progress, detection_window_s
from tapline.edge.commands import PointWriter, Refused, Target, check, confirmed
from tapline.edge.history import History, HistoryError
from tapline.edge.metrics import INTERLOCK_INHIBIT, INTERLOCK_TRIPS, NodeCounters, NodeMetrics
from tapline.edge.modbus_io import BusClient, ModbusIOError
from tapline.edge.poller import DeviceFound, DeviceLost, PollEvent, Sample, wall_ms
from tapline.edge.rbe import ReportByException
from tapline.edge.resend import Builder, Link, Resender
from tapline.logs import get_logger
from tapline.mqtt import BrokerUnavailable, Message, WillMessage
from tapline.registers.maps import RegisterMap
from tapline.sparkplug import topics
from tapline.sparkplug.edge_session import BirthValue, EdgeNodeSession, Rebirth, Replay, WritePoint
from tapline.sparkplug.edge_session import Message as SpMessage
from tapline.sparkplug.errors import SessionError, SparkplugError

log = get_logger(__name__)


BACKFILL_BATCH = 500  # history rows per backfill step (split into one message per device)
BACKFILL_RATE_MSGS = 20.0  # historical messages per second at most; live data never waits behind them
INTERLOCK_STATE_KEY = "interlocks"


class Uplink(Protocol):
    """What the node needs from a live MQTT connection (``tapline.mqtt.Connection``)."""

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None: ...

    async def subscribe(self, topic: str, qos: int = 1) -> None: ...


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
    """Glue between acquisition, interlocks, history and the MQTT uplink for one room."""

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
        interlocks: il.Interlocks | None = None,
        metrics: NodeMetrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        backfill_rate_msgs: float = BACKFILL_RATE_MSGS,
        backfill_batch: int = BACKFILL_BATCH,
    ) -> None:
        self.group = group
        self.node = node
        self.devices = {d.name: d for d in devices}
        self.history = history
        self.primary_host = primary_host
        self.keepalive_s = keepalive_s
        self.clock_ms = clock_ms
        self.monotonic = monotonic
        self.window_s = detection_window_s(keepalive_s)
        self.backfill_rate_msgs = backfill_rate_msgs
        self.backfill_batch = backfill_batch
        self.interlocks = interlocks
        self.counters = metrics.counters if metrics is not None else NodeCounters()
        self.metrics = metrics or NodeMetrics(
            self.counters,
            lambda: (history.dropped, history.pruned),
            rules=list(interlocks.rules) if interlocks is not None else [],
        )
        self.node_specs = {spec.path: spec for spec in self.metrics.specs}
        deadbands = {
            f"{d.name}/{p.name}": p.deadband for d in devices for p in d.register_map.points if p.deadband > 0
        }
        self.rbe = ReportByException(deadbands, full_refresh_ms)
        self.full_refresh_ms = full_refresh_ms
        self.writer = PointWriter({d.name: Target(d.name, d.unit, d.bus, d.register_map) for d in devices})
        self.latest: dict[str, tuple[Value, int, Quality]] = {}
        self.online_devices: set[str] = set()
        self.session: EdgeNodeSession | None = None
        self.conn: Uplink | None = None
        self.live = False
        self.host_online = primary_host is None
        self.host_state_ts = 0
        self.births = 0  # NBIRTHs published (tests and diagnostics)
        self.resumed_from: int | None = None  # the resume mark the last session's backfill began at
        self._lane_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._inflight: set[asyncio.Future[None]] = set()
        self._lane: Progress | None = None
        self._idle_mark = history.meta("resume_id", 0)
        self._persisted_mark = self._idle_mark
        self.resender = Resender(
            history,
            Link(live=lambda: self.live, born=self._born, send=self._send_historical),
            device_specs={d.name: d.specs for d in devices},
            node_specs=self.node_specs,
            counters=self.counters,
            window_s=self.window_s,
            clock_ms=clock_ms,
            monotonic=monotonic,
            once=self._once,
            batch=backfill_batch,
            rate_msgs=backfill_rate_msgs,
        )
        self._status_sent: dict[str, Value] = {}
        self._status_refreshed = 0
        self._noted: set[str] = set()

    # --- bookkeeping helpers -------------------------------------------------------------------

    def _once(self, key: str) -> bool:
        """True the first time ``key`` is seen: log a kind of problem once, count it always."""
        if key in self._noted or len(self._noted) > 1000:
            return False
        self._noted.add(key)
        return True

    def resume_mark(self) -> int:
        """Every history id at or below this is safely out (backfill.py)."""
        return self.resender.mark(self._lane, self._idle_mark, self.monotonic())

    def persist_mark(self) -> None:
        """Save the resume mark so a restarted gateway resumes there (cheap; called periodically)."""
        mark = self.resume_mark()
        if mark != self._persisted_mark:
            self.history.set_meta("resume_id", mark)
            self._persisted_mark = mark

    # --- MQTT session callbacks ---------------------------------------------------------------

    def will(self) -> WillMessage:
        """The NDEATH will of a new connection (a new bdSeq, persisted before connecting)."""
        bd_seq = self.history.next_bd_seq()
        self.session = EdgeNodeSession(self.group, self.node, bd_seq)
        topic, payload = self.session.will()
        return WillMessage(topic, payload, qos=1, retain=False)

    async def on_connect(self, conn: Uplink) -> None:
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
            self._idle_mark = self.resume_mark()
            log.info("uplink_lost", resume_id=self._idle_mark, last_id=self.history.last_id, reason=reason)
        self.live = False
        self.conn = None
        for publish in list(self._inflight):
            publish.cancel()
        self._lane = None
        self.resender.stop()
        self.persist_mark()

    async def goodbye(self, timeout_s: float = 1.0) -> None:
        """Intentional disconnect: publish NDEATH (bdSeq of this session) while the link is up.

        The NDEATH goes at QoS 1: its PUBACK proves the broker read everything published before it
        on this connection (one TCP stream, read in order), so the whole session counts as safely
        out and a restart does not send it again."""
        acknowledged = False
        async with self._send_lock:
            conn, session = self.conn, self.session
            self.conn = None  # nothing else goes out on this connection
            if conn is not None and session is not None and session.born:
                with contextlib.suppress(BrokerUnavailable, SessionError, TimeoutError):
                    topic, body = session.ndeath(self.clock_ms())
                    await asyncio.wait_for(conn.publish(topic, body, qos=1), timeout_s)
                    acknowledged = True
        if acknowledged and self.live:
            self._idle_mark = self.resender.mark(self._lane, self._idle_mark, math.inf)
            self.live = False
        await self.on_disconnect("shutdown")

    async def on_message(self, message: Message) -> None:
        try:
            topic = topics.Topic.parse(message.topic)
        except SparkplugError as exc:
            self.counters.bad_messages += 1
            if self._once(f"topic:{type(exc).__name__}"):
                log.warning("message_ignored", topic=message.topic, error=str(exc))
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
            if self._once(f"command:{type(exc).__name__}:{str(exc)[:40]}"):
                log.warning("command_malformed", topic=message.topic, error=str(exc))
            await self.publish_status()
            return
        if isinstance(command, Rebirth):
            log.info("rebirth_requested")
            if self.live:
                await self._births()
        elif isinstance(command, Replay):
            self.counters.replays += 1
            log.info("replay_requested", from_ms=command.from_ms, to_ms=command.to_ms)
            self.resender.replay(command.from_ms, command.to_ms)
        elif isinstance(command, WritePoint):
            await self._command(command)

    async def _on_state(self, payload: bytes) -> None:
        try:
            online, timestamp = topics.parse_state(payload)
        except SparkplugError as exc:
            self.counters.bad_messages += 1
            if self._once("state"):
                log.warning("state_malformed", error=str(exc))
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
            await self.goodbye()
            raise BrokerUnavailable("primary host went offline: reconnecting as the spec requires")

    async def _go_live(self) -> None:
        async with self._lane_lock:
            await self._births()
            floor = self.history.last_id
            self._lane = Progress(floor, self.window_s)
            self.live = True
            self.resumed_from = self._idle_mark
            if floor > self._idle_mark:
                log.info("backfill_queued", after_id=self._idle_mark, upto_id=floor)
                self.resender.resume(self._idle_mark, floor)
        self.resender.start(f"backfill-{self.node}")

    # --- publishing ----------------------------------------------------------------------------

    async def _send(self, build: Builder, *, qos: int = 0) -> bool:
        """Build a message with the session (assigning its seq) and publish it, atomically."""
        async with self._send_lock:
            return await self._send_checked(build, qos=qos)

    async def _send_checked(self, build: Builder, *, qos: int = 0) -> bool:
        """``_send_locked`` for live paths: a session refusal is a bug, logged once, not a crash."""
        try:
            return await self._send_locked(build, qos=qos)
        except SessionError as exc:
            self.counters.publish_failures += 1
            if self._once(f"session:{str(exc)[:50]}"):
                log.error("publish_refused_by_session", error=str(exc))
            return False

    async def _send_locked(self, build: Builder, *, qos: int = 0) -> bool:
        conn, session = self.conn, self.session
        if conn is None or session is None:
            return False
        message = build(session)
        if message is None:
            return True
        topic, body = message
        # A publish on a link that just died can hang until the client's timeout; on_disconnect
        # cancels it so the next session's births do not wait behind it (it counts as not sent).
        publish = asyncio.ensure_future(conn.publish(topic, body, qos=qos))
        self._inflight.add(publish)
        try:
            await asyncio.wait({publish})
        except asyncio.CancelledError:
            publish.cancel()
            raise
        finally:
            self._inflight.discard(publish)
        if publish.cancelled() or isinstance(publish.exception(), BrokerUnavailable):
            self.counters.publish_failures += 1
            return False
        publish.result()  # anything else is a bug: let it surface
        return True

    async def _births(self) -> None:
        async with self._send_lock:
            session = self.session
            if session is None or self.conn is None:
                return
            now = self.clock_ms()
            session.rebirth()
            values = {**self.metrics.status(), **self._interlock_values()}
            node_values: list[BirthValue] = [
                (spec, values.get(spec.path), now) for spec in self.metrics.specs
            ]
            await self._send_checked(lambda s: s.nbirth(node_values, now))
            self.births += 1
            self._status_sent = {}
            self._status_refreshed = now
            for name in sorted(self.online_devices):
                await self._send_checked(self._dbirth_builder(name, now))
                self.on_dbirth_device(name)

    def _dbirth_builder(self, name: str, now: int) -> Builder:
        return lambda session: session.dbirth(name, self._birth_points(name, now), now)

    def _birth_points(self, name: str, now: int) -> list[BirthValue]:
        points: list[BirthValue] = []
        for spec in self.devices[name].specs.values():
            latest = self.latest.get(spec.path)
            points.append((spec, latest[0] if latest else None, latest[1] if latest else now))
        return points

    async def publish_status(self) -> None:
        """Send the gateway's status metrics that changed (all of them once per full refresh)."""
        if not self.live:
            return
        now = self.clock_ms()
        values = self.metrics.status()
        refresh = now - self._status_refreshed >= self.full_refresh_ms
        changed = {k: v for k, v in values.items() if refresh or self._status_sent.get(k) != v}
        if not changed:
            return
        readings = [Reading(path, now, value) for path, value in changed.items()]
        if await self._send(lambda s: s.ndata(readings, now)):
            self._status_sent.update(changed)
            if refresh:
                self._status_refreshed = now

    # --- acquisition events --------------------------------------------------------------------

    async def handle(self, event: PollEvent) -> None:
        """Process one acquisition event: interlocks, record, then publish if live."""
        if isinstance(event, DeviceFound):
            self.online_devices.add(event.device)
            return
        if isinstance(event, DeviceLost):
            self.online_devices.discard(event.device)
            self.rbe.forget(event.device)
            async with self._send_lock:
                if self.live and self.session is not None and event.device in self.session.devices:
                    await self._send_checked(lambda s: s.ddeath(event.device, event.ts))
            return
        effects: list[il.Effect] = []
        if self.interlocks is not None:
            observed = {
                f"{event.device}/{name}": (value, self._quality(event.device, name, value))
                for name, value in event.values.items()
            }
            effects = self.interlocks.observe(observed, event.ts)
        await self._sample(event)
        if effects:
            await self._interlock_effects(effects)

    def _quality(self, device: str, name: str, value: Value) -> Quality:
        spec = self.devices[device].specs.get(name)
        return _quality(spec, value) if spec is not None else Quality.GOOD

    async def _sample(self, sample: Sample, force: set[str] | None = None) -> None:
        values = {f"{sample.device}/{name}": value for name, value in sample.values.items()}
        report = self.rbe.filter(values, sample.ts)
        for path in force or ():
            if path in values:
                report[path] = values[path]
        readings = [
            Reading(path, sample.ts, value, self._quality(sample.device, path.split("/", 1)[1], value))
            for path, value in report.items()
        ]
        for reading in readings:
            self.latest[reading.point] = (reading.value, reading.ts, reading.quality)
        device = sample.device
        birth = False

        def build(session: EdgeNodeSession) -> SpMessage | None:
            nonlocal birth
            if device not in session.devices:
                birth = True
                return session.dbirth(device, self._birth_points(device, sample.ts), sample.ts)
            return session.ddata(device, readings, sample.ts) if readings else None

        await self._record_and_send(readings, build, always=device not in self._born())
        if birth:
            self.on_dbirth_device(device)

    def _born(self) -> frozenset[str]:
        return self.session.devices if self.session is not None else frozenset()

    async def _record_and_send(self, readings: list[Reading], build: Builder, *, always: bool) -> None:
        """The live lane: append to history, then publish if live (``always``: even with no readings)."""
        async with self._lane_lock:
            ids: tuple[int, int] | None = None
            try:
                ids = await self.history.append(readings)
            except HistoryError as exc:
                self.counters.history_failures += 1
                if self._once("history_append"):
                    log.error("history_append_failed", error=str(exc))
            if not self.live or (not readings and not always):
                return
            async with self._send_lock:
                if not self.live:
                    return
                sent = await self._send_checked(build)
            lane = self._lane
            if lane is None or ids is None or ids[1] < ids[0]:
                return
            if sent:
                lane.published(self.monotonic(), ids[1])
            else:
                lane.failed(ids[0])

    # --- interlocks ----------------------------------------------------------------------------

    def _interlock_values(self) -> dict[str, Value]:
        engine = self.interlocks
        if engine is None:
            return {}
        active = set(engine.active())
        values: dict[str, Value] = {INTERLOCK_INHIBIT: engine.inhibited, INTERLOCK_TRIPS: engine.trips}
        for name in engine.rules:
            values[f"Interlock/{name}/Active"] = name in active
        return values

    async def _interlock_effects(self, effects: Sequence[il.Effect]) -> None:
        engine = self.interlocks
        assert engine is not None
        for effect in effects:
            if isinstance(effect, il.RuleTripped):
                log.warning("interlock_tripped", rule=effect.rule, point=effect.point, value=effect.value)
            elif isinstance(effect, il.RuleReleased):
                log.info("interlock_released", rule=effect.rule, point=effect.point, value=effect.value)
        if any(not isinstance(e, il.Act) or e.kind != "reassert" for e in effects):
            await self._record_node_events(self._interlock_values())
        for effect in effects:
            if not isinstance(effect, il.Act):
                continue
            if effect.kind == "stop":
                log.warning("pumps_stopped_by_interlock", rules=list(effect.rules))
            elif effect.kind == "release":
                log.info("pumps_released_by_interlock", writes=len(effect.writes))
            else:
                log.warning(
                    "interlock_reasserted", rules=list(effect.rules), points=[w.point for w in effect.writes]
                )
            if effect.kind in ("stop", "release"):
                self.history.save_state(INTERLOCK_STATE_KEY, json.dumps(asdict(engine.snapshot())))
            for step in effect.writes:
                await self._interlock_write(step.point, step.value)

    async def _interlock_write(self, path: str, value: bool | int | float) -> None:
        device, _, name = path.partition("/")
        target = self.writer.targets.get(device)
        try:
            point, checked = check(target, name, value)
            readback = await self.writer.write(device, point, checked)
        except (Refused, ModbusIOError) as exc:
            self.counters.interlock_write_failures += 1
            if self._once(f"interlock_write:{path}:{type(exc).__name__}"):
                log.error("interlock_write_failed", point=path, value=value, error=str(exc))
            return
        self.counters.interlock_writes += 1
        await self._sample(Sample(device, self.clock_ms(), readback, "fast"), force={path})

    async def _record_node_events(self, values: dict[str, Value]) -> None:
        now = self.clock_ms()
        readings = [Reading(path, now, value) for path, value in values.items() if path in self.node_specs]
        await self._record_and_send(readings, lambda s: s.ndata(readings, now), always=False)

    # --- commands ------------------------------------------------------------------------------

    async def _command(self, command: WritePoint) -> None:
        device = command.device
        target = self.writer.targets.get(device) if device is not None else None
        refuses = self.interlocks.refuses if self.interlocks is not None else None
        try:
            point, value = check(
                target,
                command.point_name,
                command.value,
                online=device in self.online_devices,
                interlock=refuses,
            )
        except Refused as exc:
            self.counters.commands_refused += 1
            if self._once(f"refused:{device}/{command.point_name}:{str(exc)[:30]}"):
                log.warning("command_refused", device=device, point=command.point_name, reason=str(exc))
            await self.publish_status()
            return
        assert device is not None
        try:
            readback = await self.writer.write(device, point, value)
        except ModbusIOError as exc:
            self.counters.commands_failed += 1
            log.warning("command_failed", device=device, point=point.name, error=str(exc))
            await self.publish_status()
            return
        if confirmed(value, readback[point.name]):
            self.counters.commands_ok += 1
        else:
            self.counters.commands_mismatch += 1
        log.info(
            "command_written", device=device, point=point.name, value=value, readback=readback[point.name]
        )
        await self._sample(
            Sample(device, self.clock_ms(), readback, "fast"), force={f"{device}/{point.name}"}
        )
        await self.publish_status()

    # --- backfill and replay -------------------------------------------------------------------

    def backfill_idle(self) -> bool:
        """Every queued backfill and replay job is done (tests and diagnostics)."""
        return self.resender.idle()

    def on_dbirth_device(self, device: str) -> None:
        """A device was born: its rows deferred by a backfill can go now (resend.py)."""
        if self._lane is not None:
            self.resender.device_born(device, self._lane.start)

    async def _send_historical(self, build: Builder) -> bool:
        async with self._send_lock:
            return await self._send_locked(build)

    def restore_interlocks(self) -> None:
        """Resume a trip that was in force when the gateway stopped (interlocks.Snapshot)."""
        if self.interlocks is None:
            return
        raw = self.history.load_state(INTERLOCK_STATE_KEY)
        if not raw:
            return
        data = json.loads(raw)
        snapshot = il.Snapshot(tripped=list(data.get("tripped", [])), saved=dict(data.get("saved", {})))
        self.interlocks.restore(snapshot, self.clock_ms())
        if snapshot.tripped:
            log.warning("interlock_resumed", rules=snapshot.tripped)


def _quality(spec: PointSpec, value: Value) -> Quality:
    """BAD for a non-finite number; UNCERTAIN outside the engineering range (e.g. a 4–20 mA
    transmitter below 4 mA reads negative)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Quality.GOOD
    if not math.isfinite(value):
        return Quality.BAD
    if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
        return Quality.UNCERTAIN
    return Quality.GOOD
