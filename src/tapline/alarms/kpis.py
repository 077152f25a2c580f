"""Alarm-system health (EEMUA 191, ISA-18.2 §16 / IEC 62682) computed from the alarm journal.

Rules:
- Input is the engine's ``AlarmEvent`` journal for a period ``[start, end)``, in any order. Pure.
- An *alarm* in these figures is an announcement: a transition into unacked-active from any other
  phase (new, re-alarmed, or shown again after an overlay). Activations that stayed suppressed, shelved
  or out of service are not counted: the operator never saw them, and the figures measure the
  operator's load.
- Rates are per operator position (``operators`` dispatchers share the announcements).
- Flood (ISA-18.2): starts when more than 10 alarms were announced in the trailing 10 minutes and ends
  when fewer than 5 were; ``flood_fraction`` is the share of the period spent in flood. The fixed
  10-minute buckets give ISA's "% of 10-minute periods with more than 10 alarms" as well.
- Chattering: the same alarm (room, rule, subject) announced at least 3 times within 60 s.
- Standing (ISA "stale"): condition active for more than 24 h at the end of the period.
- Bad actors: the alarms announced most often, with their share of all announcements (ISA: the top
  10 should make 1–5 %).
- ``targets`` compares with the EEMUA 191 / ISA-18.2 benchmarks (domain reliability.md §4.2).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tapline.alarms.events import AlarmEvent
from tapline.alarms.model import Event

Key = tuple[str, str, str]
TEN_MINUTES_MS = 600_000


@dataclass(frozen=True, slots=True)
class BadActor:
    key: Key
    count: int
    share: float


@dataclass(frozen=True, slots=True)
class AlarmHealth:
    """Alarm-system health over one period."""

    start: int
    end: int
    operators: int
    announced: int
    per_10min: float
    peak_10min: int
    over_10_periods: float
    flood_fraction: float
    floods: tuple[tuple[int, int], ...]
    chattering: tuple[tuple[Key, int], ...]
    standing: tuple[tuple[Key, int], ...]
    bad_actors: tuple[BadActor, ...]
    priorities: dict[str, float]

    @property
    def targets(self) -> dict[str, bool]:
        """Which EEMUA 191 / ISA-18.2 benchmarks the period meets."""
        return {
            "manageable_rate": self.per_10min <= 1.0,
            "no_10min_over_10": self.peak_10min <= 10,
            "flood_under_1_percent": self.flood_fraction < 0.01,
            "no_chattering": not self.chattering,
            "standing_under_5": len(self.standing) < 5,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "operators": self.operators,
            "announced": self.announced,
            "alarms_per_10min_per_operator": self.per_10min,
            "peak_10min": self.peak_10min,
            "periods_over_10_fraction": self.over_10_periods,
            "flood_fraction": self.flood_fraction,
            "floods": [list(f) for f in self.floods],
            "chattering": [{"alarm": list(k), "count": n} for k, n in self.chattering],
            "standing": [{"alarm": list(k), "since": t} for k, t in self.standing],
            "bad_actors": [
                {"alarm": list(b.key), "count": b.count, "share": b.share} for b in self.bad_actors
            ],
            "priorities": self.priorities,
            "targets": self.targets,
        }


def alarm_health(
    events: Iterable[AlarmEvent],
    start: int,
    end: int,
    *,
    operators: int = 1,
    flood_above: int = 10,
    flood_below: int = 5,
    chatter_count: int = 3,
    chatter_window_ms: int = 60_000,
    standing_ms: int = 86_400_000,
    top: int = 10,
) -> AlarmHealth:
    """Compute the health figures of the journal ``events`` over ``[start, end)``."""
    if end <= start or operators < 1:
        raise ValueError("need end > start and at least one operator")
    journal = sorted(events, key=lambda e: e.at)
    shown = [e for e in journal if e.announced and start <= e.at < end]
    times = [e.at for e in shown]
    periods = max(1, -(-(end - start) // TEN_MINUTES_MS))
    buckets = Counter((t - start) // TEN_MINUTES_MS for t in times)
    floods = _floods(times, start, end, flood_above, flood_below)
    by_key: dict[Key, list[int]] = defaultdict(list)
    for event in shown:
        by_key[event.key].append(event.at)
    counts = Counter({key: len(ts) for key, ts in by_key.items()})
    total = len(shown)
    priorities = Counter(e.priority.value for e in shown)
    return AlarmHealth(
        start=start,
        end=end,
        operators=operators,
        announced=total,
        per_10min=total / periods / operators,
        peak_10min=_peak(times, TEN_MINUTES_MS),
        over_10_periods=sum(1 for n in buckets.values() if n > 10) / periods,
        flood_fraction=sum(b - a for a, b in floods) / (end - start),
        floods=tuple(floods),
        chattering=tuple(
            sorted(
                (
                    (key, n)
                    for key, ts in by_key.items()
                    if (n := _peak(ts, chatter_window_ms)) >= chatter_count
                ),
                key=lambda item: (-item[1], item[0]),
            )
        ),
        standing=_standing(journal, end, standing_ms),
        bad_actors=tuple(BadActor(key, n, n / total) for key, n in counts.most_common(top)),
        priorities={p: n / total for p, n in sorted(priorities.items())} if total else {},
    )


def _peak(times: list[int], window: int) -> int:
    """Most timestamps (sorted) in any window ``(t - window, t]``."""
    best, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - window:
            first += 1
        best = max(best, last - first + 1)
    return best


def _floods(times: list[int], start: int, end: int, above: int, below: int) -> list[tuple[int, int]]:
    """Flood intervals: trailing 10-minute count > ``above`` starts one, < ``below`` ends it."""
    changes = sorted(
        [(t, 1) for t in times] + [(t + TEN_MINUTES_MS, -1) for t in times], key=lambda c: (c[0], c[1])
    )
    floods: list[tuple[int, int]] = []
    count, began = 0, None
    for t, delta in changes:
        count += delta
        if began is None and count > above:
            began = t
        elif began is not None and count < below:
            if min(t, end) > max(began, start):
                floods.append((max(began, start), min(t, end)))
            began = None
    return floods  # every alarm leaves the window in the end, so every flood ends (cut at ``end``)


def _standing(journal: list[AlarmEvent], end: int, standing_ms: int) -> tuple[tuple[Key, int], ...]:
    """Alarms whose condition has been active longer than ``standing_ms`` at ``end``."""
    since: dict[Key, int] = {}
    for event in journal:
        if event.at >= end:
            break
        if event.event is Event.ACTIVATE:
            since.setdefault(event.key, event.at)
        elif event.event is Event.CLEAR:
            since.pop(event.key, None)
    return tuple(sorted((key, t) for key, t in since.items() if end - t > standing_ms))
