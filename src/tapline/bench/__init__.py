"""Benchmarks run by ``tapline bench``: ``faults`` (alarm detection and localisation against the
simulator's ground truth, through ``city.AlarmCity``)."""
