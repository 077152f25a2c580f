"""The ISA-18.2 / IEC 62682 alarm state model: one pure transition table.

Rules:
- Every transition an alarm can make is a row of ``TRANSITIONS`` (``LATCHING_TRANSITIONS`` replaces a
  few rows for alarms configured as latching). Nothing else in tapline changes an alarm's phase.
- This module knows nothing of rules, rooms, readings, MQTT or databases: a state, an event, who, when
  and why go in; a new state and a ``Transition`` record come out. The caller passes the time.
- An event with no row for the current phase, or whose precondition fails (``PRECONDITIONS``), raises
  ``IllegalTransition`` and changes nothing. Every accepted event yields exactly one record, also when
  the phase stays the same (a condition change while shelved is still audited).
- The alarm carries its process condition (``active``) and its overlay conditions (``suppressed`` by
  design, ``out_of_service``, ``shelf``) in every phase, so the phase can always be re-derived.
- Overlays rank out of service > suppressed by design > shelved. Leaving one *settles* the alarm
  (``settle``): into the next overlay still in force, else into the process condition: still active →
  unacked-active (announced again: the operator saw nothing while it was hidden); inactive → normal.
  An overlay therefore ends an alarm's acknowledgement and latch history, on purpose.
- One-shot shelving lasts until the condition clears (OPC UA Part 9, OneShotShelved); timed shelving
  until its time, which may not exceed the alarm's maximum (OPC UA MaxTimeShelved) → ``ShelveRefused``.
- ISA's latched-unacknowledged / latched-acknowledged pair is one phase, ``latched``: the operator's
  reset is the acknowledgement, so ``ack`` is refused there (the message says to reset).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final


class Phase(StrEnum):
    """Where an alarm is in its lifecycle (ISA-18.2 states A–I)."""

    NORMAL = "normal"
    UNACKED_ACTIVE = "unacked_active"
    ACKED_ACTIVE = "acked_active"
    UNACKED_RETURNED = "unacked_returned"
    LATCHED = "latched"
    SHELVED_ONE_SHOT = "shelved_one_shot"
    SHELVED_TIMED = "shelved_timed"
    SUPPRESSED = "suppressed"
    OUT_OF_SERVICE = "out_of_service"

    @property
    def annunciated(self) -> bool:
        """Shown in the operator's alarm summary."""
        return self in _ANNUNCIATED

    @property
    def overlay(self) -> bool:
        """Hidden by shelving, design suppression or removal from service."""
        return self in _OVERLAYS

    @property
    def shelved(self) -> bool:
        return self in (Phase.SHELVED_ONE_SHOT, Phase.SHELVED_TIMED)


class Event(StrEnum):
    """What can happen to an alarm: process changes, operator actions, logic and time."""

    ACTIVATE = "activate"
    CLEAR = "clear"
    ACK = "ack"
    RESET = "reset"
    SHELVE_ONE_SHOT = "shelve_one_shot"
    SHELVE_TIMED = "shelve_timed"
    UNSHELVE = "unshelve"
    SHELVE_EXPIRED = "shelve_expired"
    SUPPRESS = "suppress"
    UNSUPPRESS = "unsuppress"
    REMOVE_FROM_SERVICE = "remove_from_service"
    RETURN_TO_SERVICE = "return_to_service"


class Settle(StrEnum):
    """Row target meaning "re-derive the phase from the conditions" (see ``settle``)."""

    SETTLE = "settle"


N, UA, AA, UR, L = (
    Phase.NORMAL,
    Phase.UNACKED_ACTIVE,
    Phase.ACKED_ACTIVE,
    Phase.UNACKED_RETURNED,
    Phase.LATCHED,
)
SH1, SHT, SUP, OOS = Phase.SHELVED_ONE_SHOT, Phase.SHELVED_TIMED, Phase.SUPPRESSED, Phase.OUT_OF_SERVICE
E = Event
SETTLE = Settle.SETTLE
_ANNUNCIATED = frozenset({UA, AA, UR, L})
_OVERLAYS = frozenset({SH1, SHT, SUP, OOS})

# Entering an overlay is possible from every phase that is not hidden already (shelving only from
# announced phases: there is nothing to shelve in a hidden alarm; one-shot only while active).
_HIDE: Final = {E.SUPPRESS: SUP, E.REMOVE_FROM_SERVICE: OOS}

TRANSITIONS: Final[dict[Phase, dict[Event, Phase | Settle]]] = {
    N: {E.ACTIVATE: UA, E.SHELVE_TIMED: SHT, **_HIDE},
    UA: {E.ACK: AA, E.CLEAR: UR, E.SHELVE_ONE_SHOT: SH1, E.SHELVE_TIMED: SHT, **_HIDE},
    AA: {E.CLEAR: N, E.SHELVE_ONE_SHOT: SH1, E.SHELVE_TIMED: SHT, **_HIDE},
    UR: {E.ACK: N, E.ACTIVATE: UA, E.SHELVE_TIMED: SHT, **_HIDE},
    L: {E.RESET: N, E.ACTIVATE: UA, **_HIDE},
    SH1: {E.CLEAR: SETTLE, E.UNSHELVE: SETTLE, **_HIDE},
    SHT: {E.ACTIVATE: SHT, E.CLEAR: SHT, E.UNSHELVE: SETTLE, E.SHELVE_EXPIRED: SETTLE, **_HIDE},
    SUP: {
        E.ACTIVATE: SUP,
        E.CLEAR: SUP,
        E.UNSHELVE: SUP,
        E.SHELVE_EXPIRED: SUP,
        E.UNSUPPRESS: SETTLE,
        E.REMOVE_FROM_SERVICE: OOS,
    },
    OOS: {
        E.ACTIVATE: OOS,
        E.CLEAR: OOS,
        E.UNSHELVE: OOS,
        E.SHELVE_EXPIRED: OOS,
        E.SUPPRESS: OOS,
        E.UNSUPPRESS: OOS,
        E.RETURN_TO_SERVICE: SETTLE,
    },
}
"""(phase, event) → next phase, for every alarm. A missing row is an illegal event."""

LATCHING_TRANSITIONS: Final[dict[Phase, dict[Event, Phase | Settle]]] = {
    UA: {E.CLEAR: L},
    AA: {E.CLEAR: L},
}
"""Rows that replace ``TRANSITIONS`` for latching alarms: returning to normal does not end them."""


class ShelfKind(StrEnum):
    ONE_SHOT = "one_shot"
    TIMED = "timed"


@dataclass(frozen=True, slots=True)
class Shelf:
    """An operator's shelving: one-shot (until the condition clears) or timed (until ``until``)."""

    kind: ShelfKind
    by: str
    until: int | None = None


@dataclass(frozen=True, slots=True)
class AlarmState:
    """One alarm's phase plus the conditions the phase is derived from."""

    phase: Phase = Phase.NORMAL
    active: bool = False
    suppressed: bool = False
    out_of_service: bool = False
    shelf: Shelf | None = None
    latching: bool = False


@dataclass(frozen=True, slots=True)
class Transition:
    """The audit record of one accepted event: what, from, to, when, who and why."""

    event: Event
    source: Phase
    target: Phase
    at: int
    by: str
    reason: str = ""


class AlarmError(Exception):
    """Base of the alarm area's errors.

    - ``IllegalTransition``: the event is not allowed in the alarm's phase (nothing changed).
      - ``ShelveRefused``: a timed shelve outside (0, maximum] (OPC UA Bad_ShelvingTimeOutOfRange).
    - ``UnknownAlarm`` (also a ``KeyError``): no live alarm has that id.
    - ``RuleError`` (in ``rules``, also a ``ValueError``): an invalid rule template or override.
    """


class IllegalTransition(AlarmError):
    """``event`` is not allowed in ``phase``; the alarm is unchanged."""

    def __init__(self, phase: Phase, event: Event, why: str = "") -> None:
        self.phase, self.event = phase, event
        super().__init__(f"cannot {event.value} an alarm that is {phase.value}" + (f": {why}" if why else ""))


class ShelveRefused(IllegalTransition):
    """A timed shelve for no time or for longer than the alarm's maximum."""


class UnknownAlarm(AlarmError, KeyError):
    """No live alarm has this id (it may have returned to normal and been retired)."""


_Guard = tuple[str, bool]
PRECONDITIONS: Final[dict[Event, tuple[str, _Guard]]] = {
    E.ACTIVATE: ("the condition is already active", ("active", False)),
    E.CLEAR: ("the condition is not active", ("active", True)),
    E.SUPPRESS: ("it is already suppressed", ("suppressed", False)),
    E.UNSUPPRESS: ("it is not suppressed", ("suppressed", True)),
    E.REMOVE_FROM_SERVICE: ("it is already out of service", ("out_of_service", False)),
    E.RETURN_TO_SERVICE: ("it is not out of service", ("out_of_service", True)),
    E.SHELVE_ONE_SHOT: ("it is already shelved", ("shelved", False)),
    E.SHELVE_TIMED: ("it is already shelved", ("shelved", False)),
    E.UNSHELVE: ("it is not shelved", ("shelved", True)),
    E.SHELVE_EXPIRED: ("it has no timed shelf", ("timed", True)),
}
"""Event → (why refused, (flag, required value)); flags are checked in overlay phases too."""


def _flag(state: AlarmState, name: str) -> bool:
    if name == "shelved":
        return state.shelf is not None
    if name == "timed":
        return state.shelf is not None and state.shelf.kind is ShelfKind.TIMED
    value: bool = getattr(state, name)
    return value


def target(state: AlarmState, event: Event) -> Phase | Settle | None:
    """The row for ``event`` in ``state``'s phase, or None if there is none."""
    if state.latching:
        row = LATCHING_TRANSITIONS.get(state.phase, {}).get(event)
        if row is not None:
            return row
    return TRANSITIONS[state.phase].get(event)


def allowed(state: AlarmState, event: Event) -> bool:
    """Whether ``apply`` would accept ``event`` (shelving durations aside)."""
    if target(state, event) is None:
        return False
    guard = PRECONDITIONS.get(event)
    return guard is None or _flag(state, guard[1][0]) is guard[1][1]


def settle(state: AlarmState) -> Phase:
    """The phase the conditions call for: the strongest overlay in force, else the process condition."""
    if state.out_of_service:
        return OOS
    if state.suppressed:
        return SUP
    if state.shelf is not None:
        return SH1 if state.shelf.kind is ShelfKind.ONE_SHOT else SHT
    return UA if state.active else N


def apply(
    state: AlarmState,
    event: Event,
    *,
    at: int,
    by: str,
    reason: str = "",
    duration_ms: int | None = None,
    max_shelve_ms: int = 8 * 3_600_000,
) -> tuple[AlarmState, Transition]:
    """Apply ``event`` at ``at`` (ms) on behalf of ``by``; the new state and its record.

    ``duration_ms`` is the length of a timed shelve, at most ``max_shelve_ms``. Raises
    ``IllegalTransition`` (or ``ShelveRefused``) and leaves ``state`` as it was when refused.
    """
    row = target(state, event)
    if row is None:
        why = "reset it instead" if event is E.ACK and state.phase is L else ""
        raise IllegalTransition(state.phase, event, why)
    guard = PRECONDITIONS.get(event)
    if guard is not None and _flag(state, guard[1][0]) is not guard[1][1]:
        raise IllegalTransition(state.phase, event, guard[0])
    new = _effect(state, event, at, by, duration_ms, max_shelve_ms)
    phase = settle(new) if row is SETTLE else row
    assert isinstance(phase, Phase)
    new = replace(new, phase=phase)
    return new, Transition(event, state.phase, phase, at, by, reason)


def _effect(
    state: AlarmState, event: Event, at: int, by: str, duration_ms: int | None, max_shelve_ms: int
) -> AlarmState:
    """The change ``event`` makes to the conditions (the phase is the table's business)."""
    if event is E.ACTIVATE:
        return replace(state, active=True)
    if event is E.CLEAR:
        one_shot = state.shelf is not None and state.shelf.kind is ShelfKind.ONE_SHOT
        return replace(state, active=False, shelf=None if one_shot else state.shelf)
    if event in (E.SUPPRESS, E.UNSUPPRESS):
        return replace(state, suppressed=event is E.SUPPRESS)
    if event in (E.REMOVE_FROM_SERVICE, E.RETURN_TO_SERVICE):
        return replace(state, out_of_service=event is E.REMOVE_FROM_SERVICE)
    if event is E.SHELVE_ONE_SHOT:
        return replace(state, shelf=Shelf(ShelfKind.ONE_SHOT, by))
    if event is E.SHELVE_TIMED:
        if duration_ms is None or not 0 < duration_ms <= max_shelve_ms:
            raise ShelveRefused(
                state.phase, event, f"duration must be within (0, {max_shelve_ms}] ms, got {duration_ms}"
            )
        return replace(state, shelf=Shelf(ShelfKind.TIMED, by, at + duration_ms))
    if event is E.SHELVE_EXPIRED:
        until = state.shelf.until if state.shelf is not None else None
        if until is not None and at < until:
            raise IllegalTransition(state.phase, event, f"the shelf runs until {until}")
        return replace(state, shelf=None)
    if event is E.UNSHELVE:
        return replace(state, shelf=None)
    return state  # ACK, RESET: only the phase changes
