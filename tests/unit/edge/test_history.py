"""The durable history: append order, bdSeq persistence, the bounds and their two counters."""

from __future__ import annotations

import math
from pathlib import Path

from tapline.domain.model import Reading
from tapline.edge.history import History

HOUR_MS = 3_600_000


def open_history(path: Path, max_rows: int = 1_000, max_age_ms: int = 24 * HOUR_MS) -> History:
    return History(path / "h.db", max_rows=max_rows, max_age_ms=max_age_ms)


def readings(ts: int, n: int, point: str = "plc/Flow") -> list[Reading]:
    return [Reading(point, ts + i, float(i)) for i in range(n)]


async def test_append_returns_contiguous_ids_and_rows_read_back_in_order(tmp_path: Path) -> None:
    history = open_history(tmp_path)
    assert await history.append([]) == (1, 0)
    assert await history.append(readings(1000, 3)) == (1, 3)
    assert await history.append([Reading("env/Flood", 2000, True)]) == (4, 4)
    rows = await history.after_id(1, 10)
    assert [r.id for r in rows] == [2, 3, 4]
    assert rows[-1].reading == Reading("env/Flood", 2000, 1)  # SQLite keeps booleans as 0/1
    assert [r.id for r in await history.after_id(0, 10, upto_id=2)] == [1, 2]
    assert [r.id for r in await history.between(1001, 2000, 0, 10)] == [2, 3]
    history.close()


async def test_rows_bd_seq_and_marks_survive_a_restart(tmp_path: Path) -> None:
    history = open_history(tmp_path)
    await history.append(readings(1000, 5))
    assert [history.next_bd_seq() for _ in range(3)] == [0, 1, 2]
    history.set_meta("resume_id", 4)
    history.save_state("interlocks", '{"tripped": ["Flood"]}')
    history.close()
    again = open_history(tmp_path)
    assert again.last_id == 5
    assert again.next_bd_seq() == 3
    assert again.meta("resume_id") == 4
    assert again.load_state("interlocks") == '{"tripped": ["Flood"]}'
    again.close()


async def test_bd_seq_wraps_after_255(tmp_path: Path) -> None:
    history = open_history(tmp_path)
    values = [history.next_bd_seq() for _ in range(258)]
    assert values[255:] == [255, 0, 1]
    history.close()


async def test_age_bound_counts_sent_rows_as_pruned_and_unsent_ones_as_dropped(tmp_path: Path) -> None:
    history = open_history(tmp_path, max_age_ms=HOUR_MS)
    await history.append(readings(0, 10))  # ids 1..10, one hour old by now
    await history.append(readings(2 * HOUR_MS, 5))  # ids 11..15, fresh
    result = await history.prune(2 * HOUR_MS, resume_id=6)
    assert (result.pruned, result.dropped) == (6, 4)  # ids 1..6 had left; 7..10 never did
    assert await history.count() == 5
    history.close()
    again = open_history(tmp_path, max_age_ms=HOUR_MS)
    assert (again.pruned, again.dropped) == (6, 4)  # persistent counters
    again.close()


async def test_row_bound_removes_oldest_telemetry_but_keeps_interlock_events(tmp_path: Path) -> None:
    history = open_history(tmp_path, max_rows=5)
    await history.append([Reading("Interlock/Flood/Active", 1, True)])  # id 1: an event
    await history.append(readings(2, 8))  # ids 2..9
    result = await history.prune(100, resume_id=100)  # everything was sent
    assert (result.pruned, result.dropped) == (4, 0)
    remaining = await history.after_id(0, 100)
    assert [r.id for r in remaining] == [1, 6, 7, 8, 9]
    result = await history.prune(100, resume_id=7)
    assert (result.pruned, result.dropped) == (0, 0)  # within bounds: nothing goes
    history.close()


async def test_nothing_is_removed_without_being_counted(tmp_path: Path) -> None:
    history = open_history(tmp_path, max_rows=1000, max_age_ms=HOUR_MS)
    await history.append(readings(0, 1500))
    await history.append(readings(2 * HOUR_MS, 1200))
    before = await history.count()
    result = await history.prune(2 * HOUR_MS, resume_id=1600)
    after = await history.count()
    assert before - after == result.pruned + result.dropped == 1700
    # by age: ids 1..1500 (all sent); by rows: ids 1501..1700, of which 1601..1700 were never sent
    assert (history.pruned, history.dropped) == (1600, 100)
    history.close()


async def test_a_nan_reading_survives_the_round_trip(tmp_path: Path) -> None:
    history = open_history(tmp_path)
    await history.append([Reading("wq/Chlorine", 5, math.nan)])
    (row,) = await history.after_id(0, 10)
    assert isinstance(row.reading.value, float)
    assert math.isnan(row.reading.value)
    history.close()
