"""The interlock state machine, driven directly: its table, delays, hysteresis, actions and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapline.domain.model import Quality, Value
from tapline.edge.config import InterlockConfig, InterlockRule, Threshold, WriteStep
from tapline.edge.interlocks import (
    TIMED,
    TRANSITIONS,
    Act,
    Interlocks,
    RuleReleased,
    RuleState,
    RuleTripped,
    Signal,
    Snapshot,
    signal,
)

STOP = (
    WriteStep(point="plc/Mode", value=2),
    WriteStep(point="vfd1/RunCommand", value=False),
    WriteStep(point="vfd2/RunCommand", value=False),
)
DRY = InterlockRule(
    name="DryRun",
    point="plc/TankLevel",
    trip=Threshold(below=0.5),
    release=Threshold(above=1.0),
    on_delay_s=2,
    off_delay_s=10,
)
FLOOD = InterlockRule(name="Flood", point="env/Flood", trip=Threshold(equals=True))
OVER = InterlockRule(
    name="OverPressure", point="plc/OutletPressure", trip=Threshold(above=0.75), release=Threshold(below=0.65)
)
GOOD = Quality.GOOD
RUNNING = {"plc/Mode": (0, GOOD), "vfd1/RunCommand": (True, GOOD), "vfd2/RunCommand": (False, GOOD)}


def engine(*rules: InterlockRule, release: tuple[WriteStep, ...] | None = None) -> Interlocks:
    return Interlocks(InterlockConfig(stop=STOP, release=release, rules=rules or (DRY, FLOOD, OVER)))


def state(il: Interlocks, rule: str) -> RuleState:
    return il.rules[rule].state


def feed(il: Interlocks, now_s: float, **values: Value) -> list[object]:
    names = {"level": "plc/TankLevel", "flood": "env/Flood", "outlet": "plc/OutletPressure"}
    readings = {names[k]: (v, GOOD) for k, v in values.items()}
    return list(il.observe({**RUNNING, **readings}, int(now_s * 1000)))


def test_the_transition_table_is_total_and_only_timed_moves_wait() -> None:
    assert set(TRANSITIONS) == {(state, sig) for state in RuleState for sig in Signal}
    assert {(RuleState.ARMING, Signal.TRIP), (RuleState.RELEASING, Signal.RELEASE)} == TIMED
    # every way out of TRIPPED goes through RELEASING, so a release always waits its off-delay
    assert {TRANSITIONS[(RuleState.TRIPPED, s)] for s in Signal} == {RuleState.TRIPPED, RuleState.RELEASING}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.49, Signal.TRIP),
        (0.5, Signal.HOLD),
        (0.99, Signal.HOLD),
        (1.0, Signal.HOLD),
        (1.01, Signal.RELEASE),
    ],
)
def test_signal_with_hysteresis(value: float, expected: Signal) -> None:
    assert signal(DRY, value) is expected


def test_dry_run_trips_after_on_delay_stops_pumps_and_restores_after_off_delay() -> None:
    il = engine()
    assert feed(il, 0, level=2.0) == []
    assert feed(il, 1, level=0.4) == []  # arming: on-delay 2 s
    assert state(il, "DryRun") is RuleState.ARMING
    effects = feed(il, 3.5, level=0.4)
    assert effects[0] == RuleTripped("DryRun", "plc/TankLevel", 0.4)
    assert effects[1] == Act("stop", STOP, ("DryRun",))
    assert il.inhibited
    assert il.trips == 1
    assert feed(il, 5, level=0.8) == []  # in the band: stays tripped
    assert feed(il, 6, level=1.2) == []  # releasing: off-delay 10 s
    assert state(il, "DryRun") is RuleState.RELEASING
    assert feed(il, 10, level=0.9) == []  # back into the band: the off-delay starts again
    assert state(il, "DryRun") is RuleState.TRIPPED
    assert feed(il, 11, level=1.2) == []
    effects = feed(il, 21.5, level=1.3)
    assert effects[0] == RuleReleased("DryRun", "plc/TankLevel", 1.3)
    # restore in reverse order what stop overwrote: vfd1 ran (start it), then the PLC's auto mode;
    # vfd2 was already off, so there is nothing to write back for it
    assert effects[1] == Act(
        "release",
        (WriteStep(point="vfd1/RunCommand", value=True), WriteStep(point="plc/Mode", value=0)),
        (),
    )
    assert not il.inhibited


def test_a_short_dip_below_the_trip_level_does_not_trip() -> None:
    il = engine()
    feed(il, 0, level=0.4)
    feed(il, 1, level=0.6)  # recovered inside the on-delay
    assert feed(il, 5, level=0.4) == []
    assert not il.inhibited


def test_rules_combine_pumps_stay_stopped_until_every_rule_is_released() -> None:
    il = engine()
    assert isinstance(feed(il, 0, flood=True)[-1], Act)
    effects = feed(il, 1, outlet=0.8)
    assert effects == [RuleTripped("OverPressure", "plc/OutletPressure", 0.8)]  # no second stop
    assert il.active() == ("Flood", "OverPressure")
    assert feed(il, 2, flood=False) == [RuleReleased("Flood", "env/Flood", False)]
    assert il.inhibited
    effects = feed(il, 3, outlet=0.5)
    assert effects[0] == RuleReleased("OverPressure", "plc/OutletPressure", 0.5)
    assert isinstance(effects[1], Act)
    assert effects[1].kind == "release"


def test_only_good_values_move_a_rule() -> None:
    il = engine(FLOOD)
    assert il.observe({"env/Flood": (True, Quality.STALE)}, 0) == []
    assert il.observe({"env/Flood": (True, Quality.BAD)}, 0) == []
    il.observe({"env/Flood": (True, GOOD)}, 0)
    assert il.observe({"env/Flood": (False, Quality.UNCERTAIN)}, 1000) == []
    assert il.inhibited


def test_an_undone_stop_is_reasserted_at_most_every_reassert_period() -> None:
    il = engine(FLOOD)
    il.observe({**RUNNING, "env/Flood": (True, GOOD)}, 0)
    stopped = {"plc/Mode": (2, GOOD), "vfd1/RunCommand": (False, GOOD), "vfd2/RunCommand": (False, GOOD)}
    assert il.observe({**stopped, "env/Flood": (True, GOOD)}, 5_000) == []
    undone = {**stopped, "plc/Mode": (0, GOOD)}  # someone switched the PLC back to auto
    assert il.observe(undone, 9_000) == []  # within reassert_s (10 s) of the stop
    effects = il.observe(undone, 10_500)
    assert effects == [Act("reassert", (WriteStep(point="plc/Mode", value=2),), ("Flood",))]
    assert il.observe(undone, 12_000) == []


def test_commands_that_undo_the_stop_are_refused_while_inhibited() -> None:
    il = engine(FLOOD)
    assert il.refuses("vfd1/RunCommand", True) is None
    il.observe({**RUNNING, "env/Flood": (True, GOOD)}, 0)
    assert il.refuses("vfd1/RunCommand", True) == "interlock Flood holds the pumps stopped"
    assert il.refuses("plc/Mode", 0) is not None
    assert il.refuses("vfd1/RunCommand", False) is None  # stopping is always allowed
    assert il.refuses("plc/OutletPressureSP", 0.5) is None


def test_an_explicit_release_list_is_used_instead_of_restoring() -> None:
    release = (WriteStep(point="plc/Mode", value=0),)
    il = engine(FLOOD, release=release)
    feed(il, 0, flood=True)
    assert feed(il, 1, flood=False)[-1] == Act("release", release, ())


def test_a_trip_survives_a_gateway_restart_and_still_restores_the_room() -> None:
    il = engine(FLOOD)
    feed(il, 0, flood=True)
    snapshot = il.snapshot()
    assert snapshot == Snapshot(["Flood"], {"plc/Mode": 0, "vfd1/RunCommand": True, "vfd2/RunCommand": False})
    again = engine(FLOOD)
    again.restore(snapshot, 60_000)
    assert again.inhibited
    assert again.refuses("vfd1/RunCommand", True)
    stopped = {"plc/Mode": (2, GOOD), "vfd1/RunCommand": (False, GOOD), "vfd2/RunCommand": (False, GOOD)}
    effects = again.observe({**stopped, "env/Flood": (False, GOOD)}, 61_000)
    assert effects[-1] == Act(
        "release",
        (WriteStep(point="vfd1/RunCommand", value=True), WriteStep(point="plc/Mode", value=0)),
        (),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 2.0), st.integers(0, 5_000)), min_size=1, max_size=60))
def test_inhibited_exactly_while_a_rule_holds_and_stop_release_alternate(
    steps: list[tuple[float, int]],
) -> None:
    """Property: the inhibit equals "some rule tripped or releasing"; stop and release alternate,
    starting with stop; a release never happens while the level is at or below the trip level."""
    il = engine(DRY)
    now = 0
    acts: list[str] = []
    for level, dt in steps:
        now += dt
        for effect in il.observe({"plc/TankLevel": (level, GOOD)}, now):
            if isinstance(effect, Act):
                acts.append(effect.kind)
                if effect.kind == "release":
                    assert level > 1.0
        assert il.inhibited == bool(il.active())
    assert acts == ["stop", "release"] * (len(acts) // 2) + (["stop"] if len(acts) % 2 else [])
