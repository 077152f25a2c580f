"""The fleet simulator through the real Mosquitto: what a Sparkplug host sees, and the record."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from tapline.cli import main
from tapline.mqtt import BrokerUrl
from tapline.mqtt_fast import FastClient
from tapline.sim.fleet import FleetSpec
from tapline.sim.fleet_publish import FleetSettings, run_fleet
from tapline.sim.fleet_record import read_record
from tapline.sim.names import DISTRICTS
from tapline.sparkplug.codec import decode_payload
from tapline.sparkplug.host_session import NodeOffline, NodeOnline, rebirth_command
from tapline.sparkplug.topics import Topic, state_payload, state_topic
from tests.integration.sim.fleet_kit import problems, received_values
from tests.link_proxy import LinkProxy
from tests.observer import Observer

pytestmark = pytest.mark.mosquitto


def _topics(prefix: str, districts: int) -> list[str]:
    return [f"spBv1.0/{prefix}{district}/#" for district in DISTRICTS[:districts]]


def _bd_seq(payload: bytes) -> int:
    return next(int(m.value) for m in decode_payload(payload).metrics if m.name == "bdSeq")  # type: ignore[arg-type]


async def test_a_small_fleet_is_what_a_host_accepts_and_its_record_is_what_arrived(
    mqtt_url: str, unique_group: str, tmp_path: Path
) -> None:
    prefix = f"{unique_group}-"
    record = tmp_path / "fleet.rec"
    spec = FleetSpec(sites=20, points=60, interval_s=0.5, districts=2, group_prefix=prefix, seed=3)
    settings = FleetSettings(spec, mqtt_url, duration_s=3.0, record=record)
    assert settings.mode == "node"  # a small fleet: one connection and one NDEATH Will per room
    async with Observer(mqtt_url, *_topics(prefix, 2)) as observer:
        report = await run_fleet(settings)
        await observer.wait_count(20, "NDEATH")
    events = observer.host_events()
    assert problems(events) == []
    online = [e for e in events if isinstance(e, NodeOnline)]
    assert {e.node for e in online} == {f"PR-{k:04d}" for k in range(1, 21)}
    assert {e.bd_seq for e in online} == {0}
    assert {e.node for e in events if isinstance(e, NodeOffline)} == {e.node for e in online}
    for birth in observer.of_type("NBIRTH"):
        names = {m.name for m in decode_payload(birth.payload).metrics}
        assert {"bdSeq", "Node Control/Rebirth", "Node Control/Replay"} <= names

    received = received_values(events)
    recorded = {(v.site, v.point, v.ts, v.value) for v in read_record(record)}
    assert recorded == received
    worker = report.workers[0]
    assert worker.values == worker.recorded
    assert len(received) <= worker.values  # rebirths repeat values: same key, same value
    samples = worker.samples
    assert samples >= 20 * 5
    assert len(received) < 60 * samples / 2  # report by exception: far below every point every time
    edge_messages = [m for m in observer.seen if m.type not in ("NCMD", "DCMD", "NDEATH")]
    assert len(edge_messages) == worker.messages
    assert report.as_dict()["late_samples"] == 0


async def test_nodes_wait_for_the_primary_host_and_rebirth_on_request(
    mqtt_url: str, unique_group: str
) -> None:
    prefix = f"{unique_group}-"
    host_id = f"h{unique_group}"
    spec = FleetSpec(sites=5, points=45, interval_s=0.5, districts=1, group_prefix=prefix)
    settings = FleetSettings(spec, mqtt_url, duration_s=4.0, connections="shared", primary_host=host_id)
    url = BrokerUrl.parse(mqtt_url)
    host = FastClient(url, f"host-{unique_group}")
    await host.connect()
    try:
        async with Observer(mqtt_url, *_topics(prefix, 1)) as observer:
            fleet = asyncio.create_task(run_fleet(settings))
            await asyncio.sleep(1.2)
            assert observer.seen == []  # no birth before the primary host is online
            host.publish(state_topic(host_id), state_payload(True, 1), qos=1, retain=True)
            await observer.wait_count(5, "NBIRTH")
            first = {Topic.parse(s.topic).node: _bd_seq(s.payload) for s in observer.of_type("NBIRTH")}
            host.publish(*rebirth_command(spec.group_prefix + "jianghan", "PR-0002", 1))
            await observer.wait_count(6, "NBIRTH")
            report = await fleet
            await observer.wait_count(5, "NDEATH")
    finally:
        host.publish(state_topic(host_id), b"", qos=1, retain=True)  # leave no retained STATE behind
        await host.disconnect()
    again = [Topic.parse(s.topic).node for s in observer.of_type("NBIRTH")][5:]
    assert "PR-0002" in again
    births = observer.of_type("NBIRTH")
    assert {_bd_seq(s.payload) for s in births if "/PR-0002" in s.topic} == {first["PR-0002"]}
    assert problems(observer.host_events()) == []
    assert report.workers[0].rebirths >= 1
    assert report.connections == "shared"


async def test_several_processes_share_the_rooms_and_merge_one_record(
    mqtt_url: str, unique_group: str, tmp_path: Path
) -> None:
    prefix = f"{unique_group}-"
    record = tmp_path / "fleet.rec"
    spec = FleetSpec(sites=40, points=50, interval_s=0.5, districts=2, group_prefix=prefix, report="all")
    settings = FleetSettings(spec, mqtt_url, processes=2, duration_s=2.0, record=record, log_level="warning")
    async with Observer(mqtt_url, *_topics(prefix, 2)) as observer:
        report = await run_fleet(settings)
        await observer.wait_count(40, "NDEATH")
    assert [w.rooms for w in report.workers] == [20, 20]
    assert report.connections == "node"
    events = observer.host_events()
    assert problems(events) == []
    received = received_values(events)
    assert {(v.site, v.point, v.ts, v.value) for v in read_record(record)} == received
    assert sorted(p.name for p in os.scandir(tmp_path)) == ["fleet.rec"]  # the parts were merged away
    # every point of every room every period: the timestamps are the schedule's, spread over the period
    per_room = {site for site, _, _, _ in received}
    assert len(per_room) == 40
    assert report.total("values") == report.total("recorded") >= 40 * 50 * 3


def test_the_cli_runs_a_fleet_and_writes_its_figures(
    mqtt_url: str, unique_group: str, tmp_path: Path
) -> None:
    out = tmp_path / "fleet.json"
    code = main(
        [
            "--log-level",
            "warning",
            "sim",
            "fleet",
            "--sites",
            "6",
            "--points",
            "80",
            "--interval",
            "0.5",
            "--duration",
            "1.5",
            "--districts",
            "2",
            "--broker",
            mqtt_url,
            "--group-prefix",
            f"{unique_group}-",
            "--connections",
            "shared",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    figures = json.loads(out.read_text())
    assert figures["sites"] == 6
    assert figures["points"] == 80
    assert figures["expected_values_per_s"] == 6 * 80 / 0.5
    assert figures["values_per_s"] > 0
    assert figures["cpu_s"] >= 0
    assert figures["workers"][0]["messages"] > 0


async def test_a_lost_link_fires_each_nodes_will_and_the_nodes_come_back_with_a_new_bdseq(
    mqtt_url: str, unique_group: str
) -> None:
    prefix = f"{unique_group}-"
    spec = FleetSpec(sites=3, points=45, interval_s=0.5, districts=1, group_prefix=prefix)
    async with (
        LinkProxy(BrokerUrl.parse(mqtt_url)) as link,
        Observer(mqtt_url, *_topics(prefix, 1)) as observer,
    ):
        settings = FleetSettings(spec, str(link.url), duration_s=4.0)
        fleet = asyncio.create_task(run_fleet(settings))
        await observer.wait_count(3, "NBIRTH")
        link.cut()
        await observer.wait_count(3, "NDEATH")  # the broker publishes every node's Will
        await observer.wait_count(6, "NBIRTH")  # each node reconnects and is born again
        report = await fleet
    wills = [(Topic.parse(s.topic).node, _bd_seq(s.payload)) for s in observer.of_type("NDEATH")[:3]]
    assert sorted(wills) == [("PR-0001", 0), ("PR-0002", 0), ("PR-0003", 0)]
    again = {Topic.parse(s.topic).node: _bd_seq(s.payload) for s in observer.of_type("NBIRTH")[3:]}
    assert again == {"PR-0001": 1, "PR-0002": 1, "PR-0003": 1}
    events = observer.host_events()
    assert problems(events) == []
    assert report.total("reconnects") == 3
