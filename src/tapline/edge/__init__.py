"""The edge gateway of one pump room: Modbus acquisition → local history → Sparkplug B edge node."""
