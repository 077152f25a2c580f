"""Cloud ingest: the Sparkplug primary host application and what it keeps.

- ``host``: ``IngestService`` — MQTT callbacks, STATE, tracker events -> effects (the IO shell).
- ``marks``: ``CommitMarks`` — per edge node, the committed mark and the replays owed (pure, DESIGN §2a).
- ``writer``: ``BatchWriter`` — batched idempotent telemetry writes, then births, dead letters, marks.
- ``live``: ``LiveState`` — the latest-value cache and room status behind ``GET /sites``.
- ``history``: trend queries choosing raw samples or rollups by step.
- ``maintenance``: scheduled rollups and retention.
- ``metrics``: counters and the Prometheus text format for ``/metrics``.
"""
