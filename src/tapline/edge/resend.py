"""The backfill worker: publishes ranges of history as ``is_historical`` data, one job at a time.

Rules (DESIGN §2a; the bookkeeping is backfill.py, the session and locks are node.py's):
- Jobs run in the order queued — the resume job after a (re)connect, device jobs, host replays — one
  history step (``batch`` rows) at a time, one message per device (node metrics as NDATA), at most
  ``rate`` messages a second, so live data never waits behind them. A new request never cancels a
  running job; a disconnect ends them all (``stop``), and the resume mark covers what was left.
- A row of a device that is not born now is *deferred*: it waits for the device's DBIRTH, then goes in
  a device job (``device_born``). Until then it holds the resume mark back.
- A replay is confirmed (NDATA ``Node Control/Replay`` = from) after its last message, unless rows
  were deferred: the host will ask again.
- A stored row whose point no longer exists, or whose value its datatype cannot carry, is skipped,
  counted (``Gateway/BackfillSkipped``) and logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from tapline.domain.model import DataType, PointSpec, Reading, Value
from tapline.edge.backfill import Job, Progress, resume_mark
from tapline.edge.history import History, HistoryRow
from tapline.edge.metrics import NodeCounters
from tapline.logs import get_logger
from tapline.sparkplug.edge_session import EdgeNodeSession, Replay
from tapline.sparkplug.edge_session import Message as SpMessage
from tapline.sparkplug.errors import SessionError, SparkplugError

log = get_logger(__name__)

Builder = Callable[[EdgeNodeSession], SpMessage | None]


@dataclass(frozen=True, slots=True)
class Link:
    """What the worker needs from the node: whether it is live, which devices are born, and a way
    to publish one message built with the session (``send`` raises SessionError/PayloadError when
    the session refuses it, returns False when the link is gone)."""

    live: Callable[[], bool]
    born: Callable[[], frozenset[str]]
    send: Callable[[Builder], Awaitable[bool]]


class Resender:
    """Owns the queued backfill/replay jobs of one node and the task that works through them."""

    def __init__(
        self,
        history: History,
        link: Link,
        *,
        device_specs: Mapping[str, Mapping[str, PointSpec]],
        node_specs: Mapping[str, PointSpec],
        counters: NodeCounters,
        window_s: float,
        clock_ms: Callable[[], int],
        monotonic: Callable[[], float],
        once: Callable[[str], bool],
        batch: int,
        rate_msgs: float,
    ) -> None:
        self.history = history
        self.link = link
        self.device_specs = device_specs
        self.node_specs = node_specs
        self.counters = counters
        self.window_s = window_s
        self.clock_ms = clock_ms
        self.monotonic = monotonic
        self.once = once
        self.batch = batch
        self.rate_msgs = rate_msgs
        self.jobs: list[Job] = []
        self.deferred: dict[str, int] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def mark(self, lane: Progress | None, idle_mark: int, now: float) -> int:
        return resume_mark(lane, self.jobs, self.deferred, now, idle_mark)

    def idle(self) -> bool:
        """Every queued job is done (tests and diagnostics)."""
        return all(job.done for job in self.jobs)

    def queue(self, job: Job) -> None:
        self.jobs.append(job)
        self._ready.set()

    def resume(self, after_id: int, upto_id: int) -> None:
        self.queue(Job("resume", after_id, upto_id, Progress(after_id, self.window_s)))

    def replay(self, from_ms: int, to_ms: int | None) -> None:
        last = self.history.last_id
        self.queue(Job("replay", 0, last, Progress(0, self.window_s), from_ms=from_ms, to_ms=to_ms))

    def device_born(self, device: str, floor: int) -> None:
        """``device`` was just born: queue its deferred rows, up to the live lane's ``floor`` (above
        it, its rows went out live or in the DBIRTH)."""
        first = self.deferred.pop(device, None)
        if first is not None:
            start = first - 1
            self.queue(Job("device", start, floor, Progress(start, self.window_s), device=device))

    def start(self, name: str) -> None:
        self._task = asyncio.create_task(self._run(), name=name)
        self._task.add_done_callback(self._ended)

    def stop(self) -> None:
        self.jobs.clear()
        self.deferred.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The worker only ends by cancellation; anything else is a bug, and must be seen."""
        if task.cancelled() or task.exception() is None:
            return
        self.counters.task_restarts += 1
        log.error("backfill_crashed", error=repr(task.exception()), exc_info=task.exception())

    async def _run(self) -> None:
        while self.link.live():
            job = next((j for j in self.jobs if not j.done), None)
            if job is None:
                self._ready.clear()
                now = self.monotonic()
                self.jobs = [j for j in self.jobs if not (j.done and j.progress.settled(now, j.upto_id))]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), self.window_s)
                continue
            await self._run_job(job)

    async def _rows(self, job: Job) -> list[HistoryRow]:
        if job.kind == "replay":
            assert job.from_ms is not None
            end_ms = job.to_ms if job.to_ms is not None else 2**62
            return await self.history.between(job.from_ms, end_ms, job.cursor, self.batch, job.upto_id)
        return await self.history.after_id(job.cursor, self.batch, job.upto_id)

    async def _run_job(self, job: Job) -> None:
        sent = 0
        deferred = False
        while rows := await self._rows(job):
            published_at = None
            for target, readings, first_id in self._group(rows, job.device):
                if not self.link.live():
                    return  # the resume mark covers what is left
                if target is not None and target not in self.link.born():
                    self._defer(target, first_id)
                    deferred = True
                    continue
                try:
                    ok = await self.link.send(_historical(target, readings, self.clock_ms()))
                except SessionError as exc:  # the device died between the check and the send
                    if target is not None:
                        self._defer(target, first_id)
                        deferred = True
                    if self.once(f"backfill:{exc}"[:60]):
                        log.warning("backfill_deferred", device=target, error=str(exc))
                    continue
                except SparkplugError as exc:  # a stored value its point's datatype cannot carry
                    self.counters.backfill_skipped += len(readings)
                    if self.once(f"backfill_value:{target}"):
                        log.error("backfill_unsendable", device=target, error=str(exc))
                    continue
                if not ok:
                    return
                published_at = self.monotonic()
                sent += len(readings)
                self.counters.backfilled += len(readings)
                await asyncio.sleep(1.0 / self.rate_msgs)
            job.advanced(rows[-1].id, published_at)
        job.done = True
        job.advanced(job.upto_id, None)
        log.info("backfill_done", kind=job.kind, readings=sent, device=job.device, deferred=deferred)
        if job.kind == "replay" and not deferred and job.from_ms is not None:
            replay = Replay(job.from_ms, job.to_ms)
            await self.link.send(lambda s: s.replay_done(replay, self.clock_ms()))

    def _defer(self, device: str, first_id: int) -> None:
        self.deferred[device] = min(self.deferred.get(device, first_id), first_id)

    def _group(
        self, rows: Iterable[HistoryRow], device_filter: str | None
    ) -> list[tuple[str | None, list[Reading], int]]:
        """Rows by target (a device, or None for node metrics), typed, with each group's first id."""
        groups: dict[str | None, tuple[list[Reading], int]] = {}
        for row in rows:
            point = row.reading.point
            prefix, _, name = point.partition("/")
            specs = self.device_specs.get(prefix)
            target: str | None
            if specs is not None:
                target, spec = prefix, specs.get(name)
            else:
                target, spec = None, self.node_specs.get(point)
            if device_filter is not None and target != device_filter:
                continue
            if spec is None:
                self.counters.backfill_skipped += 1
                if self.once(f"skip:{point}"):
                    log.warning("backfill_unknown_point", point=point)
                continue
            reading = Reading(point, row.reading.ts, _typed(spec, row.reading.value), row.reading.quality)
            groups.setdefault(target, ([], row.id))[0].append(reading)
        return [(target, readings, first) for target, (readings, first) in groups.items()]


def _historical(target: str | None, readings: list[Reading], now: int) -> Builder:
    """A builder of one is_historical DDATA (or NDATA for node metrics, ``target`` None)."""
    if target is None:
        return lambda session: session.ndata(readings, now, historical=True)
    return lambda session: session.ddata(target, readings, now, historical=True)


def _typed(spec: PointSpec, value: Value) -> Value:
    """A history value as its point's datatype (SQLite gives booleans back as 0/1)."""
    if spec.datatype is DataType.BOOL and isinstance(value, int | float):
        return bool(value)
    if spec.datatype is DataType.INT and isinstance(value, float) and value.is_integer():
        return int(value)
    if spec.datatype is DataType.FLOAT and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
