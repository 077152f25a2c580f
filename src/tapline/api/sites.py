"""Sites (pump rooms): list, detail, point history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from tapline.api.auth import Viewer
from tapline.api.errors import ApiError
from tapline.services import Services
from tapline.store.telemetry import SeriesKey

router = APIRouter(tags=["sites"])


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


@router.get("/sites")
async def list_sites(request: Request, _: Viewer, district: str | None = None) -> list[dict[str, Any]]:
    """Every room with its status and active alarm counts by priority."""
    return services(request).site_summaries(district)


@router.get("/sites/{site_id}")
async def get_site(request: Request, _: Viewer, site_id: str) -> dict[str, Any]:
    """One room: devices with status, and the latest value, quality and timestamp of every point."""
    detail = services(request).site_detail(site_id)
    if detail is None:
        raise ApiError(404, "site_not_found", f"no pump room {site_id!r}")
    return detail


@router.get("/sites/{site_id}/points/{device}/{name}/history")
async def point_history(
    request: Request,
    _: Viewer,
    site_id: str,
    device: str,
    name: str,
    start: Annotated[int, Query(description="ms since epoch, inclusive")],
    end: Annotated[int, Query(description="ms since epoch, exclusive")],
    step: Annotated[int | None, Query(ge=1000, description="bucket width in ms; omit for raw values")] = None,
) -> dict[str, Any]:
    """Values of one point (``device/Name``) over time, raw or aggregated to ``step`` buckets."""
    if end <= start:
        raise ApiError(422, "invalid_range", "end must be after start")
    if (end - start) > 400 * 86_400_000:
        raise ApiError(422, "range_too_large", "at most 400 days per request")
    svc = services(request)
    detail = svc.site_detail(site_id)
    if detail is None:
        raise ApiError(404, "site_not_found", f"no pump room {site_id!r}")
    point = f"{device}/{name}"
    if point not in detail["points"]:
        raise ApiError(404, "point_not_found", f"pump room {site_id} has no point {point!r}")
    ids = await svc.store.ensure_series([SeriesKey(site_id, point)])
    rows = await svc.store.history(ids[SeriesKey(site_id, point)], start, end, step)
    return {
        "site": site_id,
        "point": point,
        "step": step,
        "values": [
            {
                "ts": r.ts,
                "min": r.min,
                "max": r.max,
                "avg": r.avg,
                "last": r.last,
                "count": r.count,
                "quality": r.quality,
            }
            for r in rows
        ],
    }
