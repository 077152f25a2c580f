"""A lean MQTT 3.1.1 client on asyncio's transport, for the cloud ingest's receive path (stdlib only).

Why a third adapter beside ``mqtt`` (aiomqtt) and ``mqtt_fast`` (paho): the ingest receives tens of
thousands of small Sparkplug messages a second. aiomqtt over paho builds several Python objects per
PUBLISH (``MQTTMessage``, ``MQTTMessageInfo``, a ``threading.Condition``, an ``aiomqtt.Message``), walks
a topic matcher and crosses the event loop once per message: about half of the ingest's CPU in the
first profile (docs/benchmarks.md). Here every read of the socket is cut into packets in one loop and
the PUBLISH packets reach the consumer as one batch.

Rules (MQTT 3.1.1, OASIS standard; section numbers in the code):
- One connection per ``WireClient``: CONNECT with clean session, keepalive, optional Will and
  credentials; the broker's CONNACK must accept it (§3.2.2.3), else ``BrokerUnavailable``.
- Inbound PUBLISH at QoS 0 and 1 (a QoS 1 one is acknowledged with PUBACK once it is queued for the
  consumer, §4.3.2). We subscribe at QoS ≤ 1, so the broker never sends QoS 2 (§3.8.4); a QoS 2 PUBLISH
  or any packet a client must not receive is a protocol violation: the connection is closed (§4.8).
- Outbound PUBLISH at QoS 0 (written at once, never waits) or QoS 1 (waits for its PUBACK); SUBSCRIBE
  waits for its SUBACK and fails on a refused filter (0x80).
- Keepalive: a PINGREQ every half keepalive; no PINGRESP within a keepalive means the link is dead
  (§3.1.2.10: the client SHOULD close then).
- A lost connection ends ``messages()`` with ``BrokerUnavailable``; reconnecting is ``run_wire_session``'s
  job (capped, jittered exponential backoff, the Will built afresh per connection, ``on_close`` on an
  intentional stop) — the same contract as ``mqtt.run_session``.
- Fairness and backpressure: a batch holds at most ``batch_size`` messages and the consumer yields to
  the event loop between batches (the ingest's writer and timers run in between); when more than
  ``max_queued_messages`` messages wait, reading stops (``pause_reading``) until half of them are
  consumed, so memory stays bounded and TCP pushes back on the broker.
- Why the bound is large (400,000 messages, ≈ 160 MB at the fleet's ≈ 400 B a queued message): on a
  QoS 0 subscription — all Sparkplug data — the broker does not slow the publishers down when this
  client stops reading, it drops what its queue for the client cannot hold (Mosquitto: 1,000 messages),
  i.e. ≈ 0.1 s of a 1,000-room city. A burst of work in the consumer (a thousand rooms born at once
  costs seconds of CPU) would then become seq gaps, rebirth requests to every node and lost data. Held
  here instead it is only late (the alarm latency shows it) and the consumer catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from tapline.logs import get_logger
from tapline.mqtt import BrokerUnavailable, BrokerUrl, Message, WillMessage

log = get_logger(__name__)

__all__ = ["WireClient", "run_wire_session"]

_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 0x10, 0x20, 0x30, 0x40
_SUBSCRIBE, _SUBACK, _PINGREQ, _PINGRESP, _DISCONNECT = 0x82, 0x90, b"\xc0\x00", 0xD0, b"\xe0\x00"
_U16: Final = struct.Struct(">H")
_CONNACK_CODES: Final = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


def remaining_length(size: int) -> bytes:
    """MQTT's variable-length integer (§2.2.3: 1–4 bytes, 7 bits each, least significant first)."""
    if not 0 <= size <= 268_435_455:
        raise ValueError(f"an MQTT packet holds at most 268,435,455 bytes, got {size}")
    out = bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        out.append(byte | 0x80 if size else byte)
        if not size:
            return bytes(out)


def _string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return _U16.pack(len(raw)) + raw


def connect_packet(
    client_id: str, keepalive_s: int, will: WillMessage | None, username: str | None, password: str | None
) -> bytes:
    """CONNECT (§3.1): protocol "MQTT" level 4, clean session, Will and credentials if given."""
    flags = 0x02
    payload = _string(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _string(will.topic) + _string(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    body = _string("MQTT") + bytes((4, flags)) + _U16.pack(keepalive_s) + payload
    return bytes((_CONNECT,)) + remaining_length(len(body)) + body


def publish_packet(topic: str, payload: bytes, qos: int, retain: bool, packet_id: int = 0) -> bytes:
    """PUBLISH (§3.3); the packet id only at QoS 1."""
    head = _string(topic) + (_U16.pack(packet_id) if qos else b"")
    first = _PUBLISH | (qos << 1) | (1 if retain else 0)
    return bytes((first,)) + remaining_length(len(head) + len(payload)) + head + payload


def subscribe_packet(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    """SUBSCRIBE (§3.8): fixed header flags 0b0010, then (filter, requested QoS) pairs."""
    body = _U16.pack(packet_id) + b"".join(_string(topic) + bytes((qos,)) for topic, qos in filters)
    return bytes((_SUBSCRIBE,)) + remaining_length(len(body)) + body


class ProtocolViolation(Exception):
    """The broker sent something MQTT 3.1.1 does not allow a client to receive."""


class _Protocol(asyncio.Protocol):
    """Cuts the byte stream into packets; PUBLISHes of one read go to the client as one batch."""

    def __init__(self, client: WireClient) -> None:
        self.client = client
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.client._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        try:
            used = self.client._packets(buffer)
        except (ProtocolViolation, UnicodeDecodeError, IndexError, struct.error) as exc:
            self.client._fail(f"protocol violation: {exc}")
            return
        self.buffer = buffer[used:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._fail(f"connection lost: {exc}" if exc else "connection closed by the broker")


class WireClient:
    """One MQTT 3.1.1 connection (see the module rules)."""

    def __init__(
        self,
        url: BrokerUrl,
        client_id: str,
        *,
        will: WillMessage | None = None,
        keepalive_s: int = 15,
        max_queued_messages: int = 400_000,
        batch_size: int = 200,
    ) -> None:
        self.url = url
        self.client_id = client_id
        self.will = will
        self.keepalive_s = keepalive_s
        self.max_queued_messages = max_queued_messages
        self._queued = 0
        self.batch_size = batch_size
        self._transport: asyncio.Transport | None = None
        self._batches: deque[list[Message]] = deque()
        self._wakeup: asyncio.Event = asyncio.Event()
        self._paused = False
        self._connack: asyncio.Future[None] | None = None
        self._acks: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 0
        self._lost: str | None = None
        self._pinged_at: float | None = None
        self._keepalive: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    async def connect(self, timeout_s: float = 10.0) -> None:
        """Open the connection, send CONNECT and wait for an accepting CONNACK."""
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        context = ssl.create_default_context() if self.url.tls else None
        try:
            async with asyncio.timeout(timeout_s):
                await loop.create_connection(
                    lambda: _Protocol(self),
                    self.url.host,
                    self.url.port,
                    ssl=context,
                    server_hostname=self.url.host if context else None,
                )
                assert self._transport is not None
                self._transport.write(
                    connect_packet(
                        self.client_id, self.keepalive_s, self.will, self.url.username, self.url.password
                    )
                )
                await self._connack
        except TimeoutError:
            self._fail("no CONNACK")
            raise BrokerUnavailable(f"{self.url} did not answer CONNECT within {timeout_s} s") from None
        except (OSError, ssl.SSLError) as exc:
            self._fail(str(exc))
            raise BrokerUnavailable(f"cannot connect to {self.url}: {exc}") from exc
        self._keepalive = loop.create_task(self._ping(), name=f"mqtt-keepalive-{self.client_id}")

    async def disconnect(self) -> None:
        """Send DISCONNECT (the broker then discards the Will, §3.14) and close."""
        if self.connected and self._transport is not None:
            self._transport.write(_DISCONNECT)
        self._fail("closed")

    @property
    def connected(self) -> bool:
        return self._lost is None and self._transport is not None

    # --- publishing and subscribing -------------------------------------------------------------
    def publish_nowait(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """A QoS 0 PUBLISH, written at once (the transport buffers what the socket does not take)."""
        self._write(publish_packet(topic, payload, 0, retain))

    async def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, timeout_s: float = 10.0
    ) -> None:
        """PUBLISH at QoS 0 (returns at once) or 1 (returns when the broker's PUBACK arrived)."""
        if qos == 0:
            self.publish_nowait(topic, payload, retain)
            return
        if qos != 1:
            raise ValueError("this client publishes at QoS 0 or 1")
        packet_id, ack = self._expect(_PUBACK)
        self._write(publish_packet(topic, payload, 1, retain, packet_id))
        await self._await(ack, timeout_s, "PUBACK")

    async def subscribe(self, topic: str, qos: int = 1, timeout_s: float = 10.0) -> None:
        """SUBSCRIBE to one filter and wait for the SUBACK; a refused filter is ``BrokerUnavailable``."""
        if qos not in (0, 1):
            raise ValueError("this client subscribes at QoS 0 or 1")
        packet_id, ack = self._expect(_SUBACK)
        self._write(subscribe_packet(packet_id, [(topic, qos)]))
        codes = await self._await(ack, timeout_s, "SUBACK")
        if any(code == 0x80 for code in codes):
            raise BrokerUnavailable(f"{self.url} refused the subscription to {topic!r}")

    # --- receiving ------------------------------------------------------------------------------
    async def batches(self) -> AsyncIterator[list[Message]]:
        """Inbound messages in arrival order, in lists of at most ``batch_size``, until the connection
        is lost (then ``BrokerUnavailable``)."""
        batches, wakeup = self._batches, self._wakeup
        while True:
            while batches:
                batch = batches.popleft()
                self._queued -= len(batch)
                if self._paused and self._queued <= self.max_queued_messages // 2 and self._transport:
                    self._paused = False
                    self._transport.resume_reading()
                yield batch
                await asyncio.sleep(0)  # let the writer, timers and other tasks run between batches
            if self._lost is not None:
                raise BrokerUnavailable(self._lost)
            wakeup.clear()
            await wakeup.wait()

    # --- internals ------------------------------------------------------------------------------
    def _packets(self, data: bytes) -> int:
        """Handle every complete packet in ``data``; return how many bytes were used."""
        pos, end = 0, len(data)
        batch: list[Message] = []
        while pos + 2 <= end:
            first = data[pos]
            size, shift, index = 0, 0, pos + 1
            while True:  # remaining length (§2.2.3)
                if index >= end:
                    return self._queue(batch, pos)
                byte = data[index]
                size |= (byte & 0x7F) << shift
                index += 1
                if byte < 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolViolation("remaining length longer than 4 bytes")
            stop = index + size
            if stop > end:
                break
            kind = first & 0xF0
            if kind == _PUBLISH:
                qos = (first >> 1) & 3
                topic_end = index + 2 + ((data[index] << 8) | data[index + 1])
                if topic_end + (2 if qos else 0) > stop:
                    raise ProtocolViolation("PUBLISH shorter than its topic")
                topic = data[index + 2 : topic_end].decode()
                if qos == 0:
                    batch.append(Message(topic, data[topic_end:stop], bool(first & 1)))
                elif qos == 1:
                    batch.append(Message(topic, data[topic_end + 2 : stop], bool(first & 1)))
                    self._write(b"\x40\x02" + data[topic_end : topic_end + 2])  # PUBACK
                else:
                    raise ProtocolViolation(f"QoS {qos} PUBLISH on a QoS ≤ 1 subscription")
            else:
                self._control(first, data[index:stop])
            pos = stop
        return self._queue(batch, pos)

    def _queue(self, batch: list[Message], used: int) -> int:
        if batch:
            size = self.batch_size
            if len(batch) <= size:
                self._batches.append(batch)
            else:  # one socket read (up to 256 KiB) can hold a thousand messages: keep turns short
                self._batches.extend(batch[start : start + size] for start in range(0, len(batch), size))
            self._queued += len(batch)
            self._wakeup.set()
            if self._queued > self.max_queued_messages and not self._paused and self._transport:
                self._paused = True
                self._transport.pause_reading()
        return used

    def _control(self, first: int, body: bytes) -> None:
        if first == _PINGRESP:
            self._pinged_at = None
        elif first in (_PUBACK, _SUBACK) and len(body) >= 2:
            future = self._acks.pop(_U16.unpack_from(body)[0] | (first << 16), None)
            if future is not None and not future.done():
                future.set_result(body[2:])
        elif first == _CONNACK and len(body) == 2:
            if self._connack is None or self._connack.done():
                raise ProtocolViolation("a second CONNACK")
            if body[1]:
                reason = _CONNACK_CODES.get(body[1], f"code {body[1]}")
                self._connack.set_exception(BrokerUnavailable(f"{self.url} refused the connection: {reason}"))
            else:
                self._connack.set_result(None)
        else:
            raise ProtocolViolation(f"unexpected packet type 0x{first:02x}")

    def _expect(self, kind: int) -> tuple[int, asyncio.Future[bytes]]:
        if not self.connected:
            raise BrokerUnavailable(self._lost or f"not connected to {self.url}")
        for _ in range(65_535):
            self._next_id = self._next_id % 65_535 + 1  # packet ids are 1..65535 (§2.3.1)
            key = self._next_id | (kind << 16)
            if key not in self._acks:
                future = asyncio.get_running_loop().create_future()
                self._acks[key] = future
                return self._next_id, future
        raise BrokerUnavailable("no free packet identifier")

    async def _await(self, ack: asyncio.Future[bytes], timeout_s: float, what: str) -> bytes:
        try:
            async with asyncio.timeout(timeout_s):
                return await ack
        except TimeoutError:
            raise BrokerUnavailable(f"no {what} from {self.url} within {timeout_s} s") from None

    def _write(self, packet: bytes) -> None:
        if self._lost is not None or self._transport is None:
            raise BrokerUnavailable(self._lost or f"not connected to {self.url}")
        self._transport.write(packet)

    async def _ping(self) -> None:
        loop = asyncio.get_running_loop()
        interval = max(self.keepalive_s / 2.0, 0.5)
        while self.connected:
            await asyncio.sleep(interval)
            if self._pinged_at is not None and loop.time() - self._pinged_at > self.keepalive_s:
                self._fail("keepalive: no PINGRESP from the broker")
                return
            if self._pinged_at is None:
                self._pinged_at = loop.time()
            with contextlib.suppress(BrokerUnavailable):
                self._write(_PINGREQ)

    def _fail(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
        self._wakeup.set()
        if self._transport is not None:
            self._transport.close()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(BrokerUnavailable(reason))
            self._connack.exception()  # retrieved: the waiter may be gone
        for future in self._acks.values():
            if not future.done():
                future.set_exception(BrokerUnavailable(reason))
                future.exception()
        self._acks.clear()
        if self._keepalive is not None and self._keepalive is not asyncio.current_task():
            self._keepalive.cancel()
        self._keepalive = None


async def _close(
    on_close: Callable[[WireClient], Awaitable[None]], client: WireClient, timeout_s: float
) -> None:
    """Run ``on_close`` while being cancelled; a broker that is gone already is no error here."""
    try:
        async with asyncio.timeout(timeout_s):
            await on_close(client)
    except (TimeoutError, BrokerUnavailable) as exc:
        log.warning("mqtt_close_failed", error=str(exc) or type(exc).__name__)


async def run_wire_session(
    url: BrokerUrl,
    client_id: str,
    *,
    on_connect: Callable[[WireClient], Awaitable[None]],
    on_message: Callable[[Message], Awaitable[None]],
    on_disconnect: Callable[[str], Awaitable[None]],
    will_factory: Callable[[], WillMessage | None] = lambda: None,
    on_close: Callable[[WireClient], Awaitable[None]] | None = None,
    close_timeout_s: float = 2.0,
    keepalive_s: int = 15,
    backoff_initial_s: float = 0.2,
    backoff_max_s: float = 10.0,
) -> None:
    """``mqtt.run_session``'s contract on a ``WireClient``: stay connected until cancelled."""
    delay = backoff_initial_s
    while True:
        client = WireClient(url, client_id, will=will_factory(), keepalive_s=keepalive_s)
        connected = False
        reason = "closed"
        try:
            try:
                await client.connect()
            except asyncio.CancelledError:
                await client.disconnect()
                raise
            connected = True
            delay = backoff_initial_s
            log.info("mqtt_connected", broker=str(url), client_id=client_id)
            try:
                await on_connect(client)
                async for batch in client.batches():
                    for message in batch:
                        await on_message(message)
            except asyncio.CancelledError:
                if on_close is not None:
                    await _close(on_close, client, close_timeout_s)
                await client.disconnect()
                raise
        except BrokerUnavailable as exc:
            reason = str(exc)
        await client.disconnect()
        if connected:
            log.warning("mqtt_disconnected", broker=str(url), client_id=client_id, reason=reason)
            await on_disconnect(reason)
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto
        delay = min(delay * 2, backoff_max_s)
