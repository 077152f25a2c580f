"""Typed notification config (pydantic v2, frozen), loaded from one YAML file.

Rules:
- The file names the recipients (who, by which channel, for which alarms), the escalation of
  unacknowledged alarms per priority, the per-recipient rate limit and the SMTP server. See
  ``docs/notify.example.yaml`` for a commented example.
- Everything is checked at load time: an unknown or misspelt field, a webhook without a URL, an
  email recipient without an SMTP server, an escalation target that is not a recipient, all raise
  ``NotifyConfigError`` naming the file and the field (``recipients[1].url``). Nothing is
  silently ignored, because a notifier that quietly notifies nobody is worse than none.
- Secrets can stay out of the file: ``secret_env`` (webhook) and ``password_env`` (SMTP) name an
  environment variable that is read once, at load time; a missing variable is an error.
- Recipient filters combine with AND; an empty list means "any". Priority filters are a minimum.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tapline.alarms.rules import Cause, Priority
from tapline.notify.channels import ChannelKind
from tapline.notify.errors import NotifyConfigError

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
PRIORITY_RANK: Mapping[Priority, int] = {
    Priority.LOW: 0,
    Priority.MEDIUM: 1,
    Priority.HIGH: 2,
    Priority.CRITICAL: 3,
}
"""Priorities in order, for the recipients' ``min_priority`` filter."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RateLimit(_Frozen):
    """At most ``max`` notices in any ``window_s`` seconds (a sliding window); the rest go in a digest."""

    max: Annotated[int, Field(ge=1, le=10_000)] = 10
    window_s: Annotated[float, Field(gt=0, le=86_400)] = 600.0


class Recipient(_Frozen):
    """Who gets which alarms, and how: a webhook URL or a mailbox, plus filters."""

    name: Annotated[str, Field(pattern=_NAME)]
    channel: ChannelKind
    url: str | None = None
    secret: str | None = None
    address: str | None = None
    min_priority: Priority = Priority.LOW
    districts: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    causes: tuple[Cause, ...] = ()
    notify_clear: bool = False
    rate_limit: RateLimit | None = None

    @model_validator(mode="after")
    def _address_fits_channel(self) -> Recipient:
        if self.channel is ChannelKind.WEBHOOK:
            if not self.url or not self.url.startswith(("http://", "https://")):
                raise ValueError("a webhook recipient needs url: http(s)://…")
            if self.address is not None:
                raise ValueError("address is for email recipients; a webhook has url")
        else:
            if not self.address or "@" not in self.address:
                raise ValueError("an email recipient needs address: name@domain")
            if self.url is not None or self.secret is not None:
                raise ValueError("url and secret are for webhook recipients; email has address")
        return self

    @property
    def destination(self) -> str:
        """The URL or mailbox notices go to."""
        return (self.url if self.channel is ChannelKind.WEBHOOK else self.address) or ""


class Escalation(_Frozen):
    """Re-notify an alarm still unacknowledged ``after_s`` after it was announced, then every
    ``repeat_s`` (default: ``after_s``), at most ``max`` times, to ``targets`` (recipient names,
    whatever their filters) and, with ``renotify_recipients``, to whoever got the alarm first."""

    after_s: Annotated[float, Field(gt=0)]
    repeat_s: Annotated[float, Field(gt=0)] | None = None
    max: Annotated[int, Field(ge=1, le=100)] = 3
    targets: tuple[str, ...] = ()
    renotify_recipients: bool = True

    @property
    def repeat_ms(self) -> int:
        return round((self.repeat_s if self.repeat_s is not None else self.after_s) * 1000)

    @property
    def after_ms(self) -> int:
        return round(self.after_s * 1000)


class Security(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    SSL = "ssl"


class SmtpSettings(_Frozen):
    """The mail server every email recipient is reached through."""

    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    security: Security = Security.STARTTLS
    username: str | None = None
    password: str | None = None
    sender: Annotated[str, Field(pattern=r"@")]
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 15.0


def _default_escalation() -> dict[Priority, Escalation]:
    return {Priority.CRITICAL: Escalation(after_s=600, max=3)}


class NotifyConfig(_Frozen):
    """The whole notification config: see the module rules."""

    recipients: tuple[Recipient, ...] = ()
    escalation: dict[Priority, Escalation] = Field(default_factory=_default_escalation)
    rate_limit: RateLimit = RateLimit()
    smtp: SmtpSettings | None = None
    console_url: str = ""
    utc_offset_h: Annotated[float, Field(ge=-14, le=14)] = 8.0

    @model_validator(mode="after")
    def _consistent(self) -> NotifyConfig:
        names = [r.name for r in self.recipients]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"recipient names must be unique, repeated: {', '.join(duplicates)}")
        for priority, rule in self.escalation.items():
            unknown = [t for t in rule.targets if t not in names]
            if unknown:
                raise ValueError(
                    f"escalation.{priority.value}.targets: not a recipient: {', '.join(unknown)}"
                )
        if self.smtp is None and any(r.channel is ChannelKind.EMAIL for r in self.recipients):
            raise ValueError("email recipients need an smtp: section")
        return self

    def recipient(self, name: str) -> Recipient:
        """The recipient called ``name`` (KeyError if there is none)."""
        for recipient in self.recipients:
            if recipient.name == name:
                return recipient
        raise KeyError(name)

    def rate_limit_of(self, recipient: Recipient) -> RateLimit:
        return recipient.rate_limit or self.rate_limit


def _from_env(section: dict[str, Any], key: str, where: str, source: str, environ: Mapping[str, str]) -> None:
    """Replace ``<key>_env: NAME`` by ``<key>: $NAME`` in ``section``."""
    env_key = f"{key}_env"
    if env_key not in section:
        return
    name = section.pop(env_key)
    field = f"{where}.{env_key}"
    if key in section:
        raise NotifyConfigError(f"{source}: {field}: give {key} or {env_key}, not both", field)
    if not isinstance(name, str) or name not in environ:
        raise NotifyConfigError(f"{source}: {field}: environment variable {name!r} is not set", field)
    section[key] = environ[name]


def _field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_notify_config(
    raw: Any, source: str = "notify config", environ: Mapping[str, str] | None = None
) -> NotifyConfig:
    """Validate a parsed YAML document; ``NotifyConfigError`` names ``source`` and the field."""
    env = os.environ if environ is None else environ
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise NotifyConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = dict(raw)
    recipients = raw.get("recipients")
    if isinstance(recipients, list):
        raw["recipients"] = [dict(r) if isinstance(r, dict) else r for r in recipients]
        for i, recipient in enumerate(raw["recipients"]):
            if isinstance(recipient, dict):
                _from_env(recipient, "secret", f"recipients[{i}]", source, env)
    if isinstance(raw.get("smtp"), dict):
        raw["smtp"] = dict(raw["smtp"])
        _from_env(raw["smtp"], "password", "smtp", source, env)
    try:
        return NotifyConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _field(tuple(first["loc"]))
        lines = [f"{_field(tuple(e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors()]
        raise NotifyConfigError(f"{source}: " + "; ".join(lines), field) from exc


def load_notify_config(path: str | Path, environ: Mapping[str, str] | None = None) -> NotifyConfig:
    """Read and validate the notification YAML file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NotifyConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise NotifyConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_notify_config(raw, str(path), environ)
