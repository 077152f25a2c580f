"""The fleet's record: what was written is read back exactly, also across concatenated parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapline.domain.model import DataType
from tapline.sim.fleet_record import RecordError, RecordWriter, merge_parts, read_record


def _write(path: Path, site_index: int, site: str, start_ts: int, rows: int) -> None:
    writer = RecordWriter(path)
    writer.node(site_index, site, "jianghan")
    writer.point(site_index, 0, "plc/OutletPressure", DataType.FLOAT)
    writer.point(site_index, 1, "vfd1/Running", DataType.BOOL)
    writer.point(site_index, 2, "vfd1/Starts", DataType.INT)
    for row in range(rows):
        writer.values_at(
            site_index, start_ts + row, [0, 1, 2], [0.45 + row / 1000, row % 2 == 0, 2**40 + row]
        )
    writer.close()


def test_values_come_back_with_names_types_and_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "fleet.rec"
    _write(path, 7, "PR-0008", 1_700_000_000_000, 30_000)  # past the writer's flush size
    values = list(read_record(path))
    assert len(values) == 90_000
    first = values[:3]
    assert [(v.site, v.group, v.point, v.ts) for v in first] == [
        ("PR-0008", "jianghan", "plc/OutletPressure", 1_700_000_000_000),
        ("PR-0008", "jianghan", "vfd1/Running", 1_700_000_000_000),
        ("PR-0008", "jianghan", "vfd1/Starts", 1_700_000_000_000),
    ]
    assert [v.value for v in first] == [0.45, True, 2**40]
    assert type(first[2].value) is int
    assert values[-1].value == 2**40 + 29_999


def test_parts_of_several_processes_merge_into_one_readable_file(tmp_path: Path) -> None:
    parts = [tmp_path / "r.part0", tmp_path / "r.part1"]
    _write(parts[0], 0, "PR-0001", 1000, 5)
    _write(parts[1], 1, "PR-0002", 2000, 5)
    merge_parts(parts, tmp_path / "r")
    assert not any(part.exists() for part in parts)
    sites = [v.site for v in read_record(tmp_path / "r")]
    assert sites.count("PR-0001") == sites.count("PR-0002") == 15


def test_a_file_that_is_not_a_record_is_refused(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "junk.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(b"Zhello")
    with pytest.raises(RecordError):
        list(read_record(path))
