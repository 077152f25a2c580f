"""Fleet-level simulation: thousands of pump rooms as Sparkplug B edge nodes, for load and scale tests.

Rules:
- A ``FleetSpec`` fixes everything that decides the trace: rooms, points per room, sampling period,
  seed, districts, reporting. The same spec and start time give the same published values and
  timestamps however the rooms are spread over processes: rooms are independent (they share only
  their district's supply curve, a pure function of time) and room j's sample k is read at
  ``start_ms + offset_ms(j) + k × interval``. Room N is the same room (same ``RoomSim``) as room N of
  the device-level city with the same seed and districts.
- Every room is one edge node (``RoomFeed``) behaving as the gateway does on the wire: per connection
  a new bdSeq and the NDEATH Will carrying it; NBIRTH (bdSeq, ``Node Control/Rebirth``, ``Node
  Control/Replay``), then one DBIRTH per device declaring every point with its alias; DDATA by alias,
  report by exception against the register maps' deadbands with every point re-sent at least every
  ``full_refresh_s`` (or every point every sample with ``report="all"``); seq 0..255 over all of it.
  Values outside a point's engineering range carry the UNCERTAIN quality, as the gateway marks them.
- NCMD ``Node Control/Rebirth`` → a new NBIRTH + DBIRTHs (same bdSeq, same aliases). ``Node
  Control/Replay`` → the samples still held (``history_s``) as ``is_historical`` DDATA, then the
  Replay confirmation; a fleet keeps no durable history, so what is older is gone (and counted).
- Points: the room's standard points (DESIGN §5: 39/49/59 for 2/3/4 pumps) cut down to ``points`` in
  ``DROP_ORDER``, or filled up with synthetic analogue inputs ``aux/AI01``… (slow sinusoids plus
  noise, deadband 0.5 on a 0–100 span) so a benchmark can ask for 80 points a room.
- ``cycle`` K > 0 (for load tests that need the generator cheap): each room runs its physics for K
  periods while it is built and then publishes those K samples over and over, each message one
  ``bytes.join`` of pre-encoded pieces with the new timestamp (``DeviceEncoder.template``). The wire
  is the same; the values repeat every K periods, and with report by exception the wrap from sample K
  back to sample 1 is a jump no deadband saw. A room born late starts from the cycle's first sample.
- Pure: no sockets, no clock, no logging; time comes in as ms. ``fleet_publish`` does the IO.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Final, Literal

from tapline.domain.model import DataType, PointSpec, Quality, Reading, Value
from tapline.registers.layout import standard_layout
from tapline.sim.district import DistrictSupply
from tapline.sim.fleet_codec import SEQ_FIELDS, DeviceEncoder, varint
from tapline.sim.names import DISTRICTS, district_of, site_id
from tapline.sim.noise import stream
from tapline.sim.physics import RoomSim
from tapline.sim.spec import make_room_spec
from tapline.sparkplug.edge_session import BirthValue, EdgeNodeSession, Message, Rebirth, Replay
from tapline.sparkplug.errors import SparkplugError
from tapline.sparkplug.topics import MessageType, Topic

__all__ = [
    "DROP_ORDER",
    "FeedCounters",
    "FleetSpec",
    "RoomFeed",
    "RoomPlan",
    "ValueSink",
    "plan_rooms",
    "select_points",
]

DROP_ORDER: Final = (
    "Reset",
    "RunCommand",
    "Smoke",
    "UPS",
    "Starts",
    "RunHours",
    "Humidity",
    "Mode",
    "TotalFlow",
    "Energy",
    "OutletPressureSP",
    "Temperature",
    "FaultCode",
    "PH",
    "Turbidity",
    "Voltage",
    "Door",
    "Power",
    "Current",
)
"""Standard points dropped first when a room must publish fewer than its standard set (highest
pump first within a name); points not listed go last, from the end of the room's list."""

AUX_DEVICE: Final = "aux"
AUX_DEADBAND: Final = 0.5
START_HOUR: Final = 8.0
"""Simulated time of day every room starts at (as the device-level city)."""

ValueSink = Callable[[int, int, Sequence[int], Sequence[Value]], None]
"""``(site index, ts, point indices, values)``: told every value a feed publishes (the record)."""


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """What a fleet publishes (see the module rules)."""

    sites: int
    points: int = 60
    interval_s: float = 5.0
    districts: int = 8
    seed: int = 1
    group_prefix: str = ""
    report: Literal["exception", "all"] = "exception"
    full_refresh_s: float = 300.0
    history_s: float = 0.0
    cycle: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.cycle <= 100_000:
            problems.append(f"cycle must be 0..100000 periods, got {self.cycle}")
        if not 1 <= self.sites <= 100_000:
            problems.append(f"sites must be 1..100000, got {self.sites}")
        if not 1 <= self.points <= 4000:
            problems.append(f"points must be 1..4000, got {self.points}")
        if not 0.05 <= self.interval_s <= 3600:
            problems.append(f"interval must be 0.05..3600 s, got {self.interval_s}")
        if not 1 <= self.districts <= len(DISTRICTS):
            problems.append(f"districts must be 1..{len(DISTRICTS)}, got {self.districts}")
        if self.full_refresh_s <= 0 or self.history_s < 0:
            problems.append("full_refresh_s must be > 0 and history_s >= 0")
        if self.report not in ("exception", "all"):
            problems.append(f"report must be 'exception' or 'all', got {self.report!r}")
        try:
            Topic(self.group_prefix + DISTRICTS[0], MessageType.NBIRTH, "PR-0001")
        except SparkplugError:
            problems.append(f"group prefix {self.group_prefix!r} makes an invalid Sparkplug group id")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def interval_ms(self) -> int:
        return round(self.interval_s * 1000)

    def offset_ms(self, position: int, count: int) -> int:
        """When in each period the room at ``position`` of ``count`` (one process's rooms) samples."""
        return (position * self.interval_ms) // max(count, 1)


@dataclass(frozen=True, slots=True)
class RoomPlan:
    """One room of the fleet: its 0-based index, id, district and Sparkplug group."""

    index: int
    site: str
    district: str
    group: str


def plan_rooms(spec: FleetSpec) -> list[RoomPlan]:
    """Every room of the fleet, PR-0001… dealt round-robin over the first ``districts`` districts."""
    names = DISTRICTS[: spec.districts]
    plans = []
    for index in range(spec.sites):
        district = district_of(index, names)
        plans.append(RoomPlan(index, site_id(index), district, spec.group_prefix + district))
    return plans


def _aux_specs(count: int) -> list[PointSpec]:
    width = max(2, len(str(count)))
    return [
        PointSpec(AUX_DEVICE, f"AI{k:0{width}d}", DataType.FLOAT, unit="", low=0.0, high=100.0)
        for k in range(1, count + 1)
    ]


@cache
def select_points(pumps: int, count: int) -> tuple[PointSpec, ...]:
    """The ``count`` points a room with ``pumps`` pumps publishes, in device order (module rules).

    Cached: every room of a kind shares the same specs (and their path strings)."""
    standard = [
        point.spec(slot.name) for slot in standard_layout(pumps) for point in slot.register_map.points
    ]
    if count >= len(standard):
        return (*standard, *_aux_specs(count - len(standard)))

    def rank(position: int) -> tuple[int, int, int]:
        point = standard[position]
        order = DROP_ORDER.index(point.name) if point.name in DROP_ORDER else len(DROP_ORDER)
        pump = int(point.device[3:]) if point.device.startswith("vfd") else 0
        return (order, -pump, -position)

    dropped = set(sorted(range(len(standard)), key=rank)[: len(standard) - count])
    return tuple(point for position, point in enumerate(standard) if position not in dropped)


def deadband_of(spec: PointSpec) -> float:
    """The report-by-exception deadband of a point: its register map's (as the gateway), 0.5 for aux."""
    if spec.device == AUX_DEVICE:
        return AUX_DEADBAND
    model = "vfd1" if spec.device.startswith("vfd") else spec.device
    slot = next(slot for slot in standard_layout(1) if slot.name == model)
    return slot.register_map.point(spec.name).deadband


@dataclass(frozen=True, slots=True)
class _Aux:
    """A synthetic analogue input: base + amplitude·sin(ω t + φ) + uniform noise of ±``noise``."""

    base: float
    amplitude: float
    omega: float
    phase: float
    noise: float

    def value(self, t_s: float, jitter: float) -> float:
        """The reading at ``t_s``; ``jitter`` is a uniform draw in [0, 1)."""
        raw = self.base + self.amplitude * math.sin(self.omega * t_s + self.phase)
        return round(raw + self.noise * (2.0 * jitter - 1.0), 2)


@dataclass
class _Device:
    """One device of a feed: its points, report-by-exception memory and encoder."""

    name: str
    specs: list[PointSpec]
    first: int  # index of its first point in the room's point list
    deadbands: list[float]
    limits: list[tuple[float, float] | None]  # engineering range of each numeric point
    aux: list[_Aux]
    paths: list[str] = field(default_factory=list)
    current: list[Value] = field(default_factory=list)
    last: list[Value | None] = field(default_factory=list)
    last_ts: list[int] = field(default_factory=list)
    encoder: DeviceEncoder | None = None

    def quality(self, local: int, value: Value) -> Quality:
        """UNCERTAIN outside the engineering range (the gateway's rule), else GOOD."""
        bounds = self.limits[local]
        if bounds is None or isinstance(value, bool | str) or bounds[0] <= value <= bounds[1]:
            return Quality.GOOD
        return Quality.UNCERTAIN


@dataclass
class FeedCounters:
    births: int = 0
    rebirths: int = 0
    replays: int = 0
    replay_gaps: int = 0  # replays asking for data older than the history held
    refused: int = 0
    malformed: int = 0


@dataclass(frozen=True, slots=True)
class _Template:
    """One pre-encoded DDATA of a replayed cycle: a device's reported points and their payload pieces."""

    position: int  # of the device in the feed
    indices: tuple[int, ...]
    values: tuple[Value, ...]
    segments: tuple[bytes, ...]


class _FleetSession(EdgeNodeSession):
    """The gateway's session, plus handing out seq numbers to the fast DDATA encoder."""

    def take_seq(self) -> int:
        self._require("ddata")
        return self._next_seq()


class RoomFeed:
    """One simulated room as a Sparkplug edge node (see the module rules)."""

    def __init__(
        self,
        plan: RoomPlan,
        spec: FleetSpec,
        supply: DistrictSupply,
        offset_ms: int,
        sink: ValueSink | None = None,
    ) -> None:
        self.plan = plan
        self.spec = spec
        self.supply = supply
        self.offset_ms = offset_ms
        self.sink = sink
        self.counters = FeedCounters()
        room_spec = make_room_spec(plan.site, plan.district, spec.seed)
        self.physics = RoomSim(room_spec, spec.seed, start_s=START_HOUR * 3600.0)
        self.points = select_points(room_spec.pumps, spec.points)
        self.devices = self._devices()
        self.session: _FleetSession | None = None
        self.bd_seq = -1
        self.sampled_ts: int | None = None
        self.published_values = 0
        self._full_refresh_ms = round(spec.full_refresh_s * 1000)
        self.history: deque[tuple[int, int, tuple[int, ...], tuple[Value, ...]]] | None = None
        if spec.history_s > 0:
            periods = math.ceil(spec.history_s / spec.interval_s) + 1
            self.history = deque(maxlen=periods * len(self.devices))
        self._cycle: list[list[_Template]] = []
        self._cycle_aliases: list[list[int]] = []
        self._cycle_position = 0  # 0: the cycle's first sample (births); then 1..K
        self._cycle_exact = False  # the templates' aliases are this session's
        if spec.cycle:
            self._prepare_cycle()

    def _devices(self) -> list[_Device]:
        rng = stream(self.spec.seed, "fleet", self.plan.site, "aux")
        self._jitter = stream(self.spec.seed, "fleet", self.plan.site, "aux-noise").random
        devices: list[_Device] = []
        for position, point in enumerate(self.points):
            if not devices or devices[-1].name != point.device:
                devices.append(_Device(point.device, [], position, [], [], []))
            device = devices[-1]
            device.specs.append(point)
            device.paths.append(point.path)
            device.deadbands.append(deadband_of(point))
            numeric = point.datatype in (DataType.FLOAT, DataType.INT)
            has_range = point.low is not None and point.high is not None
            device.limits.append((point.low, point.high) if numeric and has_range else None)  # type: ignore[arg-type]
            if point.device == AUX_DEVICE:
                device.aux.append(
                    _Aux(
                        base=rng.uniform(20.0, 80.0),
                        amplitude=rng.uniform(2.0, 15.0),
                        omega=2.0 * math.pi / rng.uniform(600.0, 7200.0),
                        phase=rng.uniform(0.0, 2.0 * math.pi),
                        noise=rng.uniform(0.1, 0.6),
                    )
                )
        for device in devices:
            device.last = [None] * len(device.specs)
            device.last_ts = [0] * len(device.specs)
        return devices

    # --- identity --------------------------------------------------------------------------------
    @property
    def site(self) -> str:
        return self.plan.site

    @property
    def group(self) -> str:
        return self.plan.group

    @property
    def born(self) -> bool:
        return self.session is not None and self.session.born

    # --- sessions --------------------------------------------------------------------------------
    def new_session(self) -> Message:
        """Start a session for a new MQTT connection (next bdSeq); returns its NDEATH Will."""
        self.bd_seq = (self.bd_seq + 1) % 256
        self.session = _FleetSession(self.plan.group, self.plan.site, self.bd_seq)
        for device in self.devices:
            device.encoder = None
        return self.session.will()

    def death(self, now_ms: int) -> Message | None:
        """The NDEATH to publish before disconnecting on purpose (None if never born)."""
        if self.session is None or not self.session.born:
            return None
        return self.session.ndeath(now_ms)

    # --- sampling and reporting ------------------------------------------------------------------
    def sample(self, ts_ms: int, step: bool = True) -> None:
        """Read every point at ``ts_ms``, after stepping the physics one period (unless ``step``)."""
        if self._cycle:
            if step:
                self._cycle_position = self._cycle_position % len(self._cycle) + 1
            self.sampled_ts = ts_ms
            return
        physics = self.physics
        if step:
            physics.step(self.spec.interval_s, self.supply.pressure_mpa(physics.t_s))
        values = physics.values()
        t_s = physics.t_s
        for device in self.devices:
            if device.aux:
                jitter = self._jitter
                device.current = [aux.value(t_s, jitter()) for aux in device.aux]
            else:
                device.current = [values[path] for path in device.paths]
        self.sampled_ts = ts_ms

    def births(self, now_ms: int) -> list[Message]:
        """NBIRTH and every DBIRTH (first birth of the session or a rebirth), with current aliases.

        Each point is declared with the value last reported and its timestamp; before anything was
        reported, with the latest sample (which then counts as reported).
        """
        session = self.session
        if session is None:
            raise RuntimeError("births before new_session()")
        if self.sampled_ts is None:
            self.sample(now_ms, step=False)
        assert self.sampled_ts is not None
        if session.born:
            self.counters.rebirths += 1
        self.counters.births += 1
        session.rebirth()
        messages = [session.nbirth([], now_ms)]
        births_aliases: list[list[int]] = []
        for device in self.devices:
            if device.last[0] is None:
                device.last = list(device.current)
                device.last_ts = [self.sampled_ts] * len(device.specs)
            birth: list[BirthValue] = [
                (spec, value, ts)
                for spec, value, ts in zip(device.specs, device.last, device.last_ts, strict=True)
            ]
            messages.append(session.dbirth(device.name, birth, now_ms))
            self.published_values += sum(1 for value in device.last if value is not None)
            aliases = [session.alias_of(device.name, spec.name) or 0 for spec in device.specs]
            datatypes = [spec.datatype for spec in device.specs]
            device.encoder = DeviceEncoder(aliases, datatypes, device.limits)
            births_aliases.append(aliases)
            if self.sink is not None:
                self._record_birth(device)
        self._cycle_exact = births_aliases == self._cycle_aliases
        return messages

    def _record_birth(self, device: _Device) -> None:
        assert self.sink is not None
        by_ts: dict[int, tuple[list[int], list[Value]]] = {}
        for local, (value, ts) in enumerate(zip(device.last, device.last_ts, strict=True)):
            if value is not None:
                indices, values = by_ts.setdefault(ts, ([], []))
                indices.append(device.first + local)
                values.append(value)
        for ts, (indices, values) in by_ts.items():
            self.sink(self.plan.index, ts, indices, values)

    def report(self) -> list[Message]:
        """DDATA for the latest sample: what changed past its deadband or is due for a refresh."""
        session, ts = self.session, self.sampled_ts
        if session is None or not session.born or ts is None:
            return []
        if self._cycle:
            return self._replay_cycle(session, ts) if self._cycle_position else []
        every = self.spec.report == "all"
        stale_before = ts - self._full_refresh_ms
        messages: list[Message] = []
        topic_base = f"spBv1.0/{self.plan.group}/DDATA/{self.plan.site}/"
        for position, device in enumerate(self.devices):
            encoder = device.encoder
            if encoder is None:
                continue
            current = device.current
            if every:
                indices: list[int] = list(range(len(current)))
                values: list[Value] = current
                device.last = list(current)
                device.last_ts = [ts] * len(current)
            else:
                indices, values = _changed(device, ts, stale_before)
                if not indices:
                    continue
            payload = encoder.encode(ts, session.take_seq(), indices, values)
            messages.append((topic_base + device.name, payload))
            self.published_values += len(indices)
            if self.history is not None:
                self.history.append((ts, position, tuple(indices), tuple(values)))
            if self.sink is not None:
                first = device.first
                self.sink(self.plan.index, ts, [first + local for local in indices], values)
        return messages

    # --- a replayed cycle (spec.cycle) --------------------------------------------------------------
    def _prepare_cycle(self) -> None:
        """Run the physics for the cycle's K periods and pre-encode what each period reports."""
        spec, interval = self.spec, self.spec.interval_ms
        scratch = _FleetSession(self.plan.group, self.plan.site, 0)
        scratch.nbirth([], 0)
        encoders = []
        self.sample(0, step=False)
        for device in self.devices:
            scratch.dbirth(device.name, [(p, None, 0) for p in device.specs], 0)
            aliases = [scratch.alias_of(device.name, p.name) or 0 for p in device.specs]
            self._cycle_aliases.append(aliases)
            encoders.append(DeviceEncoder(aliases, [p.datatype for p in device.specs], device.limits))
            device.last = list(device.current)
            device.last_ts = [0] * len(device.specs)
        first = [list(device.current) for device in self.devices]
        cycle: list[list[_Template]] = []
        for period in range(1, spec.cycle + 1):
            ts = period * interval
            self.sample(ts)
            templates = []
            for position, device in enumerate(self.devices):
                if spec.report == "all":
                    indices, values = list(range(len(device.current))), device.current
                else:
                    indices, values = _changed(device, ts, ts - self._full_refresh_ms)
                if indices:
                    segments = encoders[position].template(indices, values)
                    templates.append(_Template(position, tuple(indices), tuple(values), segments))
            cycle.append(templates)
        for device, values in zip(self.devices, first, strict=True):
            device.current = values
            device.last = [None] * len(device.specs)
            device.last_ts = [0] * len(device.specs)
        self._cycle = cycle

    def _replay_cycle(self, session: _FleetSession, ts: int) -> list[Message]:
        ts_bytes = varint(ts)
        exact = self._cycle_exact and len(ts_bytes) == 6
        topic_base = f"spBv1.0/{self.plan.group}/DDATA/{self.plan.site}/"
        messages: list[Message] = []
        for template in self._cycle[self._cycle_position - 1]:
            device = self.devices[template.position]
            indices, values = template.indices, template.values
            if exact:
                payload = ts_bytes.join(template.segments) + SEQ_FIELDS[session.take_seq()]
            else:
                assert device.encoder is not None
                payload = device.encoder.encode(ts, session.take_seq(), indices, values)
            messages.append((topic_base + device.name, payload))
            last, last_ts = device.last, device.last_ts
            for local, value in zip(indices, values, strict=True):
                last[local] = value
                last_ts[local] = ts
            self.published_values += len(indices)
            if self.history is not None:
                self.history.append((ts, template.position, indices, values))
            if self.sink is not None:
                first = device.first
                self.sink(self.plan.index, ts, [first + local for local in indices], values)
        return messages

    # --- commands --------------------------------------------------------------------------------
    def command(self, topic: str, payload: bytes, now_ms: int) -> list[Message]:
        """Handle an NCMD/DCMD for this node; returns what to publish in answer."""
        session = self.session
        if session is None:
            return []
        try:
            command = session.parse_command(topic, payload)
        except SparkplugError:
            self.counters.malformed += 1
            return []
        if isinstance(command, Rebirth):
            return self.births(now_ms) if session.born else []
        if isinstance(command, Replay):
            return self._replay(command, now_ms) if session.born else []
        self.counters.refused += 1  # the fleet simulates no writable equipment
        return []

    def _replay(self, replay: Replay, now_ms: int) -> list[Message]:
        session = self.session
        assert session is not None
        self.counters.replays += 1
        until = replay.to_ms if replay.to_ms is not None else now_ms
        history = self.history or ()
        held = [entry for entry in history if replay.from_ms <= entry[0] <= until]
        oldest = history[0][0] if history else None
        if oldest is None or replay.from_ms < oldest - self.spec.interval_ms:
            self.counters.replay_gaps += 1
        messages = []
        for ts, position, indices, values in held:
            device = self.devices[position]
            readings = [
                Reading(device.specs[local].path, ts, value, device.quality(local, value))
                for local, value in zip(indices, values, strict=True)
            ]
            messages.append(session.ddata(device.name, readings, now_ms, historical=True))
        messages.append(session.replay_done(replay, now_ms))
        return messages


def _changed(device: _Device, ts: int, stale_before: int) -> tuple[list[int], list[Value]]:
    """Report by exception for one device: the points past their deadband or due for a refresh,
    remembered as reported at ``ts``."""
    last, last_ts, deadbands = device.last, device.last_ts, device.deadbands
    indices: list[int] = []
    values: list[Value] = []
    for local, value in enumerate(device.current):
        old = last[local]
        deadband = deadbands[local]
        if (
            old is not None
            and last_ts[local] > stale_before
            # bools, ints and deadband-free points report any change; numbers only past the band
            and (value == old if deadband <= 0.0 else abs(value - old) <= deadband)  # type: ignore[operator]
        ):
            continue
        indices.append(local)
        values.append(value)
        last[local] = value
        last_ts[local] = ts
    return indices, values
