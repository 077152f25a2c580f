"""The notification config: the shipped example loads, and bad files are refused naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tapline.alarms.rules import Cause, Priority
from tapline.notify.channels import ChannelKind
from tapline.notify.config import Security, load_notify_config, parse_notify_config
from tapline.notify.errors import NotifyConfigError

EXAMPLE = Path(__file__).parents[3] / "docs" / "notify.example.yaml"
ENV = {"TAPLINE_SMTP_PASSWORD": "mail-pw", "TAPLINE_HOOK_JIANGHAN": "hook-secret"}


def test_the_documented_example_loads_with_secrets_from_the_environment() -> None:
    config = load_notify_config(EXAMPLE, environ=ENV)
    duty, lab, supervisor = config.recipients
    assert (duty.channel, duty.secret, duty.districts, duty.notify_clear) == (
        ChannelKind.WEBHOOK,
        "hook-secret",
        ("jianghan",),
        True,
    )
    assert lab.causes == (Cause.WATER_QUALITY,)
    assert config.rate_limit_of(lab).max == 5
    assert config.rate_limit_of(duty).max == 10
    assert supervisor.min_priority is Priority.CRITICAL
    assert config.escalation[Priority.CRITICAL].targets == ("duty-supervisor",)
    assert config.escalation[Priority.CRITICAL].repeat_ms == 900_000
    assert config.smtp is not None
    assert config.smtp.password == "mail-pw"
    assert config.smtp.security is Security.STARTTLS


def test_defaults_escalate_critical_alarms_only() -> None:
    config = parse_notify_config({}, environ={})
    assert list(config.escalation) == [Priority.CRITICAL]
    assert config.escalation[Priority.CRITICAL].after_s == 600


HOOK = {"name": "ops", "channel": "webhook", "url": "https://h.test/x"}
MAIL = {"name": "lab", "channel": "email", "address": "lab@water.test"}
SMTP = {"host": "mail.test", "sender": "t@water.test"}

BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("misspelt field", {"recipients": [{**HOOK, "min_prio": "high"}]}, "recipients[0].min_prio", "Extra"),
    (
        "unknown priority",
        {"recipients": [{**HOOK, "min_priority": "urgent"}]},
        "recipients[0].min_priority",
        "",
    ),
    ("webhook without url", {"recipients": [{"name": "ops", "channel": "webhook"}]}, "recipients[0]", "url"),
    ("url not http", {"recipients": [{**HOOK, "url": "ftp://x"}]}, "recipients[0]", "http(s)"),
    ("email without smtp", {"recipients": [MAIL]}, "(top level)", "smtp"),
    ("bad mailbox", {"recipients": [{**MAIL, "address": "lab"}], "smtp": SMTP}, "recipients[0]", "address"),
    ("duplicate names", {"recipients": [HOOK, HOOK]}, "(top level)", "unique"),
    (
        "unknown escalation target",
        {"recipients": [HOOK], "escalation": {"critical": {"after_s": 60, "targets": ["boss"]}}},
        "(top level)",
        "escalation.critical.targets",
    ),
    ("zero rate", {"rate_limit": {"max": 0}}, "rate_limit.max", ""),
    ("escalation needs a time", {"escalation": {"critical": {"max": 2}}}, "escalation.critical.after_s", ""),
    (
        "missing secret variable",
        {"recipients": [{**HOOK, "secret_env": "NOPE"}]},
        "recipients[0].secret_env",
        "NOPE",
    ),
    ("not a mapping", [1, 2], "", "mapping"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("raw", "field", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_configs_name_the_field(raw: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(NotifyConfigError) as caught:
        parse_notify_config(raw, "notify.yaml", environ={})
    message = str(caught.value)
    assert message.startswith("notify.yaml")
    assert field in message
    assert words in message
    assert isinstance(caught.value, ValueError)
    if field not in ("", "(top level)"):
        assert caught.value.field == field


def test_a_file_that_is_not_yaml_or_not_there_is_a_config_error(tmp_path: Path) -> None:
    broken = tmp_path / "notify.yaml"
    broken.write_text("recipients: [\n", encoding="utf-8")
    with pytest.raises(NotifyConfigError, match="not valid YAML"):
        load_notify_config(broken)
    with pytest.raises(NotifyConfigError, match="cannot read"):
        load_notify_config(tmp_path / "missing.yaml")


def test_a_secret_comes_from_the_file_or_the_environment_not_both() -> None:
    raw = {"recipients": [{**HOOK, "secret": "a", "secret_env": "B"}]}
    with pytest.raises(NotifyConfigError, match="give secret or secret_env") as caught:
        parse_notify_config(raw, environ={"B": "b"})
    assert caught.value.field == "recipients[0].secret_env"
    only_env = {"recipients": [{**HOOK, "secret_env": "B"}]}
    assert parse_notify_config(only_env, environ={"B": "b"}).recipients[0].secret == "b"
