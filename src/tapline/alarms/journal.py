"""Persisting the alarm journal: ``AlarmEvent`` ↔ rows, and the writer that batches them to the store.

Rules:
- The writer is a hub sink (``take``): it only queues, so the alarm path never waits for the database.
  ``run`` writes what is queued every ``interval_s`` in one transaction per batch (journal rows plus
  the instance rows they change, ``store.alarm_journal``). A batch being written when the writer is
  cancelled (shutdown) is finished first: journal rows are not idempotent, so it must be written once.
- Nothing is dropped because the database is down: ``StoreUnavailable`` keeps the batch and retries
  with a capped backoff. The queue is bounded (``max_pending``); beyond it the oldest events are
  dropped, counted and logged — memory must stay bounded when the database is gone for hours.
  A batch the database refuses for another reason is retried ``max_attempts`` times, then dropped
  and logged with its alarm ids (a poison batch must not block the journal forever).
- Instance rows carry the facts a history list needs without replaying the journal: raised (first
  event of the instance), cleared (when its condition returned), acknowledged (ack or reset: who and
  when). The writer keeps these per live instance and forgets an instance once it is back to normal.
- ``event_from_row`` rebuilds the ``AlarmEvent`` from a journal row, so the KPIs run on the persisted
  journal exactly as on the live one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from tapline.alarms.events import AlarmEvent
from tapline.alarms.model import AlarmState, Event, Phase, Transition
from tapline.alarms.rules import Cause, Priority, Text
from tapline.domain.model import Value
from tapline.ingest.metrics import Exposition
from tapline.logs import get_logger
from tapline.store.errors import StoreError, StoreUnavailable

log = get_logger(__name__)

_ACKNOWLEDGING = frozenset({Event.ACK, Event.RESET})


def _value_text(value: Value | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _value(text: str | None) -> Value | None:
    if text is None:
        return None
    value = orjson.loads(text)
    return value if isinstance(value, bool | int | float | str) else str(value)


def _context(event: AlarmEvent) -> dict[str, Any]:
    return {
        "site": event.site[:64],
        "district": event.district[:64],
        "rule": event.rule[:64],
        "subject": event.subject[:200],
        "device": event.device[:64],
        "point": event.point[:200],
        "priority": event.priority.value,
        "cause": event.cause.value,
        "value": _value_text(event.value),
        "message_zh": event.text.zh,
        "message_en": event.text.en,
    }


def event_row(event: AlarmEvent) -> dict[str, Any]:
    """The journal row of one transition."""
    t = event.transition
    return {
        "alarm_id": event.alarm_id,
        **_context(event),
        "supply": event.supply,
        "event": t.event.value,
        "source": t.source.value,
        "target": t.target.value,
        "at_ms": t.at,
        "by": t.by[:64],
        "reason": t.reason,
        "active": event.state.active,
    }


def event_from_row(row: Mapping[str, Any]) -> AlarmEvent:
    """The ``AlarmEvent`` a journal row records (its state is the phase and condition after it)."""
    target = Phase(row["target"])
    return AlarmEvent(
        alarm_id=row["alarm_id"],
        site=row["site"],
        district=row["district"],
        rule=row["rule"],
        subject=row["subject"],
        device=row["device"],
        point=row["point"],
        priority=Priority(row["priority"]),
        cause=Cause(row["cause"]),
        supply=bool(row["supply"]),
        transition=Transition(
            Event(row["event"]), Phase(row["source"]), target, row["at_ms"], row["by"], row["reason"]
        ),
        state=AlarmState(phase=target, active=bool(row["active"])),
        value=_value(row["value"]),
        text=Text(zh=row["message_zh"], en=row["message_en"]),
    )


def instance_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """The API shape of a stored alarm instance (close to the live ``Alarm.as_dict``)."""
    return {
        "id": row["id"],
        "site": row["site"],
        "district": row["district"],
        "rule": row["rule"],
        "subject": row["subject"],
        "device": row["device"],
        "point": row["point"],
        "priority": row["priority"],
        "cause": row["cause"],
        "state": row["phase"],
        "active": bool(row["active"]),
        "raised": row["raised_ms"],
        "changed": row["changed_ms"],
        "cleared": row["cleared_ms"],
        "acked": row["acked_ms"],
        "acked_by": row["acked_by"],
        "value": _value(row["value"]),
        "message": {"zh": row["message_zh"], "en": row["message_en"]},
    }


class JournalAppender(Protocol):
    """Where the writer puts its batches (``store.alarm_journal.AlarmJournalStore``)."""

    async def append(
        self, events: Sequence[Mapping[str, Any]], instances: Sequence[Mapping[str, Any]]
    ) -> None: ...


class JournalWriter:
    """Queues alarm events and writes them to the relational store in batches (see module rules)."""

    def __init__(
        self,
        store: JournalAppender,
        *,
        interval_s: float = 0.5,
        batch_size: int = 5_000,
        max_pending: int = 1_000_000,
        max_attempts: int = 5,
        retry_max_s: float = 30.0,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._interval = interval_s
        self._batch = batch_size
        self._pending: deque[AlarmEvent] = deque()
        self._max_pending = max_pending
        self._max_attempts = max_attempts
        self._retry_max = retry_max_s
        self._sleep = sleep
        self._live: dict[str, dict[str, Any]] = {}
        self.written = 0
        self.dropped = 0
        self.failed_batches = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def oldest_pending_at(self) -> int | None:
        """When the oldest event still waiting for the database happened (ms), None if none waits:
        how far the persisted journal lags behind the alarms."""
        return self._pending[0].at if self._pending else None

    def take(self, event: AlarmEvent) -> None:
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("alarm_journal_overflow", dropped=self.dropped, max_pending=self._max_pending)
        self._pending.append(event)

    def _instance(self, event: AlarmEvent) -> dict[str, Any]:
        t, state = event.transition, event.state
        facts = self._live.get(event.alarm_id)
        if facts is None:
            facts = self._live[event.alarm_id] = {
                "raised_ms": t.at,
                "cleared_ms": None,
                "acked_ms": None,
                "acked_by": None,
            }
        if state.active:
            facts["cleared_ms"] = None
        elif facts["cleared_ms"] is None:
            facts["cleared_ms"] = t.at
        if t.event in _ACKNOWLEDGING:
            facts["acked_ms"], facts["acked_by"] = t.at, t.by[:64]
        row = {
            "id": event.alarm_id,
            **_context(event),
            "phase": state.phase.value,
            "active": state.active,
            "changed_ms": t.at,
            **facts,
        }
        if state.phase is Phase.NORMAL:
            del self._live[event.alarm_id]
        return row

    async def flush(self) -> int:
        """Write everything queued now (in batches); returns the number of events written. Raises
        ``StoreUnavailable`` (events kept) when the database cannot be reached."""
        written = 0
        while self._pending:
            batch = [self._pending[i] for i in range(min(self._batch, len(self._pending)))]
            writing = asyncio.ensure_future(self._write(batch))
            try:
                await asyncio.shield(writing)
            except asyncio.CancelledError:
                # The transaction runs on the store's thread and may commit anyway: let it finish, so
                # the batch is neither lost nor written twice by the next flush (the journal is not
                # idempotent), then stop.
                with contextlib.suppress(Exception):
                    await writing
                if writing.done() and not writing.cancelled() and writing.exception() is None:
                    self._done(batch)
                raise
            self._done(batch)
            written += len(batch)
        return written

    def _done(self, batch: list[AlarmEvent]) -> None:
        for _ in batch:
            self._pending.popleft()
        self.written += len(batch)

    async def _write(self, batch: list[AlarmEvent]) -> None:
        # The facts of the alarms this batch touches, as they were: restored if the store is down,
        # so the retry derives them again (copying only these, not every live alarm, each batch).
        saved = {e.alarm_id: self._live.get(e.alarm_id) for e in batch}
        saved = {key: None if facts is None else dict(facts) for key, facts in saved.items()}
        events = [event_row(e) for e in batch]
        instances = [self._instance(e) for e in batch]
        attempt = 0
        while True:
            try:
                await self._store.append(events, instances)
                return
            except StoreUnavailable:
                for key, facts in saved.items():
                    if facts is None:
                        self._live.pop(key, None)
                    else:
                        self._live[key] = facts
                raise
            except StoreError as exc:
                attempt += 1
                if attempt >= self._max_attempts:
                    self.failed_batches += 1
                    log.error(
                        "alarm_journal_batch_dropped",
                        error=str(exc),
                        events=len(batch),
                        alarms=sorted({e.alarm_id for e in batch})[:20],
                    )
                    return
                await self._sleep(min(self._retry_max, 0.5 * 2**attempt))

    async def run(self) -> None:
        """Write the queue every ``interval_s`` until cancelled; back off while the store is down."""
        delay = self._interval
        while True:
            await self._sleep(delay)
            try:
                await self.flush()
                delay = self._interval
            except StoreUnavailable as exc:
                delay = min(self._retry_max, max(self._interval, delay * 2))
                log.warning("alarm_journal_store_unavailable", error=str(exc), pending=self.pending)

    def collect(self, out: Exposition) -> None:
        out.counter("tapline_alarm_journal_written_total", "Alarm events written", self.written)
        out.counter("tapline_alarm_journal_dropped_total", "Alarm events dropped (queue full)", self.dropped)
        out.counter(
            "tapline_alarm_journal_failed_batches_total",
            "Journal batches refused by the store",
            self.failed_batches,
        )
        out.gauge("tapline_alarm_journal_pending", "Alarm events waiting to be written", self.pending)
