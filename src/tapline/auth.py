"""Users, roles and bearer tokens.

Rules:
- Roles are ordered: viewer < operator < engineer < admin. A route states the least role it needs.
- Passwords are stored as scrypt hashes with a per-user salt; comparison is constant-time.
- Tokens are self-contained and signed (HMAC-SHA256 over ``user|role|expiry``): the API needs no
  session table, and a token cannot be forged without the server secret. Default lifetime 8 h (a shift).
- The demo creates ``admin``, ``operator`` and ``viewer`` with a known password; outside the demo a
  secret must be configured (no default secret ever signs production tokens).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import IntEnum


class Role(IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ENGINEER = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r} (viewer, operator, engineer, admin)") from None


class AuthError(Exception):
    """Bad credentials or a bad, expired or insufficient token."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    salt: bytes
    password_hash: bytes
    display_name: str = ""
    disabled: bool = False


def hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=2**14, r=8, p=1, dklen=32)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user name and role from a verified token."""

    name: str
    role: Role


class UserDirectory:
    """Users and token signing, in memory. ``accounts.Accounts`` loads it from the relational store and
    writes every change through, so the directory is the process's cache of the ``users`` table."""

    def __init__(self, secret: bytes, token_ttl_s: int = 8 * 3600) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        self._secret = secret
        self._users: dict[str, User] = {}
        self.token_ttl_s = token_ttl_s

    def add(self, name: str, password: str, role: Role) -> User:
        return self.put(make_user(name, password, role))

    def put(self, user: User) -> User:
        self._users[user.name] = user
        return user

    def remove(self, name: str) -> None:
        self._users.pop(name, None)

    def get(self, name: str) -> User | None:
        return self._users.get(name)

    def all(self) -> list[User]:
        return sorted(self._users.values(), key=lambda u: u.name)

    def authenticate(self, name: str, password: str) -> User:
        user = self._users.get(name)
        # Hash even for unknown users so timing does not reveal which names exist.
        salt = user.salt if user else b"\0" * 16
        candidate = hash_password(password, salt)
        if user is None or not hmac.compare_digest(candidate, user.password_hash):
            raise AuthError("wrong user name or password")
        if user.disabled:
            raise AuthError("this account is disabled")
        return user

    def issue(self, user: User, now: float | None = None) -> str:
        expiry = int((now if now is not None else time.time()) + self.token_ttl_s)
        body = f"{user.name}|{user.role.label}|{expiry}".encode()
        signature = hmac.new(self._secret, body, hashlib.sha256).digest()
        return _b64(body) + "." + _b64(signature)

    def verify(self, token: str, now: float | None = None) -> Principal:
        try:
            body_text, signature_text = token.split(".", 1)
            body = _unb64(body_text)
            signature = _unb64(signature_text)
        except ValueError:
            raise AuthError("malformed token") from None
        expected = hmac.new(self._secret, body, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise AuthError("invalid token")
        try:
            name, role_text, expiry_text = body.decode().split("|")
            role, expiry = Role.parse(role_text), int(expiry_text)
        except (UnicodeDecodeError, ValueError):
            raise AuthError("malformed token") from None
        if expiry < (now if now is not None else time.time()):
            raise AuthError("token expired")
        user = self._users.get(name)
        if user is None:
            raise AuthError("user no longer exists")
        if user.disabled:
            raise AuthError("this account is disabled")
        # A role changed since the token was issued takes effect now (a demotion must not wait 8 h).
        return Principal(name, min(role, user.role))


def make_user(name: str, password: str, role: Role, display_name: str = "") -> User:
    """A user with a fresh salt and the scrypt hash of ``password`` (slow on purpose: ~50 ms)."""
    salt = secrets.token_bytes(16)
    return User(name, role, salt, hash_password(password, salt), display_name)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64") from exc
