"""Reading what a fleet published, as a Sparkplug host would (the subscriber is ``tests.observer``)."""

from __future__ import annotations

from collections.abc import Sequence

from tapline.domain.model import Value
from tapline.sparkplug.host_session import Data, Event, Rejected, RequestRebirth


def problems(events: Sequence[Event]) -> list[Event]:
    return [event for event in events if isinstance(event, Rejected | RequestRebirth)]


def received_values(events: Sequence[Event]) -> set[tuple[str, str, int, Value]]:
    """``(site, point, ts, value)`` of every reading a host got."""
    return {
        (event.node, reading.point, reading.ts, reading.value)
        for event in events
        if isinstance(event, Data)
        for reading in event.readings
    }
