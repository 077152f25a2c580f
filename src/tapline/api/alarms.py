"""``/alarms`` and ``/incidents`` (DESIGN §4): alarm lists, acknowledge, shelve, unshelve, incidents.

The routes only translate HTTP to ``alarms.service.AlarmService`` (built on the engine in
``services.extras["alarms"]`` and the correlator in ``services.extras["incidents"]``) and its errors
to statuses: unknown alarm or incident 404; an action the alarm's state does not allow 409
``illegal_transition``; a shelving time outside what the rule allows 422 ``invalid_shelve_duration``;
a bad body or filter 422; no alarm engine in this process 503. Reads need a viewer, actions an
operator; the acting user is recorded in the alarm's audit trail.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from tapline.alarms.correlate import Correlator
from tapline.alarms.engine import AlarmEngine
from tapline.alarms.events import STATE_FILTERS
from tapline.alarms.model import IllegalTransition, ShelveRefused, UnknownAlarm
from tapline.alarms.service import DAY_MS, AlarmService, UnknownIncident
from tapline.api.auth import Operator, Viewer
from tapline.api.errors import ApiError
from tapline.auth import Principal
from tapline.store.errors import StoreError

router = APIRouter(tags=["alarms"])

Ms = Annotated[int | None, Query(ge=0, le=2**53, description="ms since the epoch")]
MAX_SHELVE_S = 7 * 86_400.0
"""Longest shelve the API accepts at all; each rule's own maximum (8 h by default) is tighter."""

Reason = Annotated[str, Field(max_length=500)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AckBody(_Body):
    """Body of ``POST /alarms/{id}/ack`` (optional)."""

    reason: Reason = ""


class ShelveBody(_Body):
    """Body of ``POST /alarms/{id}/shelve``: why, and for how long (none: until the condition clears)."""

    reason: Annotated[str, Field(min_length=1, max_length=500, examples=["crew on site"])]
    duration_s: Annotated[float | None, Field(gt=0, le=MAX_SHELVE_S, examples=[3600])] = None


class MaintenanceBody(_Body):
    """Body of ``POST /sites/{id}/maintenance``: start (``active``) or end a room's maintenance."""

    active: bool
    reason: Annotated[str, Field(min_length=1, max_length=500, examples=["tank cleaning, WO-2031"])]


class UnshelveBody(_Body):
    """Body of ``POST /alarms/{id}/unshelve``."""

    reason: Annotated[str, Field(min_length=1, max_length=500)]


def _service(request: Request) -> AlarmService:
    extras = request.app.state.services.extras
    service = extras.get("alarm_service")
    if isinstance(service, AlarmService):
        return service
    engine = extras.get("alarms")
    if not isinstance(engine, AlarmEngine):
        raise ApiError(503, "alarms_unavailable", "no alarm engine runs in this process")
    correlator = extras.get("incidents")
    built = AlarmService(engine, correlator if isinstance(correlator, Correlator) else None)
    extras["alarm_service"] = built
    return built


def _period(start: int | None, end: int | None, service: AlarmService) -> tuple[int, int]:
    """``[start, end)`` in ms; the last 24 hours by default. 422 when it is empty."""
    end_ms = end if end is not None else service.clock() + 1
    start_ms = start if start is not None else end_ms - DAY_MS
    if end_ms <= start_ms:
        raise ApiError(422, "invalid_period", f"end ({end_ms}) must be after start ({start_ms})")
    return start_ms, end_ms


def _user(principal: Principal | None) -> str:
    return principal.name if principal is not None else "anonymous"


def _act(alarm_id: str, action: Any, *args: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = action(alarm_id, *args)
    except UnknownAlarm:
        raise ApiError(404, "alarm_not_found", f"no live alarm {alarm_id!r}") from None
    except ShelveRefused as exc:
        raise ApiError(422, "invalid_shelve_duration", str(exc)) from None
    except IllegalTransition as exc:
        raise ApiError(409, "illegal_transition", str(exc)) from None
    return result


@router.get("/alarms")
async def list_alarms(
    request: Request,
    _: Viewer,
    state: Annotated[str, Query(description=" | ".join(STATE_FILTERS))] = "active",
    site: Annotated[str | None, Query(max_length=64)] = None,
) -> list[dict[str, Any]]:
    """Live alarms: ``active`` (announced, condition present), ``unacked``, ``shelved``, ``suppressed``
    or ``all``, optionally of one room, oldest first."""
    try:
        return _service(request).alarms(state, site)
    except ValueError as exc:
        raise ApiError(422, "invalid_state", str(exc)) from None


@router.get("/alarms/history")
async def alarm_history(
    request: Request,
    _: Viewer,
    start: Ms = None,
    end: Ms = None,
    site: Annotated[str | None, Query(max_length=64)] = None,
    district: Annotated[str | None, Query(max_length=64)] = None,
    priority: Annotated[str | None, Query(pattern="^(critical|high|medium|low)$")] = None,
    limit: Annotated[int, Query(ge=1, le=5_000)] = 500,
) -> list[dict[str, Any]]:
    """Alarm instances raised in ``[start, end)`` (default: the last 24 h), newest first, live or
    finished: when each was raised, cleared and acknowledged, and by whom."""
    service = _service(request)
    start_ms, end_ms = _period(start, end, service)
    return await service.history(
        start_ms, end_ms, site=site, district=district, priority=priority, limit=limit
    )


@router.get("/alarms/{alarm_id}/events")
async def alarm_events(request: Request, _: Viewer, alarm_id: str) -> list[dict[str, Any]]:
    """The audit trail of one alarm instance: every transition with who, when and why."""
    try:
        return await _service(request).transitions(alarm_id)
    except UnknownAlarm:
        raise ApiError(404, "alarm_not_found", f"no alarm {alarm_id!r} in the journal") from None


@router.get("/kpis/alarms")
async def alarm_kpis(
    request: Request,
    _: Viewer,
    start: Ms = None,
    end: Ms = None,
    district: Annotated[str | None, Query(max_length=64)] = None,
    operators: Annotated[int, Query(ge=1, le=100)] = 1,
) -> dict[str, Any]:
    """Alarm-system health (EEMUA 191 / ISA-18.2) over ``[start, end)`` (default: the last 24 h):
    alarms per operator per 10 min, peak, time in flood, chattering, standing alarms, bad actors,
    and which benchmarks are met."""
    service = _service(request)
    start_ms, end_ms = _period(start, end, service)
    return await service.health(start_ms, end_ms, district=district, operators=operators)


@router.get("/alarms/{alarm_id}")
async def get_alarm(request: Request, _: Viewer, alarm_id: str) -> dict[str, Any]:
    """One live alarm."""
    return _act(alarm_id, _service(request).alarm)


@router.post("/alarms/{alarm_id}/ack")
async def ack_alarm(
    request: Request, principal: Operator, alarm_id: str, body: Annotated[AckBody | None, Body()] = None
) -> dict[str, Any]:
    """Acknowledge an alarm awaiting it (unacked-active or returned-unacknowledged)."""
    reason = body.reason if body is not None else ""
    return _act(alarm_id, _service(request).ack, _user(principal), reason)


@router.post("/alarms/{alarm_id}/shelve")
async def shelve_alarm(
    request: Request, principal: Operator, alarm_id: str, body: ShelveBody
) -> dict[str, Any]:
    """Shelve: for ``duration_s`` (at most the rule's maximum), or until the condition clears."""
    return _act(alarm_id, _service(request).shelve, _user(principal), body.reason, body.duration_s)


@router.post("/alarms/{alarm_id}/unshelve")
async def unshelve_alarm(
    request: Request, principal: Operator, alarm_id: str, body: UnshelveBody
) -> dict[str, Any]:
    """End a shelving now: the alarm is announced again if its condition is still there."""
    return _act(alarm_id, _service(request).unshelve, _user(principal), body.reason)


@router.post("/alarms/{alarm_id}/reset")
async def reset_alarm(
    request: Request, principal: Operator, alarm_id: str, body: Annotated[AckBody | None, Body()] = None
) -> dict[str, Any]:
    """Reset a latched alarm whose condition has returned to normal."""
    reason = body.reason if body is not None else ""
    return _act(alarm_id, _service(request).reset, _user(principal), reason)


@router.get("/incidents")
async def list_incidents(
    request: Request,
    _: Viewer,
    site: Annotated[str | None, Query(max_length=64)] = None,
    open_only: Annotated[bool, Query(alias="open")] = False,
) -> list[dict[str, Any]]:
    """Correlated faults, oldest first: root cause, affected rooms and devices, their alarms, start and
    end (null while open). ``open=true`` leaves out the recently closed ones."""
    return _service(request).incidents(site, open_only)


@router.get("/incidents/{incident_id}")
async def get_incident(request: Request, _: Viewer, incident_id: str) -> dict[str, Any]:
    """One incident (one that merged into another answers with that one)."""
    try:
        return _service(request).incident(incident_id)
    except UnknownIncident:
        raise ApiError(404, "incident_not_found", f"no incident {incident_id!r}") from None


@router.post("/sites/{site}/maintenance")
async def site_maintenance(
    request: Request, principal: Operator, site: str, body: MaintenanceBody
) -> dict[str, Any]:
    """Put a room in maintenance (its alarms, current and future, go out of service: recorded, not
    announced) or end it (alarms still present are announced again). Survives restarts."""
    if site not in request.app.state.services.live.sites:
        raise ApiError(404, "site_not_found", f"no pump room {site!r}")
    try:
        return await _service(request).set_maintenance(site, body.active, _user(principal), body.reason)
    except StoreError as exc:
        raise ApiError(503, "store_unavailable", str(exc)) from None
