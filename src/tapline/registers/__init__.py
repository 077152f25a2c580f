"""Modbus register maps as data, and the pure code that reads and writes them.

Both the edge gateway (decoding what it polls) and the simulator (encoding what it serves) use this
package, so a real device is added by writing its map in YAML, not code.
"""
