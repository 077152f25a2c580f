"""DESIGN §8 scale-out on one machine: two ingest workers (``bootstrap.build_cloud``, as ``tapline serve
--host-id … --groups …`` builds them), each owning two of four districts (Sparkplug groups), on the real
Mosquitto and one PostgreSQL database, fed by the fleet simulator with its record as ground truth.

Proves: every recorded value is stored exactly once; each worker receives its own districts and no
other; every room's messages reach its worker in seq order; killing one worker mid-batch and starting it
again loses nothing of its districts (replay from its commit marks) while the other worker sees no
rebirth, no replay, no seq break and keeps its STATE online.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from uuid import uuid4

import psycopg
import pytest

from tapline.bootstrap import Cloud, build_cloud
from tapline.ingest.host import IngestSettings
from tapline.mqtt import BrokerUrl, Message
from tapline.sim.fleet import FleetSpec, RoomPlan, plan_rooms
from tapline.sim.fleet_publish import FleetSettings, run_worker
from tapline.sim.fleet_record import read_record
from tapline.sparkplug.codec import decode_payload
from tapline.sparkplug.topics import MessageType, Topic, parse_state, state_topic
from tests.helpers import eventually, free_port
from tests.integration.ingest.stores import NeverWrites
from tests.observer import Observer
from tests.unit.ingest.kit import EdgeDouble

from .broker_kit import publish

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres]

_SEQUENCED = frozenset({MessageType.NBIRTH, MessageType.DBIRTH, MessageType.NDATA, MessageType.DDATA})


@pytest.fixture
def database(pg_url: str) -> Iterator[str]:
    """A database of this test's own: fleet rooms are PR-0001…, and series are keyed by room."""
    parts = urlsplit(pg_url)
    name = f"{parts.path.lstrip('/')}_w{uuid4().hex[:6]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield parts._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Worker:
    """One ``Cloud`` running as a worker, and every message it received, in arrival order."""

    cloud: Cloud
    task: asyncio.Task[None] | None = None
    received: list[tuple[Topic, int | None]] = field(default_factory=list)

    @property
    def counters(self) -> Counter[str]:
        c = self.cloud.ingest.counters
        return Counter(
            messages=c.messages,
            readings=c.readings,
            rebirths=c.rebirths_requested,
            replays=c.replays_requested,
            confirmed=c.replays_confirmed,
            rejected=c.rejected,
        )


def worker_settings(host_id: str, groups: Sequence[str]) -> IngestSettings:
    return IngestSettings(
        host_id=host_id,
        groups=tuple(groups),
        reorder_timeout_ms=500,
        batch_age_s=0.05,
        replay_margin_ms=0,
        rebirth_retry_ms=500,
        replay_confirm_timeout_ms=3_000,
    )


async def start_worker(database: str, broker: BrokerUrl, settings: IngestSettings) -> Worker:
    cloud = await build_cloud(database, broker, settings=settings)
    worker = Worker(cloud)
    receive = cloud.ingest.on_message

    async def tapped(message: Message) -> None:
        topic = Topic.parse(message.topic)
        seq = decode_payload(message.payload).seq if topic.type in _SEQUENCED else None
        worker.received.append((topic, seq))
        await receive(message)

    # The test taps what the worker receives, in order, before its host application sees it.
    cloud.ingest.on_message = tapped  # type: ignore[method-assign]
    worker.task = asyncio.create_task(cloud.run(), name=f"worker-{settings.host_id}")
    await asyncio.wait_for(cloud.ingest.connected.wait(), 10)
    return worker


async def kill(worker: Worker) -> int:
    """Stop the worker mid-batch, as a killed process: what it received and had not written is gone.

    Returns how many values were pending (received, never written) when it died."""
    ingest = worker.cloud.ingest
    ingest.writer.store = NeverWrites(worker.cloud.store)  # type: ignore[assignment]
    received = ingest.counters.readings
    await eventually(
        lambda: _true(ingest.counters.readings >= received + 200), timeout=10, what="values never written"
    )
    pending = ingest.writer.pending_values
    assert worker.task is not None
    worker.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker.task
    if worker.cloud.relational is not None:
        await worker.cloud.relational.close()
    await worker.cloud.store.close()
    return pending


async def stop(worker: Worker) -> None:
    if worker.task is not None and not worker.task.done():
        worker.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker.task
        await worker.cloud.close()


async def test_two_workers_own_their_districts_keep_room_order_and_lose_nothing_across_a_restart(
    database: str, mqtt_url: str, unique_group: str, tmp_path: Path
) -> None:
    broker = BrokerUrl.parse(mqtt_url)
    spec = FleetSpec(
        sites=8, points=30, interval_s=0.25, districts=4, group_prefix=f"{unique_group}-", report="all",
        history_s=120.0, seed=7,
    )  # fmt: skip
    rooms = plan_rooms(spec)
    groups = sorted({room.group for room in rooms})
    owned = {"a": groups[:2], "b": groups[2:]}
    host = {name: f"h{unique_group}-{name}" for name in owned}
    settings = {name: worker_settings(host[name], owned[name]) for name in owned}
    rooms_of = {name: [room for room in rooms if room.group in owned[name]] for name in owned}
    record = tmp_path / "fleet.rec"
    fleet_settings = FleetSettings(
        spec, mqtt_url, connections="node", record=record, log_level="warning"
    )  # no primary host: the fleet names one for all its rooms, and these rooms have two (docs/scaling.md)
    finished = asyncio.Event()

    states = Observer(broker, state_topic(host["a"]), state_topic(host["b"]))
    a_traffic = Observer(broker, *[f"spBv1.0/{g}/DDATA/#" for g in owned["a"]], qos=0)
    async with states, a_traffic:
        a = await start_worker(database, broker, settings["a"])
        b = await start_worker(database, broker, settings["b"])
        first_a = a
        fleet = asyncio.create_task(run_worker(fleet_settings, stop=finished), name="fleet")
        try:
            await eventually(
                lambda: _true(all(_committed(a, room) for room in rooms_of["a"])),
                timeout=10,
                what="worker a committed every room it owns",
            )
            b_before = b.counters
            pending = await kill(a)
            assert pending > 0  # received and never written: only a replay can bring these back
            down = len(a_traffic.of_type("DDATA"))
            # about a second of a's rooms publishing with nobody listening (7 devices a room, 4 periods/s)
            await a_traffic.wait_count(down + 7 * 4 * len(rooms_of["a"]), "DDATA")
            a = await start_worker(database, broker, settings["a"])
            await eventually(
                lambda: _true(a.counters["confirmed"] >= len(rooms_of["a"]) and not _holes(a)),
                timeout=15,
                what="worker a's rooms replayed from its commit marks",
            )
            live = a.counters["readings"]
            await eventually(
                lambda: _true(a.counters["readings"] > live + 500), timeout=10, what="live data after replay"
            )
            b_after = b.counters
        finally:
            finished.set()
            report = await fleet
        state_a = [parse_state(s.payload)[0] for s in states.seen if s.topic == state_topic(host["a"])]
        state_b = [parse_state(s.payload)[0] for s in states.seen if s.topic == state_topic(host["b"])]
        try:
            expected = {(v.site, v.point, v.ts): v.value for v in read_record(record)}
            assert report.recorded == len(list(read_record(record))) > 0
            rows = await _all_stored(database, [a, b], expected)
        finally:
            await stop(a)
            await stop(b)
    for name in host:  # leave no retained STATE behind on the shared broker
        await publish(broker, state_topic(host[name]), b"", qos=1, retain=True)

    # 0 lost, 0 duplicated: every recorded (room, point, ts) has exactly one row, with its value
    counts = Counter((site, point, ts) for site, point, ts, _ in rows)
    assert set(counts) == set(expected), _difference(set(expected), set(counts))
    assert set(counts.values()) == {1}, "a (room, point, ts) stored twice"
    assert all(value == float(expected[(site, point, ts)]) for site, point, ts, value in rows)

    # each worker received its own districts and nothing else, every room's messages in seq order
    for worker, name in ((first_a, "a"), (a, "a"), (b, "b")):
        seen = {topic.group for topic, _ in worker.received if topic.type is not MessageType.STATE}
        assert seen == set(owned[name])
        assert _order_breaks(worker.received) == []
    assert first_a.counters["rejected"] == b.counters["rejected"] == 0
    # the restarted worker meets sessions it never saw born: their DDATA is refused until the rebirth
    assert set(a.cloud.ingest.counters.rejected_by_code) <= {"before_birth"}

    # the restarted worker asked its rooms back from its marks; the other one never noticed
    assert a.counters["rebirths"] >= len(rooms_of["a"])
    assert a.counters["replays"] >= len(rooms_of["a"])
    assert b_after["rebirths"] == b_before["rebirths"] == 0
    assert b_after["replays"] == b_before["replays"] == 0
    assert b_after["messages"] > b_before["messages"]  # it kept receiving while a was down
    assert state_a[0] is True  # online, offline when killed, online again
    assert False in state_a
    assert state_a[-1] is True
    assert state_b
    assert all(state_b)


async def test_serve_runs_as_a_worker_of_its_own_host_id_and_districts(
    mqtt_url: str, unique_group: str, tmp_path: Path
) -> None:
    """``tapline serve --host-id … --groups …`` as a user runs it: its own STATE, only its districts."""
    broker = BrokerUrl.parse(mqtt_url)
    host_id, mine, other = f"h{unique_group}-cli", f"{unique_group}-mine", f"{unique_group}-other"
    environment = {**os.environ, "TAPLINE_SECRET": "a-test-secret-of-some-length", "TAPLINE_GROUPS": "unused"}
    topics = (state_topic(host_id), f"spBv1.0/{mine}/NCMD/#", f"spBv1.0/{other}/NCMD/#")
    async with Observer(broker, *topics) as observer:
        serve = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "tapline"),
            "--log-level",
            "warning",
            "serve",
            *("--broker", mqtt_url, "--db", f"sqlite:///{tmp_path / 'worker.db'}"),
            *("--port", str(free_port()), "--host-id", host_id, "--groups", f"{mine}, {unique_group}-third"),
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert serve.stdout is not None
            banner = (await asyncio.wait_for(serve.stdout.readline(), 20)).decode()
            assert f"host id {host_id}, districts {mine},{unique_group}-third" in banner  # flag over env
            online = await observer.wait_for(lambda s: s.topic == state_topic(host_id), timeout=20)
            assert parse_state(online.payload)[0] is True
            # A room's DDATA before its birth makes a host ask for a rebirth: the worker asks in its
            # own district only. Published one after the other, so the other district's message would reach
            # a subscribed worker first: no NCMD there when the own one arrives means it was never received.
            for group in (other, mine):
                edge = EdgeDouble(group, "PR-0001")
                edge.births(1_800_000_000_000)
                ddata = next(wire for wire in edge.record(1_800_000_001_000) if "/DDATA/" in wire[0])
                await publish(broker, *ddata)
            await observer.wait_for(lambda s: s.topic == f"spBv1.0/{mine}/NCMD/PR-0001", timeout=10)
            assert not [s for s in observer.seen if s.topic.startswith(f"spBv1.0/{other}/")]
            serve.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(serve.wait(), 20) == 0
            # a clean stop publishes STATE offline before it disconnects (the edges of its districts go quiet)
            await observer.wait_for(lambda s: s.topic == online.topic and not parse_state(s.payload)[0])
        finally:
            if serve.returncode is None:
                serve.kill()
                await serve.wait()
    await publish(broker, state_topic(host_id), b"", qos=1, retain=True)


# --- helpers ---------------------------------------------------------------------------------------------


async def _true(value: bool) -> bool:
    return value


def _committed(worker: Worker, room: RoomPlan) -> bool:
    return worker.cloud.ingest.marks.committed((room.group, room.site)) is not None


def _holes(worker: Worker) -> int:
    return worker.cloud.ingest.marks.open_holes()


async def _all_stored(
    database: str, workers: Sequence[Worker], expected: Mapping[tuple[str, str, int], object]
) -> list[tuple[str, str, int, float]]:
    """Every row of the samples table, once the workers have written at least every recorded value."""
    rows: list[tuple[str, str, int, float]] = []

    async def complete() -> bool:
        nonlocal rows
        for worker in workers:
            await worker.cloud.ingest.flush()
        async with await psycopg.AsyncConnection.connect(database) as conn:
            cursor = await conn.execute(
                "SELECT s.site, s.point, x.ts, x.value FROM samples x JOIN series s ON s.id = x.series_id"
            )
            rows = [(str(r[0]), str(r[1]), int(r[2]), float(r[3])) for r in await cursor.fetchall()]
        return len(rows) >= len(expected)

    with contextlib.suppress(AssertionError):  # the comparison below says what is missing
        await eventually(complete, timeout=15, interval=0.1, what="every recorded value stored")
    return rows


def _difference(expected: set[tuple[str, str, int]], stored: set[tuple[str, str, int]]) -> str:
    missing, extra = sorted(expected - stored), sorted(stored - expected)
    return f"{len(missing)} missing, e.g. {missing[:5]}; {len(extra)} not recorded, e.g. {extra[:5]}"


def _order_breaks(received: Sequence[tuple[Topic, int | None]]) -> list[str]:
    """Where a room's seq did not go up by one (mod 256) from one message to the next (a birth is 0)."""
    last: dict[tuple[str, str], int] = {}
    breaks: defaultdict[str, list[str]] = defaultdict(list)
    for topic, seq in received:
        if seq is None:
            continue
        key = (topic.group, topic.node)
        if topic.type is MessageType.NBIRTH:
            if seq != 0:
                breaks[topic.node].append(f"NBIRTH seq {seq}")
        elif key in last and seq != (last[key] + 1) % 256:
            breaks[topic.node].append(f"{last[key]} -> {seq} ({topic.type})")
        last[key] = seq
    return [f"{node}: {', '.join(items[:5])}" for node, items in sorted(breaks.items())]
