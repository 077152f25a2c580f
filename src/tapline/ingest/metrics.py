"""Ingest counters and the Prometheus text exposition format (version 0.0.4), written by hand.

Rules:
- Counters only go up for the life of the process (Prometheus handles restarts); gauges are read when
  scraped. Label values come from fixed sets (reject codes, store names), never from message content,
  so the number of series is bounded.
- ``Exposition`` renders families in the order they were added, one ``# HELP``/``# TYPE`` per family;
  any area (alarms, control) can add its own through a ``MetricsSource``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Exposition", "Histogram", "IngestCounters", "MetricsSource"]

Labels = Mapping[str, str]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels | None) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Exposition:
    """Builds one scrape's text."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._seen: set[str] = set()

    def _family(self, name: str, kind: str, help_text: str) -> None:
        if name not in self._seen:
            self._seen.add(name)
            self._lines.append(f"# HELP {name} {help_text}")
            self._lines.append(f"# TYPE {name} {kind}")

    def counter(self, name: str, help_text: str, value: float, labels: Labels | None = None) -> None:
        """``name`` should end in ``_total``."""
        self._family(name, "counter", help_text)
        self._lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def gauge(self, name: str, help_text: str, value: float, labels: Labels | None = None) -> None:
        self._family(name, "gauge", help_text)
        self._lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(
        self, name: str, help_text: str, histogram: Histogram, labels: Labels | None = None
    ) -> None:
        self._family(name, "histogram", help_text)
        base = dict(labels or {})
        cumulative = 0
        for bound, count in zip(histogram.bounds, histogram.counts, strict=False):
            cumulative += count
            self._lines.append(f"{name}_bucket{_labels({**base, 'le': _number(bound)})} {cumulative}")
        self._lines.append(f"{name}_bucket{_labels({**base, 'le': '+Inf'})} {histogram.count}")
        self._lines.append(f"{name}_sum{_labels(base)} {_number(histogram.sum)}")
        self._lines.append(f"{name}_count{_labels(base)} {histogram.count}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


class MetricsSource(Protocol):
    """Anything that contributes metrics to ``/metrics``."""

    def collect(self, out: Exposition) -> None: ...


DEFAULT_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Histogram:
    """A cumulative-on-render histogram (``counts[i]`` holds observations in (bounds[i-1], bounds[i]])."""

    bounds: Sequence[float] = DEFAULT_SECONDS_BUCKETS
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


@dataclass
class IngestCounters:
    """What the ingest did since the process started."""

    messages: int = 0
    readings: int = 0
    historical: int = 0
    rejected: int = 0
    stored: int = 0
    duplicates: int = 0
    not_numeric: int = 0
    shed: int = 0
    batches: int = 0
    rebirths_requested: int = 0
    replays_requested: int = 0
    replays_confirmed: int = 0
    replays_unconfirmed: int = 0
    store_failures: int = 0
    relational_failures: int = 0
    dead_letters: int = 0
    dead_letters_dropped: int = 0
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    write_seconds: Histogram = field(default_factory=Histogram)
    write_rows: Histogram = field(
        default_factory=lambda: Histogram((100, 1_000, 5_000, 10_000, 20_000, 50_000, 100_000))
    )

    def collect(self, out: Exposition) -> None:
        p = "tapline_ingest_"
        out.counter(p + "messages_total", "MQTT messages received by the host application.", self.messages)
        out.counter(p + "readings_total", "Point values decoded (live and historical).", self.readings)
        out.counter(p + "historical_readings_total", "Values flagged is_historical.", self.historical)
        out.counter(p + "rejected_total", "Messages or parts of messages rejected.", self.rejected)
        for code, count in sorted(self.rejected_by_code.items()):
            out.counter(p + "rejected_by_reason_total", "Rejections by reason.", count, {"reason": code})
        out.counter(p + "rows_stored_total", "Telemetry rows newly written.", self.stored)
        out.counter(p + "duplicates_total", "Values already stored (replays, duplicates).", self.duplicates)
        out.counter(p + "not_numeric_total", "String values not written to telemetry.", self.not_numeric)
        out.counter(p + "shed_total", "Values dropped under overload (asked back by replay).", self.shed)
        out.counter(p + "batches_total", "Telemetry batches written.", self.batches)
        out.counter(p + "rebirths_requested_total", "NCMD Rebirth requests sent.", self.rebirths_requested)
        out.counter(p + "replays_requested_total", "NCMD Replay requests sent.", self.replays_requested)
        out.counter(
            p + "replays_confirmed_total", "Replays the edge confirmed complete.", self.replays_confirmed
        )
        out.counter(
            p + "replays_unconfirmed_total",
            "Holes closed without a replay confirmation.",
            self.replays_unconfirmed,
        )
        out.counter(
            p + "store_failures_total", "Telemetry writes that failed (retried).", self.store_failures
        )
        out.counter(
            p + "relational_failures_total",
            "Relational writes that failed (retried).",
            self.relational_failures,
        )
        out.counter(p + "dead_letters_total", "Rejected messages kept as dead letters.", self.dead_letters)
        out.counter(
            p + "dead_letters_dropped_total",
            "Dead letters not kept (buffer full).",
            self.dead_letters_dropped,
        )
        out.histogram(p + "store_write_seconds", "Duration of telemetry batch writes.", self.write_seconds)
        out.histogram(p + "store_write_rows", "Values per telemetry batch write.", self.write_rows)
