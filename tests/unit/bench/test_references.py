"""Pure parts of the ``bench ingest`` references: R7's latency lines, its rate, R2-with-decode's decode,
and the §9 ratios."""

from __future__ import annotations

import random

import pytest

from tapline.bench.ingest import percentile, reference_ratios
from tapline.bench.naive import payloads
from tapline.bench.references import _quantile_ms, decoded_values, latency_rate, stamped_latencies_ms
from tapline.sparkplug.codec import Metric, Payload, SpDataType, encode_payload


def test_latency_is_the_subscribers_receive_time_minus_the_stamp_in_the_payload() -> None:
    lines = [
        b"1795893646.536691974 warm xxxx\n",  # the warm-up: no stamp
        b"1795893646.536691974 1795893646433864734 xxxx\n",
        b"1795893646.5 1795893646000000000 x\n",  # a short fraction is tenths, not nanoseconds
        b"garbage\n",
        b"1795893646.536691974 1795893646536691974\n",  # no filler, zero latency
    ]
    assert stamped_latencies_ms(lines) == pytest.approx([102.82724, 500.0, 0.0])


def test_latency_rate_follows_the_run_within_bounds() -> None:
    assert latency_rate(800.0) == 800.0
    assert latency_rate(3.0) == 100.0  # a tiny run still gives a few hundred latencies for a p99
    assert latency_rate(40_000.0) == 10_000.0


def test_latency_quantiles_are_the_benchs_percentiles() -> None:
    values = [random.Random(7).expovariate(1.0) for _ in range(501)]
    for q in (50, 99):
        expected = percentile(values, q)
        assert expected is not None
        assert _quantile_ms(values, q) == round(expected, 3)
    assert _quantile_ms([], 99) is None
    assert _quantile_ms([1.23456], 99) == 1.235


def test_decode_reads_fleet_ddata_on_the_fast_path() -> None:
    data = payloads(10, distinct=2)
    assert [decoded_values(payload) for payload in data] == [(10, True), (10, True)]


def test_decode_falls_back_to_the_general_decoder_like_the_ingest() -> None:
    named = Payload(1_767_225_600_000, 3, (Metric(name="plc/P001", datatype=SpDataType.Double, value=1.5),))
    assert decoded_values(encode_payload(named)) == (1, False)


def test_ratios_divide_the_stored_rate_by_each_reference() -> None:
    references = {
        "broker": {"values_per_s": 400_000},
        "python_receive": {"values_per_s": 200_000},
        "python_decode": {"values_per_s": 50_000},
        "db_copy": {"values_per_s": None},
        "naive_pipeline": {"error": "no values"},
        "r7_p99_ms": 0.5,
    }
    ratios = reference_ratios(references, 40_000.0, 120.0)
    assert ratios == {
        "ratio_broker": 0.1,
        "ratio_python_receive": 0.2,
        "ratio_r2_decode": 0.8,
        "ratio_copy": None,
        "ratio_writer_copy": None,
        "ratio_naive": None,
        "ratio_alarm_p99_r7": 240.0,
    }
    assert reference_ratios({"r7_p99_ms": None}, 1.0, 120.0)["ratio_alarm_p99_r7"] is None
    writer = {"storage_writer": {"values_per_s": 150_000}, "db_copy": {"values_per_s": 300_000}}
    assert reference_ratios(writer, 1.0, None)["ratio_writer_copy"] == 0.5
    assert reference_ratios({"r7_p99_ms": 0.5}, 1.0, None)["ratio_alarm_p99_r7"] is None
