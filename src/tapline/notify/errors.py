"""The notification area's exceptions.

- ``NotifyError``: base of everything below.
  - ``NotifyConfigError`` (also a ``ValueError``): a notification config file that cannot be used;
    the message names the file and the field (``recipients[1].url``), ``field`` holds the field.
  - ``DeliveryError``: a channel could not hand a notice over. ``retryable`` says whether trying the
    same notice again later can help (a timeout, a refused connection, a 5xx, an SMTP 4xx) or not
    (a 4xx from the webhook, an SMTP 5xx, an unknown recipient). Channels translate their library's
    errors into this one at their boundary; the dispatcher never sees httpx or smtplib exceptions.
"""

from __future__ import annotations


class NotifyError(Exception):
    """Base of the notification area's errors."""


class NotifyConfigError(NotifyError, ValueError):
    """An unusable notification config; ``field`` is the dotted path of the offending field."""

    def __init__(self, message: str, field: str = "") -> None:
        self.field = field
        super().__init__(message)


class DeliveryError(NotifyError):
    """A notice was not delivered; ``retryable`` is False when a retry cannot succeed."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message)
