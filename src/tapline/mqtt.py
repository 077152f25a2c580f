"""MQTT client adapter: the only module that imports the MQTT client library (aiomqtt / paho).

Rules:
- ``run_session`` owns one logical client for the life of a process: it connects (clean session, as
  Sparkplug requires), calls ``on_connect`` with a live ``Connection`` to subscribe and publish births,
  feeds every inbound message to ``on_message``, and on any failure calls ``on_disconnect`` and
  reconnects with capped, jittered exponential backoff. This is the one reconnect helper, shared by
  the edge gateway, the cloud ingest and the fleet simulator.
- The will is built per connection (``will_factory``), because a Sparkplug edge node's NDEATH must
  carry the bdSeq of *that* connection.
- An intentional stop (the task is cancelled) sends no will, so ``on_close`` gets the live connection
  first, for a few seconds, to say goodbye itself (the host's STATE offline, an edge's NDEATH).
- Library exceptions are translated into ``BrokerUnavailable`` here.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiomqtt

from tapline.logs import get_logger

log = get_logger(__name__)


class BrokerUnavailable(Exception):
    """The broker cannot be reached or the connection broke."""


class BrokerUrlError(ValueError):
    """A broker URL that is not ``mqtt://`` or ``mqtts://host[:port]``."""


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise BrokerUrlError(f"broker URL must start with mqtt:// or mqtts://, got {url!r}")
        if not parts.hostname:
            raise BrokerUrlError(f"broker URL has no host: {url!r}")
        tls = parts.scheme in ("mqtts", "ssl")
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise BrokerUrlError(f"broker URL has a bad port: {url!r}") from exc
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True, slots=True)
class WillMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class Link(Protocol):
    """What a session callback may do with a live connection (``Connection``, ``mqtt_wire.WireClient``)."""

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None: ...

    async def subscribe(self, topic: str, qos: int = 1) -> None: ...


class Connection:
    """A live connection, valid until the session reports a disconnect."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        try:
            await self._client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        try:
            await self._client.subscribe(topic, qos=qos)
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(str(exc)) from exc


async def _close(
    on_close: Callable[[Connection], Awaitable[None]], conn: Connection, timeout_s: float
) -> None:
    """Run ``on_close`` while being cancelled; a broker that is gone already is no error here."""
    try:
        async with asyncio.timeout(timeout_s):
            await on_close(conn)
    except (TimeoutError, BrokerUnavailable, aiomqtt.MqttError) as exc:
        log.warning("mqtt_close_failed", error=str(exc) or type(exc).__name__)


async def run_session(
    url: BrokerUrl,
    client_id: str,
    *,
    on_connect: Callable[[Connection], Awaitable[None]],
    on_message: Callable[[Message], Awaitable[None]],
    on_disconnect: Callable[[str], Awaitable[None]],
    will_factory: Callable[[], WillMessage | None] = lambda: None,
    on_close: Callable[[Connection], Awaitable[None]] | None = None,
    close_timeout_s: float = 2.0,
    keepalive_s: int = 15,
    backoff_initial_s: float = 0.2,
    backoff_max_s: float = 10.0,
    max_queued_incoming: int = 0,
) -> None:
    """Stay connected forever (until cancelled), reconnecting with capped jittered backoff."""
    delay = backoff_initial_s
    while True:
        will = will_factory()
        tls_context = ssl.create_default_context() if url.tls else None
        client = aiomqtt.Client(
            url.host,
            url.port,
            username=url.username,
            password=url.password,
            identifier=client_id,
            clean_session=True,
            keepalive=keepalive_s,
            timeout=10,
            tls_context=tls_context,
            max_queued_incoming_messages=max_queued_incoming or None,
            will=aiomqtt.Will(will.topic, will.payload, will.qos, will.retain) if will else None,
        )
        connected = False
        reason = "closed"
        try:
            async with client:
                connected = True
                delay = backoff_initial_s
                log.info("mqtt_connected", broker=str(url), client_id=client_id)
                try:
                    await on_connect(Connection(client))
                    async for message in client.messages:
                        await on_message(
                            Message(str(message.topic), bytes(message.payload or b""), bool(message.retain))
                        )
                except asyncio.CancelledError:
                    if on_close is not None:
                        await _close(on_close, Connection(client), close_timeout_s)
                    raise
        except aiomqtt.MqttError as exc:
            reason = str(exc)
        except BrokerUnavailable as exc:
            reason = str(exc)
        if connected:
            log.warning("mqtt_disconnected", broker=str(url), client_id=client_id, reason=reason)
            await on_disconnect(reason)
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto
        delay = min(delay * 2, backoff_max_s)
