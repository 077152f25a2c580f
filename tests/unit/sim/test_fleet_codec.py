"""The fleet's fast DDATA encoder writes exactly the reference encoder's bytes."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from tapline.domain.model import DataType, PointSpec, Quality, Reading, Value
from tapline.sim.fleet_codec import DeviceEncoder, varint
from tapline.sparkplug.edge_session import EdgeNodeSession

SPECS = [
    PointSpec("vfd1", "Frequency", DataType.FLOAT, "Hz", 0.0, 50.0),
    PointSpec("vfd1", "Power", DataType.FLOAT, "kW"),
    PointSpec("vfd1", "Running", DataType.BOOL),
    PointSpec("vfd1", "FaultCode", DataType.INT),
    PointSpec("vfd1", "Mode", DataType.INT, low=0, high=2),
]
_VALUES = {
    DataType.FLOAT: st.floats(allow_nan=False, width=64),
    DataType.BOOL: st.booleans(),
    DataType.INT: st.integers(min_value=-(2**63), max_value=2**63 - 1),
}


def _reference(values: Sequence[tuple[int, Value]], ts: int, births: int) -> tuple[bytes, bytes]:
    session = EdgeNodeSession("jianghan", "PR-0001", 3)
    session.nbirth([], ts)
    filler = [PointSpec("plc", f"P{k}", DataType.FLOAT) for k in range(births)]  # push aliases up
    session.dbirth("plc", [(spec, 0.0, ts) for spec in filler], ts)
    session.dbirth("vfd1", [(spec, None, ts) for spec in SPECS], ts)
    readings = []
    for index, value in values:
        spec = SPECS[index]
        out_of_range = (
            spec.low is not None
            and spec.high is not None
            and not isinstance(value, bool)
            and not spec.low <= value <= spec.high  # type: ignore[operator]
        )
        readings.append(Reading(spec.path, ts, value, Quality.UNCERTAIN if out_of_range else Quality.GOOD))
    _, reference = session.ddata("vfd1", readings, ts)
    aliases = [session.alias_of("vfd1", spec.name) or 0 for spec in SPECS]
    limits = [(s.low, s.high) if s.low is not None and s.high is not None else None for s in SPECS]
    encoder = DeviceEncoder(aliases, [spec.datatype for spec in SPECS], limits)
    assert session.seq is not None
    fast = encoder.encode(ts, session.seq, [i for i, _ in values], [v for _, v in values])
    return reference, fast


@given(
    picks=st.lists(st.integers(min_value=0, max_value=len(SPECS) - 1), min_size=1, max_size=12),
    data=st.data(),
    ts=st.integers(min_value=0, max_value=2**50),
    births=st.integers(min_value=0, max_value=300),
)
def test_fast_ddata_is_byte_identical_to_the_reference(
    picks: list[int], data: st.DataObject, ts: int, births: int
) -> None:
    values = [(index, data.draw(_VALUES[SPECS[index].datatype])) for index in picks]
    reference, fast = _reference(values, ts, births)
    assert fast == reference


def test_values_outside_the_range_carry_the_uncertain_property_like_the_reference() -> None:
    reference, fast = _reference([(0, 51.5), (4, 7), (0, -1.0), (1, 1e9)], 1_700_000_000_123, 2)
    assert fast == reference


def test_varint() -> None:
    assert varint(0) == b"\x00"
    assert varint(127) == b"\x7f"
    assert varint(300) == b"\xac\x02"
    assert varint(2**64 - 1) == b"\xff" * 9 + b"\x01"
