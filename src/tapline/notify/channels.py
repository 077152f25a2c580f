"""The one interface every notification channel implements, and its kinds.

Rules:
- A channel delivers one ``Notice`` per ``send`` call and either returns (handed over: the webhook
  answered 2xx, the SMTP server accepted the mail) or raises ``DeliveryError``. Nothing else
  escapes: each channel translates its own library's errors at its boundary.
- A channel never retries, queues or rate-limits: the dispatcher retries with backoff and the
  policy limits, so every channel behaves the same way under failure.
- The address comes with the notice (a URL or a mailbox); secrets stay in the channel, so a notice
  can be logged or shown without leaking them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tapline.notify.policy import Notice


class ChannelKind(StrEnum):
    """How a recipient is reached; the dispatcher's ``channels`` mapping is keyed by these."""

    WEBHOOK = "webhook"
    EMAIL = "email"


class Channel(Protocol):
    """Delivers notices of one kind (webhook or email)."""

    async def send(self, notice: Notice) -> None:
        """Deliver ``notice`` or raise ``DeliveryError``."""
        ...
