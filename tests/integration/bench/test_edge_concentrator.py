"""``tapline bench edge --layout concentrator`` through the CLI: the gateway reads a 4-pump room's 80 points
through the simulator's real Modbus TCP server in at most 4 block reads a cycle (the bench's tap counts
them on the wire). Short run; no timing asserted."""

from __future__ import annotations

import json
from pathlib import Path

from tapline import cli


def test_bench_edge_concentrator_reads_80_points_in_at_most_4_blocks(tmp_path: Path) -> None:
    out = tmp_path / "edge.json"
    args = ["--log-level", "warning", "bench", "edge", "--layout", "concentrator"]
    args += ["--duration", "5", "--warmup", "3", "--json", str(out)]
    assert cli.main(args) == 0
    result = json.loads(out.read_text())
    assert result["layout"] == "concentrator"
    assert result["points"] == 80
    assert (result["devices_count"], result["units_count"]) == (8, 1)
    assert result["unknown_units"] == []
    reads = result["block_reads_per_cycle"]
    assert reads["planned_full"] <= 4
    assert reads["planned_fast"] <= reads["planned_full"]
    assert reads["measured_scan_max"] <= 4  # measured on the wire, every fast period of the window
    assert reads["measured_scan_median"] == reads["planned_fast"]
    (unit,) = result["units"].values()
    assert unit["cycles"] > 0
    assert unit["reads_per_cycle_max"] <= 4
    for name, device in result["devices"].items():  # every device born with every point of its slice
        assert device["points_in_birth"] == device["points"], name
    gateway = result["gateway"]
    assert gateway["births"] == 1
    assert gateway["log_warnings"] == 0
