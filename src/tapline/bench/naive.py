"""R9 of performance.md §8: the naive composed pipeline, one process, one thread.

paho subscriber → ``decode_payload`` (the same Sparkplug decoder as the ingest) → a hi/lo check per
value → rows appended to a list → every 20,000 rows one ``executemany`` transaction (SQLite) or one binary
COPY (PostgreSQL) into a fresh table of the store's layout, inside the MQTT callback. The publisher is
a separate process (``python -m tapline.bench.naive publish …``) flooding pre-encoded Sparkplug DDATA of
the fleet's shape through the broker with paho at QoS 0. Timed from the first message received to the
last batch written; QoS 0 drops under overload, so ``received`` is reported beside ``sent``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tapline.domain.model import DataType, PointSpec, Reading
from tapline.mqtt import BrokerUrl
from tapline.sparkplug.codec import decode_payload
from tapline.sparkplug.edge_session import EdgeNodeSession
from tapline.store.telemetry import parse_store_url

__all__ = ["naive_pipeline_reference", "payloads"]

_BATCH = 20_000
T0 = 1_767_225_600_000


def payloads(values_per_message: int, distinct: int = 200) -> list[bytes]:
    """``distinct`` DDATA payloads of one device with ``values_per_message`` float metrics each."""
    specs = [PointSpec("plc", f"P{k:03d}", DataType.FLOAT) for k in range(values_per_message)]
    session = EdgeNodeSession("naive", "PR-0001", 1)
    session.nbirth([], T0)
    session.dbirth("plc", [(spec, 0.0, T0) for spec in specs], T0)
    out = []
    for m in range(distinct):
        ts = T0 + (m + 1) * 1000
        readings = [Reading(spec.path, ts, 0.1 + 0.37 * ((m + k) % 300)) for k, spec in enumerate(specs)]
        out.append(session.ddata("plc", readings, ts)[1])
    return out


def _publish(host: str, port: int, topic: str, count: int, values_per_message: int) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    data = payloads(values_per_message)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"naive-pub-{os.getpid()}")
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    for k in range(count):
        client.publish(topic, data[k % len(data)], qos=0)
    time.sleep(1.0)
    client.loop_stop()
    client.disconnect()


def _sink(db: str) -> tuple[Callable[[list[tuple[int, int, float, int]]], None], Callable[[], None]]:
    """(write a batch, close and remove the table) for a fresh table of the store's layout."""
    parsed = parse_store_url(db)
    if parsed.backend == "sqlite":
        handle, name = tempfile.mkstemp(prefix="tapline-naive-", suffix=".db", dir=Path(parsed.target).parent)
        os.close(handle)
        connection = sqlite3.connect(name, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(
            "CREATE TABLE samples (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL,"
            " quality INTEGER NOT NULL)"
        )

        def write_sqlite(rows: list[tuple[int, int, float, int]]) -> None:
            with connection:
                connection.executemany("INSERT INTO samples VALUES (?, ?, ?, ?)", rows)

        def close_sqlite() -> None:
            connection.close()
            for suffix in ("", "-wal", "-shm"):
                Path(name + suffix).unlink(missing_ok=True)

        return write_sqlite, close_sqlite
    import psycopg

    pg = psycopg.connect(parsed.target)
    pg.execute(
        "CREATE TABLE bench_naive_samples (series_id bigint NOT NULL, ts bigint NOT NULL,"
        " value float8, quality smallint NOT NULL)"
    )
    pg.commit()

    def write_pg(rows: list[tuple[int, int, float, int]]) -> None:
        sql = "COPY bench_naive_samples FROM STDIN (FORMAT BINARY)"
        with pg.cursor() as cursor, cursor.copy(sql) as copy:
            copy.set_types(["int8", "int8", "float8", "int2"])
            for row in rows:
                copy.write_row(row)
        pg.commit()

    def close_pg() -> None:
        pg.execute("DROP TABLE IF EXISTS bench_naive_samples")
        pg.commit()
        pg.close()

    return write_pg, close_pg


def naive_pipeline_reference(
    broker: BrokerUrl, db: str, values_per_message: int, count: int, tag: str
) -> dict[str, Any]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    topic = f"tapline-bench/{tag}/r9"
    write, close = _sink(db)
    rows: list[tuple[int, int, float, int]] = []
    state = {"received": 0, "values": 0, "alarms": 0, "series": 0}
    stamps: list[float] = []
    last = [time.perf_counter()]

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        if not stamps:
            stamps.append(now)
        state["received"] += 1
        payload = decode_payload(bytes(message.payload))
        base = (state["received"] % 5000) * 100
        for metric in payload.metrics:
            value = metric.value
            if not isinstance(value, float):
                continue
            if value > 100.0 or value < 0.5:
                state["alarms"] += 1
            rows.append((base + (metric.alias or 0), metric.timestamp or 0, value, 0))
        if len(rows) >= _BATCH:
            state["values"] += len(rows)
            write(rows)
            rows.clear()
        last[0] = time.perf_counter()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"tapline-naive-{tag}")
    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.subscribe(topic, qos=0)
    client.loop_start()
    try:
        time.sleep(0.5)
        subprocess.run(  # noqa: S603  # this interpreter, this module, fixed arguments
            [sys.executable, "-m", "tapline.bench.naive", "publish", broker.host, str(broker.port), topic,
             str(count), str(values_per_message)],
            check=True,
            timeout=300,
        )  # fmt: skip
        deadline = time.perf_counter() + 15
        while time.perf_counter() < deadline and time.perf_counter() - last[0] < 2.0:
            time.sleep(0.2)
    finally:
        client.loop_stop()
        client.disconnect()
    flushed_at = last[0]
    if rows:
        state["values"] += len(rows)
        write(rows)
        rows.clear()
        flushed_at = time.perf_counter()
    close()
    span = flushed_at - stamps[0] if stamps else 0.0
    per_s = state["values"] / span if span > 0 else None
    return {
        "sent": count,
        "received": state["received"],
        "values": state["values"],
        "limit_violations": state["alarms"],
        "values_per_s": None if per_s is None else round(per_s),
        "method": "paho → decode_payload → hi/lo per value → 20k-row executemany / binary COPY (no index)",
    }


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "publish":
    _publish(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
