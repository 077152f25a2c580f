"""A database that cannot be used at start-up gets one clear line and an exit code, not a traceback.

``tapline serve`` run by hand or by a supervisor: a wrong store URL can never work (exit 2: fix the
configuration); a database that is down or refuses us is transient (exit 1: a supervisor such as
systemd's ``Restart=on-failure`` starts it again).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

TAPLINE = str(Path(sys.executable).parent / "tapline")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(db: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TAPLINE_SECRET": "s" * 32}
    return subprocess.run(
        [TAPLINE, "serve", "--db", db, "--broker", "mqtt://127.0.0.1:9", "--port", str(_free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )


def test_a_sqlite_file_in_a_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    done = _serve(f"sqlite:///{tmp_path / 'nowhere' / 'tapline.db'}", tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "does not exist" in done.stderr.splitlines()[-1]
    assert done.stderr.splitlines()[-1].startswith("tapline serve: ")


@pytest.mark.postgres
def test_a_missing_postgresql_database_is_one_line_and_exit_1(pg_url: str, tmp_path: Path) -> None:
    missing = urlsplit(pg_url)._replace(path=f"/tapline_missing_{uuid.uuid4().hex[:8]}").geturl()
    done = _serve(missing, tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("tapline serve: PostgreSQL")
    assert "does not exist" in last
