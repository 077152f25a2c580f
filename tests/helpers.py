"""Small helpers shared by integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable

import pytest


def service_missing(message: str) -> None:
    """Skip a test whose real service is missing, but fail it under ``CI=true``: CI must run them."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: service tests must run, not skip)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> None:
    """Wait until ``check`` returns True, failing with ``what`` after ``timeout`` seconds.

    Used where the thing awaited is a state of another system (a store, a broker), not an event this
    process can subscribe to.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await check():
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)
