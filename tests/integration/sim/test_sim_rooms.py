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
