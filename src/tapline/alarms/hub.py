"""One place every alarm event passes through on its way out: journal, live push, notifier, KPIs.

Rules:
- Whoever changes an alarm (the ingest's feed on data, links and ticks; the alarm service on an
  operator's action) calls ``publish`` with the events it got from the engine. Nothing else hands
  events out, so a consumer never misses one source (e.g. acknowledgements) or sees an event twice.
- ``publish`` is synchronous and cheap: it runs on the message path, before any storage batching
  (issue 7: alarm latency must not wait for a database). Sinks (``add_sink``) must only queue; a sink
  that raises is counted and logged, and never stops the others or the caller.
- Live listeners (``listen``: one per console connection) get a bounded queue. A listener that falls
  ``maxsize`` events behind is cut off (``Listener.overflowed``) rather than slowing everyone: its
  client reconnects and reloads the alarm list (the push says so), so nothing is silently lost.
- A bounded in-memory ``recent`` journal backs the KPIs when no relational store runs (tests, tools).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable

from tapline.alarms.events import AlarmEvent
from tapline.logs import get_logger

log = get_logger(__name__)

Sink = Callable[[AlarmEvent], None]


class Listener:
    """A live subscriber's queue (one per console connection); iterate with ``await get()``."""

    def __init__(self, hub: AlarmHub, maxsize: int) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[AlarmEvent] = asyncio.Queue(maxsize)
        self.overflowed = False

    def offer(self, event: AlarmEvent) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            self._hub.overflows += 1

    async def get(self) -> AlarmEvent:
        return await self.queue.get()

    def close(self) -> None:
        self._hub.unlisten(self)


class AlarmHub:
    """Fans alarm events out to sinks and live listeners (see the module rules)."""

    def __init__(self, recent_size: int = 100_000) -> None:
        self._sinks: list[Sink] = []
        self._listeners: set[Listener] = set()
        self.recent: deque[AlarmEvent] = deque(maxlen=recent_size)
        self.published = 0
        self.sink_errors = 0
        self.overflows = 0

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def listen(self, maxsize: int = 1_000) -> Listener:
        listener = Listener(self, maxsize)
        self._listeners.add(listener)
        return listener

    def unlisten(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def publish(self, events: Iterable[AlarmEvent]) -> None:
        for event in events:
            self.published += 1
            self.recent.append(event)
            for sink in self._sinks:
                try:
                    sink(event)
                except Exception as exc:  # noqa: BLE001 - a broken consumer must not stop the alarm path
                    self.sink_errors += 1
                    log.error("alarm_sink_failed", sink=repr(sink), error=repr(exc))
            for listener in self._listeners:
                listener.offer(event)
