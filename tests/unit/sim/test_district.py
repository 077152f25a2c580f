"""Municipal inlet pressure of a district."""

from __future__ import annotations

import pytest

from tapline.sim.demand import EVENING_PEAK_S, MORNING_PEAK_S, NIGHT_MIN_S
from tapline.sim.district import DistrictSupply
from tapline.sim.faults import Fault, FaultKind

from .simkit import SEED


def test_inlet_pressure_is_normal_and_lowest_at_the_demand_peaks() -> None:
    for name in ("jianghan", "qiaokou", "hanyang", "wuchang", "hongshan"):
        supply = DistrictSupply(name, SEED)
        day = [supply.pressure_mpa(t * 60.0) for t in range(24 * 60)]
        assert min(day) >= 0.15
        assert max(day) <= 0.30
        assert supply.pressure_mpa(NIGHT_MIN_S) > supply.pressure_mpa(MORNING_PEAK_S) + 0.03
        assert supply.pressure_mpa(NIGHT_MIN_S) > supply.pressure_mpa(EVENING_PEAK_S) + 0.05


def test_inlet_pressure_is_a_pure_function_of_time() -> None:
    supply = DistrictSupply("jianghan", SEED)
    times = [7 * 3600.0 + 17 * i for i in range(50)]
    forward = [supply.pressure_mpa(t) for t in times]
    backward = [supply.pressure_mpa(t) for t in reversed(times)]
    assert forward == backward[::-1]
    assert forward == [DistrictSupply("jianghan", SEED).pressure_mpa(t) for t in times]
    assert forward != [DistrictSupply("jianghan", SEED + 1).pressure_mpa(t) for t in times]
    assert len({round(p, 4) for p in forward}) > 5  # small noise on top of the daily curve


def test_district_wide_drop_ramps_down_and_clears() -> None:
    supply = DistrictSupply("jianghan", SEED)
    start = 10 * 3600.0
    fault = Fault(
        "D1", FaultKind.INLET_PRESSURE_DROP, None, "jianghan", params={"to_mpa": 0.06}, start_s=start
    )
    supply.inject(fault)
    assert supply.pressure_mpa(start - 1) == supply.normal_mpa(start - 1)
    halfway = supply.pressure_mpa(start + 30)
    assert 0.06 < halfway < supply.normal_mpa(start + 30)
    assert supply.pressure_mpa(start + 61) == pytest.approx(0.06)
    supply.clear("D1")
    assert supply.pressure_mpa(start + 61) == supply.normal_mpa(start + 61)
    with pytest.raises(KeyError):
        supply.clear("D1")


def test_district_takes_only_its_own_inlet_drops() -> None:
    supply = DistrictSupply("jianghan", SEED)
    with pytest.raises(ValueError, match="only inlet_pressure_drop"):
        supply.inject(Fault("D1", FaultKind.FLOOD, None, "jianghan"))
    with pytest.raises(ValueError, match="does not target"):
        supply.inject(Fault("D1", FaultKind.INLET_PRESSURE_DROP, None, "qiaokou"))
    with pytest.raises(ValueError, match="does not target"):
        supply.inject(Fault("D1", FaultKind.INLET_PRESSURE_DROP, "PR-0001", "jianghan"))
    supply.inject(Fault("D1", FaultKind.INLET_PRESSURE_DROP, None, "jianghan"))
    with pytest.raises(ValueError, match="already"):
        supply.inject(Fault("D1", FaultKind.INLET_PRESSURE_DROP, None, "jianghan"))
    assert [fault.params["to_mpa"] for fault in supply.faults] == [0.05]
