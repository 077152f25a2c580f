"""``/alarms`` and ``/incidents`` through the real FastAPI app (httpx ASGI transport, no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from tapline.alarms.correlate import Correlator
from tapline.alarms.engine import AlarmEngine
from tapline.api.app import create_app
from tapline.bootstrap import demo_users
from tapline.domain.model import Reading, Value
from tapline.ingest.live import LiveState
from tapline.services import Services
from tapline.store.telemetry import open_telemetry_store
from tests.unit.alarms.kit import HEALTHY, STEADY, T0, S

SITE, DISTRICT = "PR-0001", "jianghan"
USERS = demo_users("demo")  # once per module: password hashing is slow on purpose
_TOKENS: dict[str, str] = {}


@dataclass
class Stack:
    http: httpx.AsyncClient
    engine: AlarmEngine
    correlator: Correlator

    def send(self, at: int, values: dict[str, Value]) -> None:
        readings = [Reading(point, at, value) for point, value in values.items()]
        self.engine.evaluate(SITE, DISTRICT, readings, at)


async def _stack(public_read: bool, with_engine: bool = True) -> AsyncIterator[Stack]:
    store = open_telemetry_store("sqlite:///:memory:")
    await store.open()
    live = LiveState()
    live.register(SITE, DISTRICT, "江汉花园1号泵房")
    correlator = Correlator()
    engine = AlarmEngine(STEADY, grouping=correlator)
    extras: dict[str, object] = {"alarms": engine, "incidents": correlator} if with_engine else {}
    app = create_app(Services(live, store, extras), USERS, public_read=public_read)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        stack = Stack(http, engine, correlator)
        stack.send(T0, HEALTHY)
        yield stack
    await store.close()


@pytest.fixture
async def api() -> AsyncIterator[Stack]:
    async for stack in _stack(public_read=False):
        yield stack


async def token(http: httpx.AsyncClient, user: str) -> dict[str, str]:
    """A bearer token of ``user`` (logged in through the API once per module)."""
    if user not in _TOKENS:
        response = await http.post("/api/v1/auth/token", data={"username": user, "password": "demo"})
        _TOKENS[user] = response.json()["access_token"]
    return {"Authorization": f"Bearer {_TOKENS[user]}"}


async def test_lists_alarms_by_state_and_site(api: Stack) -> None:
    api.send(T0 + S, {"vfd2/Fault": True})
    viewer = await token(api.http, "viewer")
    assert (await api.http.get("/api/v1/alarms")).status_code == 401
    response = await api.http.get("/api/v1/alarms", headers=viewer)
    assert response.status_code == 200
    [alarm] = response.json()
    assert alarm["rule"] == "drive_fault"
    assert alarm["site"] == SITE
    assert alarm["device"] == "vfd2"
    assert alarm["priority"] == "high"
    assert alarm["state"] == "unacked_active"
    assert alarm["message"]["en"] == "Pump drive fault"
    for state, count in (("active", 1), ("unacked", 1), ("shelved", 0), ("all", 1)):
        listed = await api.http.get("/api/v1/alarms", params={"state": state}, headers=viewer)
        assert len(listed.json()) == count, state
    elsewhere = await api.http.get("/api/v1/alarms", params={"site": "PR-0002"}, headers=viewer)
    assert elsewhere.json() == []
    one = await api.http.get(f"/api/v1/alarms/{alarm['id']}", headers=viewer)
    assert one.json()["id"] == alarm["id"]


async def test_bad_filter_is_422_with_its_code(api: Stack) -> None:
    viewer = await token(api.http, "viewer")
    response = await api.http.get("/api/v1/alarms", params={"state": "loud"}, headers=viewer)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_state"


async def test_ack_needs_an_operator_and_is_recorded_with_who(api: Stack) -> None:
    api.send(T0 + S, {"vfd2/Fault": True})
    [alarm] = api.engine.active(SITE)
    url = f"/api/v1/alarms/{alarm.id}/ack"
    assert (await api.http.post(url)).status_code == 401
    forbidden = await api.http.post(url, headers=await token(api.http, "viewer"))
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"
    operator = await token(api.http, "operator")
    response = await api.http.post(url, json={"reason": "crew called"}, headers=operator)
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "acked_active"
    assert body["transition"]["by"] == "operator"
    assert body["transition"]["reason"] == "crew called"
    assert body["transition"]["from"] == "unacked_active"
    assert body["alarm"]["state"] == "acked_active"
    again = await api.http.post(url, headers=operator)  # no body is fine; a second ack is not
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "illegal_transition"
    assert "acked_active" in again.json()["error"]["message"]


async def test_acknowledging_a_returned_alarm_retires_it(api: Stack) -> None:
    api.send(T0 + S, {"vfd2/Fault": True})
    [alarm] = api.engine.active(SITE)
    api.send(T0 + 2 * S, {"vfd2/Fault": False})
    response = await api.http.post(
        f"/api/v1/alarms/{alarm.id}/ack", headers=await token(api.http, "operator")
    )
    assert response.status_code == 200
    assert response.json()["state"] == "normal"
    assert response.json()["alarm"] is None


async def test_unknown_alarm_or_incident_is_404(api: Stack) -> None:
    operator = await token(api.http, "operator")
    for path in ("/api/v1/alarms/AL-999/ack", "/api/v1/alarms/AL-999/unshelve"):
        response = await api.http.post(path, json={"reason": "x"}, headers=operator)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "alarm_not_found"
    missing = await api.http.get("/api/v1/alarms/AL-999", headers=operator)
    assert missing.status_code == 404
    incident = await api.http.get("/api/v1/incidents/INC-999", headers=operator)
    assert incident.status_code == 404
    assert incident.json()["error"]["code"] == "incident_not_found"


async def test_shelve_and_unshelve_with_reasons_and_limits(api: Stack) -> None:
    api.send(T0 + S, {"vfd2/Fault": True})
    [alarm] = api.engine.active(SITE)
    operator = await token(api.http, "operator")
    url = f"/api/v1/alarms/{alarm.id}"
    missing_reason = await api.http.post(f"{url}/shelve", json={"duration_s": 600}, headers=operator)
    assert missing_reason.status_code == 422
    assert missing_reason.json()["error"]["code"] == "invalid_request"
    too_long = await api.http.post(
        f"{url}/shelve", json={"reason": "pump out", "duration_s": 9 * 3600}, headers=operator
    )
    assert too_long.status_code == 422
    assert too_long.json()["error"]["code"] == "invalid_shelve_duration"
    shelved = await api.http.post(
        f"{url}/shelve", json={"reason": "crew on site", "duration_s": 600}, headers=operator
    )
    assert shelved.status_code == 200
    assert shelved.json()["state"] == "shelved_timed"
    assert shelved.json()["alarm"]["shelved_until"] is not None
    viewer = await token(api.http, "viewer")
    listed = await api.http.get("/api/v1/alarms", params={"state": "shelved"}, headers=viewer)
    assert [a["id"] for a in listed.json()] == [alarm.id]
    assert (await api.http.get("/api/v1/alarms", headers=viewer)).json() == []
    twice = await api.http.post(f"{url}/shelve", json={"reason": "again"}, headers=operator)
    assert twice.status_code == 409
    no_reason = await api.http.post(f"{url}/unshelve", headers=operator)
    assert no_reason.status_code == 422
    back = await api.http.post(f"{url}/unshelve", json={"reason": "crew left"}, headers=operator)
    assert back.status_code == 200
    assert back.json()["state"] == "unacked_active"  # still faulted: announced again


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "x", "duration_s": -5},
        {"reason": "x", "duration_s": "soon"},
        {"reason": "x", "until": 5},
        {"reason": ""},
        ["reason"],
    ],
)
async def test_bad_bodies_are_422_never_500(api: Stack, body: object) -> None:
    api.send(T0 + S, {"vfd2/Fault": True})
    [alarm] = api.engine.active(SITE)
    response = await api.http.post(
        f"/api/v1/alarms/{alarm.id}/shelve", json=body, headers=await token(api.http, "operator")
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


async def test_malformed_json_is_422(api: Stack) -> None:
    headers = {**await token(api.http, "operator"), "Content-Type": "application/json"}
    response = await api.http.post("/api/v1/alarms/AL-1/ack", content=b"{not json", headers=headers)
    assert response.status_code == 422


async def test_incidents_have_the_contract_shape(api: Stack) -> None:
    api.send(T0 + S, {"power/Mains": False, "power/UPS": True, "power/Voltage": 0.0})
    api.engine.tick(T0 + 10 * S)
    api.send(T0 + 20 * S, {"plc/OutletPressure": 0.03})
    api.engine.tick(T0 + 60 * S)
    response = await api.http.get("/api/v1/incidents", headers=await token(api.http, "viewer"))
    assert response.status_code == 200
    [incident] = response.json()
    assert {"id", "root_cause", "sites", "devices", "alarms", "start", "end"} <= set(incident)
    assert incident["root_cause"]["kind"] == "power_supply"
    assert incident["root_cause"]["description"]
    assert incident["sites"] == [SITE]
    assert "power" in incident["devices"]
    assert len(incident["alarms"]) >= 2
    assert incident["end"] is None
    one = await api.http.get(f"/api/v1/incidents/{incident['id']}", headers=await token(api.http, "viewer"))
    assert one.json()["id"] == incident["id"]
    opened = await api.http.get(
        "/api/v1/incidents",
        params={"open": "true", "site": "PR-0002"},
        headers=await token(api.http, "viewer"),
    )
    assert opened.json() == []


async def test_public_read_opens_lists_but_not_actions() -> None:
    async for stack in _stack(public_read=True):
        stack.send(T0 + S, {"vfd2/Fault": True})
        assert (await stack.http.get("/api/v1/alarms")).status_code == 200
        assert (await stack.http.get("/api/v1/incidents")).status_code == 200
        [alarm] = stack.engine.active(SITE)
        assert (await stack.http.post(f"/api/v1/alarms/{alarm.id}/ack")).status_code == 401


async def test_without_an_alarm_engine_the_routes_say_so() -> None:
    async for stack in _stack(public_read=True, with_engine=False):
        response = await stack.http.get("/api/v1/alarms")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "alarms_unavailable"
