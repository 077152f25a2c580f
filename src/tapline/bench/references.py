"""Reference ("physical limit") measurements run beside ``tapline bench ingest`` (performance.md §8).

- ``broker``: R1, ``mosquitto_pub -l`` → broker → ``mosquitto_sub -C N``, QoS 0, payloads of the same
  size as the fleet's messages (printable filler: the broker does not look inside), on a unique topic.
- ``python_receive``: R2, a paho-mqtt subscriber with an empty callback, fed by ``mosquitto_pub -l``.
- ``db_copy``: R5, the same number of rows as the run stored, into a fresh table of the same layout
  (``samples(series_id, ts, value, quality)`` with its primary key): binary COPY on PostgreSQL,
  ``executemany`` in one transaction on SQLite.

Messages are converted to values/s with the fleet's measured values per message. Each reference is
timed from the first to the last message (or row) it handled; QoS 0 may drop messages under overload,
so ``received`` is reported beside ``sent``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tapline.mqtt import BrokerUrl
from tapline.store.telemetry import parse_store_url

__all__ = ["MessageShape", "broker_reference", "db_copy_reference", "python_receive_reference"]


@dataclass(frozen=True)
class MessageShape:
    payload_bytes: int
    values_per_message: float


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} is not installed (apt install mosquitto-clients)")
    return path


def _lines(shape: MessageShape, count: int) -> Path:
    handle, name = tempfile.mkstemp(prefix="tapline-ref-", suffix=".txt")
    line = b"x" * max(shape.payload_bytes - 1, 1) + b"\n"
    with os.fdopen(handle, "wb") as out:
        out.write(line * count)
    return Path(name)


def _publish_lines(broker: BrokerUrl, topic: str, lines: Path) -> None:
    with lines.open("rb") as source:
        subprocess.run(  # noqa: S603  # fixed arguments, the tool resolved by _tool
            [_tool("mosquitto_pub"), "-h", broker.host, "-p", str(broker.port), "-t", topic, "-q", "0", "-l"],
            stdin=source,
            check=True,
            timeout=300,
        )


def broker_reference(broker: BrokerUrl, shape: MessageShape, count: int, tag: str) -> dict[str, Any]:
    """R1: C publisher → broker → C subscriber (its output only counted, first to last line)."""
    lines = _lines(shape, count)
    topic = f"tapline-bench/{tag}/r1"
    stamps: list[float] = []
    try:
        subscriber = subprocess.Popen(  # noqa: S603  # fixed arguments
            [_tool("mosquitto_sub"), "-h", broker.host, "-p", str(broker.port), "-t", topic, "-q", "0",
             "-C", str(count), "-W", "60"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        output = subscriber.stdout
        assert output is not None

        def drain() -> None:
            first = time.perf_counter()
            received = 0
            for _line in output:
                received += 1
                if received == 1:
                    first = time.perf_counter()
            stamps.extend([first, time.perf_counter(), float(received)])

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        time.sleep(0.5)
        _publish_lines(broker, topic, lines)
        try:
            subscriber.wait(timeout=5)
        except subprocess.TimeoutExpired:
            subscriber.terminate()
            subscriber.wait()
        reader.join(timeout=5)
    finally:
        lines.unlink()
    received = int(stamps[2]) if stamps else 0
    span = stamps[1] - stamps[0] if stamps else 0.0
    msgs = (received - 1) / span if received > 1 and span > 0 else None
    return {
        "sent": count,
        "received": received,
        "messages_per_s": None if msgs is None else round(msgs),
        "values_per_s": None if msgs is None else round(msgs * shape.values_per_message),
    }


def python_receive_reference(broker: BrokerUrl, shape: MessageShape, count: int, tag: str) -> dict[str, Any]:
    """R2: a paho-mqtt subscriber whose callback only counts."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    topic = f"tapline-bench/{tag}/r2"
    stamps: list[float] = []
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) >= count:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"tapline-ref-{tag}")
    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.subscribe(topic, qos=0)
    client.loop_start()
    lines = _lines(shape, count)
    try:
        time.sleep(0.5)
        _publish_lines(broker, topic, lines)
        done.wait(timeout=15)
    finally:
        client.loop_stop()
        client.disconnect()
        lines.unlink()
    received = len(stamps)
    span = stamps[-1] - stamps[0] if received > 1 else 0.0
    msgs = (received - 1) / span if span > 0 else None
    return {
        "sent": count,
        "received": received,
        "messages_per_s": None if msgs is None else round(msgs),
        "values_per_s": None if msgs is None else round(msgs * shape.values_per_message),
    }


def _rows(count: int) -> list[tuple[int, int, float, int]]:
    series = 80_000
    return [(k % series + 1, 1_767_225_600_000 + (k // series) * 1000, 0.5 + k % 97, 0) for k in range(count)]


def db_copy_reference(db: str, count: int) -> dict[str, Any]:
    """R5: the database's write ceiling for ``count`` rows of the store's layout."""
    rows = _rows(count)
    parsed = parse_store_url(db)
    if parsed.backend == "sqlite":
        directory = Path(parsed.target).parent
        handle, name = tempfile.mkstemp(prefix="tapline-ref-", suffix=".db", dir=directory)
        os.close(handle)
        try:
            connection = sqlite3.connect(name)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(
                "CREATE TABLE samples (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL,"
                " quality INTEGER NOT NULL, PRIMARY KEY (series_id, ts)) WITHOUT ROWID"
            )
            started = time.perf_counter()
            with connection:
                connection.executemany("INSERT INTO samples VALUES (?, ?, ?, ?)", rows)
            elapsed = time.perf_counter() - started
            connection.close()
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(name + suffix).unlink(missing_ok=True)
        method = "executemany, one transaction, WAL, WITHOUT ROWID PK(series_id, ts)"
    else:
        import psycopg

        with psycopg.connect(parsed.target) as pg:
            pg.execute(
                "CREATE TABLE bench_ref_samples (series_id bigint NOT NULL, ts bigint NOT NULL,"
                " value float8, quality smallint NOT NULL, PRIMARY KEY (series_id, ts))"
            )
            pg.commit()
            try:
                started = time.perf_counter()
                with pg.cursor() as cursor:
                    copy_sql = "COPY bench_ref_samples FROM STDIN (FORMAT BINARY)"
                    with cursor.copy(copy_sql) as copy:
                        copy.set_types(["int8", "int8", "float8", "int2"])
                        for row in rows:
                            copy.write_row(row)
                pg.commit()
                elapsed = time.perf_counter() - started
            finally:
                pg.execute("DROP TABLE IF EXISTS bench_ref_samples")
                pg.commit()
        method = "psycopg binary COPY, one transaction, PK(series_id, ts), unpartitioned"
    return {
        "rows": count,
        "seconds": round(elapsed, 3),
        "values_per_s": round(count / elapsed),
        "method": method,
    }
