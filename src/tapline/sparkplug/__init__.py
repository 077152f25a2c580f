"""Sans-IO Sparkplug B 3.0: topics, payload codec, edge-node session and host-application tracker.

Nothing in this package opens a socket, reads a clock or logs: time comes in as ``now_ms`` (ms since
the Unix epoch, UTC) and messages go out as ``(topic, payload)`` tuples for the IO layer to publish.
Errors are the tree in ``errors.py``. Modules:

- ``topics``: ``Topic``/``MessageType``, the STATE topic and JSON payload.
- ``codec``: ``Metric``/``Payload`` dataclasses <-> protobuf bytes; datatypes; quality properties.
- ``edge_session``: ``EdgeNodeSession`` (bdSeq, seq, aliases, births, data, commands in).
- ``host_session``: ``HostTracker`` (sessions, reordering, STALE marking, rebirth/replay requests)
  and the NCMD/DCMD builders the host sends.
"""

from tapline.sparkplug.codec import (
    Metric,
    Payload,
    SpDataType,
    decode_payload,
    encode_payload,
)
from tapline.sparkplug.edge_session import Command, EdgeNodeSession, Rebirth, Replay, WritePoint
from tapline.sparkplug.errors import PayloadError, SessionError, SparkplugError, TopicError
from tapline.sparkplug.host_session import (
    Data,
    DeviceOffline,
    DeviceOnline,
    Event,
    HostTracker,
    NodeOffline,
    NodeOnline,
    OwnStateOffline,
    Rejected,
    RequestRebirth,
    RequestReplay,
    rebirth_command,
    replay_command,
    write_command,
)
from tapline.sparkplug.topics import MessageType, Topic, parse_state, state_payload, state_topic

__all__ = [
    "Command",
    "Data",
    "DeviceOffline",
    "DeviceOnline",
    "EdgeNodeSession",
    "Event",
    "HostTracker",
    "MessageType",
    "Metric",
    "NodeOffline",
    "NodeOnline",
    "OwnStateOffline",
    "Payload",
    "PayloadError",
    "Rebirth",
    "Rejected",
    "Replay",
    "RequestRebirth",
    "RequestReplay",
    "SessionError",
    "SpDataType",
    "SparkplugError",
    "Topic",
    "TopicError",
    "WritePoint",
    "decode_payload",
    "encode_payload",
    "parse_state",
    "rebirth_command",
    "replay_command",
    "state_payload",
    "state_topic",
    "write_command",
]
