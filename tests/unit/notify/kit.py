"""Helpers for the notification tests: configs from plain dicts, and alarm events from the real engine
or made directly (for phases the engine reaches only through room configuration)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tapline.alarms.events import AlarmEvent
from tapline.alarms.model import Event, Phase, Transition
from tapline.notify.config import NotifyConfig, parse_notify_config
from tests.unit.alarms.kit import T0, Room, S, alarm_event

__all__ = ["MIN", "T0", "Room", "S", "alarm_event", "config", "critical_alarm", "moved", "webhook"]

MIN = 60 * S


def webhook(name: str, **extra: Any) -> dict[str, Any]:
    """A webhook recipient as the YAML file would give it."""
    return {"name": name, "channel": "webhook", "url": f"http://hooks.test/{name}", **extra}


def config(*recipients: dict[str, Any], **top: Any) -> NotifyConfig:
    raw: dict[str, Any] = {"recipients": list(recipients), "console_url": "https://scada.test", **top}
    return parse_notify_config(raw, "test", environ={})


def critical_alarm(room: Room, at: int = T0) -> AlarmEvent:
    """Mains lost in a healthy room, committed after its 2 s on-delay: one critical announcement."""
    room.healthy(at - 10 * S)
    room.send(at - 2 * S, {"power/Mains": False})
    (event,) = room.tick(at)
    assert event.announced
    assert event.rule == "mains_lost"
    return event


def moved(event: AlarmEvent, happening: Event, target: Phase, at: int, active: bool = True) -> AlarmEvent:
    """``event``'s alarm after one more transition into ``target`` (built directly, not by the engine)."""
    transition = Transition(happening, event.phase, target, at, "op")
    return replace(event, transition=transition, state=replace(event.state, phase=target, active=active))
