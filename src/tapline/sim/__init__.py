"""Simulated pump rooms: deterministic physics, fault injection and their Modbus/Sparkplug faces.

``physics.RoomSim`` is one room (tank, pumps on drives, PLC, instruments), ``district.DistrictSupply``
the municipal inlet pressure its district shares, ``faults`` the injectable faults and the ground-truth
log. Everything here except ``modbus_server``, ``runner``, ``fleet_publish``, ``fleet_record`` and
``api_client`` is pure: simulated time in, values out.

Two fidelity levels share that physics: ``runner.SimulatedCity`` serves rooms over Modbus TCP for real
gateways (the demo, ``tapline sim rooms``); ``fleet`` turns rooms into Sparkplug B edge nodes and
``fleet_publish`` publishes thousands of them for load tests (``tapline sim fleet``).
"""
