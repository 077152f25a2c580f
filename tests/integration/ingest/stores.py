"""Telemetry stores that misbehave on purpose, for the ingest's crash and restart tests."""

from __future__ import annotations

import asyncio

from tapline.store.telemetry import TelemetryStore


class NeverWrites:
    """A real store whose writes never finish: the host keeps receiving and commits nothing, as a
    worker does just before it is killed mid-batch."""

    def __init__(self, store: TelemetryStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def write(self, samples: object) -> int:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")
