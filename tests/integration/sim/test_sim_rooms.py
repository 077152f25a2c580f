"""``tapline sim rooms``: rooms on fixed Modbus ports, and gateway configs that ``tapline edge`` loads."""

from __future__ import annotations

from pathlib import Path

from tapline.bootstrap import write_room_configs
from tapline.edge.config import TcpBus, load_room
from tapline.sim.runner import SimulatedCity
from tests.helpers import free_port


async def test_rooms_listen_on_consecutive_ports_and_their_configs_load(tmp_path: Path) -> None:
    base = free_port()
    city = SimulatedCity.build(3, districts=2, seed=2, base_port=base)
    await city.start()
    try:
        assert [room.server.port for room in city.rooms.values()] == [base, base + 1, base + 2]
        paths = write_room_configs(city, tmp_path)
        assert [p.name for p in paths] == ["PR-0001.yaml", "PR-0002.yaml", "PR-0003.yaml"]
        room, maps = load_room(paths[1])
    finally:
        await city.stop()
    assert room.site == "PR-0002"
    assert room.district == "qiaokou"
    bus = room.buses[0]
    assert isinstance(bus, TcpBus)
    assert bus.port == base + 1
    assert set(maps) == {slot.name for slot in city.rooms["PR-0002"].layout}


async def test_concentrator_rooms_write_configs_with_every_device_on_the_plc_unit(tmp_path: Path) -> None:
    city = SimulatedCity.build(2, seed=2, base_port=free_port(), layout="concentrator", pumps=4)
    await city.start()
    try:
        paths = write_room_configs(city, tmp_path)
        room, maps = load_room(paths[0])
    finally:
        await city.stop()
    assert [(d.name, d.unit, d.map) for d in room.devices][:2] == [
        ("plc", 1, "concentrator/plc"),
        ("vfd1", 1, "concentrator/vfd1"),
    ]
    assert {d.unit for d in room.devices} == {1}
    assert [d.name for d in room.devices] == ["plc", "vfd1", "vfd2", "vfd3", "vfd4", "wq", "env", "power"]
    assert sum(len(m.points) for m in maps.values()) == 80
    assert all(r.spec.pumps == 4 for r in city.rooms.values())
