"""``tapline bench faults``: the seeded plan, one small shard end to end, the summary and the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from tapline.bench import faults
from tapline.bench.faults import FaultBenchOptions, Shard, run_shard, summary
from tapline.bench.schedule import EXPECTED, WORKING_HOURS, Planned, make_plan
from tapline.sim.faults import Fault, FaultKind
from tapline.sim.spec import make_room_spec

PLAN_ARGS: dict[str, Any] = {"room_count": 120, "districts": 4, "seed": 7, "start_s": 43_200.0, "hours": 24.0}


def test_the_plan_is_seeded_and_keeps_its_rules() -> None:
    plan = make_plan(**PLAN_ARGS, per_kind=3, district_events=1)
    assert plan == make_plan(**PLAN_ARGS, per_kind=3, district_events=1)
    assert plan != make_plan(**{**PLAN_ARGS, "seed": 8}, per_kind=3, district_events=1)
    kinds = [p.fault.kind for p in plan.faults]
    assert kinds.count(FaultKind.INLET_PRESSURE_DROP) == 1
    assert all(kinds.count(k) == 3 for k in FaultKind if k is not FaultKind.INLET_PRESSURE_DROP)
    assert set(EXPECTED) == set(FaultKind)
    sites = [p.fault.site for p in plan.faults if p.fault.site is not None]
    assert len(sites) == len(set(sites))  # one fault per room
    specs = {s.site_id: s for s in plan.specs}
    for planned in plan.faults:
        fault = planned.fault
        assert plan.start_s < fault.start_s < plan.end_s
        if fault.site is not None:
            assert specs[fault.site].district not in plan.event_districts
        if fault.kind is FaultKind.TANK_VALVE_STUCK:
            assert specs[fault.site or ""].tank
        if fault.kind is FaultKind.DOOR_OPEN:
            assert not WORKING_HOURS[0] <= fault.start_s % 86_400 < WORKING_HOURS[1]
    clean = set(plan.clean_rooms())
    assert not clean & set(sites)
    assert len(clean) == 120 - 30 - 14 * 3


def test_impossible_plans_say_why() -> None:
    with pytest.raises(ValueError, match="no room left"):
        make_plan(**{**PLAN_ARGS, "room_count": 40}, per_kind=3, district_events=1)
    with pytest.raises(ValueError, match="too short"):
        make_plan(**{**PLAN_ARGS, "hours": 1.0}, per_kind=1, district_events=1)
    with pytest.raises(ValueError, match="district events"):
        make_plan(**PLAN_ARGS, per_kind=1, district_events=4)


def test_a_small_shard_scores_its_faults_and_its_quiet_rooms() -> None:
    specs = tuple(make_room_spec(f"PR-{n:04d}", "jianghan", 3) for n in range(1, 4))
    start = 10 * 3600.0
    trip = Planned(Fault("F0001", FaultKind.PUMP_TRIP, "PR-0001", "jianghan", None, {}, start + 700), 600.0)
    flood = Planned(Fault("F0002", FaultKind.FLOOD, "PR-0002", "jianghan", None, {}, start + 700), None)
    shard = Shard(specs, (trip, flood), ("PR-0003",), 3, start, start + 1500, 1.0)
    out = run_shard(shard)
    by_id = {r["fault_id"]: r for r in out["results"]}
    assert by_id["F0001"]["root_cause"] == "drive_fault"
    assert by_id["F0001"]["root_correct"]
    assert by_id["F0001"]["location_correct"]
    assert by_id["F0002"]["root_cause"] == "flood"
    assert by_id["F0002"]["net_s"] == 0.0  # 5 s on-delay, announced when it ran out
    assert out["normal"] == []
    plan = make_plan(**PLAN_ARGS, per_kind=1, district_events=1)
    report = summary([out], FaultBenchOptions(), plan, 1.0)
    assert report["root_cause_accuracy"] == 1.0
    assert report["false_alarms_per_room_day"] == 0.0
    assert set(report["per_kind"]) == {"flood", "pump_trip"}
    assert report["targets"]["false_alarms_per_room_day"]["met"]
    assert "pump_trip" in faults.render(report)


def test_the_cli_refuses_bad_options_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert faults.main(["--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert faults.main(["--rooms", "20", "--hours", "24"]) == 2


def test_options_map_onto_the_argument_parser(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    faults.add_arguments(parser)
    options = faults.options_from(parser.parse_args(["--rooms", "300", "--json", str(tmp_path / "x.json")]))
    assert options.rooms == 300
    assert options.json_out == tmp_path / "x.json"
    assert options.workers == FaultBenchOptions().workers
