"""``tapline edge``: build one gateway from its room file and run it.

Kept apart from ``tapline.bootstrap`` on purpose: a gateway box must not import the cloud side
(FastAPI, uvicorn, SQLAlchemy, the stores) — that alone is ~30 MB of RSS against a 60 MB budget.
"""

from __future__ import annotations

from pathlib import Path

from tapline.config import EdgeSettings
from tapline.edge.app import Gateway, GatewaySettings
from tapline.edge.config import load_room
from tapline.mqtt import BrokerUrl


async def run_edge(settings: EdgeSettings) -> None:
    room, maps = load_room(Path(settings.config))
    gateway = Gateway(
        room,
        maps,
        GatewaySettings(
            broker=BrokerUrl.parse(settings.broker),
            data_dir=settings.data_dir,
            primary_host=settings.primary_host,
        ),
    )
    await gateway.run()
