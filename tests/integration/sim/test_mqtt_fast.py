"""The lean paho adapter against the real Mosquitto: publish, receive, backpressure, the Will."""

from __future__ import annotations

import uuid

import pytest

from tapline.mqtt import BrokerUnavailable, BrokerUrl, WillMessage
from tapline.mqtt_fast import FastClient, run_fast_session
from tests.observer import Observer

pytestmark = pytest.mark.mosquitto


async def test_messages_arrive_in_order_and_drained_means_handed_over(
    mqtt_url: str, unique_group: str
) -> None:
    topic = f"tapline-test/{unique_group}/data"
    async with Observer(mqtt_url, topic) as observer:
        client = FastClient(BrokerUrl.parse(mqtt_url), f"pub-{unique_group}")
        await client.connect()
        payload = b"x" * 20_000
        for index in range(800):  # below Mosquitto's per-client queue, as the observer reads only later
            client.publish(topic, index.to_bytes(4, "big") + payload)
        await client.drained()
        assert not client.backlogged
        await observer.wait_count(800, "data")
        await client.disconnect()
    received = [int.from_bytes(s.payload[:4], "big") for s in observer.seen]
    assert received == list(range(800))
    with pytest.raises(BrokerUnavailable):
        client.publish(topic, b"after the end")


async def test_a_batch_is_the_same_messages_as_one_publish_each(mqtt_url: str, unique_group: str) -> None:
    base = f"tapline-test/{unique_group}"
    sizes = [0, 1, 126, 127, 128, 16_383, 16_384, 200_000]  # across the remaining-length byte counts
    batch = [(f"{base}/b/{k}/é", bytes([k]) * size) for k, size in enumerate(sizes)]
    async with Observer(mqtt_url, f"{base}/#") as observer:
        client = FastClient(BrokerUrl.parse(mqtt_url), f"batch-{unique_group}")
        await client.connect()
        client.publish_batch(batch)
        client.publish(f"{base}/after", b"last")
        await client.drained()
        await observer.wait_count(1, "after")
        await client.disconnect()
    assert [(s.topic, s.payload) for s in observer.seen] == [*batch, (f"{base}/after", b"last")]


async def test_the_will_is_published_when_the_connection_dies_not_when_closed(
    mqtt_url: str, unique_group: str
) -> None:
    will_topic = f"tapline-test/{unique_group}/will"
    url = BrokerUrl.parse(mqtt_url)
    async with Observer(mqtt_url, will_topic) as observer:
        polite = FastClient(url, f"polite-{unique_group}", will=WillMessage(will_topic, b"polite"))
        await polite.connect()
        await polite.disconnect()
        rude = FastClient(url, f"rude-{unique_group}", will=WillMessage(will_topic, b"rude"))
        await rude.connect()
        rude._teardown("test: the link dies")  # closes the socket without an MQTT DISCONNECT
        await observer.wait_count(1, "will")
    assert [s.payload for s in observer.seen] == [b"rude"]


async def test_a_session_that_returns_ends_the_loop_and_no_broker_is_broker_unavailable(
    mqtt_url: str, unique_group: str
) -> None:
    calls: list[str] = []

    async def session(client: FastClient) -> None:
        calls.append(client.client_id)
        await client.subscribe([f"tapline-test/{unique_group}/#"])

    await run_fast_session(BrokerUrl.parse(mqtt_url), f"s-{uuid.uuid4().hex[:6]}", session=session)
    assert len(calls) == 1
    unreachable = FastClient(BrokerUrl.parse("mqtt://127.0.0.1:1"), "nobody")
    with pytest.raises(BrokerUnavailable):
        await unreachable.connect()
