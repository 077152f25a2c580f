"""The lean MQTT client's receive queue: it holds bursts (the broker would drop QoS 0 otherwise) and
stops reading only past ``max_queued_messages``, resuming once half of them are consumed."""

from __future__ import annotations

from typing import Any

from tapline.mqtt import BrokerUrl
from tapline.mqtt_wire import WireClient, publish_packet


class FakeTransport:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def write(self, data: bytes) -> None:  # PUBACKs; none for QoS 0
        self.calls.append("write")


def _client(limit: int) -> tuple[WireClient, FakeTransport]:
    client = WireClient(BrokerUrl.parse("mqtt://127.0.0.1:1"), "t", max_queued_messages=limit, batch_size=10)
    transport = FakeTransport()
    client._transport = transport  # type: ignore[assignment]
    return client, transport


def _publishes(count: int) -> bytes:
    return b"".join(publish_packet(f"spBv1.0/g/DDATA/n{k}/d", b"\x08\x01", 0, False) for k in range(count))


async def test_a_burst_below_the_bound_is_queued_without_pausing() -> None:
    client, transport = _client(limit=1_000)
    data = _publishes(1_000)
    assert client._packets(data) == len(data)
    assert transport.calls == []
    assert client._queued == 1_000


async def test_past_the_bound_reading_pauses_and_resumes_at_half() -> None:
    client, transport = _client(limit=100)
    client._packets(_publishes(150))
    assert transport.calls == ["pause"]
    received: list[Any] = []
    batches = client.batches()
    while len(received) < 90:
        received += await anext(batches)
    assert transport.calls == ["pause"]  # 60 still queued
    received += await anext(batches)
    assert transport.calls == ["pause", "resume"]  # 50 queued: half the bound
    assert [m.topic for m in received[:2]] == ["spBv1.0/g/DDATA/n0/d", "spBv1.0/g/DDATA/n1/d"]
    assert client._queued == 150 - len(received)
