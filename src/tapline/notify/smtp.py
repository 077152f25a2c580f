"""Email channel over SMTP (the only module in notify that imports smtplib).

Rules:
- stdlib ``smtplib`` in ``asyncio.to_thread``: one short connection per notice, so a mail server that
  drops idle connections needs no reconnect logic, and the event loop never blocks on it.
- ``security``: ``ssl`` (implicit TLS, usually port 465), ``starttls`` (usually 587; refused if the
  server does not offer it, rather than sending the password in clear) or ``none`` (a relay on a
  trusted network). Login only when a username is configured.
- Subject and body are UTF-8 (``EmailMessage`` encodes the subject as RFC 2047 and the body as
  ``text/plain; charset=utf-8``), so Chinese survives any standards-conforming server.
- A connection failure, timeout or 4xx answer is a retryable ``DeliveryError``; a 5xx answer
  (recipient refused, authentication failed) is not. smtplib errors never leave this module.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from tapline.notify.config import Security, SmtpSettings
from tapline.notify.errors import DeliveryError
from tapline.notify.policy import Notice


def build_message(notice: Notice, sender: str) -> EmailMessage:
    """The mail for one notice (headers in UTF-8 where needed)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = notice.address
    message["Subject"] = notice.subject
    message["Date"] = formatdate(notice.created_ms / 1000, localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip(">") or None)
    message["X-Tapline-Kind"] = notice.kind.value
    if notice.alarm_ids:
        message["X-Tapline-Alarms"] = " ".join(notice.alarm_ids[:50])
    message.set_content(notice.body, charset="utf-8")
    return message


class EmailChannel:
    """Delivers notices as mail through one SMTP server."""

    def __init__(self, settings: SmtpSettings, tls_context: ssl.SSLContext | None = None) -> None:
        self._settings = settings
        self._tls = tls_context

    async def send(self, notice: Notice) -> None:
        """Send ``notice`` to its mailbox; ``DeliveryError`` if the server does not take it."""
        message = build_message(notice, self._settings.sender)
        await asyncio.to_thread(self._deliver, message)

    def _context(self) -> ssl.SSLContext:
        return self._tls if self._tls is not None else ssl.create_default_context()

    def _deliver(self, message: EmailMessage) -> None:
        s = self._settings
        try:
            smtp: smtplib.SMTP
            if s.security is Security.SSL:
                smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=self._context())
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
            with smtp:
                if s.security is Security.STARTTLS:
                    smtp.starttls(context=self._context())
                if s.username:
                    smtp.login(s.username, s.password or "")
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(
                f"mail server refused {message['To']}: {exc.recipients}", retryable=False
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(f"mail server {s.host}: {exc}", retryable=False) from exc
        except smtplib.SMTPResponseException as exc:
            retryable = exc.smtp_code < 500
            raise DeliveryError(
                f"mail server {s.host} answered {exc.smtp_code}", retryable=retryable
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"mail server {s.host}:{s.port} failed: {exc!r}") from exc
