"""Simulated pump rooms: deterministic physics, fault injection and their Modbus/Sparkplug faces.

``physics.RoomSim`` is one room (tank, pumps on drives, PLC, instruments), ``district.DistrictSupply``
the municipal inlet pressure its district shares, ``faults`` the injectable faults and the ground-truth
log. Everything here except ``modbus_server`` and ``fleet`` is pure: simulated time in, values out.
"""
