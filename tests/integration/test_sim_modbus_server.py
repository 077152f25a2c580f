"""The simulated room served over Modbus TCP: reads decode through the same maps, writes reach the PLC."""

from __future__ import annotations

from pymodbus.client import AsyncModbusTcpClient

from tapline.registers.blocks import plan_blocks
from tapline.registers.layout import standard_layout
from tapline.registers.maps import builtin_map
from tapline.sim.modbus_server import RoomImage, RoomModbusServer
from tapline.sim.physics import RoomSim
from tapline.sim.spec import make_room_spec


async def test_reads_and_single_and_multiple_writes() -> None:
    spec = make_room_spec("PR-0001", "jianghan", 1)
    room = RoomSim(spec, 1)
    server = RoomModbusServer(RoomImage(room, standard_layout(spec.pumps)))
    await server.start()
    client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
    try:
        assert await client.connect()
        [block] = [b for b in plan_blocks(builtin_map("booster_plc").points) if b.table.value == "input"]
        response = await client.read_input_registers(block.address, count=block.count, device_id=1)
        values = block.decode(response.registers)
        assert values["OutletPressure"] == round(float(room.values()["plc/OutletPressure"]), 3)

        single = await client.write_register(0, 500, device_id=1)  # FC6: setpoint 0.500 MPa
        assert not single.isError()
        assert room.values()["plc/OutletPressureSP"] == 0.5
        multiple = await client.write_registers(0, [480], device_id=1)  # FC16
        assert not multiple.isError()
        assert room.values()["plc/OutletPressureSP"] == 0.48
        coil = await client.write_coil(0, True, device_id=11)  # FC5: vfd1 RunCommand
        assert not coil.isError()

        refused = await client.write_register(0, 2000, device_id=1)  # 2.0 MPa: outside the PLC's limits
        assert refused.isError()
        read_only = await client.write_register(1, 1, device_id=31)  # env has no holding registers
        assert read_only.isError()
    finally:
        client.close()
        await server.stop()
