"""Login, tokens and roles through the real FastAPI app (no network: httpx ASGI transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tapline.api.app import create_app
from tapline.auth import AuthError, Role, UserDirectory
from tapline.bootstrap import demo_users
from tapline.ingest.live import LiveState
from tapline.services import Services
from tapline.store.telemetry import open_telemetry_store


@pytest.fixture
async def client(tmp_path: object) -> AsyncIterator[httpx.AsyncClient]:
    store = open_telemetry_store("sqlite:///:memory:")
    await store.open()
    live = LiveState()
    live.register("PR-0001", "jianghan", "江汉花园1号泵房")
    app = create_app(Services(live, store), demo_users("demo"), public_read=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http
    await store.close()


async def login(client: httpx.AsyncClient, user: str, password: str = "demo") -> httpx.Response:
    return await client.post("/api/v1/auth/token", data={"username": user, "password": password})


async def test_login_returns_bearer_token_that_opens_read_routes(client: httpx.AsyncClient) -> None:
    response = await login(client, "viewer")
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["role"] == "viewer"
    sites = await client.get("/api/v1/sites", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert sites.status_code == 200
    assert sites.json()[0]["id"] == "PR-0001"
    assert sites.json()[0]["status"] == "offline"


async def test_wrong_password_is_401_with_json_error(client: httpx.AsyncClient) -> None:
    response = await login(client, "admin", "nope")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"


async def test_missing_form_fields_is_422_not_500(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/token", data={"username": "admin"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


async def test_read_routes_need_a_token_unless_public(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/sites")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    forged = await client.get("/api/v1/sites", headers={"Authorization": "Bearer abc.def"})
    assert forged.status_code == 401


def test_tokens_expire_and_cannot_be_forged() -> None:
    users = UserDirectory(b"0123456789abcdef0123456789abcdef", token_ttl_s=60)
    user = users.add("op", "pw", Role.OPERATOR)
    token = users.issue(user, now=1000.0)
    assert users.verify(token, now=1030.0).role is Role.OPERATOR
    with pytest.raises(AuthError, match="expired"):
        users.verify(token, now=1061.0)
    other = UserDirectory(b"another-secret-of-enough-length!")
    other.add("op", "pw", Role.ADMIN)
    with pytest.raises(AuthError, match="invalid"):
        other.verify(token, now=1030.0)
    body, signature = token.split(".")
    with pytest.raises(AuthError):
        users.verify(body + "x." + signature, now=1030.0)


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        UserDirectory(b"short")
