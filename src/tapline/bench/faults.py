"""``tapline bench faults``: inject every fault kind into a simulated city and score the alarms.

What it measures (and what it does not): simulated rooms' physics → gateway behaviour (polling, report
by exception, device deaths; ``city.Gateway``) → the alarm engine and the incident correlator, on the
simulation clock, compared with the simulator's ground truth. The Modbus and MQTT/Sparkplug transport
is not in the path; its latency (about one poll period plus broker delivery) comes on top of the
detection times reported here.

Rules:
- The plan (``schedule.make_plan``) is seeded: the same options give the same rooms, faults, times
  and figures. Districts are independent, so the run is split by district over ``workers`` processes.
- Figures (``summary``): ``root_cause_accuracy`` and ``location_accuracy`` over faults that became
  observable (fractions 0–1); ``detect_median_s`` / ``detect_p95_s`` after the announcing rule's
  on-delay (``detect_raw_*``: from the onset); ``max_alarms_first_10min`` of the district-wide events;
  ``false_alarms_per_room_day`` in rooms no fault touched; ``per_kind`` breakdowns; ``targets``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tapline.bench.city import AlarmCity
from tapline.bench.schedule import WARM_UP_S, Plan, Planned, make_plan
from tapline.bench.score import FaultResult, is_district, normal_alarms, score_faults
from tapline.sim.spec import RoomSpec

TARGETS = {
    "root_cause_accuracy": 0.95,
    "detect_median_s": 10.0,
    "max_alarms_first_10min": 10,
    "false_alarms_per_room_day": 0.05,
}


@dataclass(frozen=True, slots=True)
class FaultBenchOptions:
    rooms: int = 240
    districts: int = 4
    seed: int = 1
    hours: float = 24.0
    start_hour: float = 12.0
    per_kind: int = 4
    district_events: int = 1
    step_s: float = 1.0
    workers: int = 2
    json_out: Path | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tapline bench faults`` (for the CLI to mount)."""
    d = FaultBenchOptions()
    parser.add_argument("--rooms", type=int, default=d.rooms, help=f"simulated rooms (default {d.rooms})")
    parser.add_argument(
        "--districts", type=int, default=d.districts, help=f"districts (default {d.districts})"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the rooms and the fault plan")
    parser.add_argument("--hours", type=float, default=d.hours, help=f"simulated hours (default {d.hours:g})")
    parser.add_argument(
        "--start-hour", type=float, default=d.start_hour, help="local time the run starts (default 12)"
    )
    parser.add_argument(
        "--per-kind", type=int, default=d.per_kind, help=f"faults of each room kind (default {d.per_kind})"
    )
    parser.add_argument(
        "--district-events",
        type=int,
        default=d.district_events,
        help="districts hit by a municipal supply drop (default 1)",
    )
    parser.add_argument("--step", type=float, default=d.step_s, help="poll period = time step, s (default 1)")
    parser.add_argument("--workers", type=int, default=d.workers, help="processes (default 2)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the figures here")


def options_from(args: argparse.Namespace) -> FaultBenchOptions:
    return FaultBenchOptions(
        rooms=args.rooms,
        districts=args.districts,
        seed=args.seed,
        hours=args.hours,
        start_hour=args.start_hour,
        per_kind=args.per_kind,
        district_events=args.district_events,
        step_s=args.step,
        workers=args.workers,
        json_out=args.json,
    )


@dataclass(frozen=True, slots=True)
class Shard:
    specs: tuple[RoomSpec, ...]
    faults: tuple[Planned, ...]
    clean: tuple[str, ...]
    seed: int
    start_s: float
    end_s: float
    step_s: float


def run_shard(shard: Shard) -> dict[str, Any]:
    """Run one group of districts and score it (a process pool calls this)."""
    started = time.perf_counter()
    city = AlarmCity(shard.specs, seed=shard.seed, start_s=shard.start_s, step_s=shard.step_s)
    for planned in shard.faults:
        city.inject(planned.fault, planned.duration_s)
    city.run(shard.end_s - shard.start_s)
    results = score_faults(city, shard.faults, city.engine.template, shard.end_s)
    normal = normal_alarms(city, shard.clean, shard.start_s + WARM_UP_S)
    return {
        "results": [r.as_dict() for r in results],
        "normal": [{"site": e.site, "rule": e.rule, "subject": e.subject, "at": e.at} for e in normal],
        "clean_rooms": len(shard.clean),
        "events": len(city.events),
        "announced": sum(1 for e in city.events if e.announced),
        "wall_s": time.perf_counter() - started,
    }


def shards(plan: Plan, options: FaultBenchOptions) -> list[Shard]:
    districts = sorted({s.district for s in plan.specs})
    groups = [districts[i :: max(1, options.workers)] for i in range(max(1, options.workers))]
    clean = set(plan.clean_rooms())
    out = []
    for group in filter(None, groups):
        specs = tuple(s for s in plan.specs if s.district in group)
        faults = tuple(p for p in plan.faults if p.fault.district in group)
        rooms = tuple(s.site_id for s in specs if s.site_id in clean)
        out.append(Shard(specs, faults, rooms, options.seed, plan.start_s, plan.end_s, options.step_s))
    return out


async def run(options: FaultBenchOptions) -> dict[str, Any]:
    """Run the benchmark; the figures (also written to ``options.json_out`` when set).

    ValueError for options that cannot make a run (too few rooms for the faults, no night for the
    door faults, a step or worker count out of range)."""
    if options.workers < 1 or not 0 < options.step_s <= 10 or options.hours <= 0:
        raise ValueError("need --workers >= 1, 0 < --step <= 10 and --hours > 0")
    started = time.perf_counter()
    plan = make_plan(
        room_count=options.rooms,
        districts=options.districts,
        seed=options.seed,
        start_s=options.start_hour * 3600.0,
        hours=options.hours,
        per_kind=options.per_kind,
        district_events=options.district_events,
    )
    parts = shards(plan, options)
    if len(parts) == 1:
        outputs = [run_shard(parts[0])]
    else:
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(max_workers=len(parts)) as pool:
            outputs = list(await asyncio.gather(*(loop.run_in_executor(pool, run_shard, p) for p in parts)))
    report = summary(outputs, options, plan, time.perf_counter() - started)
    if options.json_out is not None:
        options.json_out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return report


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def _figures(results: Sequence[FaultResult]) -> dict[str, Any]:
    scored = [r for r in results if r.onset_s is not None]
    net = [r.net_s for r in scored if r.net_s is not None]
    raw = [r.detect_s for r in scored if r.detect_s is not None]
    n = len(scored)
    return {
        "faults": len(results),
        "latent": len(results) - n,
        "detected": sum(r.detected for r in scored),
        "root_cause_accuracy": sum(r.root_correct for r in scored) / n if n else None,
        "location_accuracy": sum(r.location_correct for r in scored) / n if n else None,
        "detect_median_s": statistics.median(net) if net else None,
        "detect_p95_s": _quantile(net, 0.95),
        "detect_raw_median_s": statistics.median(raw) if raw else None,
        "detect_raw_p95_s": _quantile(raw, 0.95),
        "max_alarms_first_10min": max((r.alarms_10min for r in scored), default=0),
        "root_causes": dict(Counter(r.root_cause or "undetected" for r in scored)),
    }


def summary(
    outputs: Sequence[dict[str, Any]], options: FaultBenchOptions, plan: Plan, wall_s: float
) -> dict[str, Any]:
    results = [FaultResult(**r) for out in outputs for r in out["results"]]
    results.sort(key=lambda r: r.fault_id)
    overall = _figures(results)
    events = [r for r in results if is_district(r.kind)]
    normal = [n for out in outputs for n in out["normal"]]
    clean = sum(out["clean_rooms"] for out in outputs)
    room_days = clean * (plan.end_s - plan.start_s - WARM_UP_S) / 86_400.0
    figures = {
        "root_cause_accuracy": overall["root_cause_accuracy"],
        "location_accuracy": overall["location_accuracy"],
        "detect_median_s": overall["detect_median_s"],
        "detect_p95_s": overall["detect_p95_s"],
        "detect_raw_median_s": overall["detect_raw_median_s"],
        "detect_raw_p95_s": overall["detect_raw_p95_s"],
        "max_alarms_first_10min": max((r.alarms_10min for r in events), default=None),
        "false_alarms_per_room_day": len(normal) / room_days if room_days else None,
    }
    met = {
        "root_cause_accuracy": (figures["root_cause_accuracy"] or 0.0) >= TARGETS["root_cause_accuracy"],
        "detect_median_s": (figures["detect_median_s"] or 1e9) <= TARGETS["detect_median_s"],
        "max_alarms_first_10min": (figures["max_alarms_first_10min"] or 0)
        <= TARGETS["max_alarms_first_10min"],
        "false_alarms_per_room_day": (figures["false_alarms_per_room_day"] or 0.0)
        < TARGETS["false_alarms_per_room_day"],
    }
    kinds = sorted({r.kind for r in results})
    return {
        **figures,
        "faults": overall["faults"],
        "latent_faults": overall["latent"],
        "detected_faults": overall["detected"],
        "per_kind": {k: _figures([r for r in results if r.kind == k]) for k in kinds},
        "district_events": [
            {
                "district": r.district,
                "alarms_first_10min": r.alarms_10min,
                "rooms": r.rooms_in_incident,
                "root_cause": r.root_cause,
                "detect_s": r.detect_s,
            }
            for r in events
        ],
        "normal_operation": {
            "room_days": room_days,
            "clean_rooms": clean,
            "false_alarms": len(normal),
            "by_rule": dict(Counter(n["rule"] for n in normal)),
            "alarms": sorted(normal, key=lambda n: (n["at"], n["site"]))[:100],
        },
        "targets": {name: {"target": TARGETS[name], "met": ok} for name, ok in met.items()},
        "run": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
            "rooms_simulated": len(plan.specs),
            "room_hours": len(plan.specs) * (plan.end_s - plan.start_s) / 3600.0,
            "alarm_events": sum(out["events"] for out in outputs),
            "announced": sum(out["announced"] for out in outputs),
            "wall_s": round(wall_s, 1),
            "path": "physics -> gateway (poll, report by exception, device death) -> engine -> correlator;"
            " no Modbus/MQTT transport",
        },
        "faults_detail": [r.as_dict() for r in results],
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render(report: dict[str, Any]) -> str:
    """A short human-readable table of ``report``."""
    normal = report["normal_operation"]
    lines = [
        f"root_cause_accuracy       {_fmt(report['root_cause_accuracy'])}",
        f"location_accuracy         {_fmt(report['location_accuracy'])}",
        f"detect_median_s (net)     {_fmt(report['detect_median_s'])}   p95 {_fmt(report['detect_p95_s'])}",
        f"detect_median_s (raw)     {_fmt(report['detect_raw_median_s'])}"
        f"   p95 {_fmt(report['detect_raw_p95_s'])}",
        f"max_alarms_first_10min    {_fmt(report['max_alarms_first_10min'])}",
        f"false_alarms_per_room_day {_fmt(report['false_alarms_per_room_day'])}"
        f"   ({normal['false_alarms']} in {normal['room_days']:.1f} room-days)",
        "",
        f"{'kind':22} {'n':>3} {'lat':>3} {'root':>6} {'loc':>6} {'net_med':>8} {'raw_med':>8}"
        f" {'raw_p95':>8} {'10min':>5}",
    ]
    for kind, k in report["per_kind"].items():
        lines.append(
            f"{kind:22} {k['faults']:>3} {k['latent']:>3} {_fmt(k['root_cause_accuracy']):>6}"
            f" {_fmt(k['location_accuracy']):>6} {_fmt(k['detect_median_s']):>8}"
            f" {_fmt(k['detect_raw_median_s']):>8} {_fmt(k['detect_raw_p95_s']):>8}"
            f" {k['max_alarms_first_10min']:>5}"
        )
    run = report["run"]
    lines.append(f"\nwall {run['wall_s']} s, {run['room_hours']:.0f} room-hours simulated")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """``tapline bench faults [options]``; 0 when every target is met, 1 otherwise, 2 for bad options."""
    parser = argparse.ArgumentParser(
        prog="tapline bench faults",
        description="Inject every fault kind into a simulated city and score what the alarm engine and"
        " the incident correlator show against the simulator's ground truth.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        report = asyncio.run(run(options_from(args)))
    except ValueError as exc:
        sys.stderr.write(f"tapline bench faults: {exc}\n")
        return 2
    sys.stdout.write(render(report))
    return 0 if all(t["met"] for t in report["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
