"""The cloud as ``bootstrap.build_cloud`` wires it with ``--notify``: an alarm raised by the ingest's
alarm feed reaches a real webhook through the hub; an operator's acknowledgement through the API
reaches the persisted journal through the same hub."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import httpx
import pytest

from tapline.api.app import create_app
from tapline.bootstrap import build_cloud, demo_users
from tapline.domain.model import Reading
from tapline.ingest.alarm_feed import AlarmFeed
from tapline.mqtt import BrokerUrl
from tapline.notify import NotifyConfigError
from tests.unit.alarms.kit import HEALTHY

from .receivers import webhook_receiver

SITE, DISTRICT = "PR-0001", "jianghan"
UNUSED_BROKER = BrokerUrl.parse("mqtt://127.0.0.1:9")  # the ingest's MQTT session is not started here


async def test_an_alarm_from_the_feed_reaches_the_webhook_and_an_api_ack_reaches_the_journal(
    tmp_path: Path,
) -> None:
    async with webhook_receiver() as hooks:
        config = tmp_path / "notify.yaml"
        config.write_text(
            f"""
recipients:
  - name: duty
    channel: webhook
    url: {hooks.url}
    min_priority: high
""",
            encoding="utf-8",
        )
        cloud = await build_cloud(f"sqlite:///{tmp_path / 'cloud.db'}", UNUSED_BROKER, notify=config)
        assert cloud.notifier is not None
        notifying = asyncio.create_task(cloud.notifier.run())
        try:
            feed = AlarmFeed(cloud.services.extras["alarms"], cloud.services.extras["alarm_hub"])
            now = 1_795_000_000_000
            feed.data(SITE, DISTRICT, [Reading(p, now, v) for p, v in HEALTHY.items()], now)
            feed.data(SITE, DISTRICT, [Reading("vfd2/Fault", now + 1_000, True)], now + 1_000)
            [request] = await hooks.wait_for(1)
            document = json.loads(request.body)
            assert document["kind"] == "alarm"
            assert document["alarm_ids"][0].startswith("AL")
            assert "PR-0001" in json.dumps(document, ensure_ascii=False)
            users = demo_users("demo")
            app = create_app(cloud.services, users)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
                login = await http.post(
                    "/api/v1/auth/token", data={"username": "operator", "password": "demo"}
                )
                headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
                acked = await http.post(f"/api/v1/alarms/{document['alarm_ids'][0]}/ack", headers=headers)
                assert acked.status_code == 200
            assert cloud.journal is not None
            await cloud.journal.flush()
            trail = await cloud.services.extras["alarm_service"].transitions(document["alarm_ids"][0])
            assert [(t["event"], t["by"]) for t in trail] == [("activate", "system"), ("ack", "operator")]
            metrics = cloud.services.metrics_text()
            assert "tapline_alarm_journal" in metrics
        finally:
            notifying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await notifying
            await cloud.close()


async def test_a_bad_notification_file_stops_the_cloud_before_it_starts(tmp_path: Path) -> None:
    config = tmp_path / "notify.yaml"
    config.write_text("recipients:\n  - name: duty\n    channel: webhook\n", encoding="utf-8")
    with pytest.raises(NotifyConfigError, match="url"):
        await build_cloud(f"sqlite:///{tmp_path / 'cloud.db'}", UNUSED_BROKER, notify=config)
    assert not (tmp_path / "cloud.db").exists()
