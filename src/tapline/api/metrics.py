"""``GET /metrics``: Prometheus text exposition of every registered metrics source (no auth: scrape it
from inside the network; it carries counts, never values or names from messages)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from tapline.services import Services

router = APIRouter(tags=["operations"])

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> PlainTextResponse:
    services: Services = request.app.state.services
    return PlainTextResponse(services.metrics_text(), media_type=CONTENT_TYPE)
