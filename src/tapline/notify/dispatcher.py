"""The notifier's IO runner: alarm events in, notices out through the channels, with retries.

Rules:
- ``take`` is the alarm hub's sink: synchronous, never blocks, never raises. Events go into a
  bounded queue; when it is full the event is dropped and counted (``events_dropped``), logged once
  per overflow episode, because the alarm path must never wait for a mail server.
- ``run`` is one long-lived task (cancel it to stop). Inside a ``TaskGroup``: ``intake`` feeds events
  to the policy, ``ticker`` gives the policy the time about once per ``tick_s`` (after feeding it
  whatever events are still queued, so an acknowledgement always precedes a tick it should
  pre-empt) and re-queues due retries, and ``concurrency`` senders deliver notices. The policy is
  only touched from this one event loop, never across an ``await``, so it needs no lock.
- Delivery: a retryable ``DeliveryError`` is tried again after a capped exponential backoff with
  jitter (``backoff_s · 2^(attempt-1)``, at most ``backoff_max_s``), up to ``max_attempts`` in all;
  waiting retries sit in a heap, not in a sleeping sender, so one dead endpoint cannot hold up the
  others. A non-retryable error, or the last attempt, counts the notice as failed.
- The outbox (notices waiting for a sender) is bounded too; overflow is counted per channel.
- Counters per channel kind: sent, failed, retried, rate-limited (held for a digest), dropped; exposed
  as Prometheus counters by ``collect``. Logs once per outcome of a notice, never per tick.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tapline.alarms.events import AlarmEvent
from tapline.ingest.metrics import Exposition
from tapline.logs import get_logger
from tapline.notify.channels import Channel
from tapline.notify.errors import DeliveryError
from tapline.notify.policy import Notice, NotifyPolicy

log = get_logger(__name__)


def wall_ms() -> int:
    """Milliseconds since the epoch: the alarm engine's time base."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class ChannelCounts:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    dropped: int = 0


@dataclass(slots=True)
class DispatchCounts:
    """What the dispatcher did since it started."""

    events: int = 0
    events_dropped: int = 0
    policy_errors: int = 0
    channels: dict[str, ChannelCounts] = field(default_factory=dict)

    def of(self, channel: str) -> ChannelCounts:
        counts = self.channels.get(channel)
        if counts is None:
            counts = self.channels[channel] = ChannelCounts()
        return counts


class NotifyDispatcher:
    """Runs a ``NotifyPolicy`` against real channels (see the module rules)."""

    def __init__(
        self,
        policy: NotifyPolicy,
        channels: Mapping[str, Channel],
        clock: Callable[[], int] = wall_ms,
        *,
        queue_size: int = 10_000,
        outbox_size: int = 10_000,
        concurrency: int = 4,
        max_attempts: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
        tick_s: float = 1.0,
    ) -> None:
        if concurrency < 1 or max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        self.policy = policy
        self.counts = DispatchCounts()
        self._channels = dict(channels)
        self._clock = clock
        self._events: asyncio.Queue[AlarmEvent] = asyncio.Queue(maxsize=queue_size)
        self._outbox: asyncio.Queue[tuple[Notice, int]] = asyncio.Queue(maxsize=outbox_size)
        self._retries: list[tuple[float, int, Notice, int]] = []
        self._order = itertools.count()
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._backoff_s, self._backoff_max_s = backoff_s, backoff_max_s
        self._tick_s = tick_s
        self._overflowing = False
        self._in_flight = 0
        for kind in {*self._channels, *(r.channel.value for r in policy.config.recipients)}:
            self.counts.of(kind)

    # ------------------------------------------------------------------ alarm path
    def take(self, event: AlarmEvent) -> None:
        """Queue one alarm event; drops and counts it when the queue is full. Never raises."""
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self.counts.events_dropped += 1
            if not self._overflowing:
                self._overflowing = True
                log.error("notify_queue_full", size=self._events.maxsize, alarm=event.alarm_id)
            return
        self._overflowing = False

    # ------------------------------------------------------------------ the runner
    async def run(self) -> None:
        """Deliver notices until cancelled."""
        log.info(
            "notify_started", channels=sorted(self._channels), recipients=len(self.policy.config.recipients)
        )
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._intake(), name="notify-intake")
            tasks.create_task(self._ticker(), name="notify-ticker")
            for n in range(self._concurrency):
                tasks.create_task(self._sender(), name=f"notify-sender-{n}")

    @property
    def idle(self) -> bool:
        """Nothing queued, waiting for a retry or being sent (tests and shutdown wait for this)."""
        return self._events.empty() and self._outbox.empty() and not self._retries and not self._in_flight

    async def _intake(self) -> None:
        while True:
            self._take(await self._events.get())

    def _take(self, event: AlarmEvent) -> None:
        self.counts.events += 1
        try:
            notices = self.policy.take(event, self._clock())
        except Exception as exc:  # noqa: BLE001 - a policy bug must not stop notifications for good
            self.counts.policy_errors += 1
            log.error("notify_policy_failed", alarm=event.alarm_id, error=repr(exc))
            return
        self._queue(notices)

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._tick_s)
            # Events queued before this moment come first: an acknowledgement that is still in the
            # queue must stop its escalation before the tick could send it.
            while not self._events.empty():
                self._take(self._events.get_nowait())
            try:
                notices = self.policy.tick(self._clock())
            except Exception as exc:  # noqa: BLE001 - as in _intake: log, count, keep ticking
                self.counts.policy_errors += 1
                log.error("notify_policy_failed", error=repr(exc))
                notices = []
            self._queue(notices)
            now = loop.time()
            while self._retries and self._retries[0][0] <= now:
                _, _, notice, attempt = heapq.heappop(self._retries)
                self._enqueue(notice, attempt)

    def _queue(self, notices: list[Notice]) -> None:
        for notice in notices:
            self._enqueue(notice, 1)

    def _enqueue(self, notice: Notice, attempt: int) -> None:
        try:
            self._outbox.put_nowait((notice, attempt))
        except asyncio.QueueFull:
            self.counts.of(notice.channel).dropped += 1
            log.error("notice_dropped", recipient=notice.recipient, kind=notice.kind.value, why="outbox full")

    async def _sender(self) -> None:
        while True:
            notice, attempt = await self._outbox.get()
            self._in_flight += 1
            try:
                await self._attempt(notice, attempt)
            finally:
                self._in_flight -= 1

    async def _attempt(self, notice: Notice, attempt: int) -> None:
        counts = self.counts.of(notice.channel)
        channel = self._channels.get(notice.channel)
        if channel is None:
            counts.failed += 1
            log.error("notice_failed", recipient=notice.recipient, channel=notice.channel, error="no channel")
            return
        try:
            await channel.send(notice)
        except DeliveryError as exc:
            self._failed(notice, attempt, str(exc), exc.retryable)
            return
        except Exception as exc:  # noqa: BLE001 - a channel bug is one failed notice, not a dead sender
            self._failed(notice, attempt, repr(exc), retryable=False)
            return
        counts.sent += 1
        log.info(
            "notice_sent",
            recipient=notice.recipient,
            channel=notice.channel,
            kind=notice.kind.value,
            alarms=list(notice.alarm_ids[:10]),
            attempt=attempt,
        )

    def _failed(self, notice: Notice, attempt: int, error: str, retryable: bool) -> None:
        counts = self.counts.of(notice.channel)
        if retryable and attempt < self._max_attempts:
            counts.retried += 1
            delay = min(self._backoff_max_s, self._backoff_s * 2 ** (attempt - 1))
            delay *= random.uniform(0.8, 1.0)  # noqa: S311 - jitter, not cryptography
            due = asyncio.get_running_loop().time() + delay
            heapq.heappush(self._retries, (due, next(self._order), notice, attempt + 1))
            log.warning(
                "notice_retry",
                recipient=notice.recipient,
                kind=notice.kind.value,
                attempt=attempt,
                retry_in_s=round(delay, 2),
                error=error,
            )
            return
        counts.failed += 1
        log.error(
            "notice_failed",
            recipient=notice.recipient,
            channel=notice.channel,
            kind=notice.kind.value,
            alarms=list(notice.alarm_ids[:10]),
            attempts=attempt,
            error=error,
        )

    # ------------------------------------------------------------------ metrics
    def collect(self, out: Exposition) -> None:
        """Prometheus counters per channel kind (a ``MetricsSource``)."""
        held = self.policy.counts.held
        for kind, counts in sorted(self.counts.channels.items()):
            labels = {"channel": kind}
            out.counter("tapline_notify_sent_total", "Notices delivered.", counts.sent, labels)
            out.counter("tapline_notify_failed_total", "Notices given up on.", counts.failed, labels)
            out.counter("tapline_notify_retried_total", "Delivery attempts retried.", counts.retried, labels)
            out.counter(
                "tapline_notify_rate_limited_total",
                "Notices held back by a recipient's rate limit (sent later in a digest).",
                held.get(kind, 0),
                labels,
            )
            out.counter(
                "tapline_notify_dropped_total", "Notices dropped: outbox full.", counts.dropped, labels
            )
        out.counter(
            "tapline_notify_events_dropped_total",
            "Alarm events dropped: notification queue full.",
            self.counts.events_dropped,
        )
        out.gauge(
            "tapline_notify_queue_depth", "Alarm events waiting for the notifier.", self._events.qsize()
        )
