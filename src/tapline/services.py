"""The service layer every entry point (REST, console, CLI) calls; no business logic lives in routes.

It reads the live picture kept by the ingest and the telemetry store. Later areas (alarms, control,
operations) add their services here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tapline.ingest.live import LiveState, SiteState
from tapline.store.telemetry import TelemetryStore

PRIORITIES = ("critical", "high", "medium", "low")


@dataclass
class Services:
    live: LiveState
    store: TelemetryStore
    extras: dict[str, Any] = field(default_factory=dict)

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
        }

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


def _unit(state: SiteState, path: str) -> str:
    device, _, name = path.partition("/")
    entry = state.devices.get(device)
    info = entry.points.get(name) if entry else None
    return info.unit if info else ""
