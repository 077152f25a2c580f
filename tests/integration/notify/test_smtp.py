"""The email channel against a real SMTP server in this process (aiosmtpd): Chinese survives, login
works, and failures become the right ``DeliveryError``."""

from __future__ import annotations

from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from tapline.notify.config import Security, SmtpSettings
from tapline.notify.errors import DeliveryError
from tapline.notify.policy import NoticeKind, NotifyPolicy
from tapline.notify.smtp import EmailChannel
from tests.helpers import free_port
from tests.unit.notify.kit import T0, alarm_event, config

from .receivers import Mailbox, smtp_server

SENDER = "tapline 报警 <alarms@water.test>"


def _channel(mailbox: Mailbox, **settings: Any) -> EmailChannel:
    options: dict[str, Any] = {"security": Security.NONE, "timeout_s": 5, **settings}
    return EmailChannel(SmtpSettings(host=mailbox.host, port=mailbox.port, sender=SENDER, **options))


def _policy() -> NotifyPolicy:
    mail = {"name": "duty", "channel": "email", "address": "duty@water.test"}
    return NotifyPolicy(config(mail, smtp={"host": "unused", "sender": SENDER}, escalation={}))


async def test_a_notice_arrives_as_mail_with_its_chinese_subject_and_body_intact() -> None:
    (notice,) = _policy().take(alarm_event("mains_lost", T0, alarm_id="AL-9"))
    with smtp_server() as mailbox:
        await _channel(mailbox).send(notice)
    (message,) = mailbox.messages
    assert message["Subject"] == "[紧急 critical] PR-0001 市电失电 / Mains power lost"
    assert message["To"] == "duty@water.test"
    assert message["From"] == SENDER
    assert message["X-Tapline-Kind"] == "alarm"
    assert message["X-Tapline-Alarms"] == "AL-9"
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    body = message.get_content().replace("\r\n", "\n")
    assert body.startswith("市电失电\nMains power lost\n")
    assert "站点 Site: PR-0001（jianghan）" in body
    assert "https://scada.test/#/alarms/AL-9" in body
    assert mailbox.keeper.envelopes == [("alarms@water.test", ["duty@water.test"])]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_login_is_used_when_a_username_is_configured() -> None:
    logins: list[tuple[bytes, bytes]] = []

    def authenticate(
        server: object, session: object, envelope: object, mechanism: str, data: Any
    ) -> AuthResult:
        logins.append((data.login, data.password))
        return AuthResult(success=isinstance(data, LoginPassword) and data.password == b"right")

    # A wrong password is not tried here: aiosmtpd stalls a failed AUTH on purpose (brute-force delay).
    options = {"authenticator": authenticate, "auth_require_tls": False, "auth_required": True}
    (notice,) = _policy().take(alarm_event("mains_lost", T0))
    with smtp_server(**options) as mailbox:
        await _channel(mailbox, username="tapline", password="right").send(notice)
        with pytest.raises(DeliveryError, match="530") as anonymous:
            await _channel(mailbox).send(notice)
    assert logins == [(b"tapline", b"right")]
    assert len(mailbox.messages) == 1
    assert anonymous.value.retryable is False


async def test_starttls_is_refused_rather_than_sending_in_clear_when_the_server_lacks_it() -> None:
    (notice,) = _policy().take(alarm_event("mains_lost", T0))
    with smtp_server() as mailbox, pytest.raises(DeliveryError, match="STARTTLS") as caught:
        await _channel(mailbox, security=Security.STARTTLS, username="u", password="p").send(notice)
    assert mailbox.messages == []
    assert caught.value.retryable is False


async def test_an_unreachable_server_is_a_retryable_delivery_error() -> None:
    (notice,) = _policy().take(alarm_event("mains_lost", T0))
    settings = SmtpSettings(host="127.0.0.1", port=free_port(), security=Security.NONE, sender=SENDER)
    with pytest.raises(DeliveryError) as caught:
        await EmailChannel(settings).send(notice)
    assert caught.value.retryable
    assert notice.kind is NoticeKind.ALARM
