"""DESIGN §2a end to end through Mosquitto, on SQLite and PostgreSQL: whatever is lost between the edge's
history and the store — a QoS 0 message, a link, a host process killed between receive and write — comes
back by Replay, and nothing is stored twice (rows are counted per (series, ts))."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tapline.ingest.host import IngestSettings
from tapline.mqtt import BrokerUrl
from tapline.store.telemetry import SeriesKey, TelemetryStore
from tests.helpers import eventually
from tests.integration.ingest.stores import NeverWrites
from tests.link_proxy import LinkProxy
from tests.unit.ingest.kit import EdgeDouble

from .broker_kit import BrokerEdge, RunningHost, running_host

pytestmark = pytest.mark.mosquitto


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tapline.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def broker(mqtt_url: str) -> BrokerUrl:
    return BrokerUrl.parse(mqtt_url)


@pytest.fixture
def node() -> str:
    return f"PR-{uuid.uuid4().hex[:8]}"  # series are keyed by room: unique in the shared PG database


def settings(group: str) -> IngestSettings:
    return IngestSettings(
        host_id=f"h{group}",
        groups=(group,),  # other test runs share the broker
        reorder_timeout_ms=300,
        batch_age_s=0.05,
        replay_margin_ms=0,
        rebirth_retry_ms=500,
        replay_confirm_timeout_ms=2_000,
    )


async def stored(store: TelemetryStore, site: str, edge: EdgeDouble) -> Counter[tuple[str, int]]:
    """How many rows each (point, ts) of the edge has in the store."""
    keys = [SeriesKey(site, spec.path) for specs in edge.devices.values() for spec in specs]
    ids = await store.ensure_series(keys)
    rows: Counter[tuple[str, int]] = Counter()
    for key, series_id in ids.items():
        for point in await store.history(series_id, 0, 2**62):
            rows[(key.point, point.ts)] += 1
    return rows


async def all_stored_once(host: RunningHost, site: str, edge: EdgeDouble) -> None:
    async def complete() -> bool:
        await host.service.flush()
        return set(await stored(host.store, site, edge)) >= edge.expected()

    try:
        await eventually(complete, timeout=20, interval=0.05, what="every recorded value in the store")
    except AssertionError:
        missing = sorted(edge.expected() - set(await stored(host.store, site, edge)))
        first = min(r.ts for r in edge.history)
        raise AssertionError(
            f"missing {len(missing)} of {len(edge.expected())}: {[(p, t - first) for p, t in missing[:12]]}; "
            f"{host.service.counters}; hole={host.service.marks.hole((edge.group, edge.node))}"
        ) from None
    rows = await stored(host.store, site, edge)
    assert set(rows) == edge.expected()
    assert set(rows.values()) == {1}, "a (series, ts) stored twice"


@contextlib.asynccontextmanager
async def recording(edge: BrokerEdge, period_s: float = 0.02) -> AsyncIterator[None]:
    """The edge records (and publishes when it can) every ``period_s`` until the block ends.

    It stops between two records, never in the middle of publishing one (a value recorded and never
    published with nothing after it would be a gap no host can see — the next live message reveals it).
    """
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            await edge.record()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period_s)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        stop.set()
        await task


async def test_ingest_killed_between_receive_and_write_then_restarted_loses_and_duplicates_nothing(
    store_url: str, broker: BrokerUrl, unique_group: str, node: str
) -> None:
    options = settings(unique_group)
    edge = BrokerEdge(EdgeDouble(unique_group, node), broker)
    async with running_host(store_url, broker, options) as first:
        edge.start()
        async with recording(edge):
            await eventually(
                lambda: _committed(first, unique_group, node), timeout=10, what="a committed mark"
            )
            first.service.settings = _no_writes(options)  # from now on it receives but never writes
            first.service.writer.store = NeverWrites(first.store)  # type: ignore[assignment]
            received = first.service.counters.readings
            await eventually(lambda: _received(first, received + 50), timeout=10, what="values received")
            pending = first.service.writer.pending_values
        assert pending > 0  # killed mid-batch: these were received and never written
    asked_before = len(edge.commands)
    async with running_host(store_url, broker, options) as second:
        async with recording(edge):
            await eventually(lambda: _confirmed(second), timeout=15, what="replay after restart")
        await all_stored_once(second, node, edge.double)
        assert {"Rebirth", "Replay"} <= set(edge.commands[asked_before:])
    await edge.stop()


async def test_a_lost_qos0_message_is_replayed(
    store_url: str, broker: BrokerUrl, unique_group: str, node: str
) -> None:
    edge = BrokerEdge(EdgeDouble(unique_group, node), broker)
    async with running_host(store_url, broker, settings(unique_group)) as host:
        edge.start()
        await edge.connected.wait()
        async with recording(edge):
            await asyncio.sleep(0.1)
            edge.drop_next = 3  # three DDATA never reach the broker, as QoS 0 allows
            await eventually(lambda: _confirmed(host), timeout=10, what="gap -> replay confirmed")
        await all_stored_once(host, node, edge.double)
        assert "Replay" in edge.commands
    await edge.stop()


async def test_link_cut_edge_keeps_recording_and_the_outage_is_replayed_after_its_new_birth(
    store_url: str, broker: BrokerUrl, unique_group: str, node: str
) -> None:
    proxy = LinkProxy(broker)
    await proxy.start()
    edge = BrokerEdge(EdgeDouble(unique_group, node), proxy.url)
    async with running_host(store_url, broker, settings(unique_group)) as host:
        edge.start()
        await edge.connected.wait()
        async with recording(edge):
            await asyncio.sleep(0.1)
            proxy.cut()  # the edge reconnects through the proxy with the next bdSeq
            await eventually(lambda: _bd_seq_changed(host, node), timeout=10, what="a new session")
            await eventually(lambda: _confirmed(host), timeout=10, what="outage replayed")
        await all_stored_once(host, node, edge.double)
    await edge.stop()
    await proxy.stop()


async def test_duplicate_delivery_through_the_broker_stores_one_row(
    store_url: str, broker: BrokerUrl, unique_group: str, node: str
) -> None:
    edge = BrokerEdge(EdgeDouble(unique_group, node), broker)
    async with running_host(store_url, broker, settings(unique_group)) as host:
        edge.start()
        await edge.connected.wait()
        for step in range(5):
            wires = edge.double.record(1_800_000_000_000 + step * 1000)
            await edge._send(wires + wires)  # every message twice
        await eventually(lambda: _duplicates(host, 5 * 5), timeout=10, what="duplicates written")
        await all_stored_once(host, node, edge.double)
    await edge.stop()


# --- helpers ---------------------------------------------------------------------------------------------


def _no_writes(options: IngestSettings) -> IngestSettings:
    from dataclasses import replace

    return replace(options, batch_size=10**9)


async def _committed(host: RunningHost, group: str, node: str) -> bool:
    return host.service.marks.committed((group, node)) is not None


async def _received(host: RunningHost, count: int) -> bool:
    return host.service.counters.readings >= count


async def _confirmed(host: RunningHost) -> bool:
    return host.service.counters.replays_confirmed > 0


async def _duplicates(host: RunningHost, count: int) -> bool:
    return host.service.counters.duplicates >= count


async def _bd_seq_changed(host: RunningHost, node: str) -> bool:
    room = host.service.live.sites.get(node)
    return room is not None and room.status == "online" and room.bd_seq == 2
