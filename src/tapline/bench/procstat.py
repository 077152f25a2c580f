"""CPU seconds and resident memory of processes, read from ``/proc`` (Linux only).

``/proc/PID/stat`` fields 14 and 15 (utime, stime) are in clock ticks; the command name (field 2) is in
parentheses and may itself contain spaces or parentheses, so fields are counted after the *last* ``)``.
``/proc/PID/status`` gives ``VmRSS`` and ``VmHWM`` (peak) in kB.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "cpu_seconds",
    "machine_busy_seconds",
    "parse_proc_stat_busy_ticks",
    "parse_stat_cpu_ticks",
    "parse_status_kb",
    "pids_named",
    "rss_mb",
]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat_cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from the text of ``/proc/PID/stat``."""
    fields = stat[stat.rindex(")") + 2 :].split()
    # after the name: field 3 (state) is fields[0], so utime (14) is fields[11] and stime (15) fields[12]
    return int(fields[11]) + int(fields[12])


def parse_status_kb(status: str, key: str) -> int | None:
    """A ``kB`` value (e.g. ``VmRSS``) from the text of ``/proc/PID/status``; None if absent."""
    for line in status.splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            return int(rest.split()[0])
    return None


def cpu_seconds(pids: Iterable[int], proc: Path = Path("/proc")) -> float:
    """Total user + system CPU seconds of the live processes among ``pids`` (gone ones count 0)."""
    ticks = 0
    for pid in pids:
        try:
            ticks += parse_stat_cpu_ticks((proc / str(pid) / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
    return ticks / _TICKS


def rss_mb(pid: int, key: str = "VmRSS", proc: Path = Path("/proc")) -> float | None:
    """Resident (``VmRSS``) or peak resident (``VmHWM``) memory of ``pid`` in MiB; None if unknown."""
    try:
        kb = parse_status_kb((proc / str(pid) / "status").read_text(), key)
    except OSError:
        return None
    return None if kb is None else kb / 1024


def pids_named(name: str, proc: Path = Path("/proc")) -> list[int]:
    """Pids whose command name (``/proc/PID/comm``) is exactly ``name``, oldest (lowest pid) first."""
    found: list[int] = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return sorted(found)


def parse_proc_stat_busy_ticks(stat: str) -> int:
    """Non-idle ticks of all CPUs from the ``cpu`` line of ``/proc/stat`` (idle and iowait excluded)."""
    fields = stat.splitlines()[0].split()
    numbers = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(numbers) - numbers[3] - numbers[4]


def machine_busy_seconds(proc: Path = Path("/proc")) -> float:
    """CPU seconds every process of the machine has used since boot (all cores)."""
    return parse_proc_stat_busy_ticks((proc / "stat").read_text()) / _TICKS
