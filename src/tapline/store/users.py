"""User accounts in the relational store (the ``users`` table of migration 0002).

Why here: tokens are self-contained (``auth``), but who may log in, with which role and password hash,
must survive a restart and be the same for every API process. Passwords are stored only as the scrypt
hash and its salt that ``auth`` produced; this module never sees a password.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Boolean, Column, Connection, LargeBinary, String, Table, delete, select

from tapline.store.relational import RelationalStore, metadata

__all__ = ["UserRow", "UserStore", "users"]

users = Table(
    "users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("salt", LargeBinary, nullable=False),
    Column("password_hash", LargeBinary, nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)


@dataclass(frozen=True, slots=True)
class UserRow:
    name: str
    role: str
    salt: bytes
    password_hash: bytes
    display_name: str
    disabled: bool
    created_ms: int
    updated_ms: int


class UserStore:
    """Reads and writes ``users`` through the relational store's connection and thread."""

    def __init__(self, store: RelationalStore) -> None:
        self._store = store

    async def all(self) -> list[UserRow]:
        def work(conn: Connection) -> list[UserRow]:
            rows = conn.execute(select(users).order_by(users.c.name))
            return [UserRow(*row) for row in rows]

        return await self._store.run("users", work)

    async def put(self, row: UserRow) -> None:
        """Insert or replace a user (its ``created_ms`` is kept on replace)."""
        store = self._store

        def work(conn: Connection) -> None:
            values = {name: getattr(row, name) for name in UserRow.__slots__}
            stmt = store.insert(conn, users).values(values)
            updates = {k: stmt.excluded[k] for k in values if k not in ("name", "created_ms")}
            conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_=updates))

        await store.run("put_user", work)

    async def delete(self, name: str) -> bool:
        def work(conn: Connection) -> bool:
            return bool(conn.execute(delete(users).where(users.c.name == name)).rowcount)

        return await self._store.run("delete_user", work)
