"""Zero loss through a real Mosquitto: the gateway's history (ground truth) against the cloud's store.

Each test runs its own Mosquitto process (so it can be killed with SIGKILL and restarted on the same
port), a simulated room served over Modbus TCP, the real gateway and the real ingest host with the
SQLite telemetry store, and a plain observer that checks the Sparkplug wire (seq, bdSeq).

Time: the simulator runs at 120× real time, so "10 minutes offline" is 10 minutes of *plant* time
(5 s of wall time, 50 poll cycles at the tests' 0.1 s poll period); timestamps are wall time. What is
compared is every value the gateway recorded in its history against every row the store holds for
that room: the same (point, ts) keys, the same values, one row each.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
import yaml

from tapline.edge.config import RoomConfig
from tapline.mqtt import BrokerUrl
from tapline.sparkplug.host_session import rebirth_command, replay_command
from tests.helpers import eventually
from tests.integration.edge.kit import (
    LinkProxy,
    Observer,
    RunningGateway,
    RunningHost,
    SimRoom,
    history_rows,
    mosquitto,
    observing,
    sim_room,
    start_gateway,
    start_host,
    store_rows,
)

pytestmark = pytest.mark.timeout(120)

SPEED = 120.0  # plant seconds per wall second
TEN_PLANT_MINUTES_S = 600.0 / SPEED


async def live_again(gateway: RunningGateway, births: int) -> None:
    async def check() -> bool:
        node = gateway.gateway.node
        return node.live and node.births >= births

    await eventually(check, timeout=20, what="the gateway live again")


async def backfilled(gateway: RunningGateway) -> None:
    async def check() -> bool:
        node = gateway.gateway.node
        return node.live and node.backfill_idle()

    await eventually(check, timeout=30, what="backfill finished")


async def assert_store_matches_history(host: RunningHost, history: Path, site: str) -> None:
    truth = history_rows(history)
    assert len(truth) > 100

    async def arrived() -> bool:
        await host.service.flush()
        stored, _ = store_rows(host.store_path, site)
        return truth.keys() <= stored.keys()

    try:
        await eventually(arrived, timeout=30, what="every recorded value in the store")
    finally:
        stored, rows = store_rows(host.store_path, site)
        missing = sorted(truth.keys() - stored.keys())
        assert not missing, f"{len(missing)} of {len(truth)} values lost, e.g. {missing[:5]}"
    extra = sorted(stored.keys() - truth.keys())
    assert not extra, f"values in the store the gateway never recorded: {extra[:5]}"
    assert rows == len(truth)  # one row per (point, ts): nothing stored twice
    wrong = [key for key, value in truth.items() if stored[key] != pytest.approx(value, abs=1e-9)]
    assert not wrong, f"values changed on the way: {wrong[:5]}"


def assert_wire(observer: Observer) -> None:
    assert observer.assert_seq_continuous() > 50
    births = observer.of("NBIRTH")
    deaths = observer.of("NDEATH")
    assert births
    assert deaths
    # every NDEATH carries the bdSeq of the NBIRTH before it (a will or an intentional goodbye) —
    # or, when a connection died before it could publish its NBIRTH (a broker restart on a loaded box),
    # that connection's own new bdSeq, which no NBIRTH carries (Sparkplug: the host ignores it)
    born = {observer.bd_seq(b) for b in births}
    for death in deaths:
        before = [b for b in births if observer.seen.index(b) < observer.seen.index(death)]
        bd_seq = observer.bd_seq(death)
        assert bd_seq == observer.bd_seq(before[-1]) or bd_seq not in born, (bd_seq, sorted(born))


async def test_broker_killed_and_gateway_restarted_during_a_10_minute_outage_nothing_lost(
    tmp_path: Path, unique_group: str
) -> None:
    host_id = f"host-{unique_group}"
    edge_dir = tmp_path / "edge"
    async with (
        mosquitto(tmp_path) as broker,
        sim_room(unique_group, speed=SPEED) as sim,
        observing(broker.url, unique_group) as observer,
    ):
        config = sim.config()
        host = await start_host(tmp_path / "telemetry.db", broker.url, host_id)
        gateway = start_gateway(config, sim, broker.url, edge_dir, host_id=host_id)
        try:
            await observer.wait_for("DDATA", 20)

            # 1. The broker dies mid-stream (SIGKILL: no wills, nothing flushed) and comes back.
            await broker.kill()
            await asyncio.sleep(1.0)
            await broker.start()
            await live_again(gateway, births=2)
            await observer.wait_for("DDATA", 40)

            # 2. Ten plant-minutes of outage; the gateway is restarted in the middle of it.
            await broker.kill()
            await asyncio.sleep(TEN_PLANT_MINUTES_S / 3)
            bd_seq_before = gateway.gateway.history.meta("bd_seq")
            await gateway.stop()
            gateway = start_gateway(config, sim, broker.url, edge_dir, host_id=host_id)
            await asyncio.sleep(TEN_PLANT_MINUTES_S * 2 / 3)
            await broker.start()
            await live_again(gateway, births=1)
            await backfilled(gateway)
            await asyncio.wait_for(observer.connected.wait(), 10)

            # 3. A rebirth on request: NBIRTH and every DBIRTH again, with the same bdSeq.
            births = len(observer.of("NBIRTH"))
            dbirths = len(observer.of("DBIRTH"))
            await observer.publish(*rebirth_command(unique_group, config.site, 0))
            await observer.wait_for("NBIRTH", births + 1)
            await observer.wait_for("DBIRTH", dbirths + len(config.devices))
            again = observer.of("NBIRTH")[-2:]
            assert observer.bd_seq(again[0]) == observer.bd_seq(again[1])
            assert observer.bd_seq(again[1]) != bd_seq_before  # a new process, a new bdSeq
            await observer.wait_for("DDATA", len(observer.of("DDATA")) + 10)
        finally:
            await gateway.stop()  # intentional: NDEATH with this session's bdSeq
        await observer.wait_for("NDEATH")
        try:
            await assert_store_matches_history(host, edge_dir / f"{config.site}.history.db", config.site)
            assert host.service.counters.replays_requested >= 1  # the host asked for what it missed
        finally:
            await host.stop()
        assert_wire(observer)


async def test_half_open_link_replay_and_will_nothing_lost(tmp_path: Path, unique_group: str) -> None:
    """The link dies without a FIN or RST: the gateway publishes into the void until its keepalive
    notices, the broker publishes its will; afterwards the backfill re-sends the detection window.
    A host's Replay request through the broker is answered from history and confirmed."""
    host_id = f"host-{unique_group}"
    edge_dir = tmp_path / "edge"
    async with (
        mosquitto(tmp_path) as broker,
        sim_room(unique_group, speed=SPEED) as sim,
        observing(broker.url, unique_group) as observer,
    ):
        proxy = LinkProxy(broker.url)
        await proxy.start()
        config = sim.config()
        host = await start_host(tmp_path / "telemetry.db", broker.url, host_id)
        gateway = start_gateway(config, sim, proxy.url, edge_dir, host_id=host_id, keepalive_s=1)
        node = gateway.gateway.node
        try:
            await observer.wait_for("DDATA", 20)
            await asyncio.sleep(node.window_s + 1)  # so part of what was sent is safely out
            proxy.blackhole()
            dark = gateway.gateway.history.last_id
            await observer.wait_for("NDEATH", timeout=15)  # the broker gave up on the client: its will
            await live_again(gateway, births=2)
            # QoS 0 into a dead link raises nothing until the client notices: rows went nowhere,
            # and the backfill started inside what had been published, not at the start
            assert gateway.gateway.history.last_id > dark + 10
            assert node.resumed_from is not None
            assert 0 < node.resumed_from < dark
            await backfilled(gateway)
            await replay_through_broker(observer, gateway, sim, unique_group)
        finally:
            await gateway.stop()
            await proxy.stop()
        try:
            await assert_store_matches_history(host, edge_dir / f"{config.site}.history.db", config.site)
        finally:
            await host.stop()
        assert_wire(observer)


async def replay_through_broker(
    observer: Observer, gateway: RunningGateway, sim: SimRoom, group: str
) -> None:
    """Ask for the last few seconds again: every recorded value since then comes back as
    is_historical, followed by the confirmation NDATA ``Node Control/Replay`` = from."""
    history = gateway.gateway.history
    truth = history_rows(history.path)
    from_ms = sorted(ts for _, ts in truth)[-len(truth) // 3]
    expected = {key for key in truth if key[1] >= from_ms}
    start = len(observer.seen)
    await observer.publish(*replay_command(group, sim.room.spec.site_id, from_ms, 0))

    async def confirmed() -> bool:
        return any(
            s.kind == "NDATA"
            and s.payload is not None
            and any(m.name == "Node Control/Replay" and m.value == from_ms for m in s.payload.metrics)
            for s in observer.seen[start:]
        )

    await eventually(confirmed, timeout=20, what="the replay confirmation")
    aliases = _aliases(observer)
    replayed = {
        (aliases[(s.topic.split("/")[-1], m.alias)], m.timestamp)
        for s in observer.seen[start:]
        if s.kind == "DDATA" and s.payload is not None
        for m in s.payload.metrics
        if m.is_historical
    }
    assert expected <= replayed


def _aliases(observer: Observer) -> dict[tuple[str, int | None], str]:
    """(device, alias) → device/Name, from the latest DBIRTHs."""
    out: dict[tuple[str, int | None], str] = {}
    for seen in observer.of("DBIRTH"):
        device = seen.topic.split("/")[-1]
        assert seen.payload is not None
        for metric in seen.payload.metrics:
            out[(device, metric.alias)] = f"{device}/{metric.name}"
    return out


async def spawn_edge(
    config: Path, broker: BrokerUrl, data_dir: Path, host_id: str
) -> asyncio.subprocess.Process:
    """``tapline edge`` as a user runs it, in its own process."""
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "tapline"),
        "edge",
        "--config",
        str(config),
        "--broker",
        str(broker),
        "--data-dir",
        str(data_dir),
        "--primary-host",
        host_id,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def write_room(config: RoomConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), allow_unicode=True))
    return path


async def test_gateway_process_killed_with_sigkill_and_restarted_nothing_lost(
    tmp_path: Path, unique_group: str
) -> None:
    """A power cut of the gateway box: SIGKILL mid-stream (the broker publishes its will), a new
    process on the same data directory (SQLite recovers its WAL; a new bdSeq), then every recorded
    value in the store once."""
    host_id = f"host-{unique_group}"
    edge_dir = tmp_path / "edge"
    async with (
        mosquitto(tmp_path) as broker,
        sim_room(unique_group, speed=SPEED) as sim,
        observing(broker.url, unique_group) as observer,
    ):
        config = sim.config()
        room_file = write_room(config, tmp_path / "room.yaml")
        host = await start_host(tmp_path / "telemetry.db", broker.url, host_id)
        process = await spawn_edge(room_file, broker.url, edge_dir, host_id)
        try:
            await observer.wait_for("DDATA", 30, timeout=20)
            process.kill()
            await process.wait()
            await observer.wait_for("NDEATH")  # the will, as the socket died with the process
            process = await spawn_edge(room_file, broker.url, edge_dir, host_id)
            await observer.wait_for("NBIRTH", 2, timeout=20)
            await observer.wait_for("DDATA", len(observer.of("DDATA")) + 30, timeout=20)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)  # an orderly stop: drain, NDEATH
                try:
                    await asyncio.wait_for(process.wait(), 15)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        births = observer.of("NBIRTH")
        assert observer.bd_seq(births[1]) == (observer.bd_seq(births[0]) + 1) % 256
        await observer.wait_for("NDEATH", 2)
        try:
            await assert_store_matches_history(host, edge_dir / f"{config.site}.history.db", config.site)
        finally:
            await host.stop()
        assert_wire(observer)
