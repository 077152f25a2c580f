"""Bad input never crashes the ingest: counted by reason, kept as a dead letter, visible in /metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapline.ingest.host import IngestSettings
from tapline.ingest.metrics import Exposition
from tapline.mqtt import Message
from tapline.sparkplug.codec import Metric, Payload, encode_payload
from tapline.store.relational import MAX_DEAD_LETTER_PAYLOAD

from .kit import Clock, EdgeDouble, deliver, open_host, sqlite_url
from .test_exactly_once import memory_host

GROUP, NODE = "jianghan", "PR-0001"
DDATA = f"spBv1.0/{GROUP}/DDATA/{NODE}/plc"


def ddata(seq: int | None, *metrics: Metric) -> bytes:
    return encode_payload(Payload(timestamp=1_700_000_001_000, seq=seq, metrics=metrics))


def metrics_text(service: object) -> str:
    out = Exposition()
    service.collect(out)  # type: ignore[attr-defined]
    return out.text()


BAD_INPUT = [
    pytest.param(DDATA, b"\x0a\xff\xff\xff", "malformed", id="malformed-protobuf"),
    pytest.param(f"spBv1.0/{GROUP}/NOPE/{NODE}", b"", "unknown_topic", id="unknown-verb"),
    pytest.param("factory/line1/temperature", b"21.5", "unknown_topic", id="foreign-topic"),
    pytest.param(DDATA, b"\x00" * 5_000, "oversized", id="oversized"),
    pytest.param(DDATA, ddata(3, Metric(alias=1, value="not a number")), "wrong_type", id="wrong-type"),
    pytest.param(DDATA, ddata(3, Metric(alias=999, value=1.5)), "unknown_metric", id="unknown-alias"),
    pytest.param(
        f"spBv1.0/{GROUP}/DDATA/PR-0099/plc",
        ddata(1, Metric(alias=1, value=1.0)),
        "before_birth",
        id="before-birth",
    ),
    pytest.param(
        f"spBv1.0/{GROUP}/NDATA/{NODE}", ddata(None, Metric(alias=1, value=1.0)), "no_seq", id="no-seq"
    ),
]


@pytest.mark.parametrize(("topic", "payload", "reason"), BAD_INPUT)
async def test_bad_message_is_counted_kept_as_dead_letter_and_shown_in_metrics(
    tmp_path: Path, topic: str, payload: bytes, reason: str
) -> None:
    clock = Clock()
    host = await open_host(sqlite_url(tmp_path), clock, IngestSettings(max_payload=4_096))
    edge = EdgeDouble(GROUP, NODE)
    await deliver(host.service, edge.births(clock.now))
    await host.service.on_message(Message(topic, payload))  # must not raise
    await deliver(host.service, edge.record(clock.now + 5_000))  # and the loop goes on
    await host.service.flush()
    assert host.service.counters.rejected_by_code == {reason: 1}
    [letter] = await host.relational.dead_letters()
    assert (letter.topic, letter.reason, letter.payload, letter.payload_size) == (
        topic,
        reason,
        payload,
        len(payload),
    )
    assert f'tapline_ingest_rejected_by_reason_total{{reason="{reason}"}} 1' in metrics_text(host.service)
    assert host.service.counters.stored > 0
    await host.close()


async def test_dead_letters_are_bounded_in_payload_size_and_number(tmp_path: Path) -> None:
    clock = Clock()
    settings = IngestSettings(max_payload=MAX_DEAD_LETTER_PAYLOAD, dead_letter_buffer=3, dead_letter_keep=2)
    host = await open_host(sqlite_url(tmp_path), clock, settings)
    huge = b"\x01" * (2 * MAX_DEAD_LETTER_PAYLOAD)
    for _ in range(5):
        await host.service.on_message(Message(DDATA, huge))
    await host.service.flush()
    letters = await host.relational.dead_letters()
    assert len(letters) == 3
    assert host.service.counters.dead_letters_dropped == 2
    assert {(len(d.payload), d.payload_size) for d in letters} == {(MAX_DEAD_LETTER_PAYLOAD, len(huge))}
    assert await host.relational.prune_dead_letters(settings.dead_letter_keep) == 1
    await host.close()


@settings(max_examples=300, deadline=None)
@given(
    topic=st.one_of(
        st.text(max_size=60),
        st.builds(
            lambda verb, node, device: "/".join(["spBv1.0", GROUP, verb, node, *device]),
            st.sampled_from(["NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "STATE", "X"]),
            st.sampled_from([NODE, "PR-0002", "", "+"]),
            st.lists(st.sampled_from(["plc", "vfd1", "#"]), max_size=2),
        ),
    ),
    payload=st.binary(max_size=300),
)
async def test_any_bytes_on_any_topic_never_raise(topic: str, payload: bytes) -> None:
    clock = Clock()
    host, _, _ = await memory_host(clock)
    edge = EdgeDouble(GROUP, NODE)
    await deliver(host, edge.births(clock.now))
    await host.on_message(Message(topic, payload))
    await deliver(host, edge.record(clock.now + 1))
    await host.tick()
    await host.flush()
    assert host.counters.messages == 6
