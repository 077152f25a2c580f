"""Run a dispatcher for the length of a test, and wait for it to finish what it has."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from tapline.notify.dispatcher import NotifyDispatcher


@asynccontextmanager
async def running(dispatcher: NotifyDispatcher) -> AsyncIterator[asyncio.Task[None]]:
    """``dispatcher.run()`` as a task; on exit it must still be running (nothing escaped) and is cancelled."""
    task = asyncio.create_task(dispatcher.run(), name="notify")
    try:
        yield task
        assert not task.done(), f"the dispatcher stopped: {task}"
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def drained(dispatcher: NotifyDispatcher, timeout: float = 10) -> None:
    """Until nothing is queued, in flight or waiting for a retry.

    ``idle`` is the state of several tasks together (intake, ticker, senders), not one event this test
    could await, so it is polled like ``tests.helpers.eventually`` does.
    """
    async with asyncio.timeout(timeout):
        while not dispatcher.idle:  # noqa: ASYNC110 - a joint state of several tasks, see above
            await asyncio.sleep(0.005)
