"""Names shared by both fidelity levels (the device-level city and the Sparkplug fleet).

Rooms are ``PR-0001``… dealt round-robin over the districts, so room N of the demo and room N of a
fleet with the same seed and district count are the same room (same spec, same physics).
"""

from __future__ import annotations

DISTRICTS = ("jianghan", "qiaokou", "wuchang", "hanyang", "hongshan", "qingshan", "dongxihu", "jiangxia")
"""District ids (Sparkplug group ids), Wuhan's central and suburban districts."""

DISTRICT_NAMES = {
    "jianghan": "江汉",
    "qiaokou": "硚口",
    "wuchang": "武昌",
    "hanyang": "汉阳",
    "hongshan": "洪山",
    "qingshan": "青山",
    "dongxihu": "东西湖",
    "jiangxia": "江夏",
}
COMPOUNDS = ("花园", "小区", "新村", "家园", "苑", "公寓", "城", "里")


def site_id(index: int) -> str:
    """The id of the room at 0-based ``index``: PR-0001, PR-0002, … (more digits past 9,999)."""
    return f"PR-{index + 1:04d}"


def district_of(index: int, districts: tuple[str, ...]) -> str:
    """The district of the room at ``index`` when rooms are dealt round-robin over ``districts``."""
    return districts[index % len(districts)]
