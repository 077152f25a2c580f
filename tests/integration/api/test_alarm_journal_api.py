"""The persisted alarm journal through the real API on SQLite and PostgreSQL: history, audit trail,
alarm-system KPIs, a restart, and the live push (SSE) through a real HTTP server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tapline.alarms.service import AlarmService
from tapline.api.app import create_app
from tapline.bootstrap import demo_users
from tapline.domain.model import Reading
from tapline.store.alarm_journal import AlarmJournalStore
from tests.helpers import eventually
from tests.integration.api.alarm_kit import SITE, Cloud, cloud_on, serving
from tests.unit.alarms.kit import HEALTHY, T0, S

USERS = demo_users("demo")
_TOKENS: dict[str, str] = {}


@pytest.fixture
def url(db_url: str) -> str:
    return db_url


async def token(http: httpx.AsyncClient, user: str) -> dict[str, str]:
    if user not in _TOKENS:
        response = await http.post("/api/v1/auth/token", data={"username": user, "password": "demo"})
        _TOKENS[user] = response.json()["access_token"]
    return {"Authorization": f"Bearer {_TOKENS[user]}"}


def client(cloud: Cloud) -> httpx.AsyncClient:
    app = create_app(cloud.services, USERS)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_history_and_audit_trail_come_from_the_store_and_survive_a_restart(url: str) -> None:
    district = f"restart-{uuid.uuid4().hex[:8]}"
    async with cloud_on(url, prefix="ALBOOT1", district=district) as cloud, client(cloud) as http:
        cloud.send(T0, HEALTHY)
        cloud.send(T0 + S, {"vfd2/Fault": True})
        [alarm] = cloud.engine.active(SITE)
        operator = await token(http, "operator")
        cloud.now = T0 + 2 * S
        acked = await http.post(
            f"/api/v1/alarms/{alarm.id}/ack", json={"reason": "crew called"}, headers=operator
        )
        assert acked.status_code == 200
        cloud.send(T0 + 3 * S, {"vfd2/Fault": False})
        cloud.send(T0 + 4 * S, {"plc/Flow": 0.0, "vfd1/Fault": True})  # a second, still live alarm
        assert await cloud.writer.flush() >= 4
    async with cloud_on(url, prefix="ALBOOT2", district=district) as cloud, client(cloud) as http:
        # A new process: what the last one left live is closed, in its districts only.
        journal = AlarmJournalStore(cloud.relational)
        assert await journal.close_orphans(T0 + 9 * S, "cloud restarted", ("elsewhere",)) == []
        closed = await journal.close_orphans(T0 + 9 * S, "cloud restarted", (district,), "ALBOOT2-")
        assert closed
        assert alarm.id not in closed  # already back to normal
        viewer = await token(http, "viewer")
        cloud.now = T0 + 10 * S
        history = await http.get("/api/v1/alarms/history", params={"start": T0}, headers=viewer)
        assert history.status_code == 200
        rows = history.json()
        finished = next(r for r in rows if r["id"] == alarm.id)
        assert finished["state"] == "normal"
        assert finished["active"] is False
        assert (finished["raised"], finished["cleared"]) == (T0 + S, T0 + 3 * S)
        assert (finished["acked"], finished["acked_by"]) == (T0 + 2 * S, "operator")
        assert finished["rule"] == "drive_fault"
        assert finished["message"]["en"] == "Pump drive fault"
        assert rows[0]["raised"] >= rows[-1]["raised"]  # newest first
        orphans = [r for r in rows if r["id"] != alarm.id]
        assert sorted(r["id"] for r in orphans) == sorted(closed)
        assert all(r["state"] == "normal" and r["cleared"] == T0 + 9 * S for r in orphans)
        orphan_trail = await http.get(f"/api/v1/alarms/{closed[0]}/events", headers=viewer)
        assert orphan_trail.json()[-1]["reason"] == "cloud restarted"
        trail = await http.get(f"/api/v1/alarms/{alarm.id}/events", headers=viewer)
        assert [(t["event"], t["by"]) for t in trail.json()] == [
            ("activate", "system"),
            ("ack", "operator"),
            ("clear", "system"),
        ]
        assert trail.json()[1]["reason"] == "crew called"
        missing = await http.get("/api/v1/alarms/AL-404/events", headers=viewer)
        assert missing.status_code == 404
        filtered = await http.get(
            "/api/v1/alarms/history", params={"start": T0, "priority": "low"}, headers=viewer
        )
        assert filtered.json() == []
        bad = await http.get("/api/v1/alarms/history", params={"start": T0 + 5, "end": T0}, headers=viewer)
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "invalid_period"


async def test_alarm_system_kpis_from_the_persisted_journal(url: str) -> None:
    district = f"kpi-{uuid.uuid4().hex[:8]}"
    async with cloud_on(url, district=district) as cloud, client(cloud) as http:
        cloud.send(T0, HEALTHY)
        for n in range(4):  # a chattering drive fault: announced 4 times within 60 s
            cloud.send(T0 + (10 * n + 1) * S, {"vfd2/Fault": True})
            cloud.send(T0 + (10 * n + 5) * S, {"vfd2/Fault": False})
        await cloud.writer.flush()
        cloud.now = T0 + 600 * S
        response = await http.get(
            "/api/v1/kpis/alarms",
            params={"start": T0, "end": T0 + 600 * S, "district": district},
            headers=await token(http, "viewer"),
        )
        assert response.status_code == 200
        kpis: dict[str, Any] = response.json()
        assert kpis["announced"] == 4
        assert kpis["peak_10min"] == 4
        [chatter] = kpis["chattering"]
        assert chatter["alarm"][1] == "drive_fault"
        assert chatter["count"] == 4
        assert kpis["targets"]["no_chattering"] is False
        assert kpis["bad_actors"][0]["count"] == 4
        other = await http.get(
            "/api/v1/kpis/alarms",
            params={"start": T0, "end": T0 + 600 * S, "district": "qiaokou"},
            headers=await token(http, "viewer"),
        )
        assert other.json()["announced"] == 0


async def until(condition: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check, timeout=10, interval=0.02, what=what)


async def _frames(response: httpx.Response, wanted: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    name = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            out.append((name, orjson.loads(line[6:])))
            if len(out) == wanted:
                return out
    return out


async def test_live_push_streams_engine_and_operator_transitions(tmp_path: Path) -> None:
    async with cloud_on(f"sqlite:///{tmp_path / 'push.db'}") as cloud:
        app = create_app(cloud.services, USERS)
        app.state.stream_keepalive_s = 0.2
        async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            refused = await http.get("/api/v1/stream")
            assert refused.status_code == 401
            viewer = (await token(http, "viewer"))["Authorization"].split()[1]
            async with http.stream("GET", "/api/v1/stream", params={"access_token": viewer}) as sse:
                assert sse.status_code == 200
                assert sse.headers["content-type"].startswith("text/event-stream")
                await until(lambda: cloud.hub.listeners == 1, "the stream to listen")
                cloud.send(T0, HEALTHY)
                cloud.send(T0 + S, {"vfd2/Fault": True})
                [alarm] = cloud.engine.active(SITE)
                acked = await http.post(
                    f"/api/v1/alarms/{alarm.id}/ack", headers=await token(http, "operator")
                )
                assert acked.status_code == 200
                frames = await asyncio.wait_for(_frames(sse, 2), 10)
            assert [name for name, _ in frames] == ["alarm", "alarm"]
            (_, raised), (_, ack) = frames
            assert raised["alarm_id"] == alarm.id
            assert raised["rule"] == "drive_fault"
            assert raised["state"] == "unacked_active"
            assert raised["message"]["zh"]
            assert (ack["event"], ack["by"], ack["state"]) == ("ack", "operator", "acked_active")
            await until(lambda: cloud.hub.listeners == 0, "the closed stream to let go of its listener")


async def test_a_room_in_maintenance_stays_there_across_a_restart(url: str) -> None:
    district = f"maint-{uuid.uuid4().hex[:8]}"
    site = f"PR-M{uuid.uuid4().hex[:6]}"
    async with cloud_on(url, district=district) as cloud, client(cloud) as http:
        cloud.services.live.register(site, district, "维修中泵房")
        operator = await token(http, "operator")
        path = f"/api/v1/sites/{site}/maintenance"
        unknown = await http.post(
            "/api/v1/sites/PR-NOPE/maintenance", json={"active": True, "reason": "x"}, headers=operator
        )
        assert unknown.status_code == 404
        no_reason = await http.post(path, json={"active": True}, headers=operator)
        assert no_reason.status_code == 422
        viewer = await token(http, "viewer")
        assert (
            await http.post(path, json={"active": True, "reason": "x"}, headers=viewer)
        ).status_code == 403
        started = await http.post(path, json={"active": True, "reason": "tank cleaning"}, headers=operator)
        assert started.status_code == 200
        assert started.json()["maintenance"] is True
    async with cloud_on(url, district=district) as cloud, client(cloud) as http:  # a new process
        service: AlarmService = cloud.services.extras["alarm_service"]
        assert await service.restore_maintenance() >= 1
        cloud.services.live.register(site, district, "维修中泵房")
        summary = (await http.get(f"/api/v1/sites/{site}", headers=await token(http, "viewer"))).json()
        assert summary["maintenance"] is True
        readings = [Reading(p, T0, v) for p, v in {**HEALTHY, "vfd2/Fault": True}.items()]
        cloud.feed.data(site, district, readings, T0)
        [alarm] = cloud.engine.alarms(site, "suppressed")
        assert alarm.phase.value == "out_of_service"
        assert cloud.engine.active(site) == []
        ended = await http.post(
            f"/api/v1/sites/{site}/maintenance",
            json={"active": False, "reason": "cleaned"},
            headers=await token(http, "operator"),
        )
        assert [t["to"] for t in ended.json()["transitions"]] == ["unacked_active"]
        assert cloud.engine.active(site)[0].id == alarm.id
