"""The Sparkplug primary host application: sessions, STATE, rebirth/replay requests, batched writes.

Rules:
- Subscribe to the whole namespace first, then publish ``spBv1.0/STATE/<host_id>`` online (QoS 1,
  retained); the will is the same topic offline with the same timestamp (Sparkplug 3.0 §host).
- Session bookkeeping (bdSeq, seq, aliases, reorder timeout) is the pure ``HostTracker``; this module
  only carries out its events: cache updates, NCMD rebirth/replay requests, and stores.
- Writes are batched (by size or age) and idempotent on (series, ts). A batch that fails because the
  database is unavailable is kept and retried with backoff; nothing is dropped.
- When the host loses the broker every point it knows goes STALE.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tapline.domain.model import Reading
from tapline.ingest.live import LiveState, PointInfo
from tapline.logs import get_logger
from tapline.mqtt import BrokerUnavailable, Connection, Message, WillMessage
from tapline.sparkplug import host_session as hs
from tapline.sparkplug import topics
from tapline.store.errors import StoreUnavailable
from tapline.store.telemetry import Sample, SeriesKey, TelemetryStore

log = get_logger(__name__)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class IngestCounters:
    messages: int = 0
    readings: int = 0
    rejected: int = 0
    stored: int = 0
    duplicates: int = 0
    rebirths_requested: int = 0
    replays_requested: int = 0
    store_failures: int = 0


class IngestService:
    """Receives every room over MQTT, keeps ``live`` current and writes ``store``."""

    def __init__(
        self,
        store: TelemetryStore,
        live: LiveState,
        *,
        host_id: str = "tapline",
        reorder_timeout_ms: int = 2000,
        batch_size: int = 20_000,
        batch_age_s: float = 0.25,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.store = store
        self.live = live
        self.host_id = host_id
        self.tracker = hs.HostTracker(host_id=host_id, reorder_timeout_ms=reorder_timeout_ms)
        self.batch_size = batch_size
        self.batch_age_s = batch_age_s
        self.clock_ms = clock_ms
        self.counters = IngestCounters()
        self.conn: Connection | None = None
        self._state_ts = clock_ms()
        self._pending: list[tuple[str, Reading]] = []
        self._series: dict[tuple[str, str], int] = {}
        self._committed: dict[str, int] = {}  # site -> newest timestamp written to the store
        self._flush_now = asyncio.Event()
        self.connected = asyncio.Event()

    # --- MQTT session callbacks ---------------------------------------------------------------
    def will(self) -> WillMessage:
        self._state_ts = self.clock_ms()
        return WillMessage(
            topics.state_topic(self.host_id), topics.state_payload(False, self._state_ts), qos=1, retain=True
        )

    async def on_connect(self, conn: Connection) -> None:
        self.conn = conn
        await conn.subscribe("spBv1.0/#", qos=0)
        await conn.publish(
            topics.state_topic(self.host_id), topics.state_payload(True, self._state_ts), qos=1, retain=True
        )
        self.connected.set()

    async def on_disconnect(self, reason: str) -> None:
        self.conn = None
        self.connected.clear()
        await self._apply(self.tracker.mark_all_stale(self.clock_ms()))

    async def on_message(self, message: Message) -> None:
        self.counters.messages += 1
        await self._apply(self.tracker.on_message(message.topic, message.payload, self.clock_ms()))

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

    async def tick(self) -> None:
        await self._apply(self.tracker.on_tick(self.clock_ms()))

    # --- tracker events -> effects -------------------------------------------------------------
    async def _apply(self, events: Sequence[hs.Event]) -> None:
        now = self.clock_ms()
        for event in events:
            if isinstance(event, hs.Data):
                self.counters.readings += len(event.readings)
                if not event.historical:
                    self.live.update(event.node, event.group, event.readings, now)
                self._pending.extend((event.node, reading) for reading in event.readings)
                if len(self._pending) >= self.batch_size:
                    self._flush_now.set()
            elif isinstance(event, hs.NodeOnline):
                log.info("node_online", district=event.group, site=event.node, bd_seq=event.bd_seq)
                self.live.node_online(event.node, event.group, event.bd_seq, now)
            elif isinstance(event, hs.DeviceOnline):
                points = {
                    p[0]: PointInfo(datatype=str(p[2]), unit=p[3] or "", low=p[4], high=p[5])
                    for p in event.points
                }
                self.live.device_online(event.node, event.group, event.device, points, now)
            elif isinstance(event, hs.NodeOffline):
                log.warning("node_offline", district=event.group, site=event.node)
                self.live.node_offline(event.node, event.group, event.at_ms)
            elif isinstance(event, hs.DeviceOffline):
                log.warning("device_offline", district=event.group, site=event.node, device=event.device)
                self.live.device_offline(event.node, event.group, event.device, event.at_ms)
            elif isinstance(event, hs.RequestRebirth):
                self.counters.rebirths_requested += 1
                log.info("rebirth_request", district=event.group, site=event.node, reason=event.reason)
                await self._command(*hs.rebirth_command(event.group, event.node, now))
            elif isinstance(event, hs.RequestReplay):
                from_ms = event.from_ms if event.from_ms is not None else self._committed.get(event.node)
                if from_ms is not None:
                    self.counters.replays_requested += 1
                    log.info("replay_request", district=event.group, site=event.node, from_ms=from_ms)
                    await self._command(*hs.replay_command(event.group, event.node, from_ms, now))
            elif isinstance(event, hs.Rejected):
                self.counters.rejected += 1
                if self.counters.rejected <= 20 or self.counters.rejected % 1000 == 0:
                    log.warning(
                        "message_rejected",
                        topic=event.topic,
                        reason=event.reason,
                        total=self.counters.rejected,
                    )
            elif isinstance(event, hs.OwnStateOffline):
                await self._republish_online()

    async def _command(self, topic: str, payload: bytes) -> None:
        if self.conn is None:
            return
        with contextlib.suppress(BrokerUnavailable):
            await self.conn.publish(topic, payload, qos=0)

    # --- storage -------------------------------------------------------------------------------
    async def _series_ids(self, batch: Sequence[tuple[str, Reading]]) -> None:
        missing = {(site, r.point) for site, r in batch if (site, r.point) not in self._series}
        if missing:
            ids = await self.store.ensure_series([SeriesKey(site, point) for site, point in sorted(missing)])
            for key, series_id in ids.items():
                self._series[(key.site, key.point)] = series_id

    async def flush(self) -> int:
        """Write everything pending; on a dead database keep it and raise StoreUnavailable."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, []
        try:
            await self._series_ids(batch)
            samples = [
                Sample(self._series[(site, r.point)], r.ts, float(r.value), int(r.quality))
                for site, r in batch
                if isinstance(r.value, int | float)
            ]
            inserted = await self.store.write(samples)
        except StoreUnavailable:
            self._pending = batch + self._pending
            self.counters.store_failures += 1
            raise
        for site, reading in batch:
            if reading.ts > self._committed.get(site, 0):
                self._committed[site] = reading.ts
        self.counters.stored += inserted
        self.counters.duplicates += len(samples) - inserted
        return inserted

    async def run_writer(self) -> None:
        """Flush by age or size forever; back off while the database is down, losing nothing."""
        delay = 0.5
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), self.batch_age_s)
            self._flush_now.clear()
            await self.tick()
            try:
                await self.flush()
                delay = 0.5
            except StoreUnavailable as exc:
                log.warning("store_unavailable", error=str(exc), pending=len(self._pending), retry_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
