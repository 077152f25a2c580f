"""Telemetry storage: time series of point values, behind one protocol with two backends.

``telemetry`` holds the protocol, the value types and ``open_telemetry_store(url)``; ``sqlite_telemetry``
(single machine, demo, edge-sized installs) and ``postgres_telemetry`` (the cloud) implement it. They are
the only modules that import ``sqlite3`` and ``psycopg``; callers see ``errors.StoreError`` and nothing
of the drivers.
"""
