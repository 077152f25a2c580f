"""Reference ("physical limit") measurements run beside ``tapline bench ingest`` (performance.md §8).

- ``broker``: R1, ``mosquitto_pub -l`` → broker → ``mosquitto_sub -C N``, QoS 0, payloads of the same
  size as the fleet's messages (printable filler: the broker does not look inside), on a unique topic.
- ``python_receive``: R2, a paho-mqtt subscriber with an empty callback, fed by ``mosquitto_pub -l``.
- ``python_decode``: R2 with decode, the same paho subscriber, each message's Sparkplug DDATA decoded
  as the ingest decodes it (``decode_data``, ``decode_payload`` when that declines) and its values
  counted. The payloads are real DDATA of the fleet's values per message (``naive.payloads``), so they
  cannot go through ``mosquitto_pub -l`` (protobuf holds newline bytes): a raw MQTT connection writes
  pre-built PUBLISH packets at most ``_WINDOW`` messages ahead of what the subscriber has counted.
  Why the window: Mosquitto drops QoS 0 messages for a subscriber with 1,000 packets queued
  (``max_queued_messages``), so a flood would measure a short burst; with the window every message
  arrives and the subscriber is never idle.
- ``transport_latency``: R7, ``mosquitto_pub -l`` → broker → ``mosquitto_sub -F '%U %p'`` at a fixed
  message rate; each line carries the wall clock (ns) when it was written to the publisher, and the
  subscriber prints its own wall clock on receipt, so the latency is C client to C client through the
  broker: the floor under the alarm latency (the fleet's sample timestamp to the ingest's alarm event).
- ``db_copy``: R5, the same number of rows as the run stored, into a fresh table of the same layout
  (``samples(series_id, ts, value, quality)`` with its primary key): binary COPY on PostgreSQL,
  ``executemany`` in one transaction on SQLite.

Messages are converted to values/s with the fleet's measured values per message (R2 with decode counts
the values it decoded). Each throughput reference is timed from the first to the last message (or row)
it handled; QoS 0 may drop messages under overload, so ``received`` is reported beside ``sent``.
Every reference is bounded (a message count or a few seconds): they run after the measured window,
on the same shared cores.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tapline.bench.naive import payloads
from tapline.mqtt import BrokerUrl
from tapline.mqtt_wire import connect_packet, publish_packet
from tapline.sparkplug.codec import decode_data, decode_payload
from tapline.store.telemetry import parse_store_url

__all__ = [
    "MessageShape",
    "broker_reference",
    "db_copy_reference",
    "decoded_values",
    "latency_rate",
    "python_decode_reference",
    "python_receive_reference",
    "stamped_latencies_ms",
    "transport_latency_reference",
]


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


# --- R2 with decode -------------------------------------------------------------------------------

_WINDOW: Final = 800
"""Messages the R2-with-decode publisher keeps ahead of what the subscriber has counted: below
Mosquitto's default ``max_queued_messages`` (1,000), past which it drops QoS 0 messages for a client."""
_TOP_UP: Final = 200
"""Write only when this many fit in the window: fewer, larger writes wake the publisher less often."""
_STALL_S: Final = 2.0


def decoded_values(payload: bytes) -> tuple[int, bool]:
    """(values in a data payload, whether ``decode_data`` read it): the ingest's decode of a DDATA
    (``HostSession.on_message``: the fast path, ``decode_payload`` when it declines), nothing more."""
    lean = decode_data(payload)
    if lean is not None:
        return len(lean.metrics), True
    return len(decode_payload(payload).metrics), False


@dataclass
class _Tally:
    """What the subscriber has handled; written by paho's thread, read by the publishing one."""

    messages: int = 0
    values: int = 0
    general: int = 0
    """Messages the fast path declined (``decode_payload`` read them)."""
    first_values: int = 0
    first: float = 0.0
    last: float = 0.0


def _raw_publisher(broker: BrokerUrl, client_id: str) -> socket.socket:
    """A TCP (or TLS) connection whose CONNECT the broker accepted: PUBLISH packets are written to it
    as bytes, so publishing costs the kernel's copy and no Python per message."""
    sock = socket.create_connection((broker.host, broker.port), timeout=10)
    if broker.tls:
        import ssl

        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=broker.host)
    sock.sendall(connect_packet(client_id, 60, None, broker.username, broker.password))
    connack = b""
    while len(connack) < 4:
        chunk = sock.recv(4 - len(connack))
        if not chunk:
            break
        connack += chunk
    if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
        sock.close()
        raise ConnectionError(f"the broker did not accept the reference publisher (CONNACK {connack.hex()})")
    return sock


def _feed(sock: socket.socket, packets: list[bytes], count: int, tally: _Tally) -> int:
    """Write ``count`` packets (cycling through ``packets``), never more than ``_WINDOW`` ahead of the
    subscriber; stop early if it counts nothing for ``_STALL_S`` (lost messages hold the window).
    Returns how many were written."""
    sent = 0
    seen, moved = -1, time.monotonic()
    while sent < count:
        ahead = sent - tally.messages
        if _WINDOW - ahead >= min(_TOP_UP, count - sent):
            n = min(_WINDOW - ahead, count - sent)
            sock.sendall(b"".join([packets[k % len(packets)] for k in range(sent, sent + n)]))
            sent += n
            continue
        time.sleep(0.002)
        if tally.messages != seen:
            seen, moved = tally.messages, time.monotonic()
        elif time.monotonic() - moved > _STALL_S:
            break
    return sent


def _await_count(current: Callable[[], int], target: int, idle_s: float) -> None:
    """Wait until ``current()`` reaches ``target`` or has not moved for ``idle_s`` seconds."""
    seen, moved = current(), time.monotonic()
    while seen < target and time.monotonic() - moved < idle_s:
        time.sleep(0.01)
        now = current()
        if now != seen:
            seen, moved = now, time.monotonic()


def python_decode_reference(broker: BrokerUrl, shape: MessageShape, count: int, tag: str) -> dict[str, Any]:
    """R2 with decode: the R2 subscriber decoding every message as the ingest does (``decoded_values``).

    The ratio goal it anchors (performance.md §9.3): one ingest worker stores ≥ 70 % of these values/s,
    i.e. the framework around receive and decode costs at most about 30 %."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    topic = f"tapline-bench/{tag}/r2d"
    data = payloads(max(round(shape.values_per_message), 1))
    packets = [publish_packet(topic, payload, 0, False) for payload in data]
    tally = _Tally()
    subscribed = threading.Event()

    def on_subscribe(client: mqtt.Client, userdata: object, mid: int, codes: Any, properties: Any) -> None:
        subscribed.set()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        values, fast = decoded_values(bytes(message.payload))  # the same object: paho gives bytes
        now = time.perf_counter()
        if not tally.messages:
            tally.first, tally.first_values = now, values
        tally.messages += 1
        tally.values += values
        tally.general += not fast
        tally.last = now

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"tapline-ref-{tag}-r2d")
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.subscribe(topic, qos=0)
    client.loop_start()
    sent = 0
    try:
        if not subscribed.wait(timeout=10):
            raise ConnectionError(f"no SUBACK for {topic} within 10 s")
        with _raw_publisher(broker, f"tapline-ref-{tag}-r2d-pub") as sock:
            sent = _feed(sock, packets, count, tally)
            _await_count(lambda: tally.messages, sent, _STALL_S)
            sock.sendall(b"\xe0\x00")  # DISCONNECT: a clean close, no error in the broker's log
    finally:
        client.loop_stop()
        client.disconnect()
    span = tally.last - tally.first
    msgs = (tally.messages - 1) / span if tally.messages > 1 and span > 0 else None
    return {
        "sent": sent,
        "received": tally.messages,
        "values": tally.values,
        "general_decoder": tally.general,
        "payload_bytes": round(sum(map(len, data)) / len(data)),
        "messages_per_s": None if msgs is None else round(msgs),
        "values_per_s": None if msgs is None else round((tally.values - tally.first_values) / span),
        "method": f"paho → decode_data (else decode_payload) → count; DDATA written raw ≤ {_WINDOW} ahead",
    }


# --- R7 ---------------------------------------------------------------------------------------------

_LATENCY_RATE: Final = (100.0, 10_000.0)


def latency_rate(messages_per_s: float) -> float:
    """R7's message rate: the run's, within 100..10,000 msg/s — at least a few hundred latencies for a
    p99 in a few seconds, and at most a rate the pacing loop (one write a millisecond) keeps cheaply."""
    low, high = _LATENCY_RATE
    return min(max(messages_per_s, low), high)


def stamped_latencies_ms(lines: Iterable[bytes]) -> list[float]:
    """Latencies (ms) of ``mosquitto_sub -F '%U %p'`` lines, ``<s>.<ns received> <ns sent> filler``;
    lines whose payload does not start with a send time (the warm-up) are skipped."""
    out: list[float] = []
    for line in lines:
        received, _, rest = line.partition(b" ")
        sent = rest.split(maxsplit=1)[0] if rest.strip() else b""
        seconds, _, fraction = received.partition(b".")
        if not (sent.isdigit() and seconds.isdigit() and fraction.isdigit()):
            continue
        received_ns = int(seconds) * 1_000_000_000 + int(fraction[:9].ljust(9, b"0"))
        out.append((received_ns - int(sent)) / 1e6)
    return out


def _quantile_ms(latencies: list[float], q: int) -> float | None:
    """The q-th percentile, linear between closest ranks (as ``ingest.percentile``), in ms to 3 places."""
    if not latencies:
        return None
    if len(latencies) == 1:
        return round(latencies[0], 3)
    return round(statistics.quantiles(latencies, n=100, method="inclusive")[q - 1], 3)


def transport_latency_reference(
    broker: BrokerUrl, shape: MessageShape, rate: float, seconds: float, tag: str
) -> dict[str, Any]:
    """R7: C publisher → broker → C subscriber latency at ``rate`` messages/s for ``seconds``.

    Each millisecond the messages due are written to ``mosquitto_pub -l`` stamped with the wall clock
    (ns) at the write; ``mosquitto_sub`` prints its wall clock when each arrives (``%U``) into a file,
    so nothing in this process can hold it up. Warm-up lines go through first, until one arrives:
    connecting and subscribing are not latency."""
    topic = f"tapline-bench/{tag}/r7"
    sub_tool, pub_tool = _tool("mosquitto_sub"), _tool("mosquitto_pub")  # before anything is started
    filler = b"x" * max(shape.payload_bytes - 21, 1)  # a 19-digit stamp, a space, the newline
    handle, name = tempfile.mkstemp(prefix="tapline-ref-r7-", suffix=".txt")
    received = Path(name)
    subscriber = subprocess.Popen(  # noqa: S603  # fixed arguments, the tool resolved by _tool
        [sub_tool, "-h", broker.host, "-p", str(broker.port), "-t", topic, "-q", "0", "-F", "%U %p"],
        stdout=handle,
    )
    os.close(handle)
    publisher = subprocess.Popen(  # noqa: S603  # fixed arguments, the tool resolved by _tool
        [pub_tool, "-h", broker.host, "-p", str(broker.port), "-t", topic, "-q", "0", "-l"],
        stdin=subprocess.PIPE,
    )
    pipe = publisher.stdin
    assert pipe is not None
    sent = 0
    try:
        deadline = time.monotonic() + 10
        while not received.stat().st_size:  # mosquitto_sub flushes every message
            if time.monotonic() > deadline:
                raise ConnectionError(f"no warm-up message came through {topic} within 10 s")
            pipe.write(b"warm " + filler + b"\n")
            pipe.flush()
            time.sleep(0.05)
        total = max(round(rate * seconds), 1)
        started = time.perf_counter()
        while sent < total:
            due = min(int((time.perf_counter() - started) * rate) + 1, total) - sent
            if due > 0:
                pipe.write((b"%d " % time.time_ns() + filler + b"\n") * due)
                pipe.flush()
                sent += due
            time.sleep(0.001)
        _await_count(lambda: received.stat().st_size, 1 << 62, 0.3)  # until the file stops growing
    finally:
        with contextlib.suppress(BrokenPipeError):  # the publisher died: its exit is the error to see
            pipe.close()
        subscriber.terminate()
        for process in (publisher, subscriber):
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with received.open("rb") as lines:
            latencies = stamped_latencies_ms(lines)
        received.unlink()
    return {
        "rate_per_s": round(rate),
        "seconds": seconds,
        "sent": sent,
        "received": len(latencies),
        "p50_ms": _quantile_ms(latencies, 50),
        "p99_ms": _quantile_ms(latencies, 99),
        "max_ms": round(max(latencies), 3) if latencies else None,
        "method": "mosquitto_pub -l → broker → mosquitto_sub -F '%U %p' (to a file), QoS 0, wall clock (ns)",
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
