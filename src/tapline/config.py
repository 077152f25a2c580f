"""Typed settings for each long-running command (pydantic-settings), validated at start-up.

Every value can come from the command line or a ``TAPLINE_*`` environment variable
(``TAPLINE_BROKER``, ``TAPLINE_DB``, …). Settings objects are passed explicitly into the composition
root (bootstrap.py); nothing reads a global settings object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tapline.mqtt import BrokerUrl


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAPLINE_", frozen=True, extra="forbid")


class DemoSettings(_Base):
    sites: Annotated[int, Field(ge=1, le=500)] = 20
    districts: Annotated[int, Field(ge=1, le=8)] = 2
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    broker_port: Annotated[int, Field(ge=0, le=65535)] = 1883
    data_dir: Path = Path(".tapline-demo")
    demo_password: str = "demo"  # noqa: S105 - the documented demo login, refused outside the demo
    seed: int = 1
    speed: Annotated[float, Field(gt=0, le=100)] = 1.0
    host: str = "127.0.0.1"
    fast_poll_s: Annotated[float, Field(gt=0)] = 1.0
    slow_poll_s: Annotated[float, Field(gt=0)] = 10.0
    log_level: str = "info"


class ServeSettings(_Base):
    broker: str = "mqtt://127.0.0.1:1883"
    db: str = "sqlite:///./tapline.db"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    host_id: str = "tapline"
    secret: str = ""  # TAPLINE_SECRET: signs API tokens; required
    admin_password: str | None = None  # TAPLINE_ADMIN_PASSWORD: creates the admin user at start
    public_read: bool = False
    log_level: str = "info"

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        BrokerUrl.parse(value)
        return value


class EdgeSettings(_Base):
    config: Path
    broker: str = "mqtt://127.0.0.1:1883"
    data_dir: Path = Path(".tapline-edge")
    primary_host: str | None = "tapline"
    log_level: str = "info"

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        BrokerUrl.parse(value)
        return value
