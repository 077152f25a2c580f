"""``GET /api/v1/stream``: live push of alarm events to the console (Server-Sent Events).

Why SSE and not a WebSocket: the push is one-way (operator actions are ordinary POSTs that go through
the same service layer and come back on the stream like any other transition), SSE reconnects by
itself in every browser, and it passes HTTP proxies unchanged.

Rules:
- Each connection is one ``AlarmHub`` listener with a bounded queue. A client that falls that far
  behind gets ``event: resync`` and the stream ends: the browser reconnects and reloads the lists,
  so a slow console never slows the alarm path and never silently misses a transition.
- ``event: alarm`` carries the transition (who, when, why, from, to) with the alarm's context (room,
  rule, priority, cause, message); ``: keep-alive`` comments every ``keepalive_s`` keep proxies and
  dead-connection detection honest.
- Browsers' ``EventSource`` cannot send an ``Authorization`` header, so the token may also come as
  ``?access_token=``; the same viewer rule applies (public reads in the demo need none).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from tapline.alarms.events import AlarmEvent
from tapline.alarms.hub import AlarmHub, Listener
from tapline.api.auth import authorise
from tapline.api.errors import ApiError
from tapline.auth import Role

router = APIRouter(tags=["stream"])

KEEPALIVE_S = 15.0
QUEUE = 20_000
"""Events a console may fall behind before it is told to resync (a flood of 5,000 rooms × 10 alarms
fits in about two of these; memory: the events are shared with the hub, the queue holds references)."""
MAX_BATCH = 2_000


def event_data(event: AlarmEvent) -> dict[str, Any]:
    """The ``alarm`` message: the transition plus what a console row shows."""
    data = event.as_dict()
    data.update(
        state=event.phase.value,
        active=event.state.active,
        device=event.device,
        point=event.point,
        cause=event.cause.value,
        message={"zh": event.text.zh, "en": event.text.en},
    )
    return data


def _frame(event: AlarmEvent) -> bytes:
    return b"event: alarm\ndata: " + orjson.dumps(event_data(event)) + b"\n\n"


async def _frames(listener: Listener, keepalive_s: float) -> AsyncIterator[bytes]:
    try:
        yield b"retry: 3000\n\n"
        while True:
            try:
                event = await asyncio.wait_for(listener.get(), keepalive_s)
            except TimeoutError:
                if listener.overflowed:
                    yield b"event: resync\ndata: {}\n\n"
                    return
                yield b": keep-alive\n\n"
                continue
            # Whatever else is queued goes in the same write: a flood costs one send per burst, not
            # one per event, so the console keeps up instead of being cut off.
            frames = [_frame(event)]
            while len(frames) < MAX_BATCH and not listener.queue.empty():
                frames.append(_frame(listener.queue.get_nowait()))
            yield b"".join(frames)
            if listener.overflowed and listener.queue.empty():
                yield b"event: resync\ndata: {}\n\n"
                return
    finally:
        listener.close()


@router.get("/stream")
async def stream(
    request: Request,
    access_token: Annotated[str | None, Query(max_length=2_000)] = None,
) -> StreamingResponse:
    """Server-Sent Events: ``alarm`` for every alarm transition, ``resync`` when this client fell
    behind (reload, then reconnect)."""
    authorise(request, Role.VIEWER, access_token)
    hub = request.app.state.services.extras.get("alarm_hub")
    if not isinstance(hub, AlarmHub):
        raise ApiError(503, "alarms_unavailable", "no alarm engine runs in this process")
    keepalive = float(getattr(request.app.state, "stream_keepalive_s", KEEPALIVE_S))
    return StreamingResponse(
        _frames(hub.listen(QUEUE), keepalive),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
