"""CommitMarks, the pure core of DESIGN §2a: where each node's committed mark is and what replays are owed."""

from __future__ import annotations

from tapline.ingest.marks import CommitMarks, ReplayOrder, ReplayUnconfirmed
from tapline.store.relational import NodeMark

KEY = ("jianghan", "PR-0001")
MARGIN = 1_000


def marks() -> CommitMarks:
    return CommitMarks(margin_ms=MARGIN, confirm_timeout_ms=5_000, max_attempts=2)


def test_mark_follows_contiguous_live_data_only_once_written() -> None:
    m = marks()
    m.live(KEY, 10_000)
    cut = m.cut()
    m.live(KEY, 11_000)  # arrives after the cut: belongs to the next batch
    assert m.committed(KEY) is None  # nothing written yet
    assert m.written(cut) == [NodeMark("jianghan", "PR-0001", 10_000)]
    assert m.committed(KEY) == 10_000
    assert m.written(m.cut()) == [NodeMark("jianghan", "PR-0001", 11_000)]


def test_mark_never_moves_back_and_unchanged_marks_are_not_persisted_again() -> None:
    m = marks()
    m.load([NodeMark("jianghan", "PR-0001", 20_000)])
    m.live(KEY, 15_000)  # older data in a new session (clock skew, late device)
    assert m.cut() == {}
    assert m.written({KEY: 19_000}) == []
    assert m.committed(KEY) == 20_000


def test_gap_pins_the_mark_at_the_hole_and_asks_for_a_replay_with_margin() -> None:
    m = marks()
    m.live(KEY, 10_000)
    m.written(m.cut())
    order = m.gap(KEY, 10_000, now_ms=50_000)
    assert order == ReplayOrder("jianghan", "PR-0001", 10_000 - MARGIN, attempt=1)
    m.live(KEY, 30_000)  # live data keeps coming after the gap
    m.written(m.cut())
    assert m.committed(KEY) == 10_000  # pinned: data after 10 s may be missing
    assert m.replay_done(KEY, 10_000 - MARGIN)
    m.written(m.cut())
    assert m.committed(KEY) == 30_000
    assert m.hole(KEY) is None


def test_only_the_newest_request_confirmation_closes_the_hole() -> None:
    m = marks()
    m.live(KEY, 10_000)
    first = m.gap(KEY, 10_000, now_ms=1)
    second = m.gap(KEY, 12_000, now_ms=2)  # another loss while the first replay runs
    assert first is not None
    assert second is not None
    assert second.from_ms == first.from_ms - 1  # distinct, so a confirmation names one request
    assert not m.replay_done(KEY, first.from_ms)
    assert m.hole(KEY) == 10_000
    assert m.replay_done(KEY, second.from_ms)
    assert m.hole(KEY) is None


def test_host_restart_replays_from_the_persisted_mark_and_a_new_node_from_nothing() -> None:
    m = marks()
    m.load([NodeMark("jianghan", "PR-0001", 7_000)])
    assert m.gap(KEY, None, now_ms=1) == ReplayOrder("jianghan", "PR-0001", 7_000 - MARGIN, 1)
    assert m.gap(("jianghan", "PR-0002"), None, now_ms=1) is None


def test_death_opens_the_hole_at_the_frontier() -> None:
    m = marks()
    m.live(KEY, 10_000)
    m.offline(KEY)
    m.live(KEY, 40_000)  # the next session's birth values
    order = m.gap(KEY, 10_000, now_ms=1)
    assert order is not None
    assert order.from_ms == 10_000 - MARGIN
    m.written(m.cut())
    assert m.committed(KEY) == 10_000


def test_unconfirmed_request_is_retried_after_silence_then_given_up() -> None:
    m = marks()
    m.live(KEY, 10_000)
    first = m.gap(KEY, 10_000, now_ms=0)
    assert first is not None
    m.historical(KEY, now_ms=4_000)  # replay data flowing: not silent
    assert m.due(now_ms=8_000) == []
    [retry] = m.due(now_ms=9_000)
    assert retry == ReplayOrder("jianghan", "PR-0001", first.from_ms - 1, attempt=2)
    assert m.due(now_ms=20_000) == [ReplayUnconfirmed("jianghan", "PR-0001", 10_000, attempts=2)]
    assert m.hole(KEY) is None
    assert m.due(now_ms=99_000) == []


def test_shed_values_open_a_hole_asked_for_only_when_the_store_recovers() -> None:
    m = marks()
    m.live(KEY, 10_000)
    m.shed(KEY, oldest_ts=12_000)
    assert m.hole(KEY) == 10_000
    assert m.gap(KEY, 10_000, now_ms=1) is None  # not while shedding
    assert m.recovered(now_ms=2) == [ReplayOrder("jianghan", "PR-0001", 10_000 - MARGIN, 1)]
    assert m.recovered(now_ms=3) == []


def test_shed_historical_values_older_than_the_frontier_widen_the_hole() -> None:
    m = marks()
    m.live(KEY, 10_000)
    m.shed(KEY, oldest_ts=3_000)
    assert m.hole(KEY) == 3_000
    assert m.open_holes() == 1


def test_shedding_spoils_the_outstanding_request() -> None:
    m = marks()
    m.live(KEY, 10_000)
    order = m.gap(KEY, 10_000, now_ms=1)
    assert order is not None
    m.shed(KEY, oldest_ts=2_000)  # part of the replay itself was dropped
    assert not m.replay_done(KEY, order.from_ms)
    assert m.due(now_ms=10**9) == []  # no retries while shedding
    [again] = m.recovered(now_ms=2)
    assert again.from_ms == 2_000 - MARGIN
    assert m.replay_done(KEY, again.from_ms)


def test_rejected_data_spoils_the_request_and_is_asked_again_without_giving_up() -> None:
    m = marks()
    m.live(KEY, 10_000)
    order = m.gap(KEY, 10_000, now_ms=0)
    assert order is not None
    m.live(KEY, 20_000)
    m.lost(KEY, 0)  # e.g. replayed DDATA rejected: its device's DBIRTH was lost
    assert m.hole(KEY) == 10_000
    assert not m.replay_done(KEY, order.from_ms)
    for now in (5_000, 10_000, 15_000):  # spoiled requests are retried, never given up on
        [again] = m.due(now_ms=now)
        assert isinstance(again, ReplayOrder)
        assert again.attempt == 1
        m.lost(KEY, now)
    [last] = m.due(now_ms=20_000)
    assert isinstance(last, ReplayOrder)
    assert m.replay_done(KEY, last.from_ms)


def test_rejected_data_without_a_request_is_asked_for_after_the_confirm_timeout() -> None:
    m = marks()
    m.live(KEY, 10_000)
    m.lost(KEY, 1_000)  # a DDATA for an unborn device: the tracker asks for a rebirth first
    assert m.due(now_ms=5_999) == []
    [order] = m.due(now_ms=6_000)
    assert isinstance(order, ReplayOrder)
    assert order.from_ms == 10_000 - MARGIN
