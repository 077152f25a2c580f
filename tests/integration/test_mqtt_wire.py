"""The lean MQTT 3.1.1 client (``mqtt_wire``) against the real Mosquitto and the embedded amqtt broker:
receive at QoS 0 and 1, QoS 1 publish (retained STATE), the Will, keepalive, reconnect, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from tapline.broker import EmbeddedBroker, pick_port
from tapline.mqtt import BrokerUnavailable, BrokerUrl, Message, WillMessage
from tapline.mqtt_wire import WireClient, run_wire_session
from tests.observer import Observer


@pytest.fixture(params=["mosquitto", "amqtt"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """Each test runs against both brokers the product supports on one machine."""
    if request.param == "mosquitto":
        yield request.getfixturevalue("mqtt_url")
        return
    port, _ = pick_port("127.0.0.1", 18830 + uuid.uuid4().int % 1000)
    embedded = EmbeddedBroker("127.0.0.1", port)
    await embedded.start()
    try:
        yield embedded.url
    finally:
        await embedded.stop()


async def _collect(client: WireClient, into: list[Message], count: int) -> None:
    async for batch in client.batches():
        into.extend(batch)
        if len(into) >= count:
            return


async def test_messages_of_every_size_arrive_in_order_at_qos_0_and_1(broker: str) -> None:
    base = f"tapline-test/{uuid.uuid4().hex[:8]}"
    url = BrokerUrl.parse(broker)
    receiver = WireClient(url, f"rx-{uuid.uuid4().hex[:8]}")
    await receiver.connect()
    await receiver.subscribe(f"{base}/q0/#", qos=0)
    await receiver.subscribe(f"{base}/q1/#", qos=1)
    sender = WireClient(url, f"tx-{uuid.uuid4().hex[:8]}")
    await sender.connect()
    sizes = [0, 1, 126, 127, 128, 16_383, 16_384, 70_000]  # across the remaining-length byte counts
    sent = [(f"{base}/q0/{k}/é", bytes([k]) * size) for k, size in enumerate(sizes)]
    for topic, payload in sent:
        sender.publish_nowait(topic, payload)
    for k in range(300):
        await sender.publish(f"{base}/q1/{k}", k.to_bytes(2, "big"), qos=1)
    received: list[Message] = []
    async with asyncio.timeout(10):
        await _collect(receiver, received, len(sent) + 300)
    await sender.disconnect()
    await receiver.disconnect()
    assert [(m.topic, m.payload) for m in received[: len(sent)]] == sent
    assert [int.from_bytes(m.payload, "big") for m in received[len(sent) :]] == list(range(300))


async def test_a_retained_qos1_publish_reaches_a_later_subscriber_flagged_retained(broker: str) -> None:
    topic = f"tapline-test/{uuid.uuid4().hex[:8]}/STATE"
    url = BrokerUrl.parse(broker)
    publisher = WireClient(url, f"state-{uuid.uuid4().hex[:8]}")
    await publisher.connect()
    await publisher.publish(topic, b'{"online":true}', qos=1, retain=True)
    await publisher.disconnect()
    late = WireClient(url, f"late-{uuid.uuid4().hex[:8]}")
    await late.connect()
    await late.subscribe(topic, qos=1)
    received: list[Message] = []
    async with asyncio.timeout(5):
        await _collect(late, received, 1)
    await late.publish(topic, b"", qos=1, retain=True)  # clear the retained message
    await late.disconnect()
    assert received == [Message(topic, b'{"online":true}', True)]


async def test_the_will_fires_when_the_link_dies_not_on_disconnect(broker: str) -> None:
    will_topic = f"tapline-test/{uuid.uuid4().hex[:8]}/will"
    url = BrokerUrl.parse(broker)
    watcher = WireClient(url, f"watch-{uuid.uuid4().hex[:8]}")
    await watcher.connect()
    await watcher.subscribe(will_topic, qos=1)
    polite = WireClient(url, f"polite-{uuid.uuid4().hex[:8]}", will=WillMessage(will_topic, b"polite"))
    await polite.connect()
    await polite.disconnect()
    rude = WireClient(url, f"rude-{uuid.uuid4().hex[:8]}", will=WillMessage(will_topic, b"rude"))
    await rude.connect()
    assert rude._transport is not None
    rude._transport.abort()  # the socket dies without an MQTT DISCONNECT
    received: list[Message] = []
    async with asyncio.timeout(5):
        await _collect(watcher, received, 1)
    await watcher.disconnect()
    assert [m.payload for m in received] == [b"rude"]


async def test_keepalive_pings_keep_an_idle_connection_open(broker: str) -> None:
    client = WireClient(BrokerUrl.parse(broker), f"idle-{uuid.uuid4().hex[:8]}", keepalive_s=1)
    await client.connect()
    await asyncio.sleep(3.5)  # the broker drops a silent client after 1.5 keepalives
    assert client.connected
    await client.subscribe(f"tapline-test/{uuid.uuid4().hex[:8]}", qos=0)
    await client.disconnect()


async def test_a_broker_that_stops_answering_pings_is_a_lost_connection() -> None:
    silent = await asyncio.start_server(_accept_then_ignore, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    async with silent:
        client = WireClient(BrokerUrl.parse(f"mqtt://127.0.0.1:{port}"), "pinger", keepalive_s=1)
        await client.connect()
        with pytest.raises(BrokerUnavailable, match="PINGRESP"):
            await asyncio.wait_for(_drain(client), 5)


async def _drain(client: WireClient) -> None:
    async for _ in client.batches():
        pass


async def _accept_then_ignore(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A 'broker' that accepts CONNECT and then never answers anything."""
    await reader.read(1024)
    writer.write(b"\x20\x02\x00\x00")
    await writer.drain()
    with contextlib.suppress(ConnectionError):
        while await reader.read(1024):
            pass
    writer.close()


async def test_a_refused_connect_and_no_broker_are_broker_unavailable() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"\x20\x02\x00\x05")  # not authorised
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(BrokerUnavailable, match="not authorised"):
            await WireClient(BrokerUrl.parse(f"mqtt://127.0.0.1:{port}"), "refused").connect()
    with pytest.raises(BrokerUnavailable):
        await WireClient(BrokerUrl.parse("mqtt://127.0.0.1:1"), "nobody").connect()


async def test_the_session_reconnects_with_a_fresh_will_and_says_goodbye_on_close(broker: str) -> None:
    base = f"tapline-test/{uuid.uuid4().hex[:8]}"
    url = BrokerUrl.parse(broker)
    connects: list[WireClient] = []
    disconnects: list[str] = []
    messages: list[Message] = []
    wills = iter(range(100))

    async def on_connect(client: WireClient) -> None:
        connects.append(client)
        await client.subscribe(f"{base}/in", qos=0)
        await client.publish(f"{base}/hello", str(len(connects)).encode(), qos=1)

    async def on_message(message: Message) -> None:
        messages.append(message)

    async def on_disconnect(reason: str) -> None:
        disconnects.append(reason)

    async def on_close(client: WireClient) -> None:
        await client.publish(f"{base}/bye", b"bye", qos=1)

    async with Observer(broker, f"{base}/#", qos=0) as observer:
        task = asyncio.create_task(
            run_wire_session(
                url,
                f"sess-{uuid.uuid4().hex[:8]}",
                on_connect=on_connect,
                on_message=on_message,
                on_disconnect=on_disconnect,
                will_factory=lambda: WillMessage(f"{base}/will", str(next(wills)).encode()),
                on_close=on_close,
                backoff_initial_s=0.05,
                backoff_max_s=0.1,
            )
        )
        await observer.wait_count(1, "hello")
        first = connects[0]
        assert first._transport is not None
        first._transport.abort()  # the link dies: the broker publishes that connection's will
        await observer.wait_count(2, "hello")
        await observer.wait_count(1, "will")
        async with asyncio.timeout(5):
            while not messages:
                connects[-1].publish_nowait(f"{base}/in", b"data")
                await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await observer.wait_count(1, "bye")
    assert len(connects) == 2
    assert len(disconnects) == 1
    wills_seen = [s.payload for s in observer.seen if s.topic.endswith("/will")]
    assert wills_seen == [b"0"]  # the second connection (will "1") closed politely: no will
    assert messages[0] == Message(f"{base}/in", b"data", False)
