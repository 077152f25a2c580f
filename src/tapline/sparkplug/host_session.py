"""The host application's Sparkplug session tracker: (topic, payload, receive time) in, events out.

Rules (Sparkplug B 3.0 SOB; reliability.md §1.2, §1.5; DESIGN §2a):
- Sessions are keyed by (group, node) and identified by the bdSeq of their NBIRTH. An NDEATH whose bdSeq
  is not the current NBIRTH's is ignored: it is the late Will of an older connection and must not kill
  the newer session. A matching NDEATH marks the node and all its devices offline, all their points
  STALE, at the host's receive time (tck-id-operational-behavior-edge-node-termination-host-action-
  ndeath-*); a DDEATH marks one device offline at its payload timestamp (…-ddeath-*).
- An NBIRTH that repeats the bdSeq of an NDEATH processed less than ``reorder_timeout_ms`` ago is an
  NBIRTH the Will overtook (go-sparkplugb v0.3.2): it is rejected and a rebirth requested.
- Every message but NDEATH carries seq 0..255, +1 per message, wrapping. NBIRTH (re)sets the expected
  seq. Per message, by its distance d = (seq - expected) mod 256:
    d == 0           process it, then any buffered messages that are now contiguous (gap filled: the
                     reorder timer stops, tck-id-operational-behavior-host-reordering-success);
    seq == last seq  a duplicate: data is passed on flagged ``duplicate`` (storage is idempotent);
    1 <= d < 128     ahead of a gap: buffered, the reorder timer starts (…-reordering-start); if it
                     expires (``on_tick``/next message) or 128 messages are buffered: RequestRebirth
                     (…-reordering-rebirth) + RequestReplay from the last contiguous timestamp, and the
                     buffered messages are processed in seq order. Any other flush over a gap (at an
                     NBIRTH, an NDEATH, a lost broker) also starts with that RequestReplay;
    otherwise        a late message (e.g. after its gap timed out): data is passed on flagged
                     ``duplicate``; a late birth or death is ignored — unless its payload timestamp is
                     newer than the last contiguous message's: then the edge restarted its sequence
                     with an NBIRTH we lost, and the message is ``Rejected`` (``seq_reset``) with a
                     rebirth request and a replay at the next birth.
- DBIRTH/NDATA/DDATA/DDEATH for a node that is not online ("data before birth"), DDATA for a device
  without DBIRTH, an unknown alias/name, a malformed payload: ``Rejected`` per message, and a
  ``RequestRebirth`` at most once per node per ``rebirth_retry_ms`` until an NBIRTH arrives (the spec's
  MAY). Data lost that way is asked back with a ``RequestReplay`` when the NBIRTH comes.
- RequestReplay also follows every NBIRTH after a death or a new bdSeq (from the last contiguous
  timestamp), and the first NBIRTH of a node this tracker has not seen (``from_ms=None``: the host just
  started; the IO layer replays from its committed mark). The IO layer may subtract a safety margin:
  replays are idempotent.
- Readings are named ``device/Name`` for device metrics and by the metric name for node metrics; a null
  metric gives no reading; values take the datatype declared in the birth; quality comes from the
  ``Quality`` property; ``is_historical`` metrics come in a separate ``Data(historical=True)``, before the
  live ones of the same message. Births' values are passed on as ``Data`` after the Online event.
- An NDATA carrying ``Node Control/Replay`` (from, property ``until``) is the node's confirmation that it
  has sent everything a Replay request covered: ``ReplayDone``, in seq order after that data (DESIGN §2a).
- Every ``Rejected`` carries a ``RejectCode`` (a small fixed set, for counters) and a free-text reason.
- ``mark_all_stale`` is for when the host loses the broker: every online node goes offline (STALE).
- Its own STATE seen offline gives ``OwnStateOffline`` (the IO layer must republish online=true with its
  birth timestamp); other hosts' STATE and all NCMD/DCMD are ignored.

Pure: time comes in as ``now_ms``; no MQTT client, no logging, no storage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, NamedTuple, cast

from tapline.domain.model import Quality, Reading, ReadingBlock, Value
from tapline.sparkplug.codec import (
    _INTEGERS,
    DEFAULT_MAX_PAYLOAD,
    DataPayload,
    Metric,
    MetricValue,
    Payload,
    PropertyValue,
    SpDataType,
    coerce,
    decode_birth,
    decode_data,
    decode_payload,
    encode_payload,
    quality_from_properties,
)
from tapline.sparkplug.edge_session import BDSEQ, REBIRTH, REPLAY, REPLAY_UNTIL, Message
from tapline.sparkplug.errors import PayloadError, TopicError
from tapline.sparkplug.layout import MAX_LAYOUTS, DataColumns, Layout, layout_of, read
from tapline.sparkplug.topics import MessageType, Topic, parse_state

__all__ = [
    "Data",
    "DeviceOffline",
    "DeviceOnline",
    "DeviceStatus",
    "Event",
    "HostTracker",
    "NodeOffline",
    "NodeOnline",
    "NodeStatus",
    "OwnStateOffline",
    "PointInfo",
    "RejectCode",
    "Rejected",
    "ReplayDone",
    "RequestRebirth",
    "RequestReplay",
    "rebirth_command",
    "replay_command",
    "write_command",
]

_MAX_BUFFERED: Final = 128
_CONTROL_PREFIX: Final = "Node Control/"


class PointInfo(NamedTuple):
    """A point declared in a birth: reading name (``device/Name`` or node metric name) and metadata."""

    point: str
    alias: int | None
    datatype: SpDataType
    unit: str
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class NodeOnline:
    group: str
    node: str
    bd_seq: int
    metrics: tuple[PointInfo, ...]


@dataclass(frozen=True, slots=True)
class DeviceOnline:
    group: str
    node: str
    device: str
    points: tuple[PointInfo, ...]


@dataclass(frozen=True, slots=True)
class Data:
    """Readings from one message. ``duplicate``: a repeat or late seq — write idempotently."""

    group: str
    node: str
    device: str | None
    readings: Sequence[Reading]  # a ``ReadingBlock`` on the plain-data fast path
    historical: bool
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class NodeOffline:
    """The node and all its devices are offline; all their points STALE as of ``at_ms``."""

    group: str
    node: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    """The device is offline; all its points STALE as of ``at_ms``."""

    group: str
    node: str
    device: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class RequestRebirth:
    """Send NCMD ``Node Control/Rebirth`` = true to the node (see ``rebirth_command``)."""

    group: str
    node: str
    reason: str


@dataclass(frozen=True, slots=True)
class RequestReplay:
    """Ask the node to replay history; ``from_ms`` None: the tracker does not know, use the store's mark."""

    group: str
    node: str
    from_ms: int | None


class RejectCode(StrEnum):
    """Why a message was rejected, as a fixed set (metric labels, dead-letter reasons)."""

    UNKNOWN_TOPIC = "unknown_topic"
    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    BAD_BIRTH = "bad_birth"
    BIRTH_OVERTAKEN = "birth_overtaken"
    BEFORE_BIRTH = "before_birth"
    NO_SEQ = "no_seq"
    SEQ_RESET = "seq_reset"
    UNKNOWN_METRIC = "unknown_metric"
    WRONG_TYPE = "wrong_type"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message (or part of one) that was dropped, and why (count it)."""

    topic: str
    reason: str
    code: RejectCode = RejectCode.MALFORMED
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class ReplayDone:
    """The node has sent everything the Replay request (``from_ms``, ``until_ms``) covered."""

    group: str
    node: str
    from_ms: int
    until_ms: int | None


@dataclass(frozen=True, slots=True)
class OwnStateOffline:
    """This host's STATE was seen offline: republish online=true with the birth's timestamp."""

    timestamp_ms: int


Event = (
    NodeOnline
    | DeviceOnline
    | Data
    | NodeOffline
    | DeviceOffline
    | RequestRebirth
    | RequestReplay
    | Rejected
    | ReplayDone
    | OwnStateOffline
)


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    name: str
    online: bool


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """Read-only view of one node's session, for the API."""

    group: str
    node: str
    online: bool
    bd_seq: int | None
    last_seq: int | None
    devices: tuple[DeviceStatus, ...]


# --- internal state ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Device:
    online: bool
    points: dict[str, PointInfo]  # by metric name, as the birth declared them


@dataclass(slots=True)
class _Buffered:
    topic: Topic
    raw_topic: str
    payload: Payload | DataPayload | DataColumns
    received_ms: int
    raw: bytes


@dataclass(slots=True)
class _Node:
    group: str
    node: str
    online: bool = False
    bd_seq: int | None = None
    expected: int = 0
    last_seq: int | None = None
    last_ts: int | None = None  # payload timestamp of the last contiguous message
    node_points: dict[str, PointInfo] = field(default_factory=dict)
    devices: dict[str, _Device] = field(default_factory=dict)
    aliases: dict[int, tuple[str | None, str]] = field(default_factory=dict)  # -> (device, metric name)
    buffered: dict[int, _Buffered] = field(default_factory=dict)
    gap_since: int | None = None
    rebirth_requested_at: int | None = None
    needs_replay: bool = False
    dead_bd_seq: int | None = None
    dead_at: int | None = None
    shapes: dict[tuple[str | None, tuple[int, ...]], _Shape] = field(default_factory=dict)
    layouts: dict[tuple[str | None, int], Layout] = field(default_factory=dict)  # by device, size
    layout_misses: int = 0


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a data message with one list of aliases resolves to under the current births: the point
    names (one tuple shared by every ``ReadingBlock`` of that shape), the Python type each wire value
    must have to be taken as it is, and the indices whose value ``coerce`` still checks (integers)."""

    points: tuple[str, ...]
    types: list[type]
    coerce: tuple[tuple[int, SpDataType], ...]


class HostTracker:
    """Sparkplug host-application session bookkeeping for every edge node seen (module rules above)."""

    def __init__(
        self,
        host_id: str = "tapline",
        reorder_timeout_ms: int = 2000,
        rebirth_retry_ms: int = 30_000,
        max_payload: int | None = None,
    ) -> None:
        self.host_id: Final = host_id
        self.reorder_timeout_ms: Final = reorder_timeout_ms
        self.rebirth_retry_ms: Final = rebirth_retry_ms
        self._max_payload = max_payload
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._gapped: set[tuple[str, str]] = set()
        self._topics: dict[str, Topic] = {}
        self._handlers: Final[dict[MessageType, Callable[[_Node, _Buffered, bool], list[Event]]]] = {
            MessageType.DBIRTH: self._on_dbirth,
            MessageType.NDATA: self._on_data,
            MessageType.DDATA: self._on_data,
            MessageType.DDEATH: self._on_ddeath,
        }

    # --- read-only state ------------------------------------------------------------------------------

    def nodes(self) -> tuple[NodeStatus, ...]:
        """Every node seen, sorted by (group, node)."""
        return tuple(_status(self._nodes[key]) for key in sorted(self._nodes))

    def node(self, group: str, node: str) -> NodeStatus | None:
        """One node's status, or None if never seen."""
        state = self._nodes.get((group, node))
        return None if state is None else _status(state)

    def next_deadline(self) -> int | None:
        """When ``on_tick`` next has work (a reorder timeout), or None."""
        starts = [start for key in self._gapped if (start := self._nodes[key].gap_since) is not None]
        return min(starts) + self.reorder_timeout_ms if starts else None

    # --- inputs ---------------------------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, now_ms: int) -> list[Event]:
        """Process one received message; ``now_ms`` is the host's receive time."""
        parsed = self._topics.get(topic)
        if parsed is None:
            try:
                parsed = Topic.parse(topic)
            except TopicError as exc:
                return [Rejected(topic, str(exc), RejectCode.UNKNOWN_TOPIC, payload)]
            if len(self._topics) >= _MAX_TOPICS:
                self._topics.clear()
            self._topics[topic] = parsed
        if parsed.type is MessageType.STATE:
            return self._on_state(parsed, topic, payload)
        if parsed.type in (MessageType.NCMD, MessageType.DCMD):
            return []
        node = self._node(parsed.group, parsed.node)
        events = self._expire(node, now_ms)
        limit = DEFAULT_MAX_PAYLOAD if self._max_payload is None else self._max_payload
        if len(payload) > limit:
            events.append(
                Rejected(
                    topic, f"payload of {len(payload)} bytes exceeds {limit}", RejectCode.OVERSIZED, payload
                )
            )
            if node.online:
                node.needs_replay = True
                events += self._request_rebirth(node, "oversized payload", now_ms)
            return events
        try:
            decoded: Payload | DataPayload | DataColumns | None = None
            if parsed.type in _DATA_TYPES:
                decoded = _read_data(node, parsed.device, payload)
            elif parsed.type in _BIRTH_TYPES:
                decoded = decode_birth(payload)
            if decoded is None:
                decoded = decode_payload(payload, limit)
        except PayloadError as exc:
            events.append(Rejected(topic, str(exc), RejectCode.MALFORMED, payload))
            if node.online:
                node.needs_replay = True
                events += self._request_rebirth(node, "malformed payload", now_ms)
            return events
        message = _Buffered(parsed, topic, decoded, now_ms, payload)
        if parsed.type is MessageType.NDEATH:
            return events + self._on_ndeath(node, message)
        if parsed.type is MessageType.NBIRTH:
            return events + self._on_nbirth(node, message)
        return events + self._sequenced(node, message)

    def on_tick(self, now_ms: int) -> list[Event]:
        """Fire reorder timeouts that have expired by ``now_ms``."""
        events: list[Event] = []
        for key in sorted(self._gapped):
            events += self._expire(self._nodes[key], now_ms)
        return events

    def mark_all_stale(self, now_ms: int) -> list[Event]:
        """The host lost the broker: every online node goes offline, its points STALE at ``now_ms``."""
        events: list[Event] = []
        for key in sorted(self._nodes):
            node = self._nodes[key]
            if node.online:
                events += self._flush(node)
                events += self._go_offline(node, now_ms)
        return events

    # --- births and deaths ----------------------------------------------------------------------------

    def _on_nbirth(self, node: _Node, message: _Buffered) -> list[Event]:
        payload, now_ms = _full(message), message.received_ms
        try:
            bd_seq = _bd_seq(payload)
            if payload.seq is None:
                raise PayloadError("NBIRTH without seq")
            points = _declare(payload.metrics, None, node_level=True)
        except PayloadError as exc:
            rejected = Rejected(message.raw_topic, str(exc), RejectCode.BAD_BIRTH, message.raw)
            return [rejected, *self._request_rebirth(node, str(exc), now_ms)]
        if (
            not node.online
            and node.dead_bd_seq == bd_seq
            and node.dead_at is not None
            and now_ms - node.dead_at < self.reorder_timeout_ms
        ):
            reason = f"NBIRTH with bdSeq {bd_seq} of a session that just died (its Will overtook it)"
            rejected = Rejected(message.raw_topic, reason, RejectCode.BIRTH_OVERTAKEN, message.raw)
            return [rejected, *self._request_rebirth(node, reason, now_ms)]
        gapped = bool(node.buffered)
        events = self._flush(node)  # messages buffered from the previous birth precede this one
        was_known, was_online, old_bd_seq = node.bd_seq is not None, node.online, node.bd_seq
        replay_from = node.last_ts
        needs_replay = not gapped and (node.needs_replay or not was_online or old_bd_seq != bd_seq)
        node.online, node.bd_seq = True, bd_seq
        node.devices.clear()
        node.shapes.clear()
        node.aliases = {p.alias: (None, name) for name, p in points.items() if p.alias is not None}
        node.node_points = points
        node.rebirth_requested_at, node.needs_replay = None, False
        node.dead_bd_seq = node.dead_at = None
        self._advance(node, payload.seq, _or(payload.timestamp, now_ms))
        events.append(NodeOnline(node.group, node.node, bd_seq, tuple(points.values())))
        events += self._readings(node, None, payload, message, duplicate=False)
        if not was_known:
            events.append(RequestReplay(node.group, node.node, None))
        elif needs_replay:
            events.append(RequestReplay(node.group, node.node, replay_from))
        return events

    def _on_ndeath(self, node: _Node, message: _Buffered) -> list[Event]:
        try:
            bd_seq = _bd_seq(_full(message))
        except PayloadError as exc:
            return [Rejected(message.raw_topic, str(exc), RejectCode.MALFORMED, message.raw)]
        if not node.online or node.bd_seq != bd_seq:
            return []  # a late Will of an older session, or a second NDEATH: nothing to change
        events = self._flush(node)  # what was buffered was sent before the death
        node.dead_bd_seq, node.dead_at = bd_seq, message.received_ms
        return events + self._go_offline(node, message.received_ms)

    def _on_dbirth(self, node: _Node, message: _Buffered, duplicate: bool) -> list[Event]:
        device = message.topic.device
        assert device is not None
        if duplicate:
            return []
        try:
            points = _declare(_full(message).metrics, device, node_level=False)
            for name, info in points.items():
                owner = node.aliases.get(info.alias) if info.alias is not None else None
                if owner is not None and owner != (device, name):
                    raise PayloadError(f"alias {info.alias} of {info.point} is already {owner}")
        except PayloadError as exc:
            now_ms = message.received_ms
            rejected = Rejected(message.raw_topic, str(exc), RejectCode.BAD_BIRTH, message.raw)
            return [rejected, *self._request_rebirth(node, str(exc), now_ms)]
        if device in node.devices:  # a rebirth of the device: its old aliases go (only it owns them)
            node.aliases = {a: owner for a, owner in node.aliases.items() if owner[0] != device}
        node.aliases.update({p.alias: (device, n) for n, p in points.items() if p.alias is not None})
        node.devices[device] = _Device(True, points)
        node.shapes.clear()
        events: list[Event] = [DeviceOnline(node.group, node.node, device, tuple(points.values()))]
        return events + self._readings(node, device, message.payload, message, duplicate=False)

    def _on_ddeath(self, node: _Node, message: _Buffered, duplicate: bool) -> list[Event]:
        device = message.topic.device
        assert device is not None
        state = node.devices.get(device)
        if duplicate or state is None or not state.online:
            return []
        state.online = False
        at_ms = _or(message.payload.timestamp, message.received_ms)
        return [DeviceOffline(node.group, node.node, device, at_ms)]

    def _on_data(self, node: _Node, message: _Buffered, duplicate: bool) -> list[Event]:
        device = message.topic.device
        if device is not None:
            state = node.devices.get(device)
            if state is None or not state.online:
                reason = f"DDATA for device {device!r} before its DBIRTH"
                now_ms = message.received_ms
                node.needs_replay = True
                rejected = Rejected(message.raw_topic, reason, RejectCode.BEFORE_BIRTH, message.raw)
                return [rejected, *self._request_rebirth(node, reason, now_ms)]
        return self._readings(node, device, message.payload, message, duplicate)

    def _go_offline(self, node: _Node, at_ms: int) -> list[Event]:
        node.online = False
        for device in node.devices.values():
            device.online = False
        node.buffered.clear()
        node.gap_since = None
        self._gapped.discard((node.group, node.node))
        return [NodeOffline(node.group, node.node, at_ms)]

    def _on_state(self, topic: Topic, raw_topic: str, payload: bytes) -> list[Event]:
        try:
            online, timestamp = parse_state(payload)
        except PayloadError as exc:
            return [Rejected(raw_topic, str(exc), RejectCode.MALFORMED, payload)]
        if topic.node == self.host_id and not online:
            return [OwnStateOffline(timestamp)]
        return []

    # --- sequencing -----------------------------------------------------------------------------------

    def _sequenced(self, node: _Node, message: _Buffered) -> list[Event]:
        now_ms = message.received_ms
        if not node.online:
            reason = f"{message.topic.type} before NBIRTH"
            rejected = Rejected(message.raw_topic, reason, RejectCode.BEFORE_BIRTH, message.raw)
            return [rejected, *self._request_rebirth(node, reason, now_ms)]
        seq = message.payload.seq
        if seq is None:
            node.needs_replay = True
            reason = f"{message.topic.type} without seq"
            rejected = Rejected(message.raw_topic, reason, RejectCode.NO_SEQ, message.raw)
            return [rejected, *self._request_rebirth(node, reason, now_ms)]
        distance = (seq - node.expected) % 256
        if distance == 0:
            events = self._process(node, message, duplicate=False)
            while node.expected in node.buffered:
                events += self._process(node, node.buffered.pop(node.expected), duplicate=False)
            if not node.buffered:
                node.gap_since = None
                self._gapped.discard((node.group, node.node))
            return events
        if seq in node.buffered:
            return []
        if seq != node.last_seq and distance < _MAX_BUFFERED:
            node.buffered[seq] = message
            if node.gap_since is None:
                node.gap_since = now_ms
                self._gapped.add((node.group, node.node))
            if len(node.buffered) >= _MAX_BUFFERED:
                return self._give_up(node, now_ms, f"{len(node.buffered)} messages after a seq gap")
            return []
        sent = message.payload.timestamp
        if seq != node.last_seq and sent is not None and node.last_ts is not None and sent > node.last_ts:
            # Behind by seq but newer than everything processed: not a late message but a new seq run
            # whose NBIRTH we never saw (tahu#373). Its data cannot be placed; ask for all of it again.
            node.needs_replay = True
            reason = f"{message.topic.type} seq {seq} restarts the sequence (expected {node.expected})"
            rejected = Rejected(message.raw_topic, reason, RejectCode.SEQ_RESET, message.raw)
            return [rejected, *self._request_rebirth(node, reason, now_ms)]
        return self._handlers[message.topic.type](node, message, True)

    def _process(self, node: _Node, message: _Buffered, duplicate: bool) -> list[Event]:
        assert message.payload.seq is not None
        self._advance(node, message.payload.seq, _or(message.payload.timestamp, message.received_ms))
        return self._handlers[message.topic.type](node, message, duplicate)

    @staticmethod
    def _advance(node: _Node, seq: int, ts: int) -> None:
        node.last_seq, node.expected, node.last_ts = seq, (seq + 1) % 256, ts

    def _expire(self, node: _Node, now_ms: int) -> list[Event]:
        if node.gap_since is None or now_ms - node.gap_since < self.reorder_timeout_ms:
            return []
        return self._give_up(node, now_ms, f"seq {node.expected} missing for {self.reorder_timeout_ms} ms")

    def _give_up(self, node: _Node, now_ms: int, reason: str) -> list[Event]:
        events: list[Event] = [RequestReplay(node.group, node.node, node.last_ts)]
        events += self._request_rebirth(node, reason, now_ms)
        return events + self._flush(node, announce=False)

    def _flush(self, node: _Node, announce: bool = True) -> list[Event]:
        """Process every buffered message in seq order, skipping the gaps; skipping a gap asks for a
        replay from the last contiguous timestamp (unless the caller already did)."""
        events: list[Event] = []
        if node.buffered and announce:
            events.append(RequestReplay(node.group, node.node, node.last_ts))
        for seq in sorted(node.buffered, key=lambda s: (s - node.expected) % 256):
            events += self._process(node, node.buffered.pop(seq), duplicate=False)
        node.gap_since = None
        self._gapped.discard((node.group, node.node))
        return events

    def _request_rebirth(self, node: _Node, reason: str, now_ms: int) -> list[Event]:
        last = node.rebirth_requested_at
        if last is not None and now_ms - last < self.rebirth_retry_ms:
            return []
        node.rebirth_requested_at = now_ms
        return [RequestRebirth(node.group, node.node, reason)]

    # --- readings -------------------------------------------------------------------------------------

    def _readings(
        self,
        node: _Node,
        device: str | None,
        payload: Payload | DataPayload | DataColumns,
        message: _Buffered,
        duplicate: bool,
    ) -> list[Event]:
        if type(payload) is DataColumns or type(payload) is DataPayload:
            # The columnar path first: a message of live values whose aliases resolve as they did for
            # the last message of the same shape becomes one ``ReadingBlock``. Anything it does not
            # take (historical values, declared datatypes, unknown aliases, a value of an unexpected
            # type) goes through the per-metric loop, which says exactly what is wrong.
            block = self._block(node, device, payload, message)
            if block is not None:
                return [Data(node.group, node.node, device, block, False, duplicate)]
            lean = payload.as_payload() if type(payload) is DataColumns else payload
            assert isinstance(lean, DataPayload)
            return self._lean_readings(node, device, lean, message, duplicate)
        assert isinstance(payload, Payload)
        points = node.node_points if device is None else node.devices[device].points
        default_ts = _or(payload.timestamp, message.received_ms)
        live: list[Reading] = []
        historical: list[Reading] = []
        unknown: list[str] = []
        mistyped: list[str] = []
        done: ReplayDone | None = None
        for metric in payload.metrics:
            point = _resolve(node, device, points, metric)
            if point is None:
                if device is None and metric.name == REPLAY and message.topic.type is MessageType.NDATA:
                    done = _replay_done(node, metric)
                elif device is not None or not _is_control(metric.name):
                    unknown.append(str(metric.name if metric.name is not None else metric.alias))
                continue
            if metric.is_null or metric.value is None:
                continue
            try:
                value = metric.value if metric.datatype is not None else coerce(metric.value, point.datatype)
            except PayloadError:
                mistyped.append(point.point)
                continue
            if isinstance(value, bytes):
                continue
            quality = quality_from_properties(metric.properties) if metric.properties else Quality.GOOD
            reading = Reading(point.point, _or(metric.timestamp, default_ts), value, quality)
            (historical if metric.is_historical else live).append(reading)
        events = self._data_events(node, device, historical, live, duplicate)
        if done is not None and not duplicate:
            events.append(done)
        return events + self._refused(node, message, unknown, mistyped)

    def _data_events(
        self, node: _Node, device: str | None, historical: list[Reading], live: list[Reading], duplicate: bool
    ) -> list[Event]:
        events: list[Event] = []
        if historical:
            events.append(Data(node.group, node.node, device, tuple(historical), True, duplicate))
        if live:
            events.append(Data(node.group, node.node, device, tuple(live), False, duplicate))
        return events

    def _refused(
        self, node: _Node, message: _Buffered, unknown: list[str], mistyped: list[str]
    ) -> list[Event]:
        """Metrics of a data message the node's births did not declare, or of the wrong type: reject
        them, and ask a rebirth (the node needs a replay once it is born again)."""
        if not unknown and not mistyped:
            return []
        node.needs_replay = True
        events: list[Event] = []
        if unknown:
            reason = f"unknown metrics: {', '.join(unknown[:5])}"
            events.append(Rejected(message.raw_topic, reason, RejectCode.UNKNOWN_METRIC, message.raw))
        if mistyped:
            reason = f"values of the wrong type: {', '.join(mistyped[:5])}"
            events.append(Rejected(message.raw_topic, reason, RejectCode.WRONG_TYPE, message.raw))
        return events + self._request_rebirth(node, reason, message.received_ms)

    def _lean_readings(
        self, node: _Node, device: str | None, payload: DataPayload, message: _Buffered, duplicate: bool
    ) -> list[Event]:
        """``_readings`` for a payload ``decode_data`` read: same events, without per-metric objects
        other than the ``Reading`` (aliases only, no names, no properties, no nulls)."""
        points = node.node_points if device is None else node.devices[device].points
        aliases = node.aliases
        default_ts = _or(payload.timestamp, message.received_ms)
        live: list[Reading] = []
        historical: list[Reading] = []
        unknown: list[str] = []
        mistyped: list[str] = []
        good = Quality.GOOD
        native = _NATIVE
        for alias, ts, value, datatype, is_historical in payload.metrics:
            owner = aliases.get(alias)
            point = points.get(owner[1]) if owner is not None and owner[0] == device else None
            if point is None:
                unknown.append(str(alias))
                continue
            if datatype is None and native.get(point.datatype) is not type(value):
                try:
                    value = coerce(value, point.datatype)
                except PayloadError:
                    mistyped.append(point.point)
                    continue
            if isinstance(value, bytes):
                continue
            reading = Reading(point.point, default_ts if ts is None else ts, value, good)
            (historical if is_historical else live).append(reading)
        events = self._data_events(node, device, historical, live, duplicate)
        return events + self._refused(node, message, unknown, mistyped)

    @staticmethod
    def _block(
        node: _Node, device: str | None, payload: DataPayload | DataColumns, message: _Buffered
    ) -> ReadingBlock | None:
        aliases: tuple[int, ...]
        stamps: tuple[int | None, ...]
        values: Sequence[MetricValue]
        if type(payload) is DataColumns:  # read by its layout: already columns, all plain
            aliases, stamps, values = payload.aliases, payload.stamps, payload.values
        else:
            assert isinstance(payload, DataPayload)
            metrics = payload.metrics
            if not metrics:
                return None
            aliases, stamps, values, datatypes, historical = zip(*metrics, strict=True)
            if True in historical or datatypes.count(None) != len(datatypes):
                return None
        key = (device, aliases)
        shape = node.shapes.get(key)
        if shape is None:
            shape = _shape(node, device, aliases)
            if shape is None:
                return None
            if len(node.shapes) >= _MAX_SHAPES:  # report-by-exception gateways vary their alias lists
                node.shapes.clear()
            node.shapes[key] = shape
        if list(map(type, values)) != shape.types:
            return None
        column = cast(Sequence[Value], values)  # the types were just checked: no str, no bytes
        if shape.coerce:
            fixed = list(values)
            try:
                for index, datatype in shape.coerce:
                    fixed[index] = coerce(fixed[index], datatype)
            except PayloadError:
                return None
            column = fixed
        times = cast(tuple[int, ...], stamps)
        if None in stamps:
            default = _or(payload.timestamp, message.received_ms)
            times = tuple(default if ts is None else ts for ts in stamps)
        return ReadingBlock(shape.points, times, column, Quality.GOOD)

    def _node(self, group: str, node: str) -> _Node:
        state = self._nodes.get((group, node))
        if state is None:
            state = self._nodes[(group, node)] = _Node(group, node)
        return state


def _read_data(node: _Node, device: str | None, payload: bytes) -> DataPayload | DataColumns | None:
    """A data message by the layout of an earlier one of the same device and size if it has it,
    else by ``decode_data`` (None: the general decoder's turn). A layout is recorded after a
    ``decode_data``, but not after every miss: a report-by-exception gateway changes layouts all the
    time, and recording costs a second pass over the message."""
    key = (device, len(payload))
    known = node.layouts.get(key)
    if known is not None:
        columns = read(known, payload)
        if columns is not None:
            node.layout_misses = 0
            return columns
    decoded = decode_data(payload)
    if decoded is not None:
        misses = node.layout_misses = node.layout_misses + 1
        if misses <= _LAYOUT_TRIES or misses % _LAYOUT_RETRY == 0:
            made = layout_of(payload)
            if made is not None:
                if len(node.layouts) >= MAX_LAYOUTS:
                    node.layouts.clear()
                node.layouts[key] = made
    return decoded


def _shape(node: _Node, device: str | None, aliases: tuple[int, ...]) -> _Shape | None:
    """The ``_Shape`` of a data message with these aliases, or None if one of them is not a declared
    point of ``device`` or a value of its type needs more than ``coerce`` (strings, bytes...)."""
    points = node.node_points if device is None else node.devices[device].points
    names: list[str] = []
    types: list[type] = []
    fix: list[tuple[int, SpDataType]] = []
    for index, alias in enumerate(aliases):
        owner = node.aliases.get(alias)
        point = points.get(owner[1]) if owner is not None and owner[0] == device else None
        if point is None:
            return None
        native = _NATIVE.get(point.datatype)
        if native is None:
            if point.datatype not in _INTEGERS:  # codec's: varints that ``coerce`` range-checks
                return None
            native = int
            fix.append((index, point.datatype))
        names.append(point.point)
        types.append(native)
    return _Shape(tuple(names), types, tuple(fix))


_DATA_TYPES: Final = frozenset({MessageType.NDATA, MessageType.DDATA})
_BIRTH_TYPES: Final = frozenset({MessageType.NBIRTH, MessageType.DBIRTH})
_NATIVE: Final[dict[SpDataType, type]] = {
    SpDataType.Double: float,
    SpDataType.Float: float,
    SpDataType.Boolean: bool,
}
"""Datatypes whose raw wire value (of this Python type) ``coerce`` returns unchanged."""
_MAX_TOPICS: Final = 65_536
"""Parsed topics remembered (a city has ~10 per room); parsing one cost ~0.5 µs per value received."""
_LAYOUT_TRIES: Final = 8
_LAYOUT_RETRY: Final = 64
"""After ``_LAYOUT_TRIES`` messages in a row that no recorded layout read, record one only every
``_LAYOUT_RETRY``-th (bounds the cost for gateways whose layout never repeats)."""
_MAX_SHAPES: Final = 256
"""Alias lists remembered per edge node before the memory starts again (bounds a gateway that never
sends the same list twice)."""


def _full(message: _Buffered) -> Payload:
    """The payload of a birth or death: those are always read by the general decoder."""
    payload = message.payload
    assert isinstance(payload, Payload), "only NDATA/DDATA take the plain-data fast path"
    return payload


def _is_control(name: str | None) -> bool:
    """bdSeq and Node Control/* are session bookkeeping, not points."""
    return name is not None and (name == BDSEQ or name.startswith(_CONTROL_PREFIX))


def _replay_done(node: _Node, metric: Metric) -> ReplayDone | None:
    """The Replay confirmation an NDATA metric carries, or None if it is not a well-formed one."""
    from_ms, until = metric.value, metric.property(REPLAY_UNTIL)
    if type(from_ms) is not int or (until is not None and type(until) is not int):
        return None
    return ReplayDone(node.group, node.node, from_ms, until if isinstance(until, int) else None)


def _or(timestamp: int | None, default: int) -> int:
    return default if timestamp is None else timestamp


def _resolve(
    node: _Node, device: str | None, points: dict[str, PointInfo], metric: Metric
) -> PointInfo | None:
    if metric.alias is not None:
        owner = node.aliases.get(metric.alias)
        if owner is None or owner[0] != device:
            return None
        return points.get(owner[1])
    return points.get(metric.name) if metric.name is not None else None


def _bd_seq(payload: Payload) -> int:
    for metric in payload.metrics:
        if metric.name == BDSEQ and metric.value is not None:
            value = coerce(metric.value, SpDataType.Int64) if metric.datatype is None else metric.value
            if type(value) is int and 0 <= value <= 255:
                return value
            raise PayloadError(f"bdSeq must be an integer 0..255, got {value!r}")
    raise PayloadError("no bdSeq metric")


def _declare(metrics: tuple[Metric, ...], device: str | None, node_level: bool) -> dict[str, PointInfo]:
    """Points a birth declares, by metric name; raise PayloadError if it breaks the birth rules.

    One pass over each metric's properties (the first engUnit/engLow/engHigh counts, as with
    ``Metric.property``): a city's births declare 400,000 points."""
    points: dict[str, PointInfo] = {}
    prefix = "" if device is None else device + "/"
    for metric in metrics:
        name = metric.name
        if name is None:
            raise PayloadError(f"birth metric with alias {metric.alias} has no name")
        if node_level and _is_control(name):
            continue
        if metric.datatype is None:
            raise PayloadError(f"birth metric {name!r} has no datatype")
        if name in points:
            raise PayloadError(f"birth declares {name!r} twice")
        unit: PropertyValue | None = None
        low: PropertyValue | None = None
        high: PropertyValue | None = None
        for key, value in metric.properties:
            if key == "engUnit":
                unit = value if unit is None else unit
            elif key == "engLow":
                low = value if low is None else low
            elif key == "engHigh":
                high = value if high is None else high
        points[name] = PointInfo(
            prefix + name,
            metric.alias,
            metric.datatype,
            unit if isinstance(unit, str) else "",
            float(low) if isinstance(low, int | float) and not isinstance(low, bool) else None,
            float(high) if isinstance(high, int | float) and not isinstance(high, bool) else None,
        )
    aliases = [p.alias for p in points.values() if p.alias is not None]
    if len(aliases) != len(set(aliases)):
        raise PayloadError("birth declares the same alias twice")
    return points


def _status(node: _Node) -> NodeStatus:
    devices = tuple(DeviceStatus(name, d.online) for name, d in sorted(node.devices.items()))
    return NodeStatus(node.group, node.node, node.online, node.bd_seq, node.last_seq, devices)


# --- commands the host sends -------------------------------------------------------------------------


def _command(group: str, node: str, device: str | None, metric: Metric, now_ms: int) -> Message:
    message_type = MessageType.NCMD if device is None else MessageType.DCMD
    topic = str(Topic(group, message_type, node, device))
    # seq: "every message except NDEATH" carries one; edges do not sequence commands, so it is 0.
    return topic, encode_payload(Payload(timestamp=now_ms, seq=0, metrics=(metric,)))


def rebirth_command(group: str, node: str, now_ms: int) -> Message:
    """NCMD ``Node Control/Rebirth`` = true (no datatype: tck-id-payloads-metric-datatype-not-req)."""
    return _command(group, node, None, Metric(name=REBIRTH, timestamp=now_ms, value=True), now_ms)


def replay_command(group: str, node: str, from_ms: int, now_ms: int, to_ms: int | None = None) -> Message:
    """NCMD ``Node Control/Replay`` = from_ms (Int64), with property ``until`` when ``to_ms`` is given."""
    properties = () if to_ms is None else ((REPLAY_UNTIL, to_ms),)
    metric = Metric(name=REPLAY, timestamp=now_ms, value=from_ms, properties=properties)
    return _command(group, node, None, metric, now_ms)


def write_command(
    group: str, node: str, device: str | None, point_name: str, value: Value, now_ms: int
) -> Message:
    """DCMD (NCMD when ``device`` is None) writing ``value`` to a point by name."""
    return _command(group, node, device, Metric(name=point_name, timestamp=now_ms, value=value), now_ms)
