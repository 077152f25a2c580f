"""The ISA-18.2 state table, driven directly: every row taken, every missing row refused, invariants."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tapline.alarms.model import (
    LATCHING_TRANSITIONS,
    SETTLE,
    TRANSITIONS,
    AlarmState,
    Event,
    IllegalTransition,
    Phase,
    Settle,
    ShelfKind,
    ShelveRefused,
    Transition,
    allowed,
    apply,
    settle,
)

E, P = Event, Phase
MAX = 3_600_000


def fire(state: AlarmState, event: Event, at: int = 1_000) -> tuple[AlarmState, Transition]:
    """Apply ``event`` with a one-second timed shelf that has run out by t = 10 s."""
    when = 10_000 if event is E.SHELVE_EXPIRED else at
    return apply(state, event, at=when, by="op", reason="test", duration_ms=1_000, max_shelve_ms=MAX)


def reachable() -> set[AlarmState]:
    """Every state reachable from normal (plain and latching alarms), by breadth-first search."""
    seen: set[AlarmState] = set()
    todo = deque([AlarmState(), AlarmState(latching=True)])
    while todo:
        state = todo.popleft()
        if state in seen:
            continue
        seen.add(state)
        for event in Event:
            if allowed(state, event):
                todo.append(fire(state, event)[0])
    return seen


STATES = reachable()


def consistent(state: AlarmState) -> bool:
    """Outside overlays the phase matches the condition; inside, the phase is the strongest overlay."""
    if state.phase.overlay:
        return state.phase is settle(state)
    no_overlay = not state.suppressed and not state.out_of_service and state.shelf is None
    return no_overlay and state.active is (state.phase in (P.UNACKED_ACTIVE, P.ACKED_ACTIVE))


def test_every_phase_is_reachable_and_consistent() -> None:
    assert {s.phase for s in STATES} == set(Phase)
    assert all(consistent(s) for s in STATES)


@pytest.mark.parametrize(
    ("phase", "event", "latching_row"),
    [(p, e, False) for p, row in TRANSITIONS.items() for e in row]
    + [(p, e, True) for p, row in LATCHING_TRANSITIONS.items() for e in row],
)
def test_every_row_is_taken_to_its_target(phase: Phase, event: Event, latching_row: bool) -> None:
    row = (LATCHING_TRANSITIONS if latching_row else TRANSITIONS)[phase][event]
    overridden = event in LATCHING_TRANSITIONS.get(phase, {})
    sources = [
        s
        for s in STATES
        if s.phase is phase
        and allowed(s, event)
        and (s.latching if latching_row else not (s.latching and overridden))
    ]
    assert sources, f"no reachable state takes {phase.value} --{event.value}-->"
    for source in sources:
        new, record = fire(source, event)
        expected = settle(new) if row is SETTLE else row
        assert new.phase is expected
        assert (record.event, record.source, record.target) == (event, phase, expected)
        assert consistent(new)


def test_every_event_without_a_row_is_refused_and_changes_nothing() -> None:
    refused = 0
    for state in STATES:
        for event in Event:
            if allowed(state, event):
                continue
            with pytest.raises(IllegalTransition):
                fire(state, event)
            refused += 1
    assert refused > 50


def test_isa_main_path() -> None:
    state, trail = AlarmState(), []
    for event in (E.ACTIVATE, E.ACK, E.CLEAR, E.ACTIVATE, E.CLEAR, E.ACTIVATE, E.CLEAR, E.ACK):
        state, record = fire(state, event)
        trail.append(record.target)
    # A→B→C→A, then A→B→D→B (re-alarm before the ack)→D→A
    assert trail == [
        P.UNACKED_ACTIVE,
        P.ACKED_ACTIVE,
        P.NORMAL,
        P.UNACKED_ACTIVE,
        P.UNACKED_RETURNED,
        P.UNACKED_ACTIVE,
        P.UNACKED_RETURNED,
        P.NORMAL,
    ]


def test_record_says_who_when_why_from_to() -> None:
    state, _ = fire(AlarmState(), E.ACTIVATE)
    _, record = apply(state, E.ACK, at=42, by="zhang.wei", reason="seen, crew sent")
    assert record == Transition(E.ACK, P.UNACKED_ACTIVE, P.ACKED_ACTIVE, 42, "zhang.wei", "seen, crew sent")


def test_latched_alarm_needs_a_reset_not_an_ack() -> None:
    state, _ = fire(AlarmState(latching=True), E.ACTIVATE)
    state, _ = fire(state, E.ACK)
    state, _ = fire(state, E.CLEAR)
    assert state.phase is P.LATCHED
    with pytest.raises(IllegalTransition, match="reset it instead"):
        fire(state, E.ACK)
    assert fire(state, E.RESET)[0].phase is P.NORMAL
    assert fire(state, E.ACTIVATE)[0].phase is P.UNACKED_ACTIVE


def test_one_shot_shelf_ends_when_the_condition_clears() -> None:
    state, _ = fire(AlarmState(), E.ACTIVATE)
    state, _ = fire(state, E.SHELVE_ONE_SHOT)
    assert state.phase is P.SHELVED_ONE_SHOT
    assert state.shelf is not None
    assert state.shelf.kind is ShelfKind.ONE_SHOT
    state, _ = fire(state, E.CLEAR)
    assert state.phase is P.NORMAL
    assert state.shelf is None


def test_one_shot_shelving_an_inactive_alarm_is_refused() -> None:
    with pytest.raises(IllegalTransition):
        fire(AlarmState(), E.SHELVE_ONE_SHOT)


@pytest.mark.parametrize("duration", [None, 0, -5, MAX + 1])
def test_timed_shelf_outside_its_maximum_is_refused(duration: int | None) -> None:
    state, _ = fire(AlarmState(), E.ACTIVATE)
    with pytest.raises(ShelveRefused):
        apply(state, E.SHELVE_TIMED, at=0, by="op", duration_ms=duration, max_shelve_ms=MAX)


def test_timed_shelf_expires_only_at_its_time_and_re_announces() -> None:
    state, _ = fire(AlarmState(), E.ACTIVATE)
    state, _ = fire(state, E.ACK)
    state, _ = apply(state, E.SHELVE_TIMED, at=0, by="op", duration_ms=60_000)
    assert state.shelf is not None
    assert state.shelf.until == 60_000
    with pytest.raises(IllegalTransition, match="runs until"):
        apply(state, E.SHELVE_EXPIRED, at=59_999, by="system")
    state, record = apply(state, E.SHELVE_EXPIRED, at=60_000, by="system")
    assert record.target is P.UNACKED_ACTIVE  # still active: shown again, unacknowledged


def test_overlays_rank_and_leave_into_the_next_one_in_force() -> None:
    state, _ = fire(AlarmState(), E.ACTIVATE)
    state, _ = fire(state, E.SHELVE_TIMED)
    state, _ = fire(state, E.SUPPRESS)
    state, _ = fire(state, E.REMOVE_FROM_SERVICE)
    assert state.phase is P.OUT_OF_SERVICE
    state, _ = fire(state, E.RETURN_TO_SERVICE)
    assert state.phase is P.SUPPRESSED
    state, _ = fire(state, E.UNSUPPRESS)
    assert state.phase is P.SHELVED_TIMED
    state, _ = fire(state, E.CLEAR)
    state, _ = fire(state, E.UNSHELVE)
    assert state.phase is P.NORMAL


def test_condition_changes_inside_an_overlay_are_recorded_but_hidden() -> None:
    state, _ = fire(AlarmState(), E.SUPPRESS)
    state, record = fire(state, E.ACTIVATE)
    assert (record.source, record.target, state.active) == (P.SUPPRESSED, P.SUPPRESSED, True)
    state, record = fire(state, E.UNSUPPRESS)
    assert record.target is P.UNACKED_ACTIVE


def test_settle_is_a_row_target_only_for_leaving_overlays() -> None:
    rows = [(p, e) for p, row in TRANSITIONS.items() for e, t in row.items() if isinstance(t, Settle)]
    assert all(p.overlay for p, _ in rows)
    assert {e for _, e in rows} == {E.CLEAR, E.UNSHELVE, E.SHELVE_EXPIRED, E.UNSUPPRESS, E.RETURN_TO_SERVICE}


class AlarmLifecycle(RuleBasedStateMachine):
    """Random event sequences: illegal ones refused, legal ones recorded, invariants always hold."""

    def __init__(self) -> None:
        super().__init__()
        self.state = AlarmState()
        self.clock = 0
        self.records: list[Transition] = []
        self.accepted = 0

    @rule(latching=st.booleans())
    def restart(self, latching: bool) -> None:
        self.state = AlarmState(latching=latching)

    @rule(
        event=st.sampled_from(Event),
        step=st.integers(0, 120_000),
        duration=st.one_of(st.none(), st.integers(-1, 2 * MAX)),
    )
    def happen(self, event: Event, step: int, duration: int | None) -> None:
        self.clock += step
        before = self.state
        try:
            new, record = apply(
                before, event, at=self.clock, by="op", reason="r", duration_ms=duration, max_shelve_ms=MAX
            )
        except IllegalTransition:
            assert self.state is before
            return
        assert (record.source, record.target, record.at, record.event) == (
            before.phase,
            new.phase,
            self.clock,
            event,
        )
        if event is E.ACK:
            assert new.active is before.active  # an ack never changes the process condition
        if event not in (E.ACTIVATE, E.CLEAR):
            assert new.active is before.active
        self.records.append(record)
        self.accepted += 1
        self.state = new

    @precondition(lambda self: self.state.shelf is not None and self.state.shelf.until is not None)
    @rule()
    def time_passes_past_the_shelf(self) -> None:
        assert self.state.shelf is not None
        assert self.state.shelf.until is not None
        self.clock = max(self.clock, self.state.shelf.until)
        self.happen(E.SHELVE_EXPIRED, 0, None)

    @invariant()
    def phase_consistent_with_conditions(self) -> None:
        assert consistent(self.state)

    @invariant()
    def no_transition_without_record(self) -> None:
        assert len(self.records) == self.accepted


TestAlarmLifecycle = AlarmLifecycle.TestCase
TestAlarmLifecycle.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
