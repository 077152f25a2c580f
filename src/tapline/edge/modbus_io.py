"""The gateway's Modbus transport: the only module that imports the pymodbus client.

Rules:
- ``BusClient`` is the one-method-per-operation seam (read, write, close) the poller, the command
  handler and the interlocks talk to; tests supply fakes.
- ``ExclusiveBus`` wraps any ``BusClient`` and is the *only* way the gateway reaches a bus: it allows
  exactly one request in flight (an asyncio lock, FIFO), which a serial line physically requires and
  which keeps a TCP room gateway from being flooded, and it keeps the bus and per-unit statistics
  (requests, timeouts, errors, latency) that are published as gateway metrics.
- pymodbus errors are translated here into the ``ModbusIOError`` tree; nothing above this module
  sees a pymodbus type. A garbage or truncated frame shows up as ``DeviceTimeout`` (pymodbus drops
  it and the request times out) or ``DeviceException``; it never raises anything else.
- Retries and backoff belong to the poller (it knows which device failed); this layer does a single
  attempt per call with the bus timeout.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from tapline.edge.config import SerialBus, TcpBus
from tapline.registers.maps import Table

_T = TypeVar("_T")
ILLEGAL_FUNCTION = 1


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
    """Counters of one bus or one unit on it, published as gateway metrics."""

    requests: int = 0
    timeouts: int = 0
    errors: int = 0  # exception responses, garbage, link failures
    reconnects: int = 0
    latency_total_s: float = 0.0
    latency_max_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.latency_total_s += seconds
        self.latency_max_s = max(self.latency_max_s, seconds)

    @property
    def latency_mean_ms(self) -> float:
        return 1000.0 * self.latency_total_s / self.requests if self.requests else 0.0


class ExclusiveBus:
    """One request in flight on ``inner``, with bus and per-unit statistics (see module rules)."""

    def __init__(self, inner: BusClient, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.inner = inner
        self.name = inner.name
        self.stats = BusStats()
        self.units: dict[int, BusStats] = {}
        self._clock = clock
        self._lock = asyncio.Lock()

    def unit_stats(self, unit: int) -> BusStats:
        stats = self.units.get(unit)
        if stats is None:
            stats = self.units[unit] = BusStats()
        return stats

    async def _run(self, unit: int, call: Callable[[], Awaitable[_T]]) -> _T:
        async with self._lock:
            unit_stats = self.unit_stats(unit)
            self.stats.requests += 1
            unit_stats.requests += 1
            started = self._clock()
            try:
                return await call()
            except DeviceTimeout:
                self.stats.timeouts += 1
                unit_stats.timeouts += 1
                raise
            except ModbusIOError:
                self.stats.errors += 1
                unit_stats.errors += 1
                raise
            finally:
                elapsed = self._clock() - started
                self.stats.observe(elapsed)
                unit_stats.observe(elapsed)

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[int] | list[bool]:
        return await self._run(unit, lambda: self.inner.read(unit, table, address, count))

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int] | Sequence[bool]
    ) -> None:
        await self._run(unit, lambda: self.inner.write(unit, table, address, values))

    async def close(self) -> None:
        async with self._lock:
            await self.inner.close()


class PymodbusBus:
    """A ``BusClient`` on pymodbus (TCP, RTU over TCP, or RTU on a serial port); wrap it in
    ``ExclusiveBus`` (its own lock only guards the connection object)."""

    def __init__(self, config: TcpBus | SerialBus) -> None:
        self.name = config.name
        self.config = config
        self.reconnects = 0
        self._lock = asyncio.Lock()
        self._client: Any = None
        self._multiple_only: set[tuple[int, Table]] = set()

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
        self.reconnects += 1
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
            try:
                response = await getattr(client, method)(*args, **kwargs)
            except ModbusIOException as exc:
                _raise_if_cancelling()
                raise DeviceTimeout(f"bus {self.name}: {what}: no response") from exc
            except (ConnectionException, OSError) as exc:
                client.close()
                _raise_if_cancelling()
                raise LinkDown(f"bus {self.name}: {what}: {exc}") from exc
            except (ModbusException, ValueError, IndexError, struct.error) as exc:
                # garbage frames, wrong ids, decoding failures (pymodbus#2698: struct.error on junk)
                _raise_if_cancelling()
                raise DeviceException(0, f"bus {self.name}: {what}: {exc}") from exc
            _raise_if_cancelling()
            if response.isError():
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
        """Write coils or holding registers. One value goes out as FC5/FC6; a unit that answers
        those with "illegal function" is written with FC15/FC16 from then on (FC16 is the one
        write every Modbus device has, conformance class 0)."""
        what = f"write unit {unit} {table.value} {address}"
        if table not in (Table.COIL, Table.HOLDING):
            raise DeviceException(0, f"bus {self.name}: {table.value} registers are read-only")
        multiple = len(values) != 1 or (unit, table) in self._multiple_only
        try:
            await self._write(what, unit, table, address, values, multiple)
        except DeviceException as exc:
            if multiple or exc.code != ILLEGAL_FUNCTION:
                raise
            self._multiple_only.add((unit, table))
            await self._write(what, unit, table, address, values, True)

    async def _write(
        self,
        what: str,
        unit: int,
        table: Table,
        address: int,
        values: Sequence[int] | Sequence[bool],
        multiple: bool,
    ) -> None:
        if table is Table.COIL:
            bits = [bool(v) for v in values]
            if multiple:
                await self._call(what, "write_coils", address, bits, device_id=unit)
            else:
                await self._call(what, "write_coil", address, bits[0], device_id=unit)
        else:
            words = [int(v) for v in values]
            if multiple:
                await self._call(what, "write_registers", address, words, device_id=unit)
            else:
                await self._call(what, "write_register", address, words[0], device_id=unit)

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _raise_if_cancelling() -> None:
    """pymodbus may turn a cancellation into a timeout or a reply; a cancelled task must stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
