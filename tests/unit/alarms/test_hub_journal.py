"""The alarm hub's fan-out and the journal writer's batching, retry and instance facts."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from tapline.alarms.engine import AlarmEngine
from tapline.alarms.events import AlarmEvent
from tapline.alarms.hub import AlarmHub
from tapline.alarms.journal import JournalWriter, event_from_row, event_row
from tapline.store.errors import StoreError, StoreUnavailable
from tests.unit.alarms.kit import STEADY, T0, Room, S


class FlakyJournal:
    """Records what would be written; fails with the given errors first (a database going away)."""

    def __init__(self, failures: Sequence[StoreError] = ()) -> None:
        self.failures = list(failures)
        self.events: list[Mapping[str, Any]] = []
        self.instances: dict[str, Mapping[str, Any]] = {}
        self.calls = 0

    async def append(
        self, events: Sequence[Mapping[str, Any]], instances: Sequence[Mapping[str, Any]]
    ) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        self.events += events
        for row in instances:
            self.instances[row["id"]] = row


async def no_sleep(_: float) -> None:
    return None


def fault_lifecycle() -> tuple[Room, list[AlarmEvent]]:
    """A drive fault raised, acknowledged, cleared: three transitions of one instance."""
    room = Room(AlarmEngine(STEADY))
    room.healthy(T0)
    events = room.send(T0 + S, {"vfd2/Fault": True})
    [alarm] = room.engine.active(room.site)
    events.append(room.engine.ack(alarm.id, "operator", T0 + 2 * S, "crew called"))
    events += room.send(T0 + 3 * S, {"vfd2/Fault": False})
    return room, events


def test_hub_fans_out_to_sinks_and_listeners_and_survives_a_broken_sink() -> None:
    hub = AlarmHub()
    seen: list[str] = []

    def broken(_: AlarmEvent) -> None:
        raise RuntimeError("consumer bug")

    hub.add_sink(broken)
    hub.add_sink(lambda e: seen.append(e.event.value))
    listener = hub.listen(maxsize=10)
    _, events = fault_lifecycle()
    hub.publish(events)
    assert seen == ["activate", "ack", "clear"]
    assert hub.sink_errors == 3
    assert listener.queue.qsize() == 3
    assert list(hub.recent) == events
    listener.close()
    assert hub.listeners == 0


def test_a_listener_that_falls_behind_is_cut_off_not_the_hub() -> None:
    hub = AlarmHub()
    slow, fast = hub.listen(maxsize=2), hub.listen(maxsize=10)
    _, events = fault_lifecycle()
    hub.publish(events)
    assert slow.overflowed
    assert slow.queue.qsize() == 2
    assert not fast.overflowed
    assert fast.queue.qsize() == 3
    assert hub.overflows == 1


def test_rows_round_trip_to_the_same_event() -> None:
    _, events = fault_lifecycle()
    for event in events:
        again = event_from_row(event_row(event))
        assert again.as_dict() == event.as_dict()
        assert (again.announced, again.key, again.priority, again.cause) == (
            event.announced,
            event.key,
            event.priority,
            event.cause,
        )
        assert again.text == event.text


async def test_writer_keeps_events_while_the_store_is_down_and_records_instance_facts() -> None:
    store = FlakyJournal([StoreUnavailable("db down"), StoreUnavailable("still down")])
    writer = JournalWriter(store, sleep=no_sleep)
    _, events = fault_lifecycle()
    for event in events:
        writer.take(event)
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await writer.flush()
        assert writer.pending == 3
    assert await writer.flush() == 3
    assert [row["event"] for row in store.events] == ["activate", "ack", "clear"]
    [instance] = store.instances.values()
    assert instance["phase"] == "normal"
    assert instance["raised_ms"] == T0 + S
    assert instance["cleared_ms"] == T0 + 3 * S
    assert (instance["acked_ms"], instance["acked_by"]) == (T0 + 2 * S, "operator")
    assert writer.pending == 0
    assert writer.written == 3


async def test_a_batch_the_store_refuses_is_dropped_after_its_attempts_and_counted() -> None:
    store = FlakyJournal([StoreError("value too long")] * 3)
    writer = JournalWriter(store, max_attempts=3, sleep=no_sleep)
    _, events = fault_lifecycle()
    for event in events:
        writer.take(event)
    await writer.flush()
    assert store.calls == 3
    assert writer.failed_batches == 1
    assert writer.pending == 0
    assert store.events == []


def test_the_queue_is_bounded_and_drops_the_oldest() -> None:
    writer = JournalWriter(FlakyJournal(), max_pending=2)
    _, events = fault_lifecycle()
    for event in events:
        writer.take(event)
    assert writer.pending == 2
    assert writer.dropped == 1


class SlowJournal(FlakyJournal):
    """An append that takes a while (a transaction on the store's thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()

    async def append(
        self, events: Sequence[Mapping[str, Any]], instances: Sequence[Mapping[str, Any]]
    ) -> None:
        self.entered.set()
        await asyncio.sleep(0.05)
        await super().append(events, instances)


async def test_a_cancelled_flush_finishes_its_batch_once() -> None:
    store = SlowJournal()
    writer = JournalWriter(store)
    _, events = fault_lifecycle()
    for event in events:
        writer.take(event)
    flushing = asyncio.create_task(writer.flush())
    await store.entered.wait()
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    assert [row["event"] for row in store.events] == ["activate", "ack", "clear"]
    assert writer.pending == 0
    assert writer.written == 3
    assert await writer.flush() == 0
    assert len(store.events) == 3
