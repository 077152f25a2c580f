"""Pure domain types: pump rooms, devices, points, readings. No IO, no third-party imports."""
