"""Real servers for the notification channels: a tiny HTTP/1.1 webhook receiver on a TCP port, and an
in-process SMTP server (aiosmtpd) that keeps the mail it gets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.helpers import free_port


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Hooks:
    """What the receiver got, and the statuses it answers with (in order; the last one repeats)."""

    url: str
    statuses: list[int] = field(default_factory=lambda: [200])
    requests: list[Request] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int, timeout: float = 10) -> list[Request]:
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.requests


@asynccontextmanager
async def webhook_receiver(statuses: list[int] | None = None) -> AsyncIterator[Hooks]:
    """An HTTP server on 127.0.0.1 that records every POST and answers with ``statuses`` in turn."""
    port = free_port()
    hooks = Hooks(f"http://127.0.0.1:{port}/hook", list(statuses or [200]))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        status = hooks.statuses[min(len(hooks.requests), len(hooks.statuses) - 1)]
        hooks.requests.append(Request(method, path, headers, body))
        hooks.arrived.set()
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        yield hooks


class _Keeper:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = message_from_bytes(content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.envelopes.append((str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos]))
        return "250 OK"


@dataclass
class Mailbox:
    host: str
    port: int
    keeper: _Keeper

    @property
    def messages(self) -> list[EmailMessage]:
        return self.keeper.messages


@contextmanager
def smtp_server(**options: Any) -> Iterator[Mailbox]:
    """An SMTP server in a thread of this process (aiosmtpd's controller) on a free port."""
    keeper = _Keeper()
    port = free_port()
    controller = Controller(keeper, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield Mailbox("127.0.0.1", port, keeper)
    finally:
        controller.stop()
