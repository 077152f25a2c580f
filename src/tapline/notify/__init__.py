"""Alarm notifications: webhook and email, escalation of unacknowledged alarms, per-recipient rate limit.

Layers (STYLE: sans-IO core, thin adapters):
- ``config``: the typed YAML config (``load_notify_config``), see ``docs/notify.example.yaml``.
- ``policy``: pure; alarm events and time in, ``Notice``s out (filters, escalation, rate limit, digest).
- ``channels``: the one ``Channel`` interface; ``webhook`` (httpx) and ``smtp`` (smtplib) implement it.
- ``dispatcher``: the IO runner; queues events, ticks the policy, sends with retries, counts.
- ``errors``: ``NotifyError`` → ``NotifyConfigError`` (a ``ValueError``), ``DeliveryError``.

Wiring it into the cloud process (``bootstrap.py``), in the event loop that runs the alarm hub::

    from tapline.notify import build_dispatcher, load_notify_config

    config = load_notify_config(path)              # NotifyConfigError (ValueError) names the field
    dispatcher = build_dispatcher(config)          # clock defaults to wall-clock ms (the engine's base)
    hub.add_sink(dispatcher.take)                  # sync, never blocks, never raises
    metrics_sources.append(dispatcher)             # optional: ``collect(Exposition)``
    task_group.create_task(dispatcher.run(), name="notify")   # runs until cancelled

``build_dispatcher(config, clock=…, **options)`` builds the channels the config needs (a
``WebhookChannel`` with the recipients' secrets; an ``EmailChannel`` when there is an ``smtp``
section) and passes ``options`` (``queue_size``, ``concurrency``, ``max_attempts``, ``backoff_s``,
``backoff_max_s``, ``tick_s``) to ``NotifyDispatcher(policy, channels, clock, **options)``.
``take`` must be called from the dispatcher's event loop thread (the hub's ``publish`` is).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tapline.notify.channels import Channel, ChannelKind
from tapline.notify.config import NotifyConfig, load_notify_config, parse_notify_config
from tapline.notify.dispatcher import NotifyDispatcher, wall_ms
from tapline.notify.errors import DeliveryError, NotifyConfigError, NotifyError
from tapline.notify.policy import Notice, NoticeKind, NotifyPolicy
from tapline.notify.smtp import EmailChannel
from tapline.notify.webhook import WebhookChannel

__all__ = [
    "Channel",
    "ChannelKind",
    "DeliveryError",
    "EmailChannel",
    "Notice",
    "NoticeKind",
    "NotifyConfig",
    "NotifyConfigError",
    "NotifyDispatcher",
    "NotifyError",
    "NotifyPolicy",
    "WebhookChannel",
    "build_channels",
    "build_dispatcher",
    "load_notify_config",
    "parse_notify_config",
]


def build_channels(config: NotifyConfig, webhook_timeout_s: float = 10.0) -> dict[str, Channel]:
    """The channels ``config``'s recipients need, keyed by channel kind."""
    channels: dict[str, Channel] = {}
    if any(r.channel is ChannelKind.WEBHOOK for r in config.recipients):
        secrets = {r.name: r.secret for r in config.recipients if r.secret}
        channels[ChannelKind.WEBHOOK.value] = WebhookChannel(secrets, timeout_s=webhook_timeout_s)
    if config.smtp is not None:
        channels[ChannelKind.EMAIL.value] = EmailChannel(config.smtp)
    return channels


def build_dispatcher(
    config: NotifyConfig, clock: Callable[[], int] = wall_ms, **options: Any
) -> NotifyDispatcher:
    """A dispatcher for ``config`` with real channels (see the module docstring)."""
    return NotifyDispatcher(NotifyPolicy(config), build_channels(config), clock, **options)
