"""The webhook channel against a real HTTP server on a local port: JSON body, signature, statuses,
retries through the dispatcher, and a dead port."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest

from tapline.alarms.rules import Priority
from tapline.notify.dispatcher import NotifyDispatcher
from tapline.notify.errors import DeliveryError
from tapline.notify.policy import Notice, NoticeKind, NotifyPolicy
from tapline.notify.webhook import SIGNATURE_HEADER, WebhookChannel
from tests.helpers import free_port
from tests.unit.notify.kit import T0, alarm_event, config, webhook
from tests.unit.notify.running import drained, running

from .receivers import webhook_receiver


def _notice(url: str, recipient: str = "ops") -> Notice:
    return Notice(
        recipient=recipient,
        channel="webhook",
        address=url,
        kind=NoticeKind.ALARM,
        subject="[紧急 critical] PR-0001 市电失电 / Mains power lost",
        body="市电失电\nMains power lost",
        alarm_ids=("AL-1",),
        created_ms=T0,
        sites=("PR-0001",),
        priority=Priority.CRITICAL,
        link="/#/alarms/AL-1",
    )


async def test_a_notice_arrives_as_signed_utf8_json() -> None:
    async with webhook_receiver() as hooks:
        await WebhookChannel({"ops": "s3cret"}).send(_notice(hooks.url))
        (request,) = hooks.requests
    assert (request.method, request.path) == ("POST", "/hook")
    assert request.headers["content-type"].startswith("application/json")
    expected = "sha256=" + hmac.new(b"s3cret", request.body, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER.lower()] == expected
    assert "市电失电".encode() in request.body  # raw UTF-8, not \u-escaped
    document = json.loads(request.body)
    assert document == {
        "kind": "alarm",
        "recipient": "ops",
        "subject": "[紧急 critical] PR-0001 市电失电 / Mains power lost",
        "body": "市电失电\nMains power lost",
        "alarm_ids": ["AL-1"],
        "sites": ["PR-0001"],
        "priority": "critical",
        "link": "/#/alarms/AL-1",
        "created_ms": T0,
    }


async def test_without_a_secret_there_is_no_signature() -> None:
    async with webhook_receiver() as hooks:
        await WebhookChannel({"someone-else": "x"}).send(_notice(hooks.url))
    assert SIGNATURE_HEADER.lower() not in hooks.requests[0].headers


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (429, True), (408, True), (404, False), (401, False)],
)
async def test_a_non_2xx_answer_is_a_delivery_error(status: int, retryable: bool) -> None:
    async with webhook_receiver([status]) as hooks:
        with pytest.raises(DeliveryError, match=str(status)) as caught:
            await WebhookChannel().send(_notice(hooks.url))
    assert caught.value.retryable is retryable


async def test_a_timeout_is_a_retryable_delivery_error() -> None:
    def never_answers(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(never_answers)) as client:
        with pytest.raises(DeliveryError, match="timed out") as caught:
            await WebhookChannel(client=client).send(_notice("http://hooks.test/x"))
    assert caught.value.retryable


async def test_a_dead_port_is_a_retryable_delivery_error() -> None:
    with pytest.raises(DeliveryError) as caught:
        await WebhookChannel().send(_notice(f"http://127.0.0.1:{free_port()}/hook"))
    assert caught.value.retryable


def _dispatcher(url: str, **options: Any) -> NotifyDispatcher:
    policy = NotifyPolicy(config(webhook("ops", url=url, secret="k"), escalation={}))
    return NotifyDispatcher(
        policy, {"webhook": WebhookChannel({"ops": "k"})}, clock=lambda: T0, tick_s=0.01, **options
    )


async def test_the_dispatcher_retries_a_500_then_delivers_once() -> None:
    async with webhook_receiver([500, 500, 200]) as hooks:
        dispatcher = _dispatcher(hooks.url, backoff_s=0.01)
        async with running(dispatcher):
            dispatcher.take(alarm_event("mains_lost", T0, alarm_id="AL-7"))
            requests = await hooks.wait_for(3)
            await drained(dispatcher)
    assert [json.loads(r.body)["alarm_ids"] for r in requests] == [["AL-7"]] * 3
    assert len({r.body for r in requests}) == 1, "a retry sends the same document"
    counts = dispatcher.counts.of("webhook")
    assert (counts.sent, counts.retried, counts.failed) == (1, 2, 0)


async def test_a_dead_port_is_a_counted_failure_after_the_last_attempt_and_nothing_escapes() -> None:
    dispatcher = _dispatcher(f"http://127.0.0.1:{free_port()}/hook", backoff_s=0.01, max_attempts=3)
    async with running(dispatcher):
        dispatcher.take(alarm_event("mains_lost", T0))
        await drained(dispatcher)
    counts = dispatcher.counts.of("webhook")
    assert (counts.sent, counts.retried, counts.failed) == (0, 2, 1)


async def test_a_4xx_is_not_retried() -> None:
    async with webhook_receiver([403]) as hooks:
        dispatcher = _dispatcher(hooks.url, backoff_s=0.01)
        async with running(dispatcher):
            dispatcher.take(alarm_event("mains_lost", T0))
            await hooks.wait_for(1)
            await drained(dispatcher)
    assert len(hooks.requests) == 1
    counts = dispatcher.counts.of("webhook")
    assert (counts.sent, counts.retried, counts.failed) == (0, 0, 1)
