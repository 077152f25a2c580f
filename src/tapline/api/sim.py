"""``/sim/faults``: inject, list and clear simulator faults at run time (DESIGN §4).

Mounted only when a simulator runs in the same process (the demo, tests): ``create_app`` includes
this router when ``services.extras["sim"]`` holds a ``SimulatedCity``. The routes only translate
HTTP to ``SimulatedCity.inject``/``clear`` and its ``FaultError`` codes to statuses (404 for an
unknown site, district, device or fault id; 422 for an unknown kind or bad parameters).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from tapline.api.auth import Operator, Viewer
from tapline.api.errors import ApiError
from tapline.sim.runner import FaultError, SimulatedCity

router = APIRouter(prefix="/sim", tags=["simulator"])

ParamValue = bool | int | float | str


class FaultRequest(BaseModel):
    """Body of ``POST /sim/faults``."""

    model_config = ConfigDict(extra="forbid")

    kind: Annotated[str, Field(min_length=1, max_length=64, examples=["pump_trip"])]
    site: Annotated[str | None, Field(max_length=64, examples=["PR-0001"])] = None
    district: Annotated[str | None, Field(max_length=64)] = None
    device: Annotated[str | None, Field(max_length=32, examples=["vfd1"])] = None
    params: dict[str, ParamValue] = Field(default_factory=dict)


def _city(request: Request) -> SimulatedCity:
    city = request.app.state.services.extras.get("sim")
    if not isinstance(city, SimulatedCity):
        raise ApiError(404, "no_simulator", "no simulator runs in this process")
    return city


def _refused(exc: FaultError) -> ApiError:
    return ApiError(404 if exc.not_found else 422, exc.code, str(exc))


@router.post("/faults", status_code=201)
async def inject_fault(request: Request, body: FaultRequest, _: Operator) -> dict[str, Any]:
    """Inject a fault now: ``{"kind", "site" | "district", "device"?, "params"?}``."""
    city = _city(request)
    try:
        fault = city.inject(
            body.kind, site=body.site, district=body.district, device=body.device, params=body.params
        )
    except FaultError as exc:
        raise _refused(exc) from None
    return city.fault_view(fault)


@router.get("/faults")
async def list_faults(request: Request, _: Viewer) -> dict[str, list[dict[str, Any]]]:
    """Active faults and the ground-truth log of everything injected (oldest first)."""
    city = _city(request)
    return {
        "active": [city.fault_view(fault) for fault in city.active_faults()],
        "log": [city.truth_view(entry) for entry in city.truth.entries],
    }


@router.delete("/faults/{fault_id}")
async def clear_fault(request: Request, fault_id: str, _: Operator) -> dict[str, Any]:
    """End an active fault now; returns it with its ``end``."""
    city = _city(request)
    try:
        fault = city.clear(fault_id)
    except FaultError as exc:
        raise _refused(exc) from None
    return city.fault_view(fault)
