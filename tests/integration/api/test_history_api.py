"""GET /api/v1/sites/{id}/points/{device}/{name}/history on SQLite and PostgreSQL: raw values, steps read
from rollups where complete and from raw samples after, the JSON error shape; and GET /metrics."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tapline.api.app import create_app
from tapline.bootstrap import demo_users
from tapline.domain.model import Quality, Reading
from tapline.ingest.history import aggregate
from tapline.ingest.host import IngestService
from tapline.ingest.live import LiveState
from tapline.ingest.maintenance import Maintenance
from tapline.services import Services
from tapline.store.telemetry import HOUR_MS, MINUTE_MS, HistoryPoint, Sample, SeriesKey, open_telemetry_store

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
POINT = "plc/OutletPressure"


@pytest.fixture
def store_url(db_url: str) -> str:
    return db_url


@dataclass
class Api:
    http: httpx.AsyncClient
    site: str
    maintenance: Maintenance
    services: Services


@pytest.fixture
async def api(store_url: str) -> AsyncIterator[Api]:
    site = f"PR-{uuid.uuid4().hex[:8]}"  # the PostgreSQL database is shared by the session's tests
    store = open_telemetry_store(store_url)
    await store.open()
    live = LiveState()
    live.register(site, "jianghan", "江汉花园1号泵房")
    live.update(site, "jianghan", [Reading(POINT, T0, 0.4)], T0)
    ids = await store.ensure_series([SeriesKey(site, POINT)])
    # 3 hours of one value every 10 s: 0.40 + 0.001 × minute index
    samples = [
        Sample(ids[SeriesKey(site, POINT)], T0 + k * 10_000, 0.4 + 0.001 * (k // 6), int(Quality.GOOD))
        for k in range(3 * 360)
    ]
    await store.write(samples)
    maintenance = Maintenance(store, lambda: T0)
    services = Services(live, store)
    services.rolled_up_to = lambda: maintenance.rolled_up_to
    services.metrics.append(maintenance)
    app = create_app(services, demo_users("demo"), public_read=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield Api(http, site, maintenance, services)
    await store.close()


async def history(api: Api, **params: int) -> httpx.Response:
    return await api.http.get(f"/api/v1/sites/{api.site}/points/{POINT}/history", params=params)


def rows(points: list[HistoryPoint]) -> list[dict[str, float | int]]:
    return [
        {"ts": p.ts, "min": p.min, "max": p.max, "avg": p.avg, "last": p.last, "count": p.count, "quality": 0}
        for p in points
    ]


def close(answer: list[dict[str, float | int]], expected: list[dict[str, float | int]]) -> bool:
    return len(answer) == len(expected) and all(
        a["ts"] == e["ts"] and a["count"] == e["count"] and abs(float(a["avg"]) - float(e["avg"])) < 1e-9
        for a, e in zip(answer, expected, strict=True)
    )


async def test_raw_history_without_step(api: Api) -> None:
    response = await history(api, start=T0 + 60_000, end=T0 + 120_000)
    assert response.status_code == 200
    body = response.json()
    assert (body["site"], body["point"], body["step"], body["resolution"]) == (api.site, POINT, None, "raw")
    assert [v["ts"] for v in body["values"]] == [T0 + 60_000 + k * 10_000 for k in range(6)]
    assert {v["count"] for v in body["values"]} == {1}


async def test_step_below_a_minute_aggregates_raw_samples(api: Api) -> None:
    body = (await history(api, start=T0, end=T0 + 60_000, step=30_000)).json()
    assert body["resolution"] == "raw"
    assert [(v["ts"], v["count"]) for v in body["values"]] == [(T0, 3), (T0 + 30_000, 3)]


async def test_minute_step_reads_rollups_up_to_the_last_rollup_and_raw_after_it(api: Api) -> None:
    raw = [
        HistoryPoint(T0 + k * 10_000, 0, 0, 0.4 + 0.001 * (k // 6), 0.4 + 0.001 * (k // 6), 1, 0)
        for k in range(120)
    ]
    expected = rows(aggregate(raw, 5 * MINUTE_MS))
    before = (await history(api, start=T0, end=T0 + 20 * MINUTE_MS, step=5 * MINUTE_MS)).json()
    assert before["resolution"] == "1m"
    assert close(before["values"], expected)  # no rollup yet: all from raw samples

    assert await api.maintenance.rollup_once(T0 + 12 * MINUTE_MS + 5_000) is not None
    after = (await history(api, start=T0, end=T0 + 20 * MINUTE_MS, step=5 * MINUTE_MS)).json()
    assert close(after["values"], expected)  # 0-10 min from rollups, 10-20 min from raw: same answer
    assert [v["ts"] for v in after["values"]] == [T0 + k * 5 * MINUTE_MS for k in range(4)]


async def test_hour_step_reads_hour_rollups(api: Api) -> None:
    assert await api.maintenance.rollup_once(T0 + 3 * HOUR_MS) is not None
    body = (await history(api, start=T0, end=T0 + 3 * HOUR_MS, step=HOUR_MS)).json()
    assert body["resolution"] == "1h"
    assert [(v["ts"], v["count"]) for v in body["values"]] == [(T0 + h * HOUR_MS, 360) for h in range(3)]
    assert body["values"][0]["min"] == pytest.approx(0.4)
    assert body["values"][0]["max"] == pytest.approx(0.459)


async def test_unknown_site_and_point_are_404_with_the_error_shape(api: Api) -> None:
    missing_site = await api.http.get(f"/api/v1/sites/PR-NOPE/points/{POINT}/history?start=0&end=1")
    assert missing_site.status_code == 404
    assert missing_site.json() == {"error": {"code": "site_not_found", "message": "no pump room 'PR-NOPE'"}}
    missing_point = await api.http.get(f"/api/v1/sites/{api.site}/points/plc/Nope/history?start=0&end=1")
    assert missing_point.status_code == 404
    assert missing_point.json()["error"]["code"] == "point_not_found"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("start=100&end=100", "invalid_range"),
        ("start=200&end=100", "invalid_range"),
        ("start=0&end=99999999999999", "range_too_large"),
        ("start=0&end=1000&step=10", "invalid_request"),
        ("start=yesterday&end=1000", "invalid_request"),
        ("end=1000", "invalid_request"),
        ("start=-5&end=1000", "invalid_request"),
    ],
)
async def test_bad_range_is_422_never_500(api: Api, query: str, code: str) -> None:
    response = await api.http.get(f"/api/v1/sites/{api.site}/points/{POINT}/history?{query}")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code


async def test_long_range_without_step_gets_a_step(api: Api) -> None:
    body = (await history(api, start=T0 - 30 * 86_400_000, end=T0 + 3 * HOUR_MS)).json()
    assert body["step"] is not None
    assert body["step"] % MINUTE_MS == 0
    assert sum(v["count"] for v in body["values"]) == 3 * 360


async def test_metrics_endpoint_speaks_the_prometheus_text_format(api: Api, tmp_path: Path) -> None:
    store = open_telemetry_store(f"sqlite:///{tmp_path / 'm.db'}")
    await store.open()
    api.services.metrics.append(IngestService(store, LiveState()))
    await api.maintenance.rollup_once(T0 + HOUR_MS)
    response = await api.http.get("/metrics")
    await store.close()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert "# TYPE tapline_ingest_messages_total counter\ntapline_ingest_messages_total 0\n" in text
    assert "# TYPE tapline_store_rollups_total counter\ntapline_store_rollups_total 1\n" in text
    assert 'tapline_ingest_store_write_seconds_bucket{le="+Inf"} 0' in text
    assert 'tapline_sites{status="offline"} 0' in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2
