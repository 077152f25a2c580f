"""Feeds the ingest's live data into the alarm engine and the incident correlator.

Rules:
- Only live values are evaluated (historical backfill is stored, never alarmed: it describes the past,
  and its alarms, if any, were the edge's to raise at the time).
- Evaluation happens as each message is applied, before storage batching, so alarm latency never
  waits for a database write (issue 7: alarm p99 ≤ 1 s at 400,000 values/s).
- Births and deaths go to the engine as link changes, so a dead room raises one communication alarm
  instead of process alarms on stale values.
- Every alarm event is kept in a bounded journal (the alarm-system KPIs and the API read it) and
  handed to the correlator, which turns alarms into incidents.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence

from tapline.alarms.correlate import Correlator, Incident
from tapline.alarms.engine import AlarmEngine
from tapline.alarms.events import AlarmEvent
from tapline.domain.model import Reading
from tapline.logs import get_logger

log = get_logger(__name__)


class AlarmFeed:
    """The ingest's observer that owns the alarm engine and the correlator for the rooms it receives."""

    def __init__(
        self,
        engine: AlarmEngine,
        correlator: Correlator,
        *,
        journal_size: int = 100_000,
        on_events: Callable[[Sequence[AlarmEvent], Sequence[Incident]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.correlator = correlator
        self.journal: deque[AlarmEvent] = deque(maxlen=journal_size)
        self.on_events = on_events
        self.evaluated = 0
        self.events = 0

    def _emit(self, events: list[AlarmEvent], now_ms: int) -> None:
        if not events:
            return
        self.events += len(events)
        self.journal.extend(events)
        incidents = self.correlator.observe(events, now_ms)
        if self.on_events is not None:
            self.on_events(events, incidents)

    def data(self, site: str, district: str, readings: Sequence[Reading], now_ms: int) -> None:
        self.evaluated += len(readings)
        self._emit(self.engine.evaluate(site, district, readings, now_ms), now_ms)

    def link(self, site: str, district: str, device: str | None, online: bool, now_ms: int) -> None:
        self._emit(self.engine.link(site, district, device, online, now_ms), now_ms)

    def tick(self, now_ms: int) -> None:
        self._emit(self.engine.tick(now_ms), now_ms)
        self.correlator.tick(now_ms)

    def recent(self, limit: int = 1000) -> Iterable[AlarmEvent]:
        return list(self.journal)[-limit:]
