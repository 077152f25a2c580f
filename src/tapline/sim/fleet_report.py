"""What a fleet run did and cost: per worker process and in total (``tapline sim fleet`` prints it,
``--json`` writes ``FleetReport.as_dict()``; ``docs/benchmarks.md`` explains the figures)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["Connections", "FleetReport", "WorkerReport"]

Connections = Literal["node", "shared"]


@dataclass
class WorkerReport:
    """What one worker did, for the run's summary."""

    part: int
    rooms: int
    connections: int
    messages: int = 0
    values: int = 0
    bytes: int = 0
    births: int = 0
    rebirths: int = 0
    replays: int = 0
    commands_refused: int = 0
    commands_malformed: int = 0
    publish_failures: int = 0
    reconnects: int = 0
    samples: int = 0
    late_samples: int = 0  # handled more than one period after their time
    max_lag_ms: int = 0
    steady_late_samples: int = 0  # the same, once every room is born
    steady_max_lag_ms: int = 0
    run_s: float = 0.0
    setup_cpu_s: float = 0.0
    run_cpu_s: float = 0.0
    steady_cpu_s: float = 0.0  # CPU once every room is born, over ``steady_s``
    steady_s: float = 0.0
    max_rss_mb: float = 0.0
    recorded: int = 0


@dataclass
class FleetReport:
    """The run's summary: per worker and totals, beside what the spec asks for."""

    sites: int
    points: int
    interval_s: float
    processes: int
    connections: Connections
    report: str
    workers: list[WorkerReport] = field(default_factory=list)
    parent_cpu_s: float = 0.0
    parent_rss_mb: float = 0.0

    def total(self, name: str) -> float:
        return float(sum(getattr(worker, name) for worker in self.workers))

    @property
    def run_s(self) -> float:
        return max((worker.run_s for worker in self.workers), default=0.0)

    @property
    def steady_cores(self) -> float:
        """CPU cores used once every room is born, summed over the workers."""
        return sum(w.steady_cpu_s / w.steady_s for w in self.workers if w.steady_s > 0)

    @property
    def expected_values_per_s(self) -> float:
        """Every point of every room once per period: the full-report rate."""
        return self.sites * self.points / self.interval_s

    def as_dict(self) -> dict[str, Any]:
        run_s = self.run_s or 1.0
        return {
            "sites": self.sites,
            "points": self.points,
            "interval_s": self.interval_s,
            "processes": self.processes,
            "connections": self.connections,
            "report": self.report,
            "run_s": round(self.run_s, 3),
            "values": int(self.total("values")),
            "messages_per_s": round(self.total("messages") / run_s, 1),
            "values_per_s": round(self.total("values") / run_s, 1),
            "expected_values_per_s": round(self.expected_values_per_s, 1),
            "bytes_per_s": round(self.total("bytes") / run_s, 1),
            "cpu_s": round(self.total("run_cpu_s"), 3),
            "cpu_per_s": round(self.total("run_cpu_s") / run_s, 4),
            "steady_cpu_per_s": round(self.steady_cores, 4),
            "setup_cpu_s": round(self.total("setup_cpu_s"), 3),
            "max_rss_mb": max((w.max_rss_mb for w in self.workers), default=0.0),
            "sum_rss_mb": round(self.total("max_rss_mb"), 1),
            "late_samples": int(self.total("late_samples")),
            "rebirths": int(self.total("rebirths")),
            "max_lag_ms": max((w.max_lag_ms for w in self.workers), default=0),
            "steady_late_samples": int(self.total("steady_late_samples")),
            "steady_max_lag_ms": max((w.steady_max_lag_ms for w in self.workers), default=0),
            "parent_cpu_s": round(self.parent_cpu_s, 3),
            "workers": [asdict(worker) for worker in self.workers],
        }

    def text(self) -> str:
        data = self.as_dict()
        lines = [
            f"fleet: {self.sites} rooms × {self.points} points every {self.interval_s:g} s, "
            f"{self.processes} process(es), {self.connections} connections, report {self.report}",
            f"  ran {data['run_s']:.1f} s: {data['messages_per_s']:,.0f} msg/s, "
            f"{data['values_per_s']:,.0f} values/s published "
            f"(full report would be {data['expected_values_per_s']:,.0f}/s), "
            f"{data['bytes_per_s'] / 1e6:.2f} MB/s",
            f"  CPU {data['cpu_s']:.1f} s while running = {data['cpu_per_s']:.3f} cores "
            f"({data['steady_cpu_per_s']:.3f} once all were born; "
            f"+{data['setup_cpu_s']:.1f} s setup)",
            f"  peak RSS {data['max_rss_mb']:.0f} MB per process, {data['sum_rss_mb']:.0f} MB in all",
            f"  late samples {data['late_samples']} ({data['steady_late_samples']} once all were born), "
            f"max lag {data['max_lag_ms']} ms ({data['steady_max_lag_ms']} ms); "
            f"births {int(self.total('births'))} (rebirths on request {int(self.total('rebirths'))}), "
            f"replays {int(self.total('replays'))}, reconnects {int(self.total('reconnects'))}",
        ]
        return "\n".join(lines)
