"""``/api/v1/sim/faults`` through the real FastAPI app with a small in-process city (no Modbus servers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tapline.api.app import create_app
from tapline.bootstrap import demo_users
from tapline.ingest.live import LiveState
from tapline.services import Services
from tapline.sim.api_client import FaultApi, SimApiError, parse_params
from tapline.sim.runner import SimulatedCity
from tapline.store.telemetry import open_telemetry_store

FAULTS = "/api/v1/sim/faults"


@pytest.fixture
def city() -> SimulatedCity:
    city = SimulatedCity.build(3, districts=2, seed=5)
    city.clock_ms = lambda: 1_700_000_000_000
    return city


async def _client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services, demo_users("demo"), public_read=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http


@pytest.fixture
async def client(city: SimulatedCity) -> AsyncIterator[httpx.AsyncClient]:
    store = open_telemetry_store("sqlite:///:memory:")
    await store.open()
    services = Services(LiveState(), store)
    services.extras["sim"] = city
    async for http in _client(services):
        yield http
    await store.close()


async def _token(client: httpx.AsyncClient, user: str) -> dict[str, str]:
    response = await client.post("/api/v1/auth/token", data={"username": user, "password": "demo"})
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _inject(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post(FAULTS, json=body, headers=await _token(client, "operator"))


async def test_inject_list_and_clear_a_pump_trip(client: httpx.AsyncClient, city: SimulatedCity) -> None:
    response = await _inject(client, {"kind": "pump_trip", "site": "PR-0001", "device": "vfd1"})
    assert response.status_code == 201
    fault = response.json()
    assert fault["id"] == "F00001"
    assert (fault["kind"], fault["site"], fault["district"], fault["device"]) == (
        "pump_trip",
        "PR-0001",
        city.rooms["PR-0001"].spec.district,
        "vfd1",
    )
    assert fault["params"] == {"code": 0x2310}  # the default drive fault code is filled in
    assert fault["start"] == 1_700_000_000_000
    assert city.rooms["PR-0001"].physics.values()["vfd1/Fault"] is True

    listed = (await client.get(FAULTS, headers=await _token(client, "viewer"))).json()
    assert [f["id"] for f in listed["active"]] == ["F00001"]
    assert listed["log"][0]["active"] is True

    city.clock_ms = lambda: 1_700_000_060_000
    cleared = await client.delete(f"{FAULTS}/F00001", headers=await _token(client, "operator"))
    assert cleared.status_code == 200
    assert cleared.json()["end"] == 1_700_000_060_000
    listed = (await client.get(FAULTS, headers=await _token(client, "viewer"))).json()
    assert listed["active"] == []
    assert listed["log"][0]["end"] == 1_700_000_060_000
    assert listed["log"][0]["end_s"] is not None

    again = await client.delete(f"{FAULTS}/F00001", headers=await _token(client, "operator"))
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "unknown_fault"


async def test_district_fault_by_district_or_by_one_of_its_sites(
    client: httpx.AsyncClient, city: SimulatedCity
) -> None:
    by_district = await _inject(client, {"kind": "inlet_pressure_drop", "district": "qiaokou"})
    assert by_district.status_code == 201
    assert by_district.json()["site"] is None
    assert by_district.json()["district"] == "qiaokou"
    assert by_district.json()["params"] == {"to_mpa": 0.05, "ramp_s": 60.0}
    by_site = await _inject(
        client, {"kind": "inlet_pressure_drop", "site": "PR-0001", "params": {"to_mpa": 0.1}}
    )
    assert by_site.status_code == 201
    assert by_site.json()["district"] == city.rooms["PR-0001"].spec.district
    assert [f.district for f in city.districts["jianghan"].faults] == ["jianghan"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"kind": "meteor_strike", "site": "PR-0001"}, 422, "unknown_fault_kind"),
        ({"kind": "flood", "site": "PR-9999"}, 404, "unknown_site"),
        ({"kind": "flood"}, 422, "invalid_fault"),
        ({"kind": "device_offline", "site": "PR-0001", "device": "vfd9"}, 404, "unknown_device"),
        ({"kind": "device_offline", "site": "PR-0001"}, 422, "invalid_fault"),
        ({"kind": "flood", "site": "PR-0001", "device": "vfd1"}, 422, "invalid_fault"),
        ({"kind": "pump_trip", "site": "PR-0001", "device": "plc"}, 422, "invalid_fault"),
        ({"kind": "sensor_drift", "site": "PR-0001", "params": {"rate_per_min": 99}}, 422, "invalid_fault"),
        (
            {"kind": "sensor_stuck", "site": "PR-0001", "params": {"point": "vfd1/Running"}},
            422,
            "invalid_fault",
        ),
        ({"kind": "flood", "site": "PR-0001", "params": {"depth": 1}}, 422, "invalid_fault"),
        ({"kind": "flood", "site": "PR-0001", "district": "wuchang"}, 422, "invalid_fault"),
        ({"kind": "inlet_pressure_drop", "district": "atlantis"}, 404, "unknown_district"),
        ({"kind": "inlet_pressure_drop"}, 422, "invalid_fault"),
        ({"kind": "inlet_pressure_drop", "district": "jianghan", "device": "plc"}, 422, "invalid_fault"),
        ({"kind": "flood", "site": "PR-0001", "params": {"depth": {"m": 1}}}, 422, "invalid_request"),
        ({"kind": "flood", "site": "PR-0001", "colour": "red"}, 422, "invalid_request"),
        ({"site": "PR-0001"}, 422, "invalid_request"),
        ({"kind": ""}, 422, "invalid_request"),
    ],
)
async def test_bad_requests_are_4xx_json_and_change_nothing(
    client: httpx.AsyncClient, city: SimulatedCity, body: dict[str, Any], status: int, code: str
) -> None:
    response = await _inject(client, body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert city.active_faults() == []
    assert city.truth.entries == ()
    ok = await _inject(client, {"kind": "door_open", "site": "PR-0002"})
    assert ok.json()["id"] == "F00001"  # a refused request uses up no id


async def test_a_body_that_is_not_json_is_422(client: httpx.AsyncClient) -> None:
    headers = {**await _token(client, "operator"), "content-type": "application/json"}
    response = await client.post(FAULTS, content=b"{not json", headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


async def test_injecting_needs_an_operator_and_reading_a_viewer(client: httpx.AsyncClient) -> None:
    body = {"kind": "flood", "site": "PR-0001"}
    anonymous = await client.post(FAULTS, json=body)
    assert anonymous.status_code == 401
    viewer = await client.post(FAULTS, json=body, headers=await _token(client, "viewer"))
    assert viewer.status_code == 403
    assert viewer.json()["error"]["code"] == "forbidden"
    assert (await client.get(FAULTS)).status_code == 401
    cleared = await client.delete(f"{FAULTS}/F00001", headers=await _token(client, "viewer"))
    assert cleared.status_code == 403


async def test_the_routes_exist_only_with_an_in_process_simulator() -> None:
    store = open_telemetry_store("sqlite:///:memory:")
    await store.open()
    try:
        async for http in _client(Services(LiveState(), store)):
            response = await http.post(FAULTS, json={"kind": "flood", "site": "PR-0001"})
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"
            schema = (await http.get("/api/v1/openapi.json")).json()
            assert "/api/v1/sim/faults" not in schema["paths"]
    finally:
        await store.close()


async def test_the_cli_client_injects_and_clears_through_the_api(city: SimulatedCity) -> None:
    store = open_telemetry_store("sqlite:///:memory:")
    await store.open()
    services = Services(LiveState(), store)
    services.extras["sim"] = city
    transport = httpx.ASGITransport(app=create_app(services, demo_users("demo")))
    api = FaultApi("http://t/", "operator", "demo", transport=transport)
    try:
        fault = await api.inject(
            "pump_trip", site="PR-0003", device="vfd2", params=parse_params(["code=0x3130"])
        )
        assert fault["params"] == {"code": 0x3130}
        listed = await api.faults()
        assert [f["id"] for f in listed["active"]] == [fault["id"]]
        assert (await api.clear(fault["id"]))["id"] == fault["id"]
        with pytest.raises(SimApiError) as refused:
            await api.inject("flood", site="PR-0404")
        assert (refused.value.status, refused.value.code) == (404, "unknown_site")
        with pytest.raises(SimApiError) as login:
            await FaultApi("http://t", "operator", "wrong", transport=transport).faults()
        assert login.value.code == "invalid_credentials"
    finally:
        await store.close()


def test_parameters_from_the_command_line_are_typed() -> None:
    assert parse_params(["code=0x2310", "to_mpa=0.1", "point=plc/Flow", "x=true", "n=-3"]) == {
        "code": 0x2310,
        "to_mpa": 0.1,
        "point": "plc/Flow",
        "x": True,
        "n": -3,
    }
    with pytest.raises(ValueError, match="name=value"):
        parse_params(["oops"])
