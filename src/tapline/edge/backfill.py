"""Which history rows are safely out, and which must be sent again: the edge side of DESIGN §2a.

Sparkplug data goes out at QoS 0, so nothing proves that a published row reached the broker. What the
gateway does know: its MQTT client notices a half-open link when a PINGREQ goes unanswered — paho
(under aiomqtt) sends one after keepalive without traffic *in* and gives up one keepalive later,
checking once a second, so within 2 × keepalive + 1 s of the link's death (the broker's own limit,
1.5 × keepalive, is shorter). Bytes still queued in the socket when the link died are lost with it.
So a row published more than a *window* before the link was found dead — ``detection_window_s``:
3 × keepalive + 2 s, the detection bound plus a keepalive of margin for queued bytes — was handed
to a link that was still alive; anything later may be lost and is sent again.

Rules:
- History ids only grow. A live session has one *lane* (rows above the session's floor, published live
  in id order) and *jobs* (ranges of older rows published as ``is_historical``: the resume job after a
  reconnect, per-device jobs for devices that were dead when their rows came up, and host replays).
- ``Progress`` records (monotonic time, highest id covered) after each publish. Its ``safe(now)`` is the
  highest id covered by a publish older than the window (the start when there is none).
- The resume mark is the minimum of the lane's safe id, every resume/device job's safe id, and one
  below every deferred row. Every row at or below it is safely out; on a disconnect the next session
  starts its resume job there. It is persisted (a stale value only means more duplicates, which the
  host's idempotent writes absorb) so a restarted gateway resumes where the last one was safe.
- A job whose last publish has outlived the window no longer holds the mark back.
- Pure: no clock (``now`` is passed in), no IO.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

JobKind = Literal["resume", "device", "replay"]


def detection_window_s(keepalive_s: float) -> float:
    """How long before a dead link is noticed a publish may already have gone nowhere."""
    return 3.0 * keepalive_s + 2.0


@dataclass
class Progress:
    """Publishes of one lane or job: (monotonic time, highest id covered), oldest first."""

    start: int
    window_s: float
    log: deque[tuple[float, int]] = field(default_factory=deque)
    broken_at: int | None = None  # first id that failed to publish; nothing at or above it is safe

    def published(self, now: float, upto_id: int) -> None:
        self.log.append((now, upto_id))

    def failed(self, first_id: int) -> None:
        self.broken_at = first_id if self.broken_at is None else min(self.broken_at, first_id)

    def safe(self, now: float) -> int:
        """Highest id safely out (see module rules); drops log entries it no longer needs.
        ``now`` = inf: every publish so far is known to have arrived (a PUBACK barrier)."""
        while len(self.log) > 1 and self.log[1][0] < now - self.window_s:
            self.log.popleft()
        mark = self.start
        if self.log and self.log[0][0] < now - self.window_s:
            mark = max(mark, self.log[0][1])
        if self.broken_at is not None:
            mark = min(mark, self.broken_at - 1)
        return mark

    def settled(self, now: float, end: int) -> bool:
        """All of ``start..end`` is safely out."""
        return self.safe(now) >= end


@dataclass
class Job:
    """A range of history to publish as ``is_historical``, in id order."""

    kind: JobKind
    after_id: int  # exclusive
    upto_id: int  # inclusive
    progress: Progress
    device: str | None = None  # device jobs: only this device's rows
    from_ms: int | None = None  # replay jobs: the host's time range
    to_ms: int | None = None
    cursor: int = 0
    done: bool = False
    last_publish: float = float("-inf")  # when this job last published (-inf: never)

    def __post_init__(self) -> None:
        self.cursor = self.after_id

    def advanced(self, upto_id: int, published_at: float | None) -> None:
        """Rows up to ``upto_id`` are handled; ``published_at`` is when the last message went out
        (None: this step published nothing, so they are as safe as the job's previous publish)."""
        if published_at is not None:
            self.last_publish = published_at
        self.cursor = upto_id
        self.progress.published(self.last_publish, upto_id)

    @property
    def holds_mark(self) -> bool:
        """Whether the resume mark waits for this job (replays are the host's business)."""
        return self.kind != "replay"


def resume_mark(
    lane: Progress | None, jobs: list[Job], deferred: dict[str, int], now: float, idle_mark: int
) -> int:
    """Every id at or below the result is safely out (module rules). ``lane`` None: not live."""
    marks = [idle_mark if lane is None else lane.safe(now)]
    for job in jobs:
        if job.holds_mark and not (job.done and job.progress.settled(now, job.upto_id)):
            marks.append(job.progress.safe(now))
    marks += [first_id - 1 for first_id in deferred.values()]
    return max(0, min(marks))
