"""User accounts: the service behind ``/users`` and the start-up admin, persisted in the relational store.

Rules:
- The ``UserDirectory`` (``auth``) is the in-memory cache that logins and token checks read; this
  service loads it from the ``users`` table at start and writes every change to the table *first*,
  then to the cache, so a change the database refused never takes effect.
- Passwords set through the API need at least ``MIN_PASSWORD`` characters. The demo's documented
  short password is created by the composition root, not through this rule.
- The last enabled admin can be neither deleted, disabled nor demoted: nobody could manage users.
- Without a store (tests, tools) the service works on the directory alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tapline.auth import Role, User, UserDirectory, hash_password, make_user
from tapline.store.users import UserRow, UserStore

MIN_PASSWORD = 8
NAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"


class AccountError(Exception):
    """Base of the account errors (the API maps each to a status)."""


class UnknownUser(AccountError, KeyError):
    pass


class UserExists(AccountError):
    pass


class LastAdmin(AccountError):
    pass


class WeakPassword(AccountError, ValueError):
    pass


class WrongPassword(AccountError):
    pass


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Accounts:
    """Creates, changes and removes users (see the module rules)."""

    def __init__(
        self, directory: UserDirectory, store: UserStore | None, clock: Callable[[], int] = _wall_ms
    ) -> None:
        self.directory = directory
        self._store = store
        self._clock = clock
        self._created: dict[str, int] = {}

    async def load(self) -> int:
        """Put every stored user in the directory (stored users win over same-named ones in memory)."""
        if self._store is None:
            return 0
        rows = await self._store.all()
        for row in rows:
            self._created[row.name] = row.created_ms
            self.directory.put(
                User(
                    row.name,
                    Role.parse(row.role),
                    row.salt,
                    row.password_hash,
                    row.display_name,
                    row.disabled,
                )
            )
        return len(rows)

    async def _save(self, user: User) -> User:
        now = self._clock()
        if self._store is not None:
            created = self._created.setdefault(user.name, now)
            await self._store.put(
                UserRow(
                    user.name,
                    user.role.label,
                    user.salt,
                    user.password_hash,
                    user.display_name,
                    user.disabled,
                    created,
                    now,
                )
            )
        return self.directory.put(user)

    async def ensure(self, name: str, password: str, role: Role) -> User:
        """Create or reset a user at start-up (``--admin-password``, the demo users): no length rule."""
        user = await asyncio.to_thread(make_user, name, password, role)
        current = self.directory.get(name)
        if current is not None:
            user = replace(user, display_name=current.display_name)
        return await self._save(user)

    async def create(self, name: str, password: str, role: Role, display_name: str = "") -> User:
        if self.directory.get(name) is not None:
            raise UserExists(name)
        _check_password(password)
        return await self._save(await asyncio.to_thread(make_user, name, password, role, display_name))

    async def update(
        self,
        name: str,
        *,
        role: Role | None = None,
        display_name: str | None = None,
        disabled: bool | None = None,
        password: str | None = None,
    ) -> User:
        user = self._get(name)
        changed = replace(
            user,
            role=role if role is not None else user.role,
            display_name=display_name if display_name is not None else user.display_name,
            disabled=disabled if disabled is not None else user.disabled,
        )
        if user.role is Role.ADMIN and not user.disabled and not _is_admin(changed):
            self._keep_an_admin(name)
        if password is not None:
            _check_password(password)
            fresh = await asyncio.to_thread(make_user, name, password, changed.role)
            changed = replace(changed, salt=fresh.salt, password_hash=fresh.password_hash)
        return await self._save(changed)

    async def change_own_password(self, name: str, current: str, new: str) -> User:
        user = self._get(name)
        candidate = await asyncio.to_thread(hash_password, current, user.salt)
        if candidate != user.password_hash:
            raise WrongPassword("the current password is wrong")
        return await self.update(name, password=new)

    async def delete(self, name: str) -> None:
        user = self._get(name)
        if _is_admin(user):
            self._keep_an_admin(name)
        if self._store is not None:
            await self._store.delete(name)
        self._created.pop(name, None)
        self.directory.remove(name)

    def listing(self) -> list[dict[str, Any]]:
        return [user_dict(u) for u in self.directory.all()]

    def _get(self, name: str) -> User:
        user = self.directory.get(name)
        if user is None:
            raise UnknownUser(name)
        return user

    def _keep_an_admin(self, leaving: str) -> None:
        if not any(_is_admin(u) for u in self.directory.all() if u.name != leaving):
            raise LastAdmin(f"{leaving} is the last enabled admin")


def _is_admin(user: User) -> bool:
    return user.role is Role.ADMIN and not user.disabled


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise WeakPassword(f"a password needs at least {MIN_PASSWORD} characters")


def user_dict(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "role": user.role.label,
        "display_name": user.display_name,
        "disabled": user.disabled,
    }
