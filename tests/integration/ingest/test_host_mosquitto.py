"""Primary host application duties through the real Mosquitto (Sparkplug B 3.0; reliability.md §1.2–1.5).

Test names carry the TCK assertion ids they cover. Each test uses its own Sparkplug group and host id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tapline.domain.model import Quality, Reading
from tapline.ingest.host import IngestSettings
from tapline.mqtt import BrokerUrl
from tapline.sparkplug.codec import Metric, Payload, decode_payload, encode_payload
from tapline.sparkplug.topics import state_payload, state_topic
from tapline.store.telemetry import SeriesKey
from tests.helpers import eventually
from tests.link_proxy import LinkProxy
from tests.observer import Observer, Seen
from tests.unit.ingest.kit import EdgeDouble

from .broker_kit import BrokerEdge, RunningHost, publish, running_host

pytestmark = pytest.mark.mosquitto

NODE = "PR-0001"


@pytest.fixture
def broker(mqtt_url: str) -> BrokerUrl:
    return BrokerUrl.parse(mqtt_url)


@pytest.fixture
async def proxy(broker: BrokerUrl) -> AsyncIterator[LinkProxy]:
    link = LinkProxy(broker)
    await link.start()
    yield link
    await link.stop()


def settings(group: str) -> IngestSettings:
    return IngestSettings(host_id=f"h{group}", groups=(group,), reorder_timeout_ms=300, batch_age_s=0.05)


def is_state(host_id: str, online: bool) -> Callable[[Seen], bool]:
    def check(seen: Seen) -> bool:
        return seen.topic == state_topic(host_id) and seen.json()["online"] is online

    return check


async def test_tck_id_host_topic_phid_birth_payload_timestamp_state_online_qos1_retained_then_will_offline(
    tmp_path: Path, broker: BrokerUrl, proxy: LinkProxy, unique_group: str
) -> None:
    """Birth: STATE online, QoS 1, retained, timestamp = the CONNECT's will timestamp
    (tck-id-host-topic-phid-birth-qos/-retain/-payload/-payload-timestamp). Link lost: the broker
    publishes the will, STATE offline with the same timestamp, QoS 1, retained
    (tck-id-host-topic-phid-death-required/-qos/-retain/-payload)."""
    options = settings(unique_group)
    async with running_host(f"sqlite:///{tmp_path / 't.db'}", proxy.url, options) as host:
        async with Observer(broker, state_topic(options.host_id)) as late_joiner:
            online = await late_joiner.wait_for(is_state(options.host_id, True))
            assert online.retain
            assert online.qos == 1
            stamp = online.json()["timestamp"]
            assert isinstance(stamp, int)
            assert abs(stamp - host.service.clock_ms()) < 60_000
            proxy.cut()
            offline = await late_joiner.wait_for(is_state(options.host_id, False))
            assert offline.qos == 1
            assert offline.json()["timestamp"] == stamp
        async with Observer(broker, state_topic(options.host_id)) as newcomer:
            retained = await newcomer.wait_for(lambda s: True)
            assert retained.retain
    await publish(broker, state_topic(options.host_id), b"", qos=1, retain=True)  # clear the retained STATE


async def test_tck_id_host_topic_phid_death_payload_disconnect_clean_offline_before_disconnect(
    tmp_path: Path, broker: BrokerUrl, unique_group: str
) -> None:
    options = settings(unique_group)
    async with Observer(broker, state_topic(options.host_id)) as observer:
        async with running_host(f"sqlite:///{tmp_path / 't.db'}", broker, options):
            online = await observer.wait_for(is_state(options.host_id, True))
        offline = await observer.wait_for(is_state(options.host_id, False))
        assert offline.json()["timestamp"] == online.json()["timestamp"]
    await publish(broker, state_topic(options.host_id), b"", qos=1, retain=True)


async def test_tck_id_message_flow_hid_sparkplug_state_message_delivered_republishes_online(
    tmp_path: Path, broker: BrokerUrl, unique_group: str
) -> None:
    """A stale offline STATE for our host id (an older session's will) makes the host republish online."""
    options = settings(unique_group)
    async with (
        running_host(f"sqlite:///{tmp_path / 't.db'}", broker, options) as host,
        Observer(broker, state_topic(options.host_id)) as observer,
    ):
        first = await observer.wait_for(is_state(options.host_id, True))
        await publish(broker, state_topic(options.host_id), state_payload(False, 1), qos=1, retain=True)
        offline = await observer.wait_for(is_state(options.host_id, False))
        seen = observer.seen.index(offline) + 1  # the republish may already be in (a fast host)
        again = await observer.wait_for(
            lambda s: observer.seen.index(s) >= seen and s.json()["online"] is True
        )
        assert again.json()["timestamp"] == first.json()["timestamp"]
        assert host.service.connected.is_set()
    await publish(broker, state_topic(options.host_id), b"", qos=1, retain=True)


async def test_data_before_birth_requests_a_rebirth_seen_on_the_broker(
    tmp_path: Path, broker: BrokerUrl, unique_group: str
) -> None:
    ncmd = f"spBv1.0/{unique_group}/NCMD/{NODE}"
    async with (
        running_host(f"sqlite:///{tmp_path / 't.db'}", broker, settings(unique_group)) as host,
        Observer(broker, ncmd) as observer,
    ):
        ddata = encode_payload(Payload(timestamp=1, seq=7, metrics=(Metric(alias=3, value=1.5),)))
        await publish(broker, f"spBv1.0/{unique_group}/DDATA/{NODE}/plc", ddata)
        command = await observer.wait_for(lambda s: s.topic == ncmd)
        [metric] = decode_payload(command.payload).metrics
        assert (metric.name, metric.value) == ("Node Control/Rebirth", True)
        assert host.service.counters.rejected_by_code == {"before_birth": 1}


async def test_tck_id_operational_behavior_edge_node_termination_host_action_ndeath_devices_tags_stale(
    tmp_path: Path, broker: BrokerUrl, proxy: LinkProxy, unique_group: str
) -> None:
    """The edge's link dies, the broker publishes its will NDEATH: node and devices offline, every point
    STALE, at the host's receive time."""
    async with running_host(f"sqlite:///{tmp_path / 't.db'}", broker, settings(unique_group)) as host:
        edge = BrokerEdge(EdgeDouble(unique_group, NODE), proxy.url)
        edge.start()
        await eventually(lambda: _online(host, NODE), timeout=10, what="edge born")
        await edge.record()
        await eventually(lambda: _has(host, NODE, "plc/Flow"), timeout=10, what="a value")
        before = host.service.clock_ms()
        proxy.cut()
        await edge.stop()
        await eventually(lambda: _offline(host, NODE), timeout=10, what="will NDEATH")
        room = host.service.live.sites[NODE]
        assert room.since >= before
        assert not any(d.online for d in room.devices.values())
        assert {p.quality for p in room.points.values()} == {Quality.STALE}


async def test_late_ndeath_of_an_older_session_does_not_kill_the_newer_one(
    tmp_path: Path, broker: BrokerUrl, proxy: LinkProxy, unique_group: str
) -> None:
    """Session A (bdSeq 1) is half-dead; the edge comes back as session B (bdSeq 2) and is born; then the
    broker finally publishes A's will NDEATH(bdSeq 1). The node must stay online as B."""
    async with (
        running_host(f"sqlite:///{tmp_path / 't.db'}", broker, settings(unique_group)) as host,
        Observer(broker, f"spBv1.0/{unique_group}/NDEATH/{NODE}") as deaths,
    ):
        old = BrokerEdge(EdgeDouble(unique_group, NODE), proxy.url)
        old.start()
        await eventually(lambda: _bd_seq(host, NODE, 1), timeout=10, what="session A born")
        new = BrokerEdge(EdgeDouble(unique_group, NODE, bd_seq=1), broker)  # next connect: bdSeq 2
        new.start()
        await eventually(lambda: _bd_seq(host, NODE, 2), timeout=10, what="session B born")
        proxy.cut()  # A's link dies only now: its will arrives after B's birth
        await old.stop()
        death = await deaths.wait_for(lambda s: True)
        assert decode_payload(death.payload).metrics[0].value == 1
        await new.record()
        await eventually(lambda: _has(host, NODE, "plc/Flow"), timeout=10, what="B's data")
        status = host.service.tracker.node(unique_group, NODE)
        assert status is not None
        assert status.online
        assert status.bd_seq == 2
        assert host.service.live.sites[NODE].status == "online"
        await new.stop()


async def test_historical_values_through_the_broker_are_stored_but_not_live(
    tmp_path: Path, broker: BrokerUrl, unique_group: str
) -> None:
    async with running_host(f"sqlite:///{tmp_path / 't.db'}", broker, settings(unique_group)) as host:
        edge = BrokerEdge(EdgeDouble(unique_group, NODE), broker)
        edge.start()
        await eventually(lambda: _online(host, NODE), timeout=10, what="edge born")
        await edge.record(2_000_000_000_000)
        old = [Reading("plc/Flow", 1_000_000_000_000, 42.0)]
        await edge._send([edge.double.session.ddata("plc", old, 2_000_000_000_001, historical=True)])
        await eventually(lambda: _historical(host), timeout=10, what="historical value")
        await host.service.flush()
        live = host.service.live.sites[NODE].points["plc/Flow"]
        assert live.ts == 2_000_000_000_000
        assert live.value != 42.0
        ids = await host.store.ensure_series([_key(NODE, "plc/Flow")])
        rows = await host.store.history(next(iter(ids.values())), 0, 2**62)
        assert next((r.ts, r.last) for r in rows) == (1_000_000_000_000, 42.0)
        await edge.stop()


# --- helpers ---------------------------------------------------------------------------------------------


def _key(site: str, point: str) -> SeriesKey:
    return SeriesKey(site, point)


async def _online(host: RunningHost, node: str) -> bool:
    room = host.service.live.sites.get(node)
    return room is not None and room.status == "online"


async def _offline(host: RunningHost, node: str) -> bool:
    room = host.service.live.sites.get(node)
    return room is not None and room.status == "offline"


async def _has(host: RunningHost, node: str, point: str) -> bool:
    room = host.service.live.sites.get(node)
    return room is not None and point in room.points


async def _bd_seq(host: RunningHost, node: str, bd_seq: int) -> bool:
    room = host.service.live.sites.get(node)
    return room is not None and room.status == "online" and room.bd_seq == bd_seq


async def _historical(host: RunningHost) -> bool:
    return host.service.counters.historical > 0
