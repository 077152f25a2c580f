"""A TCP forwarder in front of the broker whose links a test can break the two ways real links break.

- ``cut()`` aborts both sockets of every link (no MQTT DISCONNECT): the broker fires the clients' wills
  at once, as when a router reboots.
- ``blackhole()`` keeps the sockets open and drops every byte both ways from then on (no FIN, no RST):
  a half-open link, as when a 4G modem loses its carrier — each side notices only by its keepalive.

Links made after either call work normally. The proxy listens on ``port`` (0: any free one), so a test
can hand out its URL before starting it (a link that is down from the start). Shared by the ingest,
simulator and edge integration tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from tapline.mqtt import BrokerUrl


@dataclass
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    dark: bool = False

    def abort(self) -> None:
        self.client.transport.abort()
        self.upstream.transport.abort()


class LinkProxy:
    """TCP forwarder to the broker whose links can be cut or black-holed (see the module docstring)."""

    def __init__(self, target: BrokerUrl, port: int = 0) -> None:
        self.target = target
        self.port = port
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> BrokerUrl:
        return BrokerUrl("127.0.0.1", self.port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target.host, self.target.port)
        except OSError:
            writer.transport.abort()  # no broker behind us: the client sees its link refused
            return
        link = _Link(writer, up_writer)
        self._links.append(link)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    if not link.dark:
                        dst.write(data)
                        await dst.drain()
            dst.transport.abort()

        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def cut(self) -> None:
        """Drop every link through the proxy at once (no DISCONNECT: wills fire)."""
        for link in self._links:
            link.abort()
        self._links.clear()

    def blackhole(self) -> None:
        """Every current link silently drops all bytes both ways from now on (no FIN, no RST)."""
        for link in self._links:
            link.dark = True

    async def __aenter__(self) -> LinkProxy:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
