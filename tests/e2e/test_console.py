"""The operator console in a real headless Chromium (Debian's, driven by Playwright): Chinese first,
alarms arriving by live push, an operator logging in and acknowledging, the history showing who."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from tapline.accounts import Accounts
from tapline.alarms.correlate import Correlator
from tapline.alarms.engine import AlarmEngine
from tapline.alarms.hub import AlarmHub
from tapline.alarms.journal import JournalWriter
from tapline.alarms.service import AlarmService
from tapline.api.app import create_app
from tapline.bootstrap import demo_users
from tapline.domain.model import Reading, Value
from tapline.ingest.alarm_feed import AlarmFeed
from tapline.ingest.live import LiveState
from tapline.services import Services
from tapline.store.alarm_journal import AlarmJournalStore
from tapline.store.relational import RelationalStore
from tapline.store.telemetry import open_telemetry_store
from tests.helpers import eventually, free_port, service_missing
from tests.unit.alarms.kit import HEALTHY, STEADY

SITE, DISTRICT = "PR-0001", "jianghan"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[tuple[str, AlarmFeed, JournalWriter]]:
    """A cloud API with the alarm engine, journal and live push on SQLite, served by uvicorn."""
    url = f"sqlite:///{tmp_path / 'console.db'}"
    telemetry = open_telemetry_store(url)
    await telemetry.open()
    relational = RelationalStore(url)
    await relational.open()
    live = LiveState()
    live.register(SITE, DISTRICT, "江汉花园1号泵房")
    correlator = Correlator()
    engine = AlarmEngine(STEADY, grouping=correlator)
    hub = AlarmHub()
    journal = AlarmJournalStore(relational)
    writer = JournalWriter(journal, interval_s=0.1)
    hub.add_sink(writer.take)
    services = Services(live, telemetry)
    users = demo_users("demo")
    services.extras.update(
        alarms=engine,
        incidents=correlator,
        alarm_hub=hub,
        alarm_service=AlarmService(engine, correlator, hub=hub, journal=journal),
        accounts=Accounts(users, None),
    )
    app = create_app(services, users, public_read=True)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    tasks = [asyncio.create_task(server.serve()), asyncio.create_task(writer.run())]

    async def started() -> bool:
        return server.started

    await eventually(started, timeout=10, what="the console server")
    try:
        yield f"http://127.0.0.1:{port}/", AlarmFeed(engine, hub), writer
    finally:
        server.should_exit = True
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await relational.close()
        await telemetry.close()


def send(feed: AlarmFeed, at: int, values: dict[str, Value]) -> None:
    feed.data(SITE, DISTRICT, [Reading(p, at, v) for p, v in values.items()], at)


async def test_operator_sees_a_pushed_alarm_acknowledges_it_and_finds_it_in_history(
    console: tuple[str, AlarmFeed, JournalWriter],
) -> None:
    if CHROMIUM is None:
        service_missing("Chromium is not installed (apt install chromium fonts-noto-cjk)")
    from playwright.async_api import async_playwright, expect

    base, feed, _ = console
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = await browser.new_page(locale="zh-CN")
        try:
            await page.goto(base)
            await expect(page.locator("header h1")).to_have_text("二次供水泵房监控")
            await expect(page.locator("#live")).to_have_text("实时推送")  # the SSE stream is open
            await page.click("nav button[data-tab=alarms]")
            now = time.time_ns() // 1_000_000 - 5_000  # the history lists the last 24 h of the wall clock
            send(feed, now, HEALTHY)
            send(feed, now + 1_000, {"vfd2/Fault": True})
            row = page.locator("#alarms tbody tr").first
            await expect(row).to_contain_text("变频器故障", timeout=5_000)
            await expect(row).to_contain_text("未确认")
            await expect(page.locator("#badge")).to_have_text("1")

            await row.locator("button[data-act=ack]").click()  # not logged in: the login dialog opens
            await page.fill("#login-form input[name=username]", "operator")
            await page.fill("#login-form input[name=password]", "demo")
            await page.click("#login-form button[type=submit]")
            await expect(page.locator("#login")).to_contain_text("operator")
            await page.locator("#alarms tbody tr").first.locator("button[data-act=ack]").click()
            await expect(page.locator("#alarms tbody tr").first).to_contain_text("已确认")

            await page.click("nav button[data-tab=history]")
            entry = page.locator("#history tbody tr").first
            await expect(entry).to_contain_text("operator", timeout=5_000)
            await entry.click()
            await expect(page.locator("#history tr.trail")).to_contain_text("ack")

            await page.click("#lang")
            await expect(page.locator("header h1")).to_have_text("Pump-room monitoring")
            await page.click("nav button[data-tab=health]")
            await expect(page.locator("#kpi-cards")).to_contain_text("Alarms / 10 min / operator")
        finally:
            await browser.close()
