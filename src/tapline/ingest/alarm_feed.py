"""Feeds the ingest's live data into the alarm engine and its events into the alarm hub.

Rules:
- Only live values are evaluated (historical backfill is stored, never alarmed: it describes the past,
  and its alarms, if any, were the edge's to raise at the time).
- Evaluation happens as each message is applied, before storage batching, so alarm latency never
  waits for a database write (issue 7: alarm p99 ≤ 1 s at 400,000 values/s).
- Births and deaths go to the engine as link changes, so a dead room raises one communication alarm
  instead of process alarms on stale values.
- Incidents are the engine's business: it hands every event to its grouping (the correlator) as it
  happens and ticks it, so this feed never observes an event twice.
- Every event goes to the ``AlarmHub`` at once (journal, live push, notifier, KPIs subscribe there).
"""

from __future__ import annotations

from collections.abc import Sequence

from tapline.alarms.engine import AlarmEngine
from tapline.alarms.hub import AlarmHub
from tapline.domain.model import Reading


class AlarmFeed:
    """The ingest's observer that owns the alarm engine for the rooms it receives."""

    def __init__(self, engine: AlarmEngine, hub: AlarmHub | None = None) -> None:
        self.engine = engine
        self.hub = hub if hub is not None else AlarmHub()

    def data(self, site: str, district: str, readings: Sequence[Reading], now_ms: int) -> None:
        events = self.engine.evaluate(site, district, readings, now_ms)
        if events:
            self.hub.publish(events)

    def link(self, site: str, district: str, device: str | None, online: bool, now_ms: int) -> None:
        events = self.engine.link(site, district, device, online, now_ms)
        if events:
            self.hub.publish(events)

    def tick(self, now_ms: int) -> None:
        events = self.engine.tick(now_ms)
        if events:
            self.hub.publish(events)
