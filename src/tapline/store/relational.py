"""Relational state (SQLAlchemy 2 Core + Alembic): rooms, devices, points, commit marks, dead letters.

Why it looks like this:
- **Same URL as the telemetry store.** ``sqlite:///path`` or ``postgresql://…``; the tables live next to
  the telemetry tables (``series``, ``samples``, ``rollup_*``, ``telemetry_meta``), which the telemetry
  backends own. Alembic owns only the tables in ``metadata`` below and records its revision in
  ``tapline_alembic_version`` (not ``alembic_version``: a database may be shared with other tools).
- **Migrations run on ``open()``**, configured in code (no ``alembic.ini``): ``migrations/`` ships as
  package data. On PostgreSQL the upgrade takes an advisory lock inside its transaction, so two
  processes starting at once migrate once. Adding a table = a new file in ``migrations/versions``.
- **Blocking driver, one worker thread.** Relational writes are rare (births, marks once per batch,
  dead letters), so a sync engine on a single-worker executor is simpler than an async driver and keeps
  calls in arrival order; the event loop never blocks on the database.
- **Errors.** Driver/SQLAlchemy errors are translated here, at the one boundary: connection problems,
  locks and timeouts -> ``StoreUnavailable`` (retry later, every write is an idempotent upsert), anything
  else -> ``StoreError``.
- **Dead letters are bounded:** a payload is kept up to ``MAX_DEAD_LETTER_PAYLOAD`` bytes (its real size is
  recorded), and ``prune_dead_letters`` keeps only the newest rows.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NamedTuple, Self, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.pool import StaticPool

from tapline.store.errors import StoreError, StoreNotOpen, StoreUnavailable
from tapline.store.telemetry import parse_store_url

__all__ = [
    "MAX_DEAD_LETTER_PAYLOAD",
    "DeadLetter",
    "DeviceRow",
    "NodeMark",
    "PointRow",
    "RelationalStore",
    "SiteRow",
    "metadata",
    "sqlalchemy_url",
]

MAX_DEAD_LETTER_PAYLOAD: Final = 64 * 1024
VERSION_TABLE: Final = "tapline_alembic_version"
MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"

metadata = MetaData()

sites = Table(
    "sites",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("district", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("bd_seq", Integer),
    Column("last_birth_ms", BigInteger),
)
devices = Table(
    "devices",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("last_birth_ms", BigInteger, nullable=False),
)
points = Table(
    "points",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("point", String(200), primary_key=True),
    Column("device", String(64)),  # NULL for a node metric
    Column("datatype", String(16), nullable=False),
    Column("unit", String(32), nullable=False),
    Column("low", Float),
    Column("high", Float),
    Column("updated_ms", BigInteger, nullable=False),
)
node_marks = Table(
    "node_marks",
    metadata,
    Column("district", String(64), primary_key=True),
    Column("site", String(64), primary_key=True),
    Column("committed_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("received_ms", BigInteger, nullable=False),
    Column("topic", String(512), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("payload_size", Integer, nullable=False),
)
Index("dead_letters_reason", dead_letters.c.reason, dead_letters.c.id)


@dataclass(frozen=True, slots=True)
class SiteRow:
    id: str
    district: str
    name: str
    bd_seq: int | None = None
    last_birth_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceRow:
    site: str
    name: str
    last_birth_ms: int


class PointRow(NamedTuple):
    """A point as its latest birth declared it (``device`` None for a node metric).

    A NamedTuple, not a frozen dataclass (as ``Reading``): the ingest makes one per point a birth
    declares — 400,000 when a city comes online — and ``record_births`` binds it as it is."""

    site: str
    point: str
    device: str | None
    datatype: str
    unit: str
    low: float | None
    high: float | None
    updated_ms: int


@dataclass(frozen=True, slots=True)
class NodeMark:
    """Everything the edge node recorded up to ``committed_ms`` is in the telemetry store (DESIGN §2a)."""

    district: str
    site: str
    committed_ms: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected inbound message, kept for diagnosis; ``payload`` is truncated, ``payload_size`` is not."""

    received_ms: int
    topic: str
    reason: str
    detail: str
    payload: bytes
    payload_size: int
    id: int | None = None

    @classmethod
    def of(cls, received_ms: int, topic: str, reason: str, detail: str, payload: bytes) -> DeadLetter:
        return cls(
            received_ms,
            topic[:512],
            reason[:32],
            detail[:2000],
            payload[:MAX_DEAD_LETTER_PAYLOAD],
            len(payload),
        )


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL for a tapline ``--db`` URL (psycopg 3 for PostgreSQL)."""
    parsed = parse_store_url(url)
    if parsed.backend == "sqlite":
        return f"sqlite:///{parsed.target}"
    return "postgresql+psycopg://" + parsed.target.split("://", 1)[1]


_T = TypeVar("_T")
_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
)


class RelationalStore:
    """Rooms, devices, points metadata, commit marks and dead letters on SQLite or PostgreSQL."""

    def __init__(self, url: str, *, lock_timeout_ms: int = 5_000) -> None:
        self._url = sqlalchemy_url(url)
        self._lock_timeout_ms = lock_timeout_ms
        self._engine: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and bring the schema to the newest revision (idempotent)."""
        if self._engine is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tapline-relational")
        try:
            engine = await asyncio.get_running_loop().run_in_executor(executor, self._connect)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._engine, self._executor = engine, executor

    def _connect(self) -> Engine:
        timeout_ms = self._lock_timeout_ms
        if self._url.startswith("sqlite"):
            memory = self._url in ("sqlite://", "sqlite:///:memory:")
            engine = create_engine(
                self._url,
                connect_args={"timeout": timeout_ms / 1000, "check_same_thread": False},
                poolclass=StaticPool if memory else None,
            )

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")
                cursor.execute("PRAGMA foreign_keys = ON")
                cursor.close()
        else:
            engine = create_engine(
                self._url,
                pool_pre_ping=True,
                pool_size=2,
                connect_args={"connect_timeout": 5, "options": f"-c lock_timeout={int(timeout_ms)}"},
            )
        try:
            with engine.begin() as conn:
                _upgrade(conn)
        except sa_exc.SQLAlchemyError as exc:
            engine.dispose()
            raise _translate(exc, "open (migrations)") from exc
        except BaseException:
            engine.dispose()
            raise
        return engine

    async def close(self) -> None:
        engine, executor = self._engine, self._executor
        self._engine = self._executor = None
        if engine is None or executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, engine.dispose)
        finally:
            executor.shutdown(wait=True)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _run(self, action: str, work: Callable[[Connection], _T]) -> _T:
        """Run ``work`` in one transaction on the worker thread; translate errors at this boundary."""
        engine, executor = self._engine, self._executor
        if engine is None or executor is None:
            raise StoreNotOpen("relational store is not open")

        def transaction() -> _T:
            with engine.begin() as conn:
                return work(conn)

        try:
            return await asyncio.get_running_loop().run_in_executor(executor, transaction)
        except sa_exc.SQLAlchemyError as exc:
            raise _translate(exc, action) from exc

    async def run(self, action: str, work: Callable[[Connection], _T]) -> _T:
        """Run ``work`` in one transaction on the store's worker thread, errors translated: the entry
        point for the other relational modules (alarm journal, users) that share this connection."""
        return await self._run(action, work)

    def insert(self, conn: Connection, table: Table) -> Any:
        """A dialect ``INSERT`` that supports ``on_conflict_do_update`` on SQLite and PostgreSQL."""
        return self._insert(conn, table)

    def _insert(self, conn: Connection, table: Table) -> Any:
        dialect = pg_dialect if conn.dialect.name == "postgresql" else sqlite_dialect
        return dialect.insert(table)

    # -- births ----------------------------------------------------------------------------------------

    async def record_births(
        self, site_rows: Sequence[SiteRow], device_rows: Sequence[DeviceRow], point_rows: Sequence[PointRow]
    ) -> None:
        """Upsert what births declared (one transaction; idempotent; rows apply in order, later wins).

        Hand-written bulk SQL (``_BIRTHS``), not SQLAlchemy Core: a city's births are ~400,000 point
        rows, and compiling Core multi-row ``VALUES`` cost ~190 µs of CPU a row (SQLite), an
        ``executemany`` ~20 µs (PostgreSQL) — in a thread, while the event loop wants the GIL. Now
        SQLite gets multi-row ``VALUES`` statements (its driver would step once per row of an
        ``executemany``, taking the GIL back after each step) and PostgreSQL a binary ``COPY`` and one
        ``INSERT … SELECT`` per table (docs/benchmarks.md, "Births": 45× and 10× less CPU a room).
        """
        site_values: list[tuple[Any, ...]] = [
            (s.id, s.district, s.name, s.bd_seq, s.last_birth_ms) for s in site_rows
        ]
        device_values: list[tuple[Any, ...]] = [(d.site, d.name, d.last_birth_ms) for d in device_rows]
        point_values: list[tuple[Any, ...]] = list(point_rows)  # already rows in column order

        def work(conn: Connection) -> None:
            postgres = conn.dialect.name == "postgresql"
            for upsert, rows in zip(_BIRTHS, (site_values, device_values, point_values), strict=True):
                if rows:
                    upsert.run(conn, rows, postgres)

        if site_values or device_values or point_values:
            await self._run("record_births", work)

    async def register_sites(self, site_rows: Sequence[SiteRow]) -> None:
        """Declare rooms known from configuration (name, district); keeps what births recorded."""

        def work(conn: Connection) -> None:
            stmt = self._insert(conn, sites)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[sites.c.id],
                    set_={"district": stmt.excluded.district, "name": stmt.excluded.name},
                ),
                [_row(s) for s in site_rows],
            )

        if site_rows:
            await self._run("register_sites", work)

    async def sites(self) -> list[SiteRow]:
        def work(conn: Connection) -> list[SiteRow]:
            return [SiteRow(*row) for row in conn.execute(select(*sites.c).order_by(sites.c.id))]

        return await self._run("sites", work)

    async def devices(self) -> list[DeviceRow]:
        def work(conn: Connection) -> list[DeviceRow]:
            query = select(*devices.c).order_by(devices.c.site, devices.c.name)
            return [DeviceRow(*row) for row in conn.execute(query)]

        return await self._run("devices", work)

    async def points(self, site: str | None = None) -> list[PointRow]:
        def work(conn: Connection) -> list[PointRow]:
            query = select(*points.c).order_by(points.c.site, points.c.point)
            if site is not None:
                query = query.where(points.c.site == site)
            return [PointRow(*row) for row in conn.execute(query)]

        return await self._run("points", work)

    # -- commit marks ----------------------------------------------------------------------------------

    async def load_marks(self) -> list[NodeMark]:
        def work(conn: Connection) -> list[NodeMark]:
            query = select(node_marks.c.district, node_marks.c.site, node_marks.c.committed_ms)
            return [NodeMark(*row) for row in conn.execute(query)]

        return await self._run("load_marks", work)

    async def save_marks(self, marks: Sequence[NodeMark], now_ms: int) -> None:
        """Upsert marks; a mark never moves back (the greatest committed_ms wins)."""
        if not marks:
            return

        def work(conn: Connection) -> None:
            stmt = self._insert(conn, node_marks)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[node_marks.c.district, node_marks.c.site],
                    set_={
                        "committed_ms": func.max(node_marks.c.committed_ms, stmt.excluded.committed_ms)
                        if conn.dialect.name == "sqlite"
                        else func.greatest(node_marks.c.committed_ms, stmt.excluded.committed_ms),
                        "updated_ms": stmt.excluded.updated_ms,
                    },
                ),
                [
                    {
                        "district": m.district,
                        "site": m.site,
                        "committed_ms": m.committed_ms,
                        "updated_ms": now_ms,
                    }
                    for m in marks
                ],
            )

        await self._run("save_marks", work)

    # -- dead letters ----------------------------------------------------------------------------------

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return

        def work(conn: Connection) -> None:
            conn.execute(
                dead_letters.insert(),
                [
                    {
                        "received_ms": d.received_ms,
                        "topic": d.topic,
                        "reason": d.reason,
                        "detail": d.detail,
                        "payload": d.payload,
                        "payload_size": d.payload_size,
                    }
                    for d in letters
                ],
            )

        await self._run("add_dead_letters", work)

    async def dead_letters(self, limit: int = 100, reason: str | None = None) -> list[DeadLetter]:
        """The newest dead letters first."""

        def work(conn: Connection) -> list[DeadLetter]:
            c = dead_letters.c
            query = select(c.received_ms, c.topic, c.reason, c.detail, c.payload, c.payload_size, c.id)
            if reason is not None:
                query = query.where(c.reason == reason)
            return [DeadLetter(*row) for row in conn.execute(query.order_by(c.id.desc()).limit(limit))]

        return await self._run("dead_letters", work)

    async def prune_dead_letters(self, keep: int) -> int:
        """Delete all but the newest ``keep`` dead letters; returns how many were deleted."""

        def work(conn: Connection) -> int:
            newest = conn.execute(
                select(dead_letters.c.id).order_by(dead_letters.c.id.desc()).offset(keep).limit(1)
            ).scalar()
            if newest is None:
                return 0
            return conn.execute(delete(dead_letters).where(dead_letters.c.id <= newest)).rowcount

        return await self._run("prune_dead_letters", work)


def _row(item: Any) -> dict[str, Any]:
    return {name: getattr(item, name) for name in item.__slots__}


@dataclass(frozen=True, slots=True)
class _BulkUpsert:
    """One table's births upsert as plain SQL for both dialects (see ``record_births``).

    ``columns`` are ``(name, PostgreSQL type)`` in row order, the first ``keys`` of them the
    primary key; ``update`` is the ``DO UPDATE SET`` list, written for both dialects (``excluded``,
    ``coalesce``)."""

    table: str
    columns: tuple[tuple[str, str], ...]
    keys: int
    update: str

    def run(self, conn: Connection, rows: list[tuple[Any, ...]], postgres: bool) -> None:
        names = ", ".join(name for name, _ in self.columns)
        conflict = ", ".join(name for name, _ in self.columns[: self.keys])
        tail = f" ON CONFLICT ({conflict}) DO UPDATE SET {self.update}"
        if postgres:
            self._copy_upsert(conn, rows, names, tail)
            return
        width = len(self.columns)
        chunk = 30_000 // width  # under SQLite's 32,766 bound variables a statement
        one = "(" + ", ".join("?" * width) + ")"
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            values = ", ".join([one] * len(part))
            conn.exec_driver_sql(
                f"INSERT INTO {self.table} ({names}) VALUES {values}{tail}",  # noqa: S608 - placeholders only
                tuple(value for row in part for value in row),
            )

    def _copy_upsert(self, conn: Connection, rows: list[tuple[Any, ...]], names: str, tail: str) -> None:
        """PostgreSQL: binary COPY into a session-temporary staging table (emptied at commit), then one
        ``INSERT … SELECT … ON CONFLICT`` — ~15× less client CPU than binding the same rows as arrays
        for ``unnest`` (psycopg adapts list items one by one), ~20× less than ``executemany``."""
        staging = f"births_{self.table}"
        columns = ", ".join(f"{name} {kind}" for name, kind in self.columns)
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ({columns}) ON COMMIT DELETE ROWS"
        )
        driver = conn.connection.driver_connection  # psycopg's own, in this transaction
        assert driver is not None
        kinds = [kind for _, kind in self.columns]
        for n, part in enumerate(_rounds(rows, self.keys)):
            if n:
                conn.exec_driver_sql(f"DELETE FROM {staging}")  # noqa: S608 - fixed names
            with (
                driver.cursor() as cursor,
                cursor.copy(f"COPY {staging} ({names}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(kinds)
                for row in part:
                    copy.write_row(row)
            conn.exec_driver_sql(f"INSERT INTO {self.table} ({names}) SELECT {names} FROM {staging}{tail}")  # noqa: S608 - fixed names


def _rounds(rows: list[tuple[Any, ...]], keys: int) -> list[list[tuple[Any, ...]]]:
    """``rows`` split so that no key repeats within a part, in order: PostgreSQL refuses to upsert one
    row twice in a statement, and applying the n-th occurrences of every key in the n-th statement
    gives the same result as upserting the rows one by one."""
    seen: dict[tuple[Any, ...], int] = {}
    parts: list[list[tuple[Any, ...]]] = [[]]
    for row in rows:
        key = row[:keys]
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n == len(parts):
            parts.append([])
        parts[n].append(row)
    return parts


_BIRTHS: Final = (
    _BulkUpsert(
        "sites",
        (
            ("id", "text"),
            ("district", "text"),
            ("name", "text"),
            ("bd_seq", "int4"),
            ("last_birth_ms", "int8"),
        ),
        1,
        "district = excluded.district, bd_seq = coalesce(excluded.bd_seq, sites.bd_seq),"
        " last_birth_ms = coalesce(excluded.last_birth_ms, sites.last_birth_ms)",
    ),
    _BulkUpsert(
        "devices",
        (("site", "text"), ("name", "text"), ("last_birth_ms", "int8")),
        2,
        "last_birth_ms = excluded.last_birth_ms",
    ),
    _BulkUpsert(
        "points",
        (
            ("site", "text"),
            ("point", "text"),
            ("device", "text"),
            ("datatype", "text"),
            ("unit", "text"),
            ("low", "float8"),
            ("high", "float8"),
            ("updated_ms", "int8"),
        ),
        2,
        ", ".join(
            f"{name} = excluded.{name}"
            for name in ("device", "datatype", "unit", "low", "high", "updated_ms")
        ),
    ),
)
"""The births upserts: the same rules the Core statements had (a site's name is kept; its bdSeq and last
birth only ever replaced by a value)."""


def _translate(exc: sa_exc.SQLAlchemyError, action: str) -> StoreError:
    message = f"relational {action} failed: {exc}"
    if isinstance(exc, _UNAVAILABLE) or getattr(exc, "connection_invalidated", False):
        return StoreUnavailable(message)
    return StoreError(message)


_MIGRATING = threading.Lock()  # Alembic's ``context`` is process-global: one migration at a time


def _upgrade(conn: Connection) -> None:
    """Run the Alembic migrations up to head on ``conn`` (inside the caller's transaction)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("version_table", VERSION_TABLE)
    config.attributes["connection"] = conn
    with _MIGRATING:
        command.upgrade(config, "head")
