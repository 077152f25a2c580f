"""Typed settings for each long-running command (pydantic-settings), validated at start-up.

Every value can come from the command line or a ``TAPLINE_*`` environment variable
(``TAPLINE_BROKER``, ``TAPLINE_DB``, …). Settings objects are passed explicitly into the composition
root (bootstrap.py); nothing reads a global settings object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tapline.mqtt import BrokerUrl
from tapline.sparkplug.errors import TopicError
from tapline.sparkplug.topics import MessageType, Topic, state_topic


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
    notify: Path | None = None  # TAPLINE_NOTIFY: alarm notification config (docs/notify.example.yaml)
    log_level: str = "info"


class ServeSettings(_Base):
    broker: str = "mqtt://127.0.0.1:1883"
    db: str = "sqlite:///./tapline.db"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    host_id: str = "tapline"  # TAPLINE_HOST_ID: Sparkplug host id (STATE topic); one per worker
    groups: Annotated[tuple[str, ...], NoDecode] = ()  # TAPLINE_GROUPS=a,b: districts owned; () all
    secret: str = ""  # TAPLINE_SECRET: signs API tokens; required
    admin_password: str | None = None  # TAPLINE_ADMIN_PASSWORD: creates the admin user at start
    public_read: bool = False
    notify: Path | None = None  # TAPLINE_NOTIFY: alarm notification config (docs/notify.example.yaml)
    log_level: str = "info"

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        BrokerUrl.parse(value)
        return value

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        try:
            state_topic(value)
        except TopicError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("groups", mode="before")
    @classmethod
    def _split_groups(cls, value: object) -> object:
        """``a,b`` (the command line, ``TAPLINE_GROUPS``) or a sequence; blanks ignored."""
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for group in value:
            try:
                Topic(group, MessageType.NBIRTH, "room")
            except TopicError as exc:
                raise ValueError(str(exc)) from None
            if group == "STATE":  # spBv1.0/STATE/… is the host applications' namespace
                raise ValueError("'STATE' is not a usable group id")
        if len(set(value)) != len(value):
            raise ValueError(f"a group is named twice: {', '.join(value)}")
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
