"""Per-room alarm profiles: what the rules need to know about one room.

Rules:
- A room's profile is built from facts an asset register holds: whether it has a break tank, the
  tank's area and top water level, and its pumps' curve (shut-off head h0 and curve constant k of
  H = h0·s² − k·Q², from the pump's datasheet). ``room_profile`` takes them as plain values.
- Facts go into ``RoomProfile.values``, which rules read by name (``rules.RefillRule``,
  ``rules.PumpCurveRule``); they never change the rules themselves, so 5,000 rooms of different
  sizes share the two compiled plans of the template (tank / tank-less). A fact left out switches off
  only the rules that need it.
- A tank-less ("pressure-superposed") set starts from the template's ``tankless`` profile: no level
  transmitter, the pumps' suction is the mains, and the pumps stopping on low inlet pressure (the
  controller's interlock) is a consequence, not news.
- ``profile_for`` adapts the simulator's ``RoomSpec`` (the only place alarms meets the simulator).
"""

from __future__ import annotations

from tapline.alarms.rules import RoomProfile, Template, load_template
from tapline.sim.spec import RoomSpec, design_room

TOP_WATER_GAP_M = 0.3
"""Top water level below the tank's rim when only the height is known (overflow pipe clearance)."""


def room_profile(
    *,
    tank: bool,
    tank_area_m2: float | None = None,
    tank_height_m: float | None = None,
    top_water_m: float | None = None,
    pump_shutoff_head_m: float | None = None,
    pump_curve_k: float | None = None,
    template: Template | None = None,
) -> RoomProfile:
    """The alarm profile of a room from its facts (see the module rules); ValueError for nonsense."""
    base = (template or load_template()).profile("tankless") if not tank else RoomProfile()
    values: dict[str, float] = {}
    if tank:
        if tank_height_m is not None:
            if tank_height_m <= TOP_WATER_GAP_M:
                raise ValueError(f"tank height must exceed {TOP_WATER_GAP_M} m, got {tank_height_m}")
            values["tank_height_m"] = tank_height_m
        top = top_water_m if top_water_m is not None else _top(tank_height_m)
        if tank_area_m2 is not None and top is not None:
            if tank_area_m2 <= 0 or top <= 0:
                raise ValueError("tank area and top water level must be positive")
            values["tank_area_m2"] = tank_area_m2
            values["top_water_m"] = top
    if pump_shutoff_head_m is not None and pump_curve_k is not None:
        if pump_shutoff_head_m <= 0 or pump_curve_k <= 0:
            raise ValueError("the pump curve's shut-off head and curve constant must be positive")
        values["pump_shutoff_head_m"] = pump_shutoff_head_m
        values["pump_curve_k"] = pump_curve_k
    return base.model_copy(update={"values": {**base.values, **values}})


def _top(height: float | None) -> float | None:
    return None if height is None else height - TOP_WATER_GAP_M


def profile_for(spec: RoomSpec, template: Template | None = None) -> RoomProfile:
    """The alarm profile of a simulated room, from its ``RoomSpec`` and the pumps sized for it."""
    design = design_room(spec)
    return room_profile(
        tank=spec.tank,
        tank_area_m2=spec.tank_area_m2 if spec.tank else None,
        tank_height_m=spec.tank_height_m if spec.tank else None,
        top_water_m=design.valve_top_m if spec.tank else None,
        pump_shutoff_head_m=design.shutoff_head_m,
        pump_curve_k=design.curve_k,
        template=template,
    )
