"""Pure helpers of ``tapline bench``: /proc parsing, loss accounting, percentiles."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tapline.bench.ingest import account_loss, percentile
from tapline.bench.procstat import cpu_seconds, parse_stat_cpu_ticks, parse_status_kb, rss_mb

STAT = "4242 (odd ) name) S 1 4242 4242 0 -1 4194560 900 0 0 0 170 30 0 0 20 0 1 0 100 1000 50"


def test_stat_fields_are_counted_after_the_last_parenthesis() -> None:
    assert parse_stat_cpu_ticks(STAT) == 200


def test_status_values_in_kb() -> None:
    status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n"
    assert parse_status_kb(status, "VmRSS") == 1024
    assert parse_status_kb(status, "VmHWM") == 2048
    assert parse_status_kb(status, "VmSwap") is None


def test_proc_readers_on_a_fake_tree(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "stat").write_text(STAT)
    (tmp_path / "4242" / "status").write_text("VmRSS:\t2048 kB\n")
    assert cpu_seconds([4242, 9999], proc=tmp_path) > 0  # a gone pid counts 0
    assert rss_mb(4242, proc=tmp_path) == 2.0
    assert rss_mb(9999, proc=tmp_path) is None


def test_loss_accounting() -> None:
    recorded = [("PR-1", "p", 1), ("PR-1", "p", 2), ("PR-1", "p", 2), ("PR-2", "q", 1)]
    stored = [("PR-1", "p", 1), ("PR-1", "p", 1), ("PR-2", "q", 1), ("PR-3", "z", 5)]
    loss = account_loss(recorded, stored)
    assert (loss.recorded, loss.stored) == (3, 4)
    assert (loss.lost, loss.duplicated, loss.unexpected) == (1, 1, 1)


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    assert percentile([5.0], 99) == 5.0


def test_machine_busy_ticks_exclude_idle_and_iowait() -> None:
    from tapline.bench.procstat import parse_proc_stat_busy_ticks

    assert parse_proc_stat_busy_ticks("cpu  10 1 5 1000 7 2 3 4 0 0\ncpu0 1 2 3 4 5 6 7 8\n") == 25


def test_naive_pipeline_payloads_have_the_fleet_shape() -> None:
    from tapline.bench.naive import payloads
    from tapline.sparkplug.codec import decode_payload

    data = payloads(10, distinct=3)
    assert len(data) == 3
    decoded = decode_payload(data[0])
    assert len(decoded.metrics) == 10
    assert all(isinstance(m.value, float) and m.alias is not None for m in decoded.metrics)


def test_alarm_latency_times_events_from_data_and_time_since_their_sample() -> None:
    from tapline.alarms.engine import AlarmEngine
    from tapline.bench.ingest import AlarmLatency
    from tapline.domain.model import Reading

    engine = AlarmEngine()
    latency = AlarmLatency()
    latency.watch(engine)
    now = int(time.time() * 1000)
    sampled = now - 120_000  # a flood sampled 2 min ago reaches the engine now (past any on-delay)
    events = engine.evaluate("PR-0001", "jianghan", [Reading("env/Flood", sampled, True)], now)
    events += engine.tick(now)
    assert events  # returned unchanged to the ingest
    assert len(latency.latencies_ms) == len(events)
    assert max(latency.latencies_ms) >= 120_000 - 5_000 - 1  # the flood rule's 5 s on-delay
    assert min(latency.latencies_ms) > 0
    engine.evaluate("PR-0001", "jianghan", [], sampled)  # no events, nothing timed
    assert len(latency.latencies_ms) == len(events)
