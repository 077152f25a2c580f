"""Sparkplug B topic namespace and the Primary Host STATE message.

Rules (Sparkplug B 3.0, Topics chapter; DESIGN §4 "Sparkplug namespace"):
- Edge topics are ``spBv1.0/{group}/{TYPE}/{node}`` for the node types (NBIRTH, NDEATH, NDATA, NCMD) and
  ``spBv1.0/{group}/{TYPE}/{node}/{device}`` for the device types (DBIRTH, DDEATH, DDATA, DCMD): a device
  id is present exactly for the D* types.
- The host's STATE topic is ``spBv1.0/STATE/{host_id}``; it is represented as a ``Topic`` with type STATE,
  ``group=""`` and ``node=host_id``.
- Ids are non-empty UTF-8 and contain none of ``/ + #`` (they would change the topic's shape or act as
  MQTT wildcards) nor NUL.
- The STATE payload is UTF-8 JSON ``{"online": bool, "timestamp": ms}``, published QoS 1, retained, both
  as the host's birth and as its Will; other keys a peer adds are ignored.

Nothing here knows about MQTT clients; everything is a pure function of its arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from tapline.sparkplug.errors import PayloadError, TopicError

__all__ = [
    "DEVICE_TYPES",
    "NAMESPACE",
    "NODE_TYPES",
    "MessageType",
    "Topic",
    "parse_state",
    "state_payload",
    "state_topic",
]

NAMESPACE = "spBv1.0"


class MessageType(StrEnum):
    """The Sparkplug verbs (the ``TYPE`` level of a topic)."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"
    STATE = "STATE"


NODE_TYPES = frozenset({MessageType.NBIRTH, MessageType.NDEATH, MessageType.NDATA, MessageType.NCMD})
DEVICE_TYPES = frozenset({MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD})
_BY_NAME = {member.value: member for member in MessageType}
_FORBIDDEN = frozenset("/+#\x00")


def _check_id(kind: str, value: str) -> None:
    if not value or not _FORBIDDEN.isdisjoint(value):
        raise TopicError(f"{kind} must be non-empty without '/', '+', '#' or NUL, got {value!r}")


@dataclass(frozen=True, slots=True)
class Topic:
    """One Sparkplug topic, validated on construction (so a ``Topic`` is always well formed)."""

    group: str
    type: MessageType
    node: str
    device: str | None = None

    def __post_init__(self) -> None:
        if self.type is MessageType.STATE:
            if self.group or self.device is not None:
                raise TopicError("a STATE topic has no group and no device")
            _check_id("host id", self.node)
            return
        _check_id("group id", self.group)
        _check_id("edge node id", self.node)
        if self.type in DEVICE_TYPES:
            if self.device is None:
                raise TopicError(f"{self.type} needs a device id")
            _check_id("device id", self.device)
        elif self.device is not None:
            raise TopicError(f"{self.type} must not carry a device id, got {self.device!r}")

    @classmethod
    def parse(cls, text: str) -> Topic:
        """Parse an MQTT topic; raise ``TopicError`` for anything that is not a Sparkplug B topic."""
        parts = text.split("/")
        if parts[0] != NAMESPACE:
            raise TopicError(f"not a Sparkplug B topic (namespace must be {NAMESPACE!r}): {text!r}")
        if len(parts) == 3 and parts[1] == "STATE":
            return cls("", MessageType.STATE, parts[2])
        if len(parts) not in (4, 5):
            raise TopicError(f"a Sparkplug topic has 4 or 5 levels, got {len(parts)}: {text!r}")
        message_type = _BY_NAME.get(parts[2])
        if message_type is None or message_type is MessageType.STATE:
            raise TopicError(f"unknown Sparkplug message type {parts[2]!r} in {text!r}")
        device = parts[4] if len(parts) == 5 else None
        return cls(parts[1], message_type, parts[3], device)

    def __str__(self) -> str:
        if self.type is MessageType.STATE:
            return f"{NAMESPACE}/STATE/{self.node}"
        base = f"{NAMESPACE}/{self.group}/{self.type.value}/{self.node}"
        return base if self.device is None else f"{base}/{self.device}"


def state_topic(host_id: str) -> str:
    """The Primary Host STATE topic ``spBv1.0/STATE/{host_id}``."""
    return str(Topic("", MessageType.STATE, host_id))


def state_payload(online: bool, timestamp_ms: int) -> bytes:
    """The STATE JSON payload; the birth's timestamp must equal the one in that CONNECT's Will."""
    if timestamp_ms < 0:
        raise PayloadError(f"STATE timestamp must be >= 0, got {timestamp_ms}")
    return json.dumps({"online": online, "timestamp": timestamp_ms}, separators=(",", ":")).encode()


def parse_state(payload: bytes) -> tuple[bool, int]:
    """Parse a STATE payload into ``(online, timestamp_ms)``; raise ``PayloadError`` on anything else."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PayloadError(f"STATE payload is not UTF-8 JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise PayloadError(f"STATE payload must be a JSON object, got {type(document).__name__}")
    online = document.get("online")
    timestamp = document.get("timestamp")
    if not isinstance(online, bool):
        raise PayloadError(f"STATE 'online' must be a boolean, got {online!r}")
    if isinstance(timestamp, float) and timestamp.is_integer():
        timestamp = int(timestamp)
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
        raise PayloadError(f"STATE 'timestamp' must be a non-negative integer (ms), got {timestamp!r}")
    return online, timestamp
