"""The service layer every entry point (REST, console, CLI) calls; no business logic lives in routes.

It reads the live picture kept by the ingest and the telemetry store. Later areas (alarms, control,
operations) add their services here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tapline.ingest.history import PointHistory, point_history
from tapline.ingest.live import LiveState, SiteState
from tapline.ingest.metrics import Exposition, MetricsSource
from tapline.store.telemetry import TelemetryStore

PRIORITIES = ("critical", "high", "medium", "low")


class UnknownSite(LookupError):
    """No pump room with that id."""


class UnknownPoint(LookupError):
    """The pump room has no such point."""


@dataclass
class Services:
    live: LiveState
    store: TelemetryStore
    extras: dict[str, Any] = field(default_factory=dict)
    metrics: list[MetricsSource] = field(default_factory=list)
    rolled_up_to: Callable[[], int | None] = lambda: None
    """Clock of the last completed rollup (the cloud's maintenance task sets this)."""

    def metrics_text(self) -> str:
        """Every registered source in the Prometheus text format."""
        out = Exposition()
        for source in self.metrics:
            source.collect(out)
        return out.text()

    async def point_history(
        self, site: str, point: str, start: int, end: int, step_ms: int | None
    ) -> PointHistory:
        """Values of one point in ``[start, end)``; raw, or ``step_ms`` buckets from rollups where they
        are complete and from raw samples after that. Raises ``UnknownSite``/``UnknownPoint``."""
        state = self.live.sites.get(site)
        if state is None:
            raise UnknownSite(site)
        if point not in state.points and not _declared(state, point):
            raise UnknownPoint(point)
        return await point_history(self.store, site, point, start, end, step_ms, self.rolled_up_to())

    def alarm_counts(self, site: str) -> dict[str, int]:
        """Active alarms by priority (the alarm engine fills these once it runs; none before)."""
        engine = self.extras.get("alarms")
        if engine is None:
            return dict.fromkeys(PRIORITIES, 0)
        counts: dict[str, int] = engine.active_counts(site)
        return counts

    def _summary(self, state: SiteState) -> dict[str, Any]:
        return {
            "id": state.site,
            "name": state.name,
            "district": state.district,
            "status": state.status,
            "since": state.since,
            "alarms": self.alarm_counts(state.site),
            "maintenance": self._in_maintenance(state.site),
        }

    def _in_maintenance(self, site: str) -> bool:
        engine = self.extras.get("alarms")
        return bool(engine is not None and engine.in_maintenance(site))

    def site_summaries(self, district: str | None = None) -> list[dict[str, Any]]:
        sites = sorted(self.live.sites.values(), key=lambda s: (s.district, s.site))
        return [self._summary(s) for s in sites if district is None or s.district == district]

    def site_detail(self, site: str) -> dict[str, Any] | None:
        state = self.live.sites.get(site)
        if state is None:
            return None
        detail = self._summary(state)
        detail["devices"] = [
            {"name": d.name, "status": "online" if d.online else "offline", "since": d.since}
            for d in sorted(state.devices.values(), key=lambda d: d.name)
        ]
        detail["points"] = {
            path: {
                "value": p.value,
                "quality": p.quality.label,
                "ts": p.ts,
                "unit": _unit(state, path),
            }
            for path, p in sorted(state.points.items())
        }
        return detail


def _declared(state: SiteState, path: str) -> bool:
    device, _, name = path.partition("/")
    entry = state.devices.get(device)
    return entry is not None and name in entry.points


def _unit(state: SiteState, path: str) -> str:
    device, _, name = path.partition("/")
    entry = state.devices.get(device)
    info = entry.points.get(name) if entry else None
    return info.unit if info else ""
