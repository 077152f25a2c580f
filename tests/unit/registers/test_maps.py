"""Register-map validation: errors name the file, the field and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapline.registers.maps import MapError, load_map_file


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "device.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_overlapping_points_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "model: x\npoints:\n"
        "  - {name: A, table: input, address: 0, type: float32}\n"
        "  - {name: B, table: input, address: 1, type: uint16}\n",
    )
    with pytest.raises(MapError, match="B overlaps A"):
        load_map_file(path)


def test_error_names_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "model: x\npoints:\n  - {name: A, table: input, address: -1, type: uint16}\n")
    with pytest.raises(MapError) as info:
        load_map_file(path)
    assert str(path) in str(info.value)
    assert "points.0.address" in str(info.value)


def test_writable_input_register_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path, "model: x\npoints:\n  - {name: A, table: input, address: 0, type: uint16, writable: true}\n"
    )
    with pytest.raises(MapError, match="cannot be writable"):
        load_map_file(path)


def test_bool_on_register_table_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "model: x\npoints:\n  - {name: A, table: holding, address: 0, type: bool}\n")
    with pytest.raises(MapError, match="does not fit"):
        load_map_file(path)


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path, "model: x\npoints:\n  - {name: A, table: input, address: 0, type: uint16, scael: 2}\n"
    )
    with pytest.raises(MapError, match="scael"):
        load_map_file(path)


def test_unreadable_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "model: [unclosed\n")
    with pytest.raises(MapError, match="cannot read"):
        load_map_file(path)
