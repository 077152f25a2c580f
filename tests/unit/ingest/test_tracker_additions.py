"""What the host tracker gained for DESIGN §2a: replay confirmations, gaps never skipped silently, and a
sequence restarted behind a lost NBIRTH (tahu#373) detected by timestamp."""

from __future__ import annotations

from tapline.domain.model import Reading
from tapline.sparkplug.edge_session import EdgeNodeSession, Replay
from tapline.sparkplug.host_session import (
    Data,
    HostTracker,
    RejectCode,
    Rejected,
    ReplayDone,
    RequestRebirth,
    RequestReplay,
)

from .kit import POINTS

GROUP, NODE = "jianghan", "PR-0001"


def born(bd_seq: int = 1) -> tuple[EdgeNodeSession, HostTracker]:
    edge, host = EdgeNodeSession(GROUP, NODE, bd_seq), HostTracker(reorder_timeout_ms=1_000)
    host.on_message(*edge.nbirth([], 1_000), 1_000)
    host.on_message(
        *edge.dbirth("plc", [(s, 0.5 if s.name != "Mode" else 0, 1_000) for s in POINTS["plc"]], 1_000), 1_000
    )
    return edge, host


def flow(edge: EdgeNodeSession, ts: int) -> tuple[str, bytes]:
    return edge.ddata("plc", [Reading("plc/Flow", ts, 1.0)], ts)


def test_replay_confirmation_is_an_event_in_stream_order_and_only_once() -> None:
    edge, host = born()
    message = edge.replay_done(Replay(500, 900), 2_000)
    assert host.on_message(*message, 2_000) == [ReplayDone(GROUP, NODE, 500, 900)]
    assert host.on_message(*message, 2_001) == []  # a duplicate delivery confirms nothing twice


def test_a_gap_flushed_by_a_new_birth_asks_for_a_replay_from_before_the_gap() -> None:
    edge, host = born()
    host.on_message(*flow(edge, 2_000), 2_000)
    flow(edge, 3_000)  # lost
    host.on_message(*flow(edge, 4_000), 4_000)  # buffered behind the gap
    edge.rebirth()
    events = host.on_message(*edge.nbirth([], 5_000), 5_000)
    assert events[0] == RequestReplay(GROUP, NODE, 2_000)
    assert sum(isinstance(e, RequestReplay) for e in events) == 1


def test_sequence_restarted_behind_a_lost_nbirth_is_rejected_and_a_rebirth_requested() -> None:
    edge, host = born()
    for ts in range(2_000, 12_000, 1_000):
        host.on_message(*flow(edge, ts), ts)
    edge.rebirth()
    edge.nbirth([], 20_000)  # lost with its DBIRTH: the host never sees the new sequence start
    edge.dbirth("plc", [(s, None, 20_000) for s in POINTS["plc"]], 20_000)
    events = host.on_message(*flow(edge, 21_000), 21_000)  # seq 1: "behind", but newer than everything
    assert [type(e) for e in events] == [Rejected, RequestRebirth]
    assert isinstance(events[0], Rejected)
    assert events[0].code is RejectCode.SEQ_RESET


def test_a_genuinely_late_message_is_still_passed_on_as_a_duplicate() -> None:
    edge, host = born()
    late = flow(edge, 2_000)
    for ts in range(3_000, 6_000, 1_000):
        host.on_message(*flow(edge, ts), ts)
    host.on_tick(10_000)  # the gap left by ``late`` times out
    events = host.on_message(*late, 10_500)
    assert [type(e) for e in events] == [Data]
    assert isinstance(events[0], Data)
    assert events[0].duplicate


def test_oversized_payload_is_rejected_before_decoding() -> None:
    host = HostTracker(max_payload=10)
    [event] = host.on_message(f"spBv1.0/{GROUP}/NDATA/{NODE}", b"x" * 11, 1)
    assert isinstance(event, Rejected)
    assert event.code is RejectCode.OVERSIZED
    assert event.payload == b"x" * 11
