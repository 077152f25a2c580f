"""The alarm journal in the relational store: every transition, and each alarm instance's latest state.

Why it looks like this:
- **Two tables, one transaction.** ``alarm_events`` is the audit trail (ISA-18.2: every transition with
  who, when, why), append-only. ``alarms`` holds one row per alarm instance with its latest phase, when it
  was raised, cleared and acknowledged: the alarm history a console pages through without replaying the
  journal. A batch writes both in one transaction, so they never disagree.
- **Plain rows.** This module stores and returns dicts of column values; turning ``AlarmEvent``s into
  rows and back is the alarm area's job (``alarms.journal``), so the store does not depend on it.
- **Idempotent upsert of instances**: ``raised_ms`` is set by the first row of an instance and never
  changed; an acknowledgement is kept once made (a later row without one does not erase it).
- Rooms in maintenance (their alarms out of service) are kept here too, so a restart keeps them there.
- Same engine, thread and error translation as ``RelationalStore`` (it runs through ``store.run``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Index,
    Integer,
    String,
    Table,
    Text,
    delete,
    func,
    select,
    update,
)

from tapline.store.relational import RelationalStore, metadata

__all__ = ["AlarmJournalStore", "alarm_events", "alarms", "site_maintenance"]

Row = Mapping[str, Any]


def _context() -> list[Column[Any]]:
    sizes = (
        ("site", 64),
        ("district", 64),
        ("rule", 64),
        ("subject", 200),
        ("device", 64),
        ("point", 200),
        ("priority", 16),
        ("cause", 32),
    )
    return [Column(name, String(size), nullable=False) for name, size in sizes]


alarm_events = Table(
    "alarm_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("alarm_id", String(64), nullable=False),
    *_context(),
    Column("supply", Boolean, nullable=False),
    Column("event", String(32), nullable=False),
    Column("source", String(32), nullable=False),
    Column("target", String(32), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("by", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("value", Text),
    Column("message_zh", Text, nullable=False),
    Column("message_en", Text, nullable=False),
)
Index("alarm_events_at", alarm_events.c.at_ms)
Index("alarm_events_alarm", alarm_events.c.alarm_id, alarm_events.c.id)
Index("alarm_events_site", alarm_events.c.site, alarm_events.c.at_ms)

alarms = Table(
    "alarms",
    metadata,
    Column("id", String(64), primary_key=True),
    *_context(),
    Column("phase", String(32), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("raised_ms", BigInteger, nullable=False),
    Column("changed_ms", BigInteger, nullable=False),
    Column("cleared_ms", BigInteger),
    Column("acked_ms", BigInteger),
    Column("acked_by", String(64)),
    Column("value", Text),
    Column("message_zh", Text, nullable=False),
    Column("message_en", Text, nullable=False),
)
Index("alarms_raised", alarms.c.raised_ms)
Index("alarms_site", alarms.c.site, alarms.c.raised_ms)

site_maintenance = Table(
    "site_maintenance",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("since_ms", BigInteger, nullable=False),
    Column("by", String(64), nullable=False),
    Column("reason", Text, nullable=False),
)

_EVENT_COLUMNS = tuple(c.name for c in alarm_events.c if c.name != "id")
_ALARM_COLUMNS = tuple(c.name for c in alarms.c)
_KEEP_ON_UPDATE = frozenset({"id", "raised_ms"})


class AlarmJournalStore:
    """Writes and reads the alarm journal and alarm instances (see the module rules)."""

    def __init__(self, store: RelationalStore) -> None:
        self._store = store

    async def append(self, events: Sequence[Row], instances: Sequence[Row]) -> None:
        """Append journal rows and upsert the instances they changed, in one transaction."""
        if not events and not instances:
            return
        store = self._store

        def work(conn: Connection) -> None:
            if events:
                conn.execute(alarm_events.insert(), [{k: e[k] for k in _EVENT_COLUMNS} for e in events])
            if instances:
                # One statement per instance, latest last: a batch may change one alarm several times,
                # and one multi-row upsert may not touch the same row twice (PostgreSQL refuses it).
                latest = {row["id"]: row for row in instances}
                stmt = store.insert(conn, alarms)
                excluded = stmt.excluded
                updates: dict[str, Any] = {
                    name: excluded[name] for name in _ALARM_COLUMNS if name not in _KEEP_ON_UPDATE
                }
                updates["acked_ms"] = func.coalesce(excluded.acked_ms, alarms.c.acked_ms)
                updates["acked_by"] = func.coalesce(excluded.acked_by, alarms.c.acked_by)
                # raised_ms is kept from the first row; a later row of the same batch carries the
                # instance facts accumulated by the writer, so the last row per id is complete.
                conn.execute(
                    stmt.on_conflict_do_update(index_elements=["id"], set_=updates),
                    [{k: row[k] for k in _ALARM_COLUMNS} for row in latest.values()],
                )

        await store.run("append_alarm_journal", work)

    async def events(
        self,
        start: int,
        end: int,
        *,
        site: str | None = None,
        district: str | None = None,
        alarm_id: str | None = None,
        limit: int = 100_000,
    ) -> list[dict[str, Any]]:
        """Journal rows with ``start <= at_ms < end``, oldest first (at most ``limit``)."""

        def work(conn: Connection) -> list[dict[str, Any]]:
            c = alarm_events.c
            query = select(alarm_events).where(c.at_ms >= start, c.at_ms < end)
            if site is not None:
                query = query.where(c.site == site)
            if district is not None:
                query = query.where(c.district == district)
            if alarm_id is not None:
                query = query.where(c.alarm_id == alarm_id)
            rows = conn.execute(query.order_by(c.at_ms, c.id).limit(limit)).mappings()
            return [dict(row) for row in rows]

        return await self._store.run("alarm_events", work)

    async def instances(
        self,
        start: int,
        end: int,
        *,
        site: str | None = None,
        district: str | None = None,
        priority: str | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """Alarm instances raised in ``[start, end)``, newest first (at most ``limit``)."""

        def work(conn: Connection) -> list[dict[str, Any]]:
            c = alarms.c
            query = select(alarms).where(c.raised_ms >= start, c.raised_ms < end)
            if site is not None:
                query = query.where(c.site == site)
            if district is not None:
                query = query.where(c.district == district)
            if priority is not None:
                query = query.where(c.priority == priority)
            rows = conn.execute(query.order_by(c.raised_ms.desc(), c.id.desc()).limit(limit)).mappings()
            return [dict(row) for row in rows]

        return await self._store.run("alarm_instances", work)

    async def instance(self, alarm_id: str) -> dict[str, Any] | None:
        def work(conn: Connection) -> dict[str, Any] | None:
            row = conn.execute(select(alarms).where(alarms.c.id == alarm_id)).mappings().first()
            return dict(row) if row is not None else None

        return await self._store.run("alarm_instance", work)

    async def open_instances(self) -> list[dict[str, Any]]:
        """Instances whose latest phase is not ``normal`` (live when the last process stopped)."""

        def work(conn: Connection) -> list[dict[str, Any]]:
            query = select(alarms).where(alarms.c.phase != "normal").order_by(alarms.c.raised_ms)
            return [dict(row) for row in conn.execute(query).mappings()]

        return await self._store.run("open_alarm_instances", work)

    async def close_orphans(
        self, at_ms: int, reason: str, districts: Sequence[str] = (), keep_prefix: str = ""
    ) -> list[str]:
        """End the instances a previous process left open (its engine's state died with it): each gets
        a closing journal row (``clear`` to ``normal`` by ``system`` with ``reason``) and phase
        ``normal``. Only ``districts`` (all when empty: one worker per district set must not close
        another's) and never ids starting with ``keep_prefix`` (this process's). Returns their ids."""

        def work(conn: Connection) -> list[str]:
            c = alarms.c
            query = select(alarms).where(c.phase != "normal")
            if districts:
                query = query.where(c.district.in_(list(districts)))
            rows = [dict(r) for r in conn.execute(query).mappings()]
            rows = [r for r in rows if not (keep_prefix and r["id"].startswith(keep_prefix))]
            if not rows:
                return []
            conn.execute(
                alarm_events.insert(),
                [
                    {
                        "alarm_id": r["id"],
                        **{k: r[k] for k in ("site", "district", "rule", "subject", "device", "point")},
                        **{k: r[k] for k in ("priority", "cause", "value", "message_zh", "message_en")},
                        "supply": False,
                        "event": "clear",
                        "source": r["phase"],
                        "target": "normal",
                        "at_ms": at_ms,
                        "by": "system",
                        "reason": reason,
                        "active": False,
                    }
                    for r in rows
                ],
            )
            ids = [r["id"] for r in rows]
            conn.execute(
                update(alarms)
                .where(c.id.in_(ids))
                .values(
                    phase="normal",
                    active=False,
                    changed_ms=at_ms,
                    cleared_ms=func.coalesce(c.cleared_ms, at_ms),
                )
            )
            return ids

        return await self._store.run("close_orphan_alarms", work)

    async def maintenance(self) -> list[dict[str, Any]]:
        """Rooms in maintenance: site, since_ms, by, reason."""

        def work(conn: Connection) -> list[dict[str, Any]]:
            query = select(site_maintenance).order_by(site_maintenance.c.site)
            return [dict(row) for row in conn.execute(query).mappings()]

        return await self._store.run("site_maintenance", work)

    async def set_maintenance(self, site: str, since_ms: int, by: str, reason: str) -> None:
        store = self._store

        def work(conn: Connection) -> None:
            values = {"site": site, "since_ms": since_ms, "by": by[:64], "reason": reason}
            stmt = store.insert(conn, site_maintenance).values(values)
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["site"]))

        await store.run("set_site_maintenance", work)

    async def clear_maintenance(self, site: str) -> None:
        def work(conn: Connection) -> None:
            conn.execute(delete(site_maintenance).where(site_maintenance.c.site == site))

        await self._store.run("clear_site_maintenance", work)
