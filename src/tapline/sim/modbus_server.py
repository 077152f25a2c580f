"""Serve a simulated room over Modbus TCP: the room's gateway with one unit id per device, or the
booster PLC as the concentrator of every device on one unit id.

This is the only simulator module that imports pymodbus. The register image of every device is
rebuilt from the physics after each step (``refresh``); reads are served from that image, writes are
decoded through the same register map and handed to the physics as commands, so the gateway under
test talks to exactly what it would talk to in a real room.

A device that the physics reports as not answering (device_offline, network_loss, power loss for
unpowered devices) gets no response at all, so the client sees a timeout as in the field.

Several devices on one unit id (layout ``concentrator``) share its register tables; the first of
them (the PLC) is the one that answers. A mirrored device that is down keeps its last values in the
table, with its ``Online`` point false (see ``sim.concentrator``, which adds the PLC's own points).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer

from tapline.logs import get_logger
from tapline.registers.codec import EncodeError, decode_registers, encode_bit, encode_registers
from tapline.registers.layout import DeviceSlot
from tapline.registers.maps import RegisterPoint, Table
from tapline.sim.concentrator import concentrator_values
from tapline.sim.physics import RoomSim

log = get_logger(__name__)

# Modbus function codes → the table they address.
# A write request reads its target back for the response, with the write's own function code.
_READ_TABLE = {
    1: Table.COIL,
    2: Table.DISCRETE,
    3: Table.HOLDING,
    4: Table.INPUT,
    5: Table.COIL,
    6: Table.HOLDING,
    15: Table.COIL,
    16: Table.HOLDING,
    23: Table.HOLDING,
}
_WRITE_TABLE = {5: Table.COIL, 15: Table.COIL, 6: Table.HOLDING, 16: Table.HOLDING, 23: Table.HOLDING}


@dataclass
class _UnitImage:
    """The registers of one unit id: one device's, or a concentrator's shared by several (``slots``)."""

    slots: list[DeviceSlot]
    tables: dict[Table, list[int]] = field(default_factory=dict)
    by_address: dict[tuple[Table, int], tuple[str, RegisterPoint]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for slot in self.slots:
            for point in slot.register_map.points:
                size = point.address + point.words
                table = self.tables.setdefault(point.table, [])
                if len(table) < size:
                    table.extend([0] * (size - len(table)))
                self.by_address[(point.table, point.address)] = (slot.name, point)

    @property
    def host(self) -> str:
        """The device that answers for this unit id (the PLC of a concentrator)."""
        return self.slots[0].name


class RoomImage:
    """The register image of one simulated room, kept in step with its physics."""

    def __init__(self, room: RoomSim, layout: Sequence[DeviceSlot]) -> None:
        self.room = room
        units: dict[int, list[DeviceSlot]] = {}
        for slot in layout:
            units.setdefault(slot.unit, []).append(slot)
        self.devices = {unit: _UnitImage(slots) for unit, slots in units.items()}
        self.concentrated = any(len(image.slots) > 1 for image in self.devices.values())
        self.refresh()

    def refresh(self) -> None:
        """Encode the physics' current values into every device's registers."""
        values = self.room.values()
        if self.concentrated:
            values.update(concentrator_values(self.room, values))
        for image in self.devices.values():
            for slot in image.slots:
                frozen = slot.name != image.host and not self.room.device_online(slot.name)
                for point in slot.register_map.points:
                    if frozen and point.name != "Online":
                        continue  # the PLC keeps serving what it last read from a device it lost
                    value = values.get(f"{slot.name}/{point.name}")
                    if value is None:
                        continue
                    self._encode(image.tables[point.table], point, value)

    @staticmethod
    def _encode(table: list[int], point: RegisterPoint, value: bool | int | float) -> None:
        try:
            if point.table.is_bit:
                table[point.address] = int(encode_bit(point, value))
            else:
                words = encode_registers(point, value)
                table[point.address : point.address + len(words)] = words
        except EncodeError:
            # A physical value beyond what the wire type holds saturates, as a real
            # transmitter's output does; it never breaks the image.
            return

    def _device(self, unit: int) -> _UnitImage:
        image = self.devices.get(unit)
        if image is None or not self.room.device_online(image.host):
            raise NoSuchIdException(f"unit {unit} does not answer")
        return image

    def read(self, unit: int, function: int, address: int, count: int) -> list[int] | list[bool] | ExcCodes:
        image = self._device(unit)
        table_kind = _READ_TABLE.get(function)
        if table_kind is None:
            return ExcCodes.ILLEGAL_FUNCTION
        table = image.tables.get(table_kind, [])
        if count < 1 or address + count > len(table):
            return ExcCodes.ILLEGAL_ADDRESS
        data = table[address : address + count]
        if table_kind.is_bit:
            return [bool(bit) for bit in data]
        return data

    def write(
        self, unit: int, function: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        image = self._device(unit)
        table_kind = _WRITE_TABLE.get(function)
        if table_kind is None:
            return ExcCodes.ILLEGAL_FUNCTION
        offset = 0
        while offset < len(values):
            found = image.by_address.get((table_kind, address + offset))
            if found is None:
                return ExcCodes.ILLEGAL_ADDRESS
            device, point = found
            if not point.writable or offset + point.words > len(values):
                return ExcCodes.ILLEGAL_ADDRESS
            value: bool | int | float
            if point.table.is_bit:
                value = bool(values[offset])
            else:
                decoded = decode_registers(point, [int(v) for v in values[offset : offset + point.words]])
                if isinstance(decoded, str):
                    return ExcCodes.ILLEGAL_VALUE
                value = decoded
            try:
                self.room.write(f"{device}/{point.name}", value)
            except ValueError as exc:
                log.info("sim_write_refused", unit=unit, point=point.name, value=value, reason=str(exc))
                return ExcCodes.ILLEGAL_VALUE
            offset += point.words
        self.refresh()
        return None


class _Context(ModbusServerContext):
    """pymodbus server context reading from a RoomImage (the library's datastore seam)."""

    def __init__(self, image: RoomImage) -> None:  # no super().__init__: it only builds datablocks
        self.image = image
        self.old_simulator = True
        self.simdevices = []
        self._devices = {}

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        return self.image.read(device_id, func_code, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        return self.image.write(device_id, func_code, address, values)

    def device_ids(self) -> list[int]:
        return list(self.image.devices)


class RoomModbusServer:
    """A Modbus TCP server for one simulated room on ``host:port``."""

    def __init__(self, image: RoomImage, host: str = "127.0.0.1", port: int = 0) -> None:
        self.image = image
        self.host = host
        self.port = port
        self._server: ModbusTcpServer | None = None

    async def start(self) -> None:
        self._server = ModbusTcpServer(
            _Context(self.image), address=(self.host, self.port), ignore_missing_devices=True
        )
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus reports a failed bind this way
            raise OSError(f"cannot listen for Modbus TCP on {self.host}:{self.port}: {exc}") from exc
        sockets = getattr(self._server.transport, "sockets", None) or ()
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
