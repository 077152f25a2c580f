"""``GET /dead-letters``: the inbound messages the ingest refused, newest first, with the reason.

Engineers need this to find a misconfigured gateway (wrong group, unknown alias, oversized payload)
without shell access to the database. Payloads are shown as hex up to ``preview`` bytes; the stored
copy is already bounded by the ingest.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from tapline.api.auth import Engineer
from tapline.api.errors import ApiError
from tapline.store.errors import StoreError
from tapline.store.relational import RelationalStore

router = APIRouter(tags=["diagnostics"])


@router.get("/dead-letters")
async def dead_letters(
    request: Request,
    _: Engineer,
    reason: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
    preview: Annotated[int, Query(ge=0, le=4_096)] = 256,
) -> list[dict[str, Any]]:
    """Refused messages (topic, reason code, detail, size, payload preview), newest first."""
    store = request.app.state.services.extras.get("relational")
    if not isinstance(store, RelationalStore):
        raise ApiError(503, "store_unavailable", "no relational store runs in this process")
    try:
        letters = await store.dead_letters(limit, reason)
    except StoreError as exc:
        raise ApiError(503, "store_unavailable", str(exc)) from None
    return [
        {
            "id": d.id,
            "received": d.received_ms,
            "topic": d.topic,
            "reason": d.reason,
            "detail": d.detail,
            "size": d.payload_size,
            "payload_hex": d.payload[:preview].hex(),
        }
        for d in letters
    ]
