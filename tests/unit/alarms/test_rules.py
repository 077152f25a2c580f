"""Alarm rules as data: the shipped template, profiles and overrides, and the small predicates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapline.alarms.rules import (
    Condition,
    Hours,
    LimitRule,
    RoomProfile,
    RuleError,
    load_template,
    parse_template,
)
from tapline.registers.layout import layout_points, standard_layout

TEMPLATE = load_template()
BEIJING = timezone(timedelta(hours=8))
ROOM_POINTS = [p.path for p in layout_points(standard_layout(4))]


def local_ms(hour: int, minute: int = 0) -> int:
    """A timestamp at ``hour:minute`` Beijing time (UTC+8) on 2025-06-02."""
    return int(datetime(2025, 6, 2, hour, minute, tzinfo=BEIJING).timestamp() * 1000)


def test_template_loads_with_every_required_kind_and_priority() -> None:
    kinds = {rule.kind for rule in TEMPLATE.rules}
    assert kinds == {
        "limit",
        "deviation",
        "rate",
        "discrete",
        "comms",
        "instrument",
        "pump_curve",
        "flatline",
        "refill",
    }
    assert {rule.priority.value for rule in TEMPLATE.rules} == {"critical", "high", "medium", "low"}


def test_every_rule_point_exists_in_the_register_maps() -> None:
    for rule in TEMPLATE.rules:
        patterns = [getattr(rule, "point", None), getattr(rule, "reference", None)]
        patterns += [c.point.replace("{device}", "vfd1") for c in rule.suppressed_when]
        patterns += list(getattr(rule, "points", ())) + list(getattr(rule, "live_zero", ()))
        for pattern in filter(None, patterns):
            assert any(fnmatchcase(p, pattern) for p in ROOM_POINTS), f"{rule.id}: {pattern}"


def test_water_quality_limits_follow_gb_5749_2022() -> None:
    rules = {rule.id: rule for rule in TEMPLATE.rules if isinstance(rule, LimitRule)}
    assert (rules["chlorine_low"].limit, rules["chlorine_high"].limit) == (0.05, 2.0)
    assert rules["turbidity_high"].limit == 1.0
    assert (rules["ph_low"].limit, rules["ph_high"].limit) == (6.5, 8.5)
    assert rules["chlorine_low_warning"].limit > rules["chlorine_low"].limit  # the earlier warning


def test_disabled_rules_are_left_out_and_profiles_enable_them() -> None:
    assert "tank_level_high" not in {r.id for r in TEMPLATE.for_room().rules}
    profile = RoomProfile(rules={"tank_level_high": {"enabled": True, "limit": 3.9}})
    rules = {r.id: r for r in TEMPLATE.for_room(profile).rules}
    rule = rules["tank_level_high"]
    assert isinstance(rule, LimitRule)
    assert rule.limit == 3.9


def test_profiles_shipped_with_the_template() -> None:
    assert TEMPLATE.for_room(TEMPLATE.profile("tankless")).absent_points == {"plc/TankLevel"}
    high_rise = {r.id: r for r in TEMPLATE.for_room(TEMPLATE.profile("high_rise")).rules}
    rule = high_rise["outlet_pressure_high_limit"]
    assert isinstance(rule, LimitRule)
    assert rule.limit == 0.95
    with pytest.raises(RuleError, match="no profile"):
        TEMPLATE.profile("castle")


def test_extra_rules_and_equal_profiles_give_equal_room_rules() -> None:
    extra = LimitRule.model_validate(
        {
            "id": "flow_high",
            "point": "plc/Flow",
            "direction": "high",
            "limit": 80,
            "priority": "low",
            "cause": "outlet",
            "text": {"zh": "流量高", "en": "Flow high"},
        }
    )
    first = TEMPLATE.for_room(RoomProfile(extra_rules=(extra,)))
    assert first == TEMPLATE.for_room(RoomProfile(extra_rules=(extra,)))
    assert hash(first) == hash(TEMPLATE.for_room(RoomProfile(extra_rules=(extra,))))
    assert "flow_high" in {r.id for r in first.rules}
    with pytest.raises(RuleError, match="appears twice"):
        TEMPLATE.for_room(RoomProfile(extra_rules=(extra, extra)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"limt": 1.0}, "bad override"),
        ({"deadband": -1}, "bad override"),
        ({"kind": "rate"}, "cannot change id or kind"),
        ({"offset": 0.1}, "bad override"),  # a limit rule has no offset
    ],
)
def test_bad_overrides_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RuleError, match=message):
        TEMPLATE.for_room(RoomProfile(rules={"voltage_low": changes}))


def test_overriding_an_unknown_rule_is_refused() -> None:
    with pytest.raises(RuleError, match="unknown rule"):
        TEMPLATE.for_room(RoomProfile(rules={"no_such_rule": {"limit": 1}}))


def test_template_errors_name_the_source_and_field(tmp_path: Path) -> None:
    raw = {"name": "t", "rules": [{"id": "x", "kind": "limit", "point": "plc/Flow"}]}
    with pytest.raises(RuleError, match=r"my\.yaml: rules\.0\.limit"):
        parse_template(raw, "my.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [", encoding="utf-8")
    with pytest.raises(RuleError, match="cannot read"):
        load_template(bad)
    with pytest.raises(RuleError, match="cannot read"):
        load_template(tmp_path / "missing.yaml")


def test_a_profile_with_a_bad_override_makes_the_template_invalid() -> None:
    raw = TEMPLATE.model_dump(mode="json")
    raw["profiles"] = {"broken": {"rules": {"voltage_low": {"limit": "high"}}}}
    with pytest.raises(RuleError):
        parse_template(raw)


def test_duplicate_rule_ids_are_refused() -> None:
    raw = TEMPLATE.model_dump(mode="json")
    raw["rules"].append(raw["rules"][0])
    with pytest.raises(RuleError, match="appears twice"):
        parse_template(raw)


@pytest.mark.parametrize(
    ("op", "limit", "value", "holds"),
    [
        ("eq", False, False, True),
        ("eq", False, True, False),
        ("ne", 0, 1, True),
        ("lt", 0.35, 0.2, True),
        ("le", 0.35, 0.35, True),
        ("gt", 1.0, 1.0, False),
        ("ge", 1.0, 1.0, True),
    ],
)
def test_condition(op: str, limit: float, value: float, holds: bool) -> None:
    condition = Condition.model_validate({"point": "x/Y", "op": op, "value": limit})
    assert condition.holds(value) is holds
    assert condition.holds("text") is False


def test_working_hours_in_local_time_and_next_change() -> None:
    day = Hours(start="08:00", end="18:00")
    assert day.contains(local_ms(8))
    assert day.contains(local_ms(17, 59))
    assert not day.contains(local_ms(18))
    assert not day.contains(local_ms(3))
    assert day.next_change(local_ms(17, 59) + 30_000) == local_ms(18)
    assert day.next_change(local_ms(18, 30)) == local_ms(8) + 86_400_000
    night = Hours(start="22:00", end="06:00")
    assert night.contains(local_ms(23))
    assert night.contains(local_ms(5))
    assert not night.contains(local_ms(12))
    never = Hours(start="08:00", end="08:00")
    assert not never.contains(local_ms(8))
    assert never.next_change(0) == 86_400_000


def _local_minute(ts_ms: int, offset_h: float) -> int:
    """The reference: the local minute of the day through ``datetime`` (what ``Hours`` once did)."""
    local = datetime.fromtimestamp(ts_ms / 1000, UTC) + timedelta(hours=offset_h)
    return local.hour * 60 + local.minute


@settings(max_examples=500)
@given(
    ts=st.integers(0, 4_102_444_800_000),  # 1970-2100, in ms
    offset=st.one_of(st.integers(-56, 56).map(lambda q: q / 4), st.floats(-14, 14)),
    start=st.integers(0, 1439),
    end=st.integers(0, 1439),
)
def test_hours_in_integer_arithmetic_agree_with_datetime(
    ts: int, offset: float, start: int, end: int
) -> None:
    hours = Hours(
        start=f"{start // 60:02d}:{start % 60:02d}",
        end=f"{end // 60:02d}:{end % 60:02d}",
        utc_offset_h=offset,
    )
    now = _local_minute(ts, offset)
    inside = start <= now < end if start <= end else now >= start or now < end
    assert hours.contains(ts) is inside
    change = hours.next_change(ts)
    assert change > ts
    assert change % 60_000 == 0 or start == end
    if start != end and (offset * 60).is_integer():  # (real zones are whole minutes off UTC)
        # the window flips exactly there, and not at the minute before
        assert hours.contains(change) is not inside
        assert hours.contains(change - 60_000) is inside
