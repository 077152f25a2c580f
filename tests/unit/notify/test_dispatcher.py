"""The dispatcher's guarantees to the alarm path and to itself, with in-memory channels: ``take`` never
blocks or raises, and a broken channel or policy costs one notice, never the runner."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tapline.alarms.events import AlarmEvent
from tapline.notify.dispatcher import NotifyDispatcher
from tapline.notify.errors import DeliveryError
from tapline.notify.policy import Notice, NotifyPolicy

from .kit import T0, alarm_event, config, webhook
from .running import drained, running


class Recorder:
    """A channel that keeps what it is given, failing first with the errors in ``failures``."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.sent: list[Notice] = []

    async def send(self, notice: Notice) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(notice)


def _dispatcher(channel: Recorder | None, **options: Any) -> NotifyDispatcher:
    policy = NotifyPolicy(config(webhook("ops"), escalation={}))
    channels = {"webhook": channel} if channel is not None else {}
    return NotifyDispatcher(policy, channels, clock=lambda: T0, tick_s=0.005, backoff_s=0.001, **options)


def _alarms(count: int) -> list[AlarmEvent]:
    return [alarm_event("mains_lost", T0, site=f"PR-{n:04d}", alarm_id=f"AL-{n}") for n in range(count)]


def test_take_drops_and_counts_when_the_queue_is_full_and_never_raises() -> None:
    dispatcher = _dispatcher(Recorder(), queue_size=2)
    for event in _alarms(5):
        dispatcher.take(event)
    assert dispatcher.counts.events_dropped == 3


async def test_queued_events_are_delivered_once_running() -> None:
    channel = Recorder()
    dispatcher = _dispatcher(channel)
    for event in _alarms(3):
        dispatcher.take(event)
    async with running(dispatcher):
        await drained(dispatcher)
    assert sorted(n.alarm_ids[0] for n in channel.sent) == ["AL-0", "AL-1", "AL-2"]
    assert dispatcher.counts.of("webhook").sent == 3


@pytest.mark.parametrize(
    ("failures", "sent", "retried", "failed"),
    [
        pytest.param([DeliveryError("503")], 1, 1, 0, id="retryable then delivered"),
        pytest.param([DeliveryError("404", retryable=False)], 0, 0, 1, id="not retryable"),
        pytest.param([DeliveryError("down")] * 3, 0, 2, 1, id="gives up after max attempts"),
        pytest.param([RuntimeError("bug")], 0, 0, 1, id="a channel bug is one failed notice"),
    ],
)
async def test_delivery_outcomes_are_counted(
    failures: list[Exception], sent: int, retried: int, failed: int
) -> None:
    channel = Recorder(*failures)
    dispatcher = _dispatcher(channel, max_attempts=3)
    async with running(dispatcher):
        dispatcher.take(_alarms(1)[0])
        await drained(dispatcher)
    counts = dispatcher.counts.of("webhook")
    assert (counts.sent, counts.retried, counts.failed) == (sent, retried, failed)


async def test_a_notice_for_a_channel_that_is_not_configured_is_a_counted_failure() -> None:
    dispatcher = _dispatcher(None)
    async with running(dispatcher):
        dispatcher.take(_alarms(1)[0])
        await drained(dispatcher)
    assert dispatcher.counts.of("webhook").failed == 1


async def test_a_policy_error_is_counted_and_the_next_event_still_goes_out() -> None:
    channel = Recorder()
    dispatcher = _dispatcher(channel)
    broken = _alarms(1)[0]
    object.__setattr__(broken, "state", None)  # not an AlarmEvent the policy can read
    async with running(dispatcher):
        dispatcher.take(broken)
        dispatcher.take(_alarms(2)[1])
        await drained(dispatcher)
    assert dispatcher.counts.policy_errors == 1
    assert [n.alarm_ids for n in channel.sent] == [("AL-1",)]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        _dispatcher(Recorder(), concurrency=0)


async def test_run_stops_when_cancelled() -> None:
    dispatcher = _dispatcher(Recorder())
    task = asyncio.create_task(dispatcher.run())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
