"""Exceptions raised by the telemetry store.

Tree (driver exceptions — ``sqlite3.Error``, ``psycopg.Error`` — are translated into these at the one
boundary inside each backend module and never escape it; the original is chained as ``__cause__``)::

    StoreError                  base; the call failed and nothing of it was committed
    ├── StoreUnavailable        the database cannot be reached or used right now: connection refused or
    │                           lost, server shutting down, disk full, a lock held too long. Transient:
    │                           keep the batch and retry the same call later (writes are idempotent on
    │                           (series_id, ts), so a retry after an unknown outcome is harmless)
    ├── StoreConfigurationError the URL or settings can never work: unknown scheme, a SQLite file in a
    │                           directory that does not exist, a schema newer than this code. Retrying
    │                           does not help; fix the configuration
    └── StoreNotOpen            a method was called before ``open()`` or after ``close()`` — a bug in
                                the caller

Anything else that goes wrong in the database (a constraint or data error that should not happen, a
corrupt file) is a plain ``StoreError`` carrying the driver's message.
"""

from __future__ import annotations

__all__ = ["StoreConfigurationError", "StoreError", "StoreNotOpen", "StoreUnavailable"]


class StoreError(Exception):
    """Base of every error raised by ``tapline.store``."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or used now; retry later with the same batch."""


class StoreConfigurationError(StoreError):
    """The store URL or settings cannot work; retrying will not help."""


class StoreNotOpen(StoreError):
    """The store was used before ``open()`` or after ``close()``."""
