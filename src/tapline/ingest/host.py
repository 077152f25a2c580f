"""The Sparkplug primary host application: STATE, sessions, rebirth/replay requests, batched writes.

Rules:
- Subscribe to the whole namespace and to our own STATE topic first, then publish
  ``spBv1.0/STATE/<host_id>`` online (QoS 1, retained); the will is the same topic offline with the same
  timestamp (Sparkplug 3.0 host rules). Seeing our own STATE offline, republish online with that
  timestamp. On an intentional shutdown publish offline first (``on_close``).
- Session bookkeeping (bdSeq, seq, aliases, reorder timeout) is the pure ``HostTracker``; commit marks
  and owed replays are the pure ``CommitMarks``; this module carries out their events: cache updates,
  NCMD Rebirth/Replay, batched writes (``BatchWriter``), dead letters, counters.
- Live values update the latest-value cache; ``is_historical`` values are stored but never touch it.
- Nothing in ``on_message`` does IO except publishing a command; everything else is batched. Above
  ``max_pending_values`` (the store is down or slower than the fleet) values are shed — counted, and asked
  back by Replay once the store keeps up — so memory stays bounded and nothing is lost for good.
- A bad message is counted by reason, kept as a dead letter (topic, reason, payload bytes up to a bound)
  and never raises: ``on_message`` survives any bytes on any topic.
- When the host loses the broker every point it knows goes STALE.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from tapline.domain.model import Value
from tapline.ingest.alarm_feed import AlarmFeed
from tapline.ingest.live import LiveState, PointInfo
from tapline.ingest.marks import CommitMarks, ReplayOrder, ReplayUnconfirmed
from tapline.ingest.metrics import Exposition, IngestCounters
from tapline.ingest.writer import BatchWriter
from tapline.logs import get_logger
from tapline.mqtt import BrokerUnavailable, Link, Message, WillMessage
from tapline.sparkplug import host_session as hs
from tapline.sparkplug import topics
from tapline.sparkplug.codec import DEFAULT_MAX_PAYLOAD, SpDataType
from tapline.sparkplug.errors import SparkplugError
from tapline.store.errors import StoreError
from tapline.store.relational import DeadLetter, DeviceRow, PointRow, RelationalStore, SiteRow
from tapline.store.telemetry import SeriesKey, TelemetryStore

__all__ = ["IngestService", "IngestSettings", "wall_ms"]

log = get_logger(__name__)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """Tuning of the host application (durations in ms unless named ``_s``)."""

    host_id: str = "tapline"
    groups: tuple[str, ...] = ()
    """Sparkplug groups (districts) this worker owns; empty: all of them (DESIGN §8 scale-out)."""
    reorder_timeout_ms: int = 2_000
    rebirth_retry_ms: int = 30_000
    batch_size: int = 20_000
    batch_age_s: float = 0.25
    max_pending_values: int = 1_000_000
    replay_margin_ms: int = 30_000
    replay_confirm_timeout_ms: int = 30_000
    replay_max_attempts: int = 3
    max_payload: int = DEFAULT_MAX_PAYLOAD
    dead_letter_buffer: int = 1_000
    dead_letter_keep: int = 10_000
    dead_letter_prune_s: float = 60.0
    marks_every_s: float = 1.0
    """How often the background flushes persist commit marks at most. A mark saved later only means a
    longer replay after a restart; saving 1,000 rooms' marks on every 0.25 s flush was 4.5 % of the
    ingest's CPU at 80,000 values/s. An explicit ``flush()`` (shutdown) always saves them."""


class IngestService:
    """Receives every room over MQTT, keeps ``live`` current and writes ``store`` (see module rules)."""

    def __init__(
        self,
        store: TelemetryStore,
        live: LiveState,
        settings: IngestSettings | None = None,
        *,
        relational: RelationalStore | None = None,
        alarms: AlarmFeed | None = None,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.settings = settings = settings or IngestSettings()
        self.store = store
        self.live = live
        self.relational = relational
        self.alarms = alarms
        self.host_id = settings.host_id
        self.clock_ms = clock_ms
        self.tracker = hs.HostTracker(
            host_id=settings.host_id,
            reorder_timeout_ms=settings.reorder_timeout_ms,
            rebirth_retry_ms=settings.rebirth_retry_ms,
            max_payload=settings.max_payload,
        )
        self.marks = CommitMarks(
            margin_ms=settings.replay_margin_ms,
            confirm_timeout_ms=settings.replay_confirm_timeout_ms,
            max_attempts=settings.replay_max_attempts,
        )
        self.counters = IngestCounters()
        self.writer = BatchWriter(
            store,
            relational,
            self.marks,
            self.counters,
            dead_letter_buffer=settings.dead_letter_buffer,
            marks_every_s=settings.marks_every_s,
        )
        self.conn: Link | None = None
        self.connected = asyncio.Event()
        self._state_ts = clock_ms()
        self._flush_now = asyncio.Event()
        self._shedding = False

    # --- start-up -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the commit marks and warm the latest-value cache from the stores (before connecting).

        After a restart every known room shows its last stored values as STALE, its devices offline,
        until its births arrive; the marks say where each node's replay must start.
        """
        if self.relational is None:
            return
        marks = await self.relational.load_marks()
        self.marks.load(marks)
        owned = set(self.settings.groups)
        sites = [s for s in await self.relational.sites() if not owned or s.district in owned]
        districts = {site.id: site.district for site in sites}
        for site in sites:
            self.live.register(site.id, site.district, site.name)
        points = [p for p in await self.relational.points() if p.site in districts]
        by_device: dict[tuple[str, str], dict[str, PointInfo]] = {}
        for point in points:
            if point.device is not None:
                name = point.point.split("/", 1)[1]
                by_device.setdefault((point.site, point.device), {})[name] = PointInfo(
                    point.datatype, point.unit, point.low, point.high
                )
        for (room, device), infos in by_device.items():
            self.live.declare(room, districts[room], device, infos)
        await self._warm_values(districts, {SeriesKey(p.site, p.point): p.datatype for p in points})
        log.info("ingest_warm_start", sites=len(districts), points=len(points), marks=len(marks))

    async def _warm_values(self, districts: dict[str, str], datatypes: dict[SeriesKey, str]) -> None:
        if not datatypes:
            return
        ids = await self.store.ensure_series(sorted(datatypes, key=lambda k: (k.site, k.point)))
        self.writer.remember_series(ids)
        latest = await self.store.latest(list(ids.values()))
        values: dict[str, list[tuple[str, Value, int]]] = {}
        for key, series_id in ids.items():
            sample = latest.get(series_id)
            if sample is not None:
                value = _typed(sample.value, datatypes[key])
                values.setdefault(key.site, []).append((key.point, value, sample.ts))
        for room, entries in values.items():
            self.live.warm(room, districts[room], entries)

    # --- MQTT session callbacks -----------------------------------------------------------------------

    def will(self) -> WillMessage:
        self._state_ts = self.clock_ms()
        return WillMessage(
            topics.state_topic(self.host_id), topics.state_payload(False, self._state_ts), qos=1, retain=True
        )

    async def on_connect(self, conn: Link) -> None:
        self.conn = conn
        await conn.subscribe(topics.state_topic(self.host_id), qos=1)
        namespace = topics.NAMESPACE
        for pattern in [f"{namespace}/{g}/#" for g in self.settings.groups] or [f"{namespace}/#"]:
            await conn.subscribe(pattern, qos=0)
        await conn.publish(
            topics.state_topic(self.host_id), topics.state_payload(True, self._state_ts), qos=1, retain=True
        )
        self.connected.set()

    async def on_close(self, conn: Link) -> None:
        """Intentional disconnect: publish STATE offline (same timestamp) before the connection closes."""
        await conn.publish(
            topics.state_topic(self.host_id), topics.state_payload(False, self._state_ts), qos=1, retain=True
        )

    async def on_disconnect(self, reason: str) -> None:
        self.conn = None
        self.connected.clear()
        now = self.clock_ms()
        await self._apply(self.tracker.mark_all_stale(now), now)

    async def on_message(self, message: Message) -> None:
        self.counters.messages += 1
        now = self.clock_ms()
        await self._apply(self.tracker.on_message(message.topic, message.payload, now), now)

    async def tick(self) -> None:
        """Reorder timeouts and replay retries that are due."""
        now = self.clock_ms()
        await self._apply(self.tracker.on_tick(now), now)
        if self.alarms is not None:
            self.alarms.tick(now)
        for item in self.marks.due(now):
            if isinstance(item, ReplayOrder):
                await self._replay(item, now)
            else:
                self._unconfirmed(item)

    # --- tracker events -> effects --------------------------------------------------------------------

    async def _apply(self, events: Sequence[hs.Event], now: int) -> None:
        for event in events:
            if type(event) is hs.Data:
                self._data(event, now)
            elif isinstance(event, hs.NodeOnline):
                log.info("node_online", district=event.group, site=event.node, bd_seq=event.bd_seq)
                self.live.node_online(event.node, event.group, event.bd_seq, now)
                if self.alarms is not None:
                    self.alarms.link(event.node, event.group, None, True, now)
                self.writer.site_born(SiteRow(event.node, event.group, event.node, event.bd_seq, now))
            elif isinstance(event, hs.DeviceOnline):
                self._device_online(event, now)
            elif isinstance(event, hs.NodeOffline):
                log.warning("node_offline", district=event.group, site=event.node)
                self.live.node_offline(event.node, event.group, event.at_ms)
                if self.alarms is not None:
                    self.alarms.link(event.node, event.group, None, False, now)
                self.marks.offline((event.group, event.node))
            elif isinstance(event, hs.DeviceOffline):
                log.warning("device_offline", district=event.group, site=event.node, device=event.device)
                self.live.device_offline(event.node, event.group, event.device, event.at_ms)
                if self.alarms is not None:
                    self.alarms.link(event.node, event.group, event.device, False, now)
            elif isinstance(event, hs.RequestRebirth):
                self.counters.rebirths_requested += 1
                log.info("rebirth_request", district=event.group, site=event.node, reason=event.reason)
                await self._command(*hs.rebirth_command(event.group, event.node, now))
            elif isinstance(event, hs.RequestReplay):
                order = self.marks.gap((event.group, event.node), event.from_ms, now)
                if order is not None:
                    await self._replay(order, now)
            elif isinstance(event, hs.ReplayDone):
                if self.marks.replay_done((event.group, event.node), event.from_ms):
                    self.counters.replays_confirmed += 1
                    log.info("replay_confirmed", district=event.group, site=event.node, from_ms=event.from_ms)
            elif isinstance(event, hs.Rejected):
                self._rejected(event, now)
            elif isinstance(event, hs.OwnStateOffline):
                await self._republish_online()

    def _data(self, event: hs.Data, now: int) -> None:
        readings = event.readings
        count = len(readings)
        self.counters.readings += count
        key = (event.group, event.node)
        shed = self.writer.pending_values + count > self.settings.max_pending_values
        if shed:
            self.marks.shed(key, min(r.ts for r in readings))  # before ``live``: the hole starts here
        if event.historical:
            self.counters.historical += count
            self.marks.historical(key, now)
        else:
            newest = self.live.update(event.node, event.group, readings, now)
            if self.alarms is not None:
                self.alarms.data(event.node, event.group, readings, now)
            if not event.duplicate:
                self.marks.live(key, newest)
        if shed:
            self.counters.shed += count
            if not self._shedding:
                self._shedding = True
                log.warning("ingest_shedding", pending=self.writer.pending_values)
            return
        self.writer.add(event.node, readings)
        if self.writer.pending_values >= self.settings.batch_size:
            self._flush_now.set()

    def _device_online(self, event: hs.DeviceOnline, now: int) -> None:
        """One DBIRTH's points into the cache and the births metadata: a city's births declare
        400,000 points, so this is a single pass with no per-point work beyond the two rows."""
        node, device = event.node, event.device
        names = _DATATYPE_NAMES
        cut = len(device) + 1  # a device point is ``device/Name`` (the tracker names it)
        infos: dict[str, PointInfo] = {}
        points: list[PointRow] = []
        for p in event.points:
            datatype = names[p.datatype]
            infos[p.point[cut:]] = PointInfo(datatype, p.unit, p.low, p.high)
            points.append(PointRow(node, p.point, device, datatype, p.unit, p.low, p.high, now))
        self.live.device_online(node, event.group, device, infos, now)
        self.writer.device_born(DeviceRow(node, device, now), points)
        if self.alarms is not None:
            self.alarms.link(node, event.group, device, True, now)

    def _rejected(self, event: hs.Rejected, now: int) -> None:
        counters = self.counters
        counters.rejected += 1
        code = str(event.code)
        seen = counters.rejected_by_code.get(code, 0) + 1
        counters.rejected_by_code[code] = seen
        if seen <= 10 or seen % 1000 == 0:
            log.warning(
                "message_rejected", topic=event.topic[:200], reason=code, detail=event.reason, total=seen
            )
        self.writer.dead_letter(DeadLetter.of(now, event.topic, code, event.reason, event.payload))
        if event.code is not hs.RejectCode.UNKNOWN_TOPIC:
            try:
                topic = topics.Topic.parse(event.topic)
            except SparkplugError:
                return
            if topic.type in _CARRIES_VALUES:
                self.marks.lost((topic.group, topic.node), now)

    async def _replay(self, order: ReplayOrder, now: int) -> None:
        self.counters.replays_requested += 1
        log.info(
            "replay_request",
            district=order.group,
            site=order.node,
            from_ms=order.from_ms,
            attempt=order.attempt,
        )
        await self._command(*hs.replay_command(order.group, order.node, order.from_ms, now))

    def _unconfirmed(self, item: ReplayUnconfirmed) -> None:
        self.counters.replays_unconfirmed += 1
        log.warning(
            "replay_unconfirmed",
            district=item.group,
            site=item.node,
            hole_ms=item.hole_ms,
            attempts=item.attempts,
        )

    async def _command(self, topic: str, payload: bytes) -> None:
        if self.conn is None:
            return  # the request is owed: the tracker/marks ask again (rebirth retry, replay timeout)
        with contextlib.suppress(BrokerUnavailable):
            await self.conn.publish(topic, payload, qos=0)

    async def _republish_online(self) -> None:
        """Seeing our own STATE offline (e.g. an earlier connection's will arriving late), republish
        online with this connection's timestamp (tck-id-message-flow-hid-sparkplug-state-message-delivered).
        """
        if self.conn is not None:
            with contextlib.suppress(BrokerUnavailable):
                await self.conn.publish(
                    topics.state_topic(self.host_id),
                    topics.state_payload(True, self._state_ts),
                    qos=1,
                    retain=True,
                )

    # --- storage --------------------------------------------------------------------------------------

    async def flush(self, *, background: bool = False) -> int:
        """Write everything pending; on a failing store keep it and raise ``StoreError``.

        ``background`` (the writer loop): relational side effects are written by a task of their own
        (``BatchWriter.flush``)."""
        inserted = await self.writer.flush(background=background)
        if self._shedding and self.writer.pending_values < self.settings.max_pending_values // 2:
            self._shedding = False
            now = self.clock_ms()
            log.info("ingest_recovered")
            for order in self.marks.recovered(now):
                await self._replay(order, now)
        return inserted

    async def run_writer(self) -> None:
        """Flush by age or size forever, backing off while the database fails (losing nothing); and,
        beside it, tick every ``batch_age_s``: reorder timeouts, replay retries and the alarm engine's
        on-delays must not wait for a slow flush (issue 7: alarms never wait for storage)."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._tick_loop(), name="ingest-ticker")
            tasks.create_task(self._write_loop(), name="ingest-flush")

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.batch_age_s)
            await self.tick()

    async def _write_loop(self) -> None:
        delay = 0.5
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + self.settings.dead_letter_prune_s
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives
            # as the event fires, and the writer would then outlive its task group (a hung shutdown).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.batch_age_s):
                    await self._flush_now.wait()
            self._flush_now.clear()
            try:
                await self.flush(background=True)
                delay = 0.5
            except StoreError as exc:
                log.warning(
                    "store_write_failed", error=str(exc), pending=self.writer.pending_values, retry_s=delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if self.relational is not None and loop.time() >= next_prune:
                next_prune = loop.time() + self.settings.dead_letter_prune_s
                try:
                    await self.relational.prune_dead_letters(self.settings.dead_letter_keep)
                except StoreError as exc:
                    self.counters.relational_failures += 1
                    log.warning("dead_letter_prune_failed", error=str(exc))

    # --- metrics --------------------------------------------------------------------------------------

    def collect(self, out: Exposition) -> None:
        """Ingest counters plus gauges read now (for ``/metrics``)."""
        self.counters.collect(out)
        p = "tapline_ingest_"
        out.gauge(
            p + "connected", "1 while the host is connected to the broker.", int(self.connected.is_set())
        )
        out.gauge(p + "pending_values", "Values received and not yet written.", self.writer.pending_values)
        out.gauge(p + "replay_holes", "Edge nodes with data owed by a replay.", self.marks.open_holes())
        nodes = self.tracker.nodes()
        online = sum(1 for node in nodes if node.online)
        out.gauge(p + "nodes", "Edge nodes seen, by session state.", online, {"state": "online"})
        out.gauge(
            p + "nodes", "Edge nodes seen, by session state.", len(nodes) - online, {"state": "offline"}
        )
        for status, count in self.live.counts().items():
            out.gauge("tapline_sites", "Pump rooms by status.", count, {"status": status})


_CARRIES_VALUES = frozenset(
    {
        topics.MessageType.NBIRTH,
        topics.MessageType.DBIRTH,
        topics.MessageType.NDATA,
        topics.MessageType.DDATA,
    }
)


_DATATYPE_NAMES: Final = {kind: kind.name for kind in SpDataType}
"""``SpDataType.name`` by member: the enum's ``name`` is a descriptor call; births ask it per point."""


def _typed(value: float, datatype: str) -> Value:
    """A stored float back in the point's declared type (births name Sparkplug datatypes)."""
    kind = SpDataType.__members__.get(datatype)
    if kind is SpDataType.Boolean:
        return value != 0.0
    if kind is not None and kind <= SpDataType.UInt64 and value == value:  # not NaN
        return int(value)
    return value
