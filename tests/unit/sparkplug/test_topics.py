"""Topic namespace and STATE payload (Sparkplug B 3.0 Topics chapter)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tapline.sparkplug.errors import PayloadError, TopicError
from tapline.sparkplug.topics import MessageType, Topic, parse_state, state_payload, state_topic

ids = st.text(st.characters(exclude_characters="/+#\x00", exclude_categories=["Cs"]), min_size=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spBv1.0/jianghan/NBIRTH/PR-0001", Topic("jianghan", MessageType.NBIRTH, "PR-0001")),
        ("spBv1.0/jianghan/NDEATH/PR-0001", Topic("jianghan", MessageType.NDEATH, "PR-0001")),
        ("spBv1.0/jianghan/NDATA/PR-0001", Topic("jianghan", MessageType.NDATA, "PR-0001")),
        ("spBv1.0/jianghan/NCMD/PR-0001", Topic("jianghan", MessageType.NCMD, "PR-0001")),
        ("spBv1.0/qiaokou/DBIRTH/PR-0002/vfd1", Topic("qiaokou", MessageType.DBIRTH, "PR-0002", "vfd1")),
        ("spBv1.0/qiaokou/DDEATH/PR-0002/vfd1", Topic("qiaokou", MessageType.DDEATH, "PR-0002", "vfd1")),
        ("spBv1.0/qiaokou/DDATA/PR-0002/plc", Topic("qiaokou", MessageType.DDATA, "PR-0002", "plc")),
        ("spBv1.0/qiaokou/DCMD/PR-0002/plc", Topic("qiaokou", MessageType.DCMD, "PR-0002", "plc")),
        ("spBv1.0/STATE/tapline", Topic("", MessageType.STATE, "tapline")),
    ],
)
def test_tck_id_topic_structure_parse_and_format(text: str, expected: Topic) -> None:
    assert Topic.parse(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "spAv1.0/g/NBIRTH/n",
        "spBv1.0/g/NBIRTH",
        "spBv1.0/g/NBIRTH/n/d",  # node type with a device
        "spBv1.0/g/DDATA/n",  # device type without a device
        "spBv1.0/g/NFOO/n",
        "spBv1.0/g/STATE/n",
        "spBv1.0//NDATA/n",
        "spBv1.0/g/NDATA/",
        "spBv1.0/g/DDATA/n/d/extra",
        "spBv1.0/STATE",
        "spBv1.0/STATE/",
        "spBv1.0/STATE/a/b",
        "spBv1.0/g+/NDATA/n",
        "spBv1.0/g/NDATA/n#",
        "spbv1.0/g/NDATA/n",
    ],
)
def test_tck_id_topic_structure_invalid_topics_raise(text: str) -> None:
    with pytest.raises(TopicError):
        Topic.parse(text)


def test_topic_constructor_validates() -> None:
    with pytest.raises(TopicError):
        Topic("g", MessageType.DDATA, "n")
    with pytest.raises(TopicError):
        Topic("g", MessageType.NDATA, "n", "d")
    with pytest.raises(TopicError):
        Topic("g/x", MessageType.NDATA, "n")
    with pytest.raises(TopicError):
        Topic("g", MessageType.STATE, "host")


@given(group=ids, node=ids, device=ids, message_type=st.sampled_from(list(MessageType)))
def test_topic_round_trip(group: str, node: str, device: str, message_type: MessageType) -> None:
    if message_type is MessageType.STATE:
        topic = Topic("", message_type, node)
    elif message_type.value.startswith("D"):
        topic = Topic(group, message_type, node, device)
    else:
        topic = Topic(group, message_type, node)
    assert Topic.parse(str(topic)) == topic


@given(st.text())
def test_parse_random_text_raises_only_topic_error(text: str) -> None:
    with contextlib.suppress(TopicError):
        Topic.parse(text)


def test_tck_id_operational_behavior_host_application_connect_birth_topic() -> None:
    assert state_topic("tapline") == "spBv1.0/STATE/tapline"
    with pytest.raises(TopicError):
        state_topic("a/b")


def test_tck_id_operational_behavior_host_application_connect_birth_payload() -> None:
    payload = state_payload(True, 1_700_000_000_000)
    assert json.loads(payload) == {"online": True, "timestamp": 1_700_000_000_000}
    assert parse_state(payload) == (True, 1_700_000_000_000)
    assert parse_state(state_payload(False, 5)) == (False, 5)


def test_parse_state_ignores_extra_keys() -> None:
    assert parse_state(b'{"online": false, "timestamp": 7, "bdSeq": 3}') == (False, 7)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b"null",
        b'{"online": "yes", "timestamp": 1}',
        b'{"online": true}',
        b'{"online": true, "timestamp": -1}',
        b'{"online": true, "timestamp": true}',
        b'{"online": true, "timestamp": 1.5}',
        b'{"online": true, "timestamp": "1"}',
        b"[" * 100_000,
    ],
)
def test_parse_state_rejects_junk(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_state(payload)


@given(st.binary())
def test_parse_state_fuzz_raises_only_payload_error(payload: bytes) -> None:
    with contextlib.suppress(PayloadError):
        parse_state(payload)
