"""The edge node's Sparkplug session bookkeeping: what to publish next, with which seq and aliases.

Rules (Sparkplug B 3.0 SOB and Payloads chapters; reliability.md §1.1):
- One ``EdgeNodeSession`` per MQTT connection. The IO layer increments and persists ``bd_seq`` (0..255,
  wrapping) before each CONNECT and passes it in; ``will()`` is that CONNECT's Will (NDEATH carrying
  ``bdSeq``, Int64; publish QoS 1, retain false) and every NBIRTH of the session carries the same bdSeq,
  including after a rebirth (tck-id-operational-behavior-data-commands-rebirth-action-3).
- Phases, as a table (``_ALLOWED``): UNBORN --nbirth--> BORN --ndeath--> DEAD; ``rebirth()`` goes back to
  UNBORN. DBIRTH, DDATA, NDATA and DDEATH need BORN (and a DBIRTH before that device's DDATA/DDEATH);
  nothing but ``will()`` is allowed once DEAD. A call the phase does not allow raises ``SessionError``.
- seq is 0..255 and +1 for every message of the session, wrapping 255 -> 0; NDEATH carries none. Every
  NBIRTH starts at 0: 3.0 only requires 0..255, but 2.2 required 0 (tck-id-payloads-sequence-num-zero-
  nbirth), hosts still expect it, and restarting at each birth gives the host an unambiguous reference
  point for gap detection (it keys the session on bdSeq, not on seq alone; see tahu#373).
- NBIRTH declares ``bdSeq``, ``Node Control/Rebirth`` (Boolean false, never aliased) and
  ``Node Control/Replay`` (Int64 ms since epoch, DESIGN §2a; not aliased either) plus the node metrics
  the caller gives; a node metric is named by its ``PointSpec.path``.
- Aliases: every point gets one alias the first time it is born and keeps it for the whole session
  (also across rebirths); aliases are unique across the node. Births carry name + alias + datatype +
  properties (engUnit, engLow, engHigh); data messages carry the alias only and no datatype
  (tck-id-payloads-metric-datatype-not-req), metrics sorted by timestamp (…-publish-dbirth-order).
- Inbound NCMD/DCMD: exactly one metric, resolved by name or alias against what this session declared.
  ``Node Control/Rebirth`` (true) -> ``Rebirth``; ``Node Control/Replay`` (from_ms, optional property
  ``until``) -> ``Replay``, confirmed by ``replay_done`` once answered; a declared point ->
  ``WritePoint``. Anything else raises ``TopicError`` or ``PayloadError``; the caller counts and
  ignores it. Whether a point may be written is the command handler's decision, not this module's.

Pure: no clock (``now_ms`` is passed in), no MQTT client, no logging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final

from tapline.domain.model import PointSpec, Reading, Value, split_point
from tapline.sparkplug.codec import (
    DOMAIN_TO_SPARKPLUG,
    Metric,
    Payload,
    PropertyValue,
    SpDataType,
    check_value,
    coerce,
    decode_payload,
    encode_payload,
    quality_properties,
)
from tapline.sparkplug.errors import PayloadError, SessionError, TopicError
from tapline.sparkplug.topics import MessageType, Topic

__all__ = [
    "BDSEQ",
    "REBIRTH",
    "REPLAY",
    "REPLAY_UNTIL",
    "BirthValue",
    "Command",
    "EdgeNodeSession",
    "Message",
    "Rebirth",
    "Replay",
    "WritePoint",
]

BDSEQ: Final = "bdSeq"
REBIRTH: Final = "Node Control/Rebirth"
REPLAY: Final = "Node Control/Replay"
REPLAY_UNTIL: Final = "until"
"""Optional Int64 property of a Replay NCMD metric: replay up to this time (ms), else up to now."""

Message = tuple[str, bytes]
"""``(topic, payload)`` ready to publish."""

BirthValue = tuple[PointSpec, Value | None, int]
"""A point to declare in a birth: its spec, current value (None = unknown, sent as null) and ts (ms)."""


@dataclass(frozen=True, slots=True)
class Rebirth:
    """The host asks for a complete new birth sequence (NBIRTH + all DBIRTHs), same bdSeq."""


@dataclass(frozen=True, slots=True)
class Replay:
    """The host asks for history from ``from_ms`` (to ``to_ms``, or up to now) as is_historical data."""

    from_ms: int
    to_ms: int | None = None


@dataclass(frozen=True, slots=True)
class WritePoint:
    """The host asks to write ``value`` to a point (``device`` None for a node metric via NCMD)."""

    device: str | None
    point_name: str
    value: Value


Command = Rebirth | Replay | WritePoint


class _Phase(Enum):
    UNBORN = "unborn"
    BORN = "born"
    DEAD = "dead"


_ALLOWED: Final[dict[str, frozenset[_Phase]]] = {
    "nbirth": frozenset({_Phase.UNBORN, _Phase.BORN}),
    "dbirth": frozenset({_Phase.BORN}),
    "ddata": frozenset({_Phase.BORN}),
    "ndata": frozenset({_Phase.BORN}),
    "ddeath": frozenset({_Phase.BORN}),
    "ndeath": frozenset({_Phase.UNBORN, _Phase.BORN}),
    "rebirth": frozenset({_Phase.UNBORN, _Phase.BORN}),
}


@dataclass(frozen=True, slots=True)
class _Declared:
    alias: int
    datatype: SpDataType


class EdgeNodeSession:
    """Sparkplug bookkeeping of one edge node for one MQTT connection (see the module rules)."""

    def __init__(self, group: str, node: str, bd_seq: int) -> None:
        if not 0 <= bd_seq <= 255:
            raise SessionError(f"bdSeq must be 0..255, got {bd_seq}")
        Topic(group, MessageType.NBIRTH, node)  # validates the ids
        self.group: Final = group
        self.node: Final = node
        self.bd_seq: Final = bd_seq
        self._phase = _Phase.UNBORN
        self._seq: int | None = None  # last seq used
        self._next_alias = 1
        self._aliases: dict[tuple[str | None, str], int] = {}
        # What the latest births declared: device (None = node) -> metric name -> alias + datatype.
        self._declared: dict[str | None, dict[str, _Declared]] = {}
        self._born_devices: set[str] = set()

    # --- state, read-only -----------------------------------------------------------------------------

    @property
    def born(self) -> bool:
        """True between an NBIRTH and the next ``rebirth()``/``ndeath()``."""
        return self._phase is _Phase.BORN

    @property
    def devices(self) -> frozenset[str]:
        """Devices born (DBIRTH) since the last NBIRTH and not dead since."""
        return frozenset(self._born_devices)

    @property
    def seq(self) -> int | None:
        """The seq of the last message published (None before the first NBIRTH)."""
        return self._seq

    def alias_of(self, device: str | None, name: str) -> int | None:
        """The alias assigned to a point (``device`` None for a node metric), if it was ever born."""
        return self._aliases.get((device, name))

    # --- outbound -------------------------------------------------------------------------------------

    def will(self, now_ms: int | None = None) -> Message:
        """The NDEATH to register as this connection's MQTT Will (QoS 1, retain false)."""
        return self._death(now_ms)

    def nbirth(self, metrics: Sequence[BirthValue], now_ms: int) -> Message:
        """The NBIRTH (seq 0): bdSeq, Node Control metrics and the caller's node metrics."""
        self._require("nbirth")
        self._phase = _Phase.BORN
        self._seq = None
        self._born_devices.clear()
        control = (
            Metric(name=BDSEQ, timestamp=now_ms, datatype=SpDataType.Int64, value=self.bd_seq),
            Metric(name=REBIRTH, timestamp=now_ms, datatype=SpDataType.Boolean, value=False),
            Metric(name=REPLAY, timestamp=now_ms, datatype=SpDataType.Int64, value=0),
        )
        node_metrics = self._declare(None, [(spec.path, spec, value, ts) for spec, value, ts in metrics])
        return self._publish(MessageType.NBIRTH, None, control + node_metrics, now_ms)

    def dbirth(self, device: str, points: Sequence[BirthValue], now_ms: int) -> Message:
        """A DBIRTH declaring every point the device will publish in this birth epoch."""
        self._require("dbirth")
        for spec, _, _ in points:
            if spec.device != device:
                raise SessionError(f"point {spec.path} does not belong to device {device!r}")
        metrics = self._declare(device, [(spec.name, spec, value, ts) for spec, value, ts in points])
        message = self._publish(MessageType.DBIRTH, device, metrics, now_ms)
        self._born_devices.add(device)
        return message

    def ddata(
        self, device: str, readings: Sequence[Reading], now_ms: int, historical: bool = False
    ) -> Message:
        """A DDATA with the readings of one born device, by alias, oldest first."""
        self._require("ddata")
        if device not in self._born_devices:
            raise SessionError(f"DDATA for device {device!r} before its DBIRTH")
        metrics = []
        for reading in sorted(readings, key=_reading_ts):
            point_device, name = _split(reading.point)
            if point_device != device:
                raise SessionError(f"reading {reading.point} does not belong to device {device!r}")
            metrics.append(self._data_metric(device, name, reading, historical))
        return self._publish(MessageType.DDATA, device, tuple(metrics), now_ms)

    def ndata(self, readings: Sequence[Reading], now_ms: int, historical: bool = False) -> Message:
        """An NDATA with node-metric readings (``Reading.point`` is the node metric's name)."""
        self._require("ndata")
        metrics = tuple(
            self._data_metric(None, reading.point, reading, historical)
            for reading in sorted(readings, key=_reading_ts)
        )
        return self._publish(MessageType.NDATA, None, metrics, now_ms)

    def replay_done(self, replay: Replay, now_ms: int) -> Message:
        """The NDATA confirming that everything ``replay`` covered has been published (DESIGN §2a).

        It carries ``Node Control/Replay`` = the request's from (property ``until`` when it had one),
        by name like every Node Control metric; publish it after the last historical message.
        """
        self._require("ndata")
        properties = () if replay.to_ms is None else ((REPLAY_UNTIL, replay.to_ms),)
        metric = Metric(name=REPLAY, timestamp=now_ms, value=replay.from_ms, properties=properties)
        return self._publish(MessageType.NDATA, None, (metric,), now_ms)

    def ddeath(self, device: str, now_ms: int) -> Message:
        """A DDEATH for a born device (the host marks its points STALE at ``now_ms``)."""
        self._require("ddeath")
        if device not in self._born_devices:
            raise SessionError(f"DDEATH for device {device!r} that is not born")
        self._born_devices.discard(device)
        return self._publish(MessageType.DDEATH, device, (), now_ms)

    def ndeath(self, now_ms: int) -> Message:
        """The NDEATH to publish before an intentional disconnect; the session is over afterwards."""
        self._require("ndeath")
        self._phase = _Phase.DEAD
        self._born_devices.clear()
        return self._death(now_ms)

    def rebirth(self) -> None:
        """Stop DATA until the next ``nbirth`` (same bdSeq, seq restarts at 0); aliases are kept."""
        self._require("rebirth")
        self._phase = _Phase.UNBORN
        self._born_devices.clear()

    # --- inbound --------------------------------------------------------------------------------------

    def parse_command(self, topic: str, payload: bytes) -> Command:
        """Parse an NCMD/DCMD addressed to this node; raise TopicError/PayloadError when malformed."""
        parsed = Topic.parse(topic)
        if parsed.type not in (MessageType.NCMD, MessageType.DCMD):
            raise TopicError(f"not a command topic: {topic!r}")
        if (parsed.group, parsed.node) != (self.group, self.node):
            raise TopicError(f"command for {parsed.group}/{parsed.node}, this is {self.group}/{self.node}")
        metrics = decode_payload(payload).metrics
        if len(metrics) != 1:
            raise PayloadError(f"a command must carry exactly one metric, got {len(metrics)}")
        metric = metrics[0]
        if metric.is_null or metric.value is None:
            raise PayloadError(f"command metric {metric.name or metric.alias!r} has no value")
        if parsed.type is MessageType.NCMD:
            if metric.name == REBIRTH:
                if coerce(metric.value, SpDataType.Boolean) is not True:
                    raise PayloadError("a Rebirth request must have the value true")
                return Rebirth()
            if metric.name == REPLAY:
                return _replay(metric)
        device = parsed.device
        points = self._declared.get(device)
        if points is None:
            target = "the node before its NBIRTH" if device is None else f"device {device!r}, never born"
            raise TopicError(f"command for {target}")
        name = self._resolve(device, points, metric)
        declared = points[name]
        if metric.datatype is not None and metric.datatype is not declared.datatype:
            raise PayloadError(
                f"{name}: command datatype {metric.datatype.name} != declared {declared.datatype.name}"
            )
        value = coerce(metric.value, declared.datatype)
        if isinstance(value, bytes):
            raise PayloadError(f"{name}: byte values cannot be written")
        return WritePoint(device, name, value)

    # --- internals ------------------------------------------------------------------------------------

    def _require(self, action: str) -> None:
        if self._phase not in _ALLOWED[action]:
            raise SessionError(f"{action} is not allowed while the session is {self._phase.value}")

    def _next_seq(self) -> int:
        self._seq = 0 if self._seq is None else (self._seq + 1) % 256
        return self._seq

    def _topic(self, message_type: MessageType, device: str | None) -> str:
        return str(Topic(self.group, message_type, self.node, device))

    def _publish(
        self, message_type: MessageType, device: str | None, metrics: tuple[Metric, ...], now_ms: int
    ) -> Message:
        payload = Payload(timestamp=now_ms, seq=self._next_seq(), metrics=metrics)
        return self._topic(message_type, device), encode_payload(payload)

    def _death(self, now_ms: int | None) -> Message:
        bd_seq = Metric(name=BDSEQ, timestamp=now_ms, datatype=SpDataType.Int64, value=self.bd_seq)
        payload = Payload(timestamp=now_ms, seq=None, metrics=(bd_seq,))
        return self._topic(MessageType.NDEATH, None), encode_payload(payload)

    def _alias(self, device: str | None, name: str) -> int:
        alias = self._aliases.get((device, name))
        if alias is None:
            alias = self._next_alias
            self._next_alias += 1
            self._aliases[(device, name)] = alias
        return alias

    def _declare(
        self, device: str | None, entries: Sequence[tuple[str, PointSpec, Value | None, int]]
    ) -> tuple[Metric, ...]:
        declared: dict[str, _Declared] = {}
        metrics = []
        for name, spec, value, ts in sorted(entries, key=lambda entry: entry[3]):
            if name in declared or name in (BDSEQ, REBIRTH, REPLAY):
                raise SessionError(f"metric {name!r} declared twice in one birth")
            datatype = DOMAIN_TO_SPARKPLUG[spec.datatype]
            alias = self._alias(device, name)
            declared[name] = _Declared(alias, datatype)
            metrics.append(
                Metric(
                    name=name,
                    alias=alias,
                    timestamp=ts,
                    datatype=datatype,
                    value=None if value is None else check_value(value, datatype),
                    is_null=value is None,
                    properties=_eng_properties(spec),
                )
            )
        self._declared[device] = declared
        return tuple(metrics)

    def _data_metric(self, device: str | None, name: str, reading: Reading, historical: bool) -> Metric:
        declared = self._declared.get(device, {}).get(name)
        if declared is None:
            where = "the NBIRTH" if device is None else f"the DBIRTH of {device!r}"
            raise SessionError(f"point {name!r} was not declared in {where}")
        return Metric(
            alias=declared.alias,
            timestamp=reading.ts,
            value=check_value(reading.value, declared.datatype),
            is_historical=historical,
            properties=quality_properties(reading.quality),
        )

    def _resolve(self, device: str | None, points: dict[str, _Declared], metric: Metric) -> str:
        if metric.name is not None:
            if metric.name not in points:
                raise PayloadError(f"unknown metric {metric.name!r} for {device or 'the node'}")
            return metric.name
        for name, declared in points.items():
            if declared.alias == metric.alias:
                return name
        raise PayloadError(f"unknown alias {metric.alias} for {device or 'the node'}")


def _reading_ts(reading: Reading) -> int:
    return reading.ts


def _split(point: str) -> tuple[str, str]:
    try:
        return split_point(point)
    except ValueError as exc:
        raise SessionError(str(exc)) from exc


def _eng_properties(spec: PointSpec) -> tuple[tuple[str, PropertyValue], ...]:
    properties: list[tuple[str, PropertyValue]] = []
    if spec.unit:
        properties.append(("engUnit", spec.unit))
    if spec.low is not None:
        properties.append(("engLow", float(spec.low)))
    if spec.high is not None:
        properties.append(("engHigh", float(spec.high)))
    return tuple(properties)


def _replay(metric: Metric) -> Replay:
    assert metric.value is not None
    from_ms = coerce(metric.value, SpDataType.Int64)
    until = metric.property(REPLAY_UNTIL)
    if not isinstance(from_ms, int) or from_ms < 0:
        raise PayloadError(f"Replay needs a non-negative ms timestamp, got {from_ms!r}")
    if until is not None and (type(until) is not int or until < from_ms):
        raise PayloadError(f"Replay 'until' must be an int >= from ({from_ms}), got {until!r}")
    return Replay(from_ms, until if isinstance(until, int) else None)
