"""Who is told what, and when: the notification policy as a pure state machine.

Rules:
- Sans-IO: alarm events (``take``) and the time (``tick``) go in, ``Notice``s come out. No clock,
  no sockets, no logging; the dispatcher does all of that and passes the time in.
- An alarm is notified when the engine *announces* it (``AlarmEvent.announced``: new, re-alarmed,
  or back from shelving/suppression while still active) to every recipient whose filters match
  (minimum priority, districts, sites, causes; AND across filters, empty = any).
- Escalation is driven by the phase each event leaves the alarm in (``ESCALATION``): announcing an
  alarm whose priority has an ``escalation`` rule starts its clock; it keeps running while the alarm
  still waits for the operator (unacked-active, unacked-returned, latched) and stops for good once
  it is acknowledged, shelved, suppressed, out of service or back to normal. A re-announcement of an
  alarm already being escalated does not restart the clock: chattering must not postpone it.
  Escalation ``n`` (1 … ``max``) falls due ``after_s + (n-1)·repeat_s`` after the announcement and
  goes to the rule's targets (whatever their filters) and, with ``renotify_recipients``, again to
  whoever got the alarm. A tick that comes late sends one escalation, not a burst of missed ones.
- A clear notice goes, when the condition returns (``Event.CLEAR``), to the recipients that got the
  alarm and asked for ``notify_clear``. The policy forgets an alarm once it is back to normal.
- Rate limit, per recipient: at most ``max`` notices in any ``window_s`` (sliding window), all kinds
  alike. A notice over the limit is held, never dropped silently: it is counted (``held``), and as
  soon as the window has room again one ``digest`` notice lists what was held (at most
  ``DIGEST_DETAIL`` lines, the rest as a count). While notices are held, newer ones queue behind
  them, so a digest always comes before anything newer.
- Notice text is bilingual, Chinese first, with the site, rule, priority, value, local time and the
  console link ``{console_url}/#/alarms/{id}``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote

from tapline.alarms.events import AlarmEvent
from tapline.alarms.model import Event, Phase
from tapline.alarms.rules import Priority
from tapline.notify.config import PRIORITY_RANK, Escalation, NotifyConfig, Recipient

DIGEST_DETAIL: Final = 20
"""Held notices listed line by line in a digest; more are summed up in one line."""
_HELD_IDS: Final = 200
"""Alarm ids a digest carries at most (a storm must not make one notice unbounded)."""
_MEMORY: Final = 50_000
"""Alarms remembered for clear notices; the oldest are forgotten past this (alarms that vanish
without a return to normal, e.g. a room re-configured, must not grow the policy for ever)."""


class NoticeKind(StrEnum):
    ALARM = "alarm"
    ESCALATION = "escalation"
    CLEAR = "clear"
    DIGEST = "digest"


class Escalate(StrEnum):
    KEEP = "keep"
    STOP = "stop"


ESCALATION: Final[dict[Phase, Escalate]] = {
    Phase.UNACKED_ACTIVE: Escalate.KEEP,
    Phase.UNACKED_RETURNED: Escalate.KEEP,
    Phase.LATCHED: Escalate.KEEP,
    Phase.ACKED_ACTIVE: Escalate.STOP,
    Phase.NORMAL: Escalate.STOP,
    Phase.SHELVED_ONE_SHOT: Escalate.STOP,
    Phase.SHELVED_TIMED: Escalate.STOP,
    Phase.SUPPRESSED: Escalate.STOP,
    Phase.OUT_OF_SERVICE: Escalate.STOP,
}
"""Phase an event leaves the alarm in → what happens to a running escalation. Every phase has a row."""

PRIORITY_ZH: Final[dict[Priority, str]] = {
    Priority.CRITICAL: "紧急",
    Priority.HIGH: "高",
    Priority.MEDIUM: "中",
    Priority.LOW: "低",
}


@dataclass(frozen=True, slots=True)
class Notice:
    """One message to one recipient; what a channel sends."""

    recipient: str
    channel: str
    address: str
    kind: NoticeKind
    subject: str
    body: str
    alarm_ids: tuple[str, ...]
    created_ms: int
    sites: tuple[str, ...] = ()
    priority: Priority | None = None
    link: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The JSON document a webhook receives."""
        return {
            "kind": self.kind.value,
            "recipient": self.recipient,
            "subject": self.subject,
            "body": self.body,
            "alarm_ids": list(self.alarm_ids),
            "sites": list(self.sites),
            "priority": self.priority.value if self.priority is not None else None,
            "link": self.link,
            "created_ms": self.created_ms,
        }


@dataclass(slots=True)
class _Escalation:
    event: AlarmEvent
    rule: Escalation
    recipients: tuple[str, ...]
    due: int
    sent: int = 0


@dataclass(slots=True)
class _Window:
    """One recipient's sliding window and what is held back for its digest."""

    sent: deque[int] = field(default_factory=deque)
    held: list[Notice] = field(default_factory=list)
    held_count: int = 0


@dataclass(slots=True)
class PolicyCounts:
    """What the policy decided since it started, by channel kind."""

    notices: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    digests: dict[str, int] = field(default_factory=dict)
    escalations: int = 0


def _bump(counter: dict[str, int], key: str, by: int = 1) -> None:
    counter[key] = counter.get(key, 0) + by


class NotifyPolicy:
    """Decides the notices for a stream of alarm events and ticks (see the module rules)."""

    def __init__(self, config: NotifyConfig) -> None:
        self.config = config
        self.counts = PolicyCounts()
        self._now = 0
        self._escalations: dict[str, _Escalation] = {}
        self._notified: dict[str, tuple[str, ...]] = {}
        self._windows: dict[str, _Window] = {r.name: _Window() for r in config.recipients}
        self._recipients = {r.name: r for r in config.recipients}

    # ------------------------------------------------------------------ inputs
    def take(self, event: AlarmEvent, now_ms: int | None = None) -> list[Notice]:
        """The notices one alarm event causes now (``now_ms``, default the event's own time)."""
        now = self._advance(event.at if now_ms is None else now_ms)
        out: list[Notice] = []
        if event.announced:
            self._announce(event, now, out)
        if ESCALATION[event.phase] is Escalate.STOP:
            self._escalations.pop(event.alarm_id, None)
        if event.event is Event.CLEAR and not event.state.active:
            self._clear(event, now, out)
        if event.phase is Phase.NORMAL:
            self._notified.pop(event.alarm_id, None)
        return self._limit(out, now)

    def tick(self, now_ms: int) -> list[Notice]:
        """Escalations that fell due by ``now_ms`` and digests the rate limit now allows."""
        now = self._advance(now_ms)
        out: list[Notice] = []
        for alarm_id, pending in list(self._escalations.items()):
            if pending.due > now:
                continue
            pending.sent += 1
            self.counts.escalations += 1
            targets = pending.rule.targets
            names = _unique((*pending.recipients, *targets) if pending.rule.renotify_recipients else targets)
            for name in names:
                out.append(self._notice(self._recipients[name], NoticeKind.ESCALATION, pending, now))
            if pending.sent >= pending.rule.max:
                del self._escalations[alarm_id]
            else:
                following = pending.due + pending.rule.repeat_ms
                pending.due = following if following > now else now + pending.rule.repeat_ms
        return self._limit(out, now)

    @property
    def escalating(self) -> frozenset[str]:
        """Ids of the alarms whose escalation clock runs."""
        return frozenset(self._escalations)

    def held(self, recipient: str) -> int:
        """Notices held back for ``recipient``'s next digest."""
        return self._windows[recipient].held_count

    # ------------------------------------------------------------------ decisions
    def _advance(self, now_ms: int) -> int:
        """Time never runs backwards inside the policy (events may carry older timestamps)."""
        self._now = max(self._now, now_ms)
        return self._now

    def _matches(self, recipient: Recipient, event: AlarmEvent) -> bool:
        return (
            PRIORITY_RANK[event.priority] >= PRIORITY_RANK[recipient.min_priority]
            and (not recipient.districts or event.district in recipient.districts)
            and (not recipient.sites or event.site in recipient.sites)
            and (not recipient.causes or event.cause in recipient.causes)
        )

    def _announce(self, event: AlarmEvent, now: int, out: list[Notice]) -> None:
        names = tuple(r.name for r in self.config.recipients if self._matches(r, event))
        for name in names:
            out.append(self._notice(self._recipients[name], NoticeKind.ALARM, event, now))
        if names:
            known = self._notified.pop(event.alarm_id, ())
            self._notified[event.alarm_id] = _unique((*known, *names))
            if len(self._notified) > _MEMORY:
                del self._notified[next(iter(self._notified))]
        rule = self.config.escalation.get(event.priority)
        someone = rule is not None and (rule.targets or (rule.renotify_recipients and names))
        if rule is not None and someone and event.alarm_id not in self._escalations:
            self._escalations[event.alarm_id] = _Escalation(event, rule, names, event.at + rule.after_ms)

    def _clear(self, event: AlarmEvent, now: int, out: list[Notice]) -> None:
        for name in self._notified.get(event.alarm_id, ()):
            recipient = self._recipients[name]
            if recipient.notify_clear:
                out.append(self._notice(recipient, NoticeKind.CLEAR, event, now))

    def _limit(self, notices: Iterable[Notice], now: int) -> list[Notice]:
        """Pass notices through each recipient's window; flush digests that now fit."""
        out: list[Notice] = []
        for name, window in self._windows.items():
            self._flush(name, window, now, out)
        for notice in notices:
            window = self._windows[notice.recipient]
            if not self._room(notice.recipient, window, now):  # digests were flushed first
                window.held_count += 1
                if len(window.held) < _HELD_IDS:
                    window.held.append(notice)
                _bump(self.counts.held, notice.channel)
                continue
            window.sent.append(now)
            _bump(self.counts.notices, notice.channel)
            out.append(notice)
        return out

    def _room(self, name: str, window: _Window, now: int) -> bool:
        limit = self.config.rate_limit_of(self._recipients[name])
        horizon = now - round(limit.window_s * 1000)
        while window.sent and window.sent[0] <= horizon:
            window.sent.popleft()
        return len(window.sent) < limit.max

    def _flush(self, name: str, window: _Window, now: int, out: list[Notice]) -> None:
        if not window.held_count or not self._room(name, window, now):
            return
        out.append(self._digest(self._recipients[name], window, now))
        window.sent.append(now)
        window.held, window.held_count = [], 0
        _bump(self.counts.digests, self._recipients[name].channel.value)

    # ------------------------------------------------------------------ text
    def _link(self, alarm_id: str) -> str:
        return f"{self.config.console_url.rstrip('/')}/#/alarms/{quote(alarm_id, safe='')}"

    def _time(self, at_ms: int) -> str:
        offset = timedelta(hours=self.config.utc_offset_h)
        local = datetime.fromtimestamp(at_ms / 1000, UTC) + offset
        sign = "+" if offset >= timedelta(0) else "-"
        minutes = abs(round(self.config.utc_offset_h * 60))
        return f"{local:%Y-%m-%d %H:%M:%S} UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"

    def _notice(
        self, recipient: Recipient, kind: NoticeKind, source: AlarmEvent | _Escalation, now: int
    ) -> Notice:
        event = source.event if isinstance(source, _Escalation) else source
        label = f"{PRIORITY_ZH[event.priority]} {event.priority.value}"
        title = f"{event.site} {event.text.zh} / {event.text.en}"
        lines = [event.text.zh, event.text.en, ""]
        if isinstance(source, _Escalation):
            minutes = max(1, round((now - event.at) / 60_000))
            step = f"{source.sent}/{source.rule.max}"
            subject = f"[升级 escalation {step}][{label}] {title}"
            lines[:0] = [
                f"未确认已 {minutes} 分钟（第 {step} 次升级）",
                f"Unacknowledged for {minutes} min (escalation {step})",
                "",
            ]
        elif kind is NoticeKind.CLEAR:
            subject = f"[恢复 cleared][{label}] {title}"
            lines[:0] = ["报警条件已恢复", "Alarm condition returned to normal", ""]
        else:
            subject = f"[{label}] {title}"
        subject_point = f"（{event.subject}）" if event.subject else ""
        link = self._link(event.alarm_id)
        lines += [
            f"站点 Site: {event.site}（{event.district}）",
            f"规则 Rule: {event.rule}{subject_point}",
            f"优先级 Priority: {label}",
            f"数值 Value: {'—' if event.value is None else event.value}",
            f"时间 Time: {self._time(event.at)}",
            f"报警 Alarm: {link}",
        ]
        return Notice(
            recipient=recipient.name,
            channel=recipient.channel.value,
            address=recipient.destination,
            kind=kind,
            subject=subject,
            body="\n".join(lines),
            alarm_ids=(event.alarm_id,),
            created_ms=now,
            sites=(event.site,),
            priority=event.priority,
            link=link,
        )

    def _digest(self, recipient: Recipient, window: _Window, now: int) -> Notice:
        count = window.held_count
        ids = _unique(i for notice in window.held for i in notice.alarm_ids)
        sites = _unique(s for notice in window.held for s in notice.sites)
        lines = [
            f"另有 {count} 条报警通知因限流未单独发送：",
            f"{count} more alarms (held back by the rate limit):",
            "",
        ]
        for notice in window.held[:DIGEST_DETAIL]:
            lines.append(f"- {notice.kind.value}: {notice.subject}  {notice.link}")
        if count > DIGEST_DETAIL:
            lines.append(f"- … 以及另外 {count - DIGEST_DETAIL} 条 / and {count - DIGEST_DETAIL} more")
        priorities = [n.priority for n in window.held if n.priority is not None]
        priority = max(priorities, key=PRIORITY_RANK.__getitem__, default=None)
        return Notice(
            recipient=recipient.name,
            channel=recipient.channel.value,
            address=recipient.destination,
            kind=NoticeKind.DIGEST,
            subject=f"[tapline] 另有 {count} 条报警 / {count} more alarms: {', '.join(sites[:5])}",
            body="\n".join(lines),
            alarm_ids=ids,
            created_ms=now,
            sites=sites,
            priority=priority,
            link=f"{self.config.console_url.rstrip('/')}/#/alarms",
        )


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
