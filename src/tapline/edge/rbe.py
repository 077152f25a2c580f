"""Report by exception: decide which freshly read values are worth sending.

Rules:
- A value is reported when it differs from the last *reported* value by more than the point's
  deadband (numbers), or at all (booleans, integers with no deadband, text).
- Comparing against the last reported value (not the last read) stops slow drifts from hiding under
  the deadband forever.
- Every point is reported at least once per full-refresh period, so a consumer that missed a change
  (or joined late) converges without a rebirth.
- Pure: the caller passes the time; nothing here reads a clock or does IO.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tapline.domain.model import Value


@dataclass
class ReportByException:
    """Per-point deadband filter with a periodic full refresh."""

    deadbands: Mapping[str, float]
    full_refresh_ms: int
    _last: dict[str, tuple[Value, int]] = field(default_factory=dict)

    def filter(self, values: Mapping[str, Value], now_ms: int) -> dict[str, Value]:
        """Return the subset of ``values`` (keyed ``device/Name``) to report now, and remember it."""
        out: dict[str, Value] = {}
        for path, value in values.items():
            last = self._last.get(path)
            if (
                last is None
                or self._changed(path, last[0], value)
                or now_ms - last[1] >= self.full_refresh_ms
            ):
                out[path] = value
                self._last[path] = (value, now_ms)
        return out

    def _changed(self, path: str, old: Value, new: Value) -> bool:
        if isinstance(new, bool) or isinstance(old, bool) or isinstance(new, str) or isinstance(old, str):
            return new != old
        deadband = self.deadbands.get(path, 0.0)
        if deadband <= 0.0:
            return new != old
        return abs(float(new) - float(old)) > deadband

    def forget(self, device: str) -> None:
        """Drop a device's memory (after DDEATH the next values must all be reported)."""
        prefix = device + "/"
        for path in [p for p in self._last if p.startswith(prefix)]:
            del self._last[path]

    def reset(self) -> None:
        """Forget everything (after a rebirth every value is in the births anyway)."""
        self._last.clear()
