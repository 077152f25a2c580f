"""Builders shared by the Sparkplug unit tests."""

from __future__ import annotations

from tapline.domain.model import DataType, PointSpec
from tapline.sparkplug.codec import Metric, Payload, SpDataType, encode_payload
from tapline.sparkplug.edge_session import BirthValue

GROUP = "jianghan"
NODE = "PR-0001"

OUTLET = PointSpec("plc", "OutletPressure", DataType.FLOAT, "MPa", 0.0, 1.6)
MODE = PointSpec("plc", "Mode", DataType.INT, writable=True)
SETPOINT = PointSpec("plc", "OutletPressureSP", DataType.FLOAT, "MPa", 0.2, 0.8, writable=True)
RUNNING = PointSpec("vfd1", "Running", DataType.BOOL)
FAULT_TEXT = PointSpec("vfd1", "FaultText", DataType.STRING)
UPTIME = PointSpec("edge", "Uptime", DataType.INT, "s")


def plc_points(ts: int = 1_000) -> list[BirthValue]:
    return [(OUTLET, 0.45, ts), (MODE, 0, ts), (SETPOINT, 0.5, ts)]


def vfd_points(ts: int = 1_000) -> list[BirthValue]:
    return [(RUNNING, True, ts), (FAULT_TEXT, None, ts)]


def payload(seq: int | None, *metrics: Metric, timestamp: int | None = 1_000) -> bytes:
    return encode_payload(Payload(timestamp=timestamp, seq=seq, metrics=metrics))


def nbirth_payload(bd_seq: int, seq: int = 0) -> bytes:
    return payload(
        seq,
        Metric("bdSeq", timestamp=1, datatype=SpDataType.Int64, value=bd_seq),
        Metric("Node Control/Rebirth", timestamp=1, datatype=SpDataType.Boolean, value=False),
    )


def ndeath_payload(bd_seq: int) -> bytes:
    return payload(None, Metric("bdSeq", datatype=SpDataType.Int64, value=bd_seq), timestamp=None)


def topic(kind: str, device: str | None = None, node: str = NODE) -> str:
    base = f"spBv1.0/{GROUP}/{kind}/{node}"
    return base if device is None else f"{base}/{device}"
