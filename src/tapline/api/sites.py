"""Sites (pump rooms): list, detail, point history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from tapline.api.auth import Viewer
from tapline.api.errors import ApiError
from tapline.services import Services, UnknownPoint, UnknownSite

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


RAW_WITHOUT_STEP_MS = 7 * 86_400_000
AUTO_STEP_BUCKETS = 2_000


@router.get("/sites/{site_id}/points/{device}/{name}/history")
async def point_history(
    request: Request,
    _: Viewer,
    site_id: str,
    device: str,
    name: str,
    start: Annotated[int, Query(ge=0, description="ms since epoch, inclusive")],
    end: Annotated[int, Query(ge=0, description="ms since epoch, exclusive")],
    step: Annotated[int | None, Query(ge=1000, description="bucket width in ms; omit for raw values")] = None,
) -> dict[str, Any]:
    """Values of one point (``device/Name``) over time, raw or aggregated to ``step`` buckets.

    A step of a minute or more is answered from the 1-minute or 1-hour rollups (``resolution``), with the
    newest buckets computed from raw values. Without a step, ranges over 7 days get a step that gives
    about 2,000 buckets (the answer's ``step`` says which).
    """
    if end <= start:
        raise ApiError(422, "invalid_range", "end must be after start")
    if (end - start) > 400 * 86_400_000:
        raise ApiError(422, "range_too_large", "at most 400 days per request")
    if step is None and end - start > RAW_WITHOUT_STEP_MS:
        step = max(60_000, (end - start) // AUTO_STEP_BUCKETS // 60_000 * 60_000)
    try:
        answer = await services(request).point_history(site_id, f"{device}/{name}", start, end, step)
    except UnknownSite as exc:
        raise ApiError(404, "site_not_found", f"no pump room {site_id!r}") from exc
    except UnknownPoint as exc:
        raise ApiError(404, "point_not_found", f"pump room {site_id} has no point {device}/{name!s}") from exc
    return {
        "site": answer.site,
        "point": answer.point,
        "step": answer.step_ms,
        "resolution": answer.resolution,
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
            for r in answer.values
        ],
    }
