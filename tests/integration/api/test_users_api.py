"""Accounts persisted in the relational store (SQLite and PostgreSQL) through ``/users``, and the
dead-letter view for engineers."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tapline.accounts import Accounts
from tapline.api.app import create_app
from tapline.auth import Role, UserDirectory
from tapline.ingest.live import LiveState
from tapline.services import Services
from tapline.store.relational import DeadLetter, RelationalStore
from tapline.store.telemetry import open_telemetry_store
from tapline.store.users import UserStore

SECRET = secrets.token_bytes(32)


@pytest.fixture
def url(db_url: str) -> str:
    return db_url


@contextlib.asynccontextmanager
async def api_on(url: str, admin: str) -> AsyncIterator[tuple[httpx.AsyncClient, RelationalStore]]:
    """One API process: its directory loaded from the store, ``admin`` ensured with password 'admin-pw'."""
    telemetry = open_telemetry_store(url)
    await telemetry.open()
    relational = RelationalStore(url)
    await relational.open()
    users = UserDirectory(SECRET)
    accounts = Accounts(users, UserStore(relational))
    await accounts.load()
    await accounts.ensure(admin, "admin-pw", Role.ADMIN)
    services = Services(LiveState(), telemetry, {"accounts": accounts, "relational": relational})
    app = create_app(services, users)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            yield http, relational
    finally:
        await relational.close()
        await telemetry.close()


async def login(http: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    return await http.post("/api/v1/auth/token", data={"username": name, "password": password})


async def bearer(http: httpx.AsyncClient, name: str, password: str) -> dict[str, str]:
    response = await login(http, name, password)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_accounts_are_managed_by_admins_and_survive_a_restart(url: str) -> None:
    tag = uuid.uuid4().hex[:6]  # PostgreSQL tests share a database per session
    admin_name, crew = f"admin-{tag}", f"li.wei-{tag}"
    async with api_on(url, admin_name) as (http, _):
        admin = await bearer(http, admin_name, "admin-pw")
        created = await http.post(
            "/api/v1/users",
            json={"name": crew, "password": "pump-room-7", "role": "operator", "display_name": "李伟"},
            headers=admin,
        )
        assert created.status_code == 201
        assert created.json() == {"name": crew, "role": "operator", "display_name": "李伟", "disabled": False}
        again = await http.post(
            "/api/v1/users", json={"name": crew, "password": "pump-room-7", "role": "viewer"}, headers=admin
        )
        assert again.status_code == 409
        weak = await http.post(
            "/api/v1/users", json={"name": f"x-{tag}", "password": "short", "role": "viewer"}, headers=admin
        )
        assert weak.status_code == 422
        assert weak.json()["error"]["code"] == "weak_password"
        bad_name = await http.post(
            "/api/v1/users",
            json={"name": "no spaces", "password": "long-enough", "role": "viewer"},
            headers=admin,
        )
        assert bad_name.status_code == 422
        operator = await bearer(http, crew, "pump-room-7")
        assert (await http.get("/api/v1/users", headers=operator)).status_code == 403
    async with api_on(url, admin_name) as (http, _):  # a new process, same database
        operator = await bearer(http, crew, "pump-room-7")
        me = await http.get("/api/v1/users/me", headers=operator)
        assert me.json()["display_name"] == "李伟"
        wrong = await http.post(
            "/api/v1/users/me/password", json={"current": "nope", "new": "a-new-secret"}, headers=operator
        )
        assert wrong.status_code == 403
        changed = await http.post(
            "/api/v1/users/me/password",
            json={"current": "pump-room-7", "new": "a-new-secret"},
            headers=operator,
        )
        assert changed.status_code == 204
        assert (await login(http, crew, "pump-room-7")).status_code == 401
        admin = await bearer(http, admin_name, "admin-pw")
        as_operator = await http.post("/api/v1/alarms/AL-1/ack", headers=operator)
        assert as_operator.status_code == 503  # allowed to act; no alarm engine runs in this test app
        demoted = await http.patch(f"/api/v1/users/{crew}", json={"role": "viewer"}, headers=admin)
        assert demoted.json()["role"] == "viewer"
        # The token issued while an operator no longer acts as one.
        acting = await http.post("/api/v1/alarms/AL-1/ack", headers=operator)
        assert acting.status_code == 403
        disabled = await http.patch(f"/api/v1/users/{crew}", json={"disabled": True}, headers=admin)
        assert disabled.json()["disabled"] is True
        assert (await http.get("/api/v1/users/me", headers=operator)).status_code == 401
        assert (await login(http, crew, "a-new-secret")).status_code == 401
        assert (await http.delete(f"/api/v1/users/{crew}", headers=admin)).status_code == 204
        assert (await http.delete(f"/api/v1/users/{crew}", headers=admin)).status_code == 404
    async with api_on(url, admin_name) as (http, _):
        admin = await bearer(http, admin_name, "admin-pw")
        names = [u["name"] for u in (await http.get("/api/v1/users", headers=admin)).json()]
        assert crew not in names


async def test_the_last_admin_cannot_be_removed(tmp_path: Path) -> None:
    async with api_on(f"sqlite:///{tmp_path / 'one-admin.db'}", "root") as (http, _):
        admin = await bearer(http, "root", "admin-pw")
        for response in (
            await http.delete("/api/v1/users/root", headers=admin),
            await http.patch("/api/v1/users/root", json={"role": "operator"}, headers=admin),
            await http.patch("/api/v1/users/root", json={"disabled": True}, headers=admin),
        ):
            assert response.status_code == 409
            assert response.json()["error"]["code"] == "last_admin"
        assert (await http.get("/api/v1/users", headers=admin)).status_code == 200


async def test_engineers_read_dead_letters_newest_first(tmp_path: Path) -> None:
    async with api_on(f"sqlite:///{tmp_path / 'dl.db'}", "root") as (http, relational):
        await relational.add_dead_letters(
            [
                DeadLetter.of(1_000, "spBv1.0/g/NDATA/n1", "decode", "not protobuf", b"\xff\x00junk"),
                DeadLetter.of(2_000, "weird/topic", "topic", "not Sparkplug", b"{}"),
            ]
        )
        admin = await bearer(http, "root", "admin-pw")
        letters = (await http.get("/api/v1/dead-letters", headers=admin)).json()
        assert [d["reason"] for d in letters] == ["topic", "decode"]
        assert letters[1]["payload_hex"] == "ff006a756e6b"
        assert letters[1]["size"] == 6
        only = await http.get(
            "/api/v1/dead-letters", params={"reason": "decode", "preview": 1}, headers=admin
        )
        assert [d["payload_hex"] for d in only.json()] == ["ff"]
        await http.post(
            "/api/v1/users",
            json={"name": "viewer1", "password": "long-enough", "role": "viewer"},
            headers=admin,
        )
        viewer = await bearer(http, "viewer1", "long-enough")
        assert (await http.get("/api/v1/dead-letters", headers=viewer)).status_code == 403
