"""Pure helpers of ``bench query`` (chart step) and ``bench edge`` (cycles and scans from tapped requests)."""

from __future__ import annotations

from tapline.bench.edge import Request, cycles_of, room_scans
from tapline.bench.query import chart_step_ms, point_names

DAY = 86_400_000


def test_a_chart_of_1000_pixels_asks_for_a_nice_step_or_raw_values() -> None:
    assert chart_step_ms(7 * DAY, 5_000) == 600_000  # 1,008 buckets from the 1-minute rollups
    assert chart_step_ms(DAY, 5_000) == 60_000
    assert chart_step_ms(3_600_000, 5_000) is None  # 3.6 s a pixel: raw 5 s values


def test_point_names_take_the_trended_points_first_then_aux_inputs() -> None:
    assert point_names(2) == ["plc/OutletPressure", "plc/InletPressure"]
    assert point_names(18)[-2:] == ["aux/AI01", "aux/AI02"]


def test_cycles_are_runs_of_one_unit_and_scans_group_them_by_fast_period() -> None:
    requests = [
        Request(1, 3, 0.000, 0.001),
        Request(1, 4, 0.001, 0.002),
        Request(11, 1, 0.300, 0.301),
        Request(1, 3, 1.000, 1.001),  # unit 1's next cycle: another unit polled in between
        Request(1, 4, 1.001, 1.003),
        Request(11, 1, 1.300, 1.301),
    ]
    cycles = cycles_of(requests, gap_s=0.5)
    assert [c.reads for c in cycles[1]] == [2, 2]
    assert [c.reads for c in cycles[11]] == [1, 1]
    assert round(cycles[1][1].end - cycles[1][1].start, 6) == 0.003
    scans = room_scans([c for unit in cycles.values() for c in unit], 1.0, (0.0, 2.0))
    assert [sum(c.reads for c in scan) for scan in scans] == [3, 3]
