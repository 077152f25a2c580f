"""The gateway's Modbus transport: the only module that imports the pymodbus client.

Rules:
- One ``BusClient`` per physical bus (a TCP connection to a room gateway, or a serial line). It
  allows exactly one request in flight (an asyncio lock), which is what a serial line physically
  requires and what keeps a TCP room gateway from being flooded.
- pymodbus errors are translated here into the ``ModbusIOError`` tree; nothing above this module
  sees a pymodbus type.
- Retries and backoff belong to the poller (it knows which device failed); this layer does a single
  attempt per call with the bus timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from tapline.edge.config import SerialBus, TcpBus
from tapline.registers.maps import Table


class ModbusIOError(Exception):
    """Base of every Modbus failure the gateway handles (see subclasses)."""


class LinkDown(ModbusIOError):
    """The bus itself is unavailable (TCP connect refused, serial port missing)."""


class DeviceTimeout(ModbusIOError):
    """The device did not answer within the bus timeout."""


class DeviceException(ModbusIOError):
    """The device answered with a Modbus exception (illegal address, busy, gateway failure …)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class BusClient(Protocol):
    """The seam the poller and command handler talk to; tests may supply their own."""

    name: str

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[int] | list[bool]: ...

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int] | Sequence[bool]
    ) -> None: ...

    async def close(self) -> None: ...


@dataclass
class BusStats:
    """Counters a bus keeps, published as gateway metrics."""

    requests: int = 0
    timeouts: int = 0
    errors: int = 0
    reconnects: int = 0
    latency_total_s: float = 0.0
    latency_max_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.latency_total_s += seconds
        self.latency_max_s = max(self.latency_max_s, seconds)


class PymodbusBus:
    """A ``BusClient`` on pymodbus (TCP, RTU over TCP, or RTU on a serial port)."""

    def __init__(self, config: TcpBus | SerialBus) -> None:
        self.name = config.name
        self.config = config
        self.stats = BusStats()
        self._lock = asyncio.Lock()
        self._client: Any = None

    def _make_client(self) -> Any:
        config = self.config
        # reconnect_delay=0: pymodbus must not reconnect on its own; we reconnect on the next request.
        if isinstance(config, SerialBus):
            return AsyncModbusSerialClient(
                config.port,
                baudrate=config.baudrate,
                parity=config.parity,
                stopbits=config.stopbits,
                timeout=config.timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        framer = FramerType.RTU if config.kind == "rtu_over_tcp" else FramerType.SOCKET
        return AsyncModbusTcpClient(
            config.host,
            port=config.port,
            framer=framer,
            timeout=config.timeout_s,
            retries=0,
            reconnect_delay=0,
        )

    async def _connected(self) -> Any:
        if self._client is not None and self._client.connected:
            return self._client
        if self._client is not None:
            self._client.close()
        self._client = self._make_client()
        self.stats.reconnects += 1
        try:
            ok = await self._client.connect()
        except (OSError, ModbusException) as exc:
            raise LinkDown(f"bus {self.name}: {exc}") from exc
        if not ok:
            raise LinkDown(f"bus {self.name}: cannot connect")
        return self._client

    async def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            client = await self._connected()
            self.stats.requests += 1
            started = time.perf_counter()
            try:
                response = await getattr(client, method)(*args, **kwargs)
            except ModbusIOException as exc:
                self.stats.timeouts += 1
                raise DeviceTimeout(f"bus {self.name}: {what}: no response") from exc
            except (ConnectionException, OSError) as exc:
                self.stats.errors += 1
                client.close()
                raise LinkDown(f"bus {self.name}: {what}: {exc}") from exc
            except ModbusException as exc:  # garbage frames, wrong ids, decoding failures
                self.stats.errors += 1
                raise DeviceException(0, f"bus {self.name}: {what}: {exc}") from exc
            finally:
                self.stats.observe(time.perf_counter() - started)
            if response.isError():
                self.stats.errors += 1
                code = int(getattr(response, "exception_code", 0) or 0)
                raise DeviceException(code, f"bus {self.name}: {what}: exception code {code}")
            return response

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[int] | list[bool]:
        what = f"read unit {unit} {table.value} {address}+{count}"
        method = {
            Table.COIL: "read_coils",
            Table.DISCRETE: "read_discrete_inputs",
            Table.HOLDING: "read_holding_registers",
            Table.INPUT: "read_input_registers",
        }[table]
        response = await self._call(what, method, address, count=count, device_id=unit)
        if table.is_bit:
            bits: list[bool] = list(response.bits[:count])
            if len(bits) < count:
                raise DeviceException(0, f"bus {self.name}: {what}: short response")
            return bits
        registers: list[int] = list(response.registers)
        if len(registers) < count:
            raise DeviceException(0, f"bus {self.name}: {what}: short response")
        return registers

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int] | Sequence[bool]
    ) -> None:
        what = f"write unit {unit} {table.value} {address}"
        if table is Table.COIL:
            if len(values) != 1:
                await self._call(what, "write_coils", address, [bool(v) for v in values], device_id=unit)
            else:
                await self._call(what, "write_coil", address, bool(values[0]), device_id=unit)
        elif table is Table.HOLDING:
            words = [int(v) for v in values]
            if len(words) == 1:
                await self._call(what, "write_register", address, words[0], device_id=unit)
            else:
                await self._call(what, "write_registers", address, words, device_id=unit)
        else:
            raise DeviceException(0, f"bus {self.name}: {table.value} registers are read-only")

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
