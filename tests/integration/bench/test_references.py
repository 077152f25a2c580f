"""The ``bench ingest`` references through the real Mosquitto, small and on topics of their own: R2
with decode and R7 on their own, then every reference wired as ``measure_references`` runs them."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest

from tapline.bench.ingest import IngestBench, ReferenceCounts, measure_references
from tapline.bench.references import MessageShape, python_decode_reference, transport_latency_reference
from tapline.mqtt import BrokerUrl

pytestmark = pytest.mark.mosquitto

SHAPE = MessageShape(payload_bytes=209, values_per_message=10.0)


def test_decode_reference_decodes_every_message_it_was_sent(mqtt_url: str, unique_group: str) -> None:
    result = python_decode_reference(BrokerUrl.parse(mqtt_url), SHAPE, 3_000, unique_group)
    assert result["sent"] == result["received"] == 3_000  # the window keeps the broker from dropping
    assert result["values"] == 30_000
    assert result["general_decoder"] == 0  # fleet DDATA: the ingest's fast path
    assert result["payload_bytes"] == pytest.approx(SHAPE.payload_bytes, abs=10)
    assert result["values_per_s"] > 0
    assert result["values_per_s"] == pytest.approx(result["messages_per_s"] * 10, rel=0.01)


def test_transport_latency_reference_times_every_message(mqtt_url: str, unique_group: str) -> None:
    result = transport_latency_reference(BrokerUrl.parse(mqtt_url), SHAPE, 200.0, 1.0, unique_group)
    assert result["sent"] == result["received"] == 200
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["max_ms"] < 2_000  # loopback: even a busy shared box delivers within a second or two


def test_measure_references_reports_r2_decode_and_r7_beside_the_others(
    mqtt_url: str, unique_group: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tapline.bench import writer_ref
    from tapline.runtime import GC_THRESHOLDS

    seen: list[tuple[int, ...]] = []
    real = writer_ref.writer_reference

    async def spy(db: str, count: int) -> dict[str, Any]:
        seen.append(gc.get_threshold())
        return await real(db, count)

    monkeypatch.setattr(writer_ref, "writer_reference", spy)
    fleet = tmp_path / "fleet.json"
    fleet.write_text(
        json.dumps({"messages_per_s": 300.0, "bytes_per_s": 300.0 * 209, "values_per_s": 3_000.0})
    )
    bench = IngestBench(
        sites=10, points=10, interval=1.0, duration=1.0, broker=mqtt_url, db=f"sqlite:///{tmp_path / 'x.db'}"
    )
    counts = ReferenceCounts(messages=2_000, decoded_messages=2_000, latency_s=1.0)
    thresholds = gc.get_threshold()
    out = measure_references(bench, fleet, unique_group, 1_000, 2_000.0, 25.0, counts)
    assert gc.get_threshold() == thresholds  # R5w ran under serve's GC settings, then they were restored
    assert out["storage_writer"]["gc_tuned"] is bench.gc_tuned is True
    assert seen == [GC_THRESHOLDS]
    decode = out["python_decode"]
    assert decode["received"] == 2_000
    assert out["ratio_r2_decode"] == round(2_000.0 / decode["values_per_s"], 4)
    assert out["transport_latency"]["rate_per_s"] == 300  # the run's message rate
    assert out["transport_latency"]["received"] == 300
    assert out["r7_p50_ms"] == out["transport_latency"]["p50_ms"]
    assert out["r7_p99_ms"] == out["transport_latency"]["p99_ms"] > 0
    assert out["ratio_alarm_p99_r7"] == round(25.0 / out["r7_p99_ms"], 1)
    for name in ("ratio_broker", "ratio_python_receive", "ratio_copy", "ratio_writer_copy", "ratio_naive"):
        assert out[name] is not None, name
    assert out["storage_writer"]["rows"] == 1_000  # the run's row count, through the real writer
