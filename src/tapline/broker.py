"""The embedded MQTT broker (amqtt) for the demo and single-box installs: the only amqtt import.

One machine with real load should run Mosquitto; a city past one machine runs an EMQX cluster
(docs/scaling.md). The embedded broker exists so ``make demo`` needs no server installed.
"""

from __future__ import annotations

import socket
from typing import Any

from amqtt.broker import Broker

from tapline.logs import get_logger

log = get_logger(__name__)


class EmbeddedBroker:
    """An in-process amqtt broker listening on ``host:port`` (anonymous, loopback only by default)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        if not port_free(self.host, self.port):
            raise OSError(f"MQTT port {self.host}:{self.port} is already in use")
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._broker = Broker(config)
        await self._broker.start()
        log.info("embedded_broker_started", url=self.url)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None


def port_free(host: str, port: int) -> bool:
    """True if nothing listens on host:port (we can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(host: str, preferred: int) -> tuple[int, bool]:
    """``preferred`` if free, else an ephemeral free port; the flag says whether it had to move."""
    if port_free(host, preferred):
        return preferred, False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port, True
