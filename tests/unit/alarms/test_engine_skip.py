"""The engine's skip of unchanged readings (``skip_unchanged``) against full evaluation, differentially.

Skipping is an optimisation only: whatever a room's stream (repeated values, flips, STALE and BAD
readings, device deaths and births, operator acknowledgements, time passing), the engine that skips
must emit exactly the events, in the same order, and keep exactly the alarms of the engine that
re-evaluates every check on every reading.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tapline.alarms.correlate import Correlator
from tapline.alarms.engine import AlarmEngine
from tapline.alarms.events import AlarmEvent
from tapline.alarms.model import IllegalTransition
from tapline.alarms.profiles import room_profile
from tapline.domain.model import Quality, Reading, Value

from .kit import DISTRICT, HEALTHY, SITE, T0

PROFILE = room_profile(
    tank=True, tank_area_m2=20.0, tank_height_m=3.5, pump_shutoff_head_m=62.0, pump_curve_k=0.012
)
PATHS = sorted(HEALTHY)


def _choices(value: Value) -> list[Value]:
    """A few values per point: the healthy one, alarming ones either side, and zero."""
    if isinstance(value, bool):
        return [value, not value]
    number = float(value)
    return [value, number * 0.5, number * 1.5, number + 0.06, 0.0]


CHOICES = {path: _choices(value) for path, value in HEALTHY.items()}


# One step of a room's life: a message of readings, a tick, a device's death or birth, or an ack.
_reading = st.tuples(
    st.sampled_from(PATHS),
    st.integers(0, 4),
    st.sampled_from([Quality.GOOD] * 6 + [Quality.STALE, Quality.BAD]),
)
_step = st.one_of(
    st.tuples(st.just("data"), st.integers(0, 2500), st.lists(_reading, min_size=1, max_size=12)),
    st.tuples(st.just("tick"), st.integers(0, 20_000)),
    st.tuples(st.just("link"), st.sampled_from(["plc", "vfd1", "env", None]), st.booleans()),
    st.tuples(st.just("ack"), st.integers(0, 5)),
)


def _run(steps: list[tuple[object, ...]], skip: bool) -> tuple[list[list[AlarmEvent]], list[object]]:
    """Each call's events (so an event emitted by a later call than it should counts as a difference)
    and the alarms left."""
    engine = AlarmEngine(grouping=Correlator(), skip_unchanged=skip)
    engine.configure(SITE, DISTRICT, PROFILE)
    events: list[list[AlarmEvent]] = []
    now = T0
    engine.evaluate(SITE, DISTRICT, [Reading(p, now, v) for p, v in HEALTHY.items()], now)
    for step in steps:
        kind = step[0]
        if kind == "data":
            _, advance, readings = step
            now += advance  # type: ignore[operator]
            batch = [
                Reading(path, now, CHOICES[path][pick % len(CHOICES[path])], quality)
                for path, pick, quality in readings  # type: ignore[attr-defined]
            ]
            events.append(engine.evaluate(SITE, DISTRICT, batch, now))
        elif kind == "tick":
            now += step[1]  # type: ignore[operator]
            events.append(engine.tick(now))
        elif kind == "link":
            events.append(engine.link(SITE, DISTRICT, step[1], step[2], now))  # type: ignore[arg-type]
        else:
            unacked = engine.alarms(SITE, "unacked")
            if unacked:
                alarm = unacked[step[1] % len(unacked)]  # type: ignore[operator]
                with contextlib.suppress(IllegalTransition):
                    events.append([engine.ack(alarm.id, "op", now)])
    return events, list(engine.alarms(SITE, "all"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_step, max_size=60))
@example(  # a running pump's frequency repeated while the deviation's setpoint moves
    [
        ("data", 1000, [("plc/OutletPressureSP", 2, Quality.GOOD)]),
        ("data", 1000, [("vfd1/Frequency", 0, Quality.GOOD), ("plc/OutletPressure", 0, Quality.GOOD)]),
        ("tick", 20_000),
        ("data", 1000, [("plc/OutletPressure", 0, Quality.GOOD), ("plc/OutletPressureSP", 0, Quality.GOOD)]),
        ("tick", 20_000),
    ]
)
@example(  # outlet pressure low, held: its on-delay runs out on a repeated reading, not at a tick
    [("data", 1000, [("plc/OutletPressure", 4, Quality.GOOD)])]
    + [("data", 5000, [("plc/OutletPressure", 4, Quality.GOOD)])] * 8
)
@example(  # mains lost and back while a pump's fault repeats: suppression released, then re-gated
    [
        ("data", 1000, [("power/Mains", 1, Quality.GOOD), ("vfd1/Fault", 1, Quality.GOOD)]),
        ("data", 1000, [("vfd1/Fault", 1, Quality.GOOD)]),
        ("data", 1000, [("power/Mains", 0, Quality.GOOD), ("vfd1/Fault", 1, Quality.GOOD)]),
        ("tick", 20_000),
        ("ack", 0),
        ("data", 1000, [("vfd1/Fault", 0, Quality.GOOD)]),
        ("tick", 20_000),
        ("ack", 0),
    ]
)
def test_skipping_unchanged_readings_changes_nothing(steps: list[tuple[object, ...]]) -> None:
    skipped, kept = _run(steps, skip=True)
    full, full_kept = _run(steps, skip=False)
    assert skipped == full
    assert kept == full_kept


def test_a_repeated_reading_really_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not vacuous: a repeated healthy stream asks for far fewer verdicts when skipping."""
    import tapline.alarms.engine as engine_module
    from tapline.alarms.room import verdict

    calls = {True: 0, False: 0}
    for skip in (True, False):

        def counting(*args: object, _skip: bool = skip) -> bool | None:
            calls[_skip] += 1
            return verdict(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(engine_module, "verdict", counting)
        engine = AlarmEngine(skip_unchanged=skip)
        engine.configure(SITE, DISTRICT, PROFILE)
        for second in range(10):
            at = T0 + second * 1000
            engine.evaluate(SITE, DISTRICT, [Reading(p, at, v) for p, v in HEALTHY.items()], at)
    assert 0 < calls[True] < calls[False] / 2
