"""The dispatcher end to end: alarm events in, rate-limited, digested and escalated notices out
through a real webhook server, with the policy's time driven by a test clock."""

from __future__ import annotations

import asyncio
import json

from tapline.alarms.model import Event, Phase
from tapline.ingest.metrics import Exposition
from tapline.notify import build_dispatcher
from tapline.notify.dispatcher import NotifyDispatcher
from tests.unit.notify.kit import MIN, T0, alarm_event, config, moved, webhook
from tests.unit.notify.running import drained, running

from .receivers import Hooks, webhook_receiver


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _seen(hooks: Hooks, start: int) -> list[tuple[str, str, list[str]]]:
    """(recipient, kind, alarm ids) of the requests from ``start`` on, in a stable order."""
    out = []
    for request in hooks.requests[start:]:
        document = json.loads(request.body)
        out.append((request.path.rsplit("/", 1)[1], document["kind"], document["alarm_ids"]))
    return sorted(out)


async def _step(dispatcher: NotifyDispatcher, hooks: Hooks, count: int) -> list[tuple[str, str, list[str]]]:
    start = len(hooks.requests)
    await hooks.wait_for(start + count)
    await drained(dispatcher)
    return _seen(hooks, start)


async def test_events_in_rate_limited_digested_and_escalated_notices_out() -> None:
    async with webhook_receiver() as hooks:
        cfg = config(
            webhook("ops", url=f"{hooks.url}/ops", secret="k", rate_limit={"max": 2, "window_s": 60}),
            webhook("boss", url=f"{hooks.url}/boss", sites=["nowhere"]),
            escalation={"critical": {"after_s": 300, "max": 1, "targets": ["boss"]}},
        )
        clock = Clock(T0)
        dispatcher = build_dispatcher(cfg, clock, tick_s=0.005, backoff_s=0.01)
        events = [alarm_event("mains_lost", T0, site=f"PR-000{n}", alarm_id=f"AL-{n}") for n in range(4)]
        async with running(dispatcher):
            for event in events:
                dispatcher.take(event)
            assert await _step(dispatcher, hooks, 2) == [
                ("ops", "alarm", ["AL-0"]),
                ("ops", "alarm", ["AL-1"]),
            ]
            assert dispatcher.policy.held("ops") == 2

            clock.now = T0 + MIN
            assert await _step(dispatcher, hooks, 1) == [("ops", "digest", ["AL-2", "AL-3"])]

            dispatcher.take(moved(events[0], Event.ACK, Phase.ACKED_ACTIVE, T0 + 2 * MIN))
            clock.now = T0 + 5 * MIN
            assert await _step(dispatcher, hooks, 5) == [
                ("boss", "escalation", ["AL-1"]),
                ("boss", "escalation", ["AL-2"]),
                ("boss", "escalation", ["AL-3"]),
                ("ops", "escalation", ["AL-1"]),
                ("ops", "escalation", ["AL-2"]),
            ]
            assert dispatcher.policy.held("ops") == 1

            clock.now = T0 + 6 * MIN
            assert await _step(dispatcher, hooks, 1) == [("ops", "digest", ["AL-3"])]
            clock.now = T0 + 60 * MIN
            await asyncio.sleep(20 * 0.005)  # an absence has no event to await: let the ticker run ~20 times
            await drained(dispatcher)
    assert len(hooks.requests) == 9, "nothing more: every alarm escalated once (max 1) or was acknowledged"
    assert all("x-tapline-signature" in r.headers for r in hooks.requests if r.path.endswith("/ops"))
    assert not any("x-tapline-signature" in r.headers for r in hooks.requests if r.path.endswith("/boss"))
    exposition = Exposition()
    dispatcher.collect(exposition)
    text = exposition.text()
    assert 'tapline_notify_sent_total{channel="webhook"} 9' in text
    assert 'tapline_notify_rate_limited_total{channel="webhook"} 3' in text
    assert 'tapline_notify_failed_total{channel="webhook"} 0' in text
    assert "tapline_notify_events_dropped_total 0" in text
