"""Helpers shared by tests (importable as ``helpers``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``ecod-jobs`` entry point in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ecod_jobs.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        input=input_text,
        timeout=300,
    )


def start_cli(*args: str, cwd: Path, preexec_fn: Any = None) -> subprocess.Popen[str]:
    """Start the real ``ecod-jobs`` entry point without waiting (for faults injected mid-run)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ecod_jobs.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )


def wait_for(condition: Any, timeout: float = 90, what: str = "the condition") -> Any:
    """Poll ``condition`` until it returns something true (returned), or fail after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (yet)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, config: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def connect_scratch(section: dict[str, Any]) -> Any:
    """An autocommit connection to a scratch database given its ``database`` config section."""
    import psycopg2

    conn = psycopg2.connect(
        host=section["host"],
        port=section["port"],
        dbname=section["database"],
        user=section["user"],
        password=section.get("password"),
    )
    conn.autocommit = True
    return conn


def q(conn: Any, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of one query on a test connection."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def create_batch(cfg: Path, items: Path, name: str, base_path: Path | None, cwd: Path | None = None) -> int:
    """Register a batch through the real CLI and return its id (no base path: paths as given)."""
    base = ["--base-path", str(base_path)] if base_path is not None else []
    created = run_cli(
        "--config", str(cfg), "batch", "create", "--name", name, "--items", str(items), *base, cwd=cwd
    )
    assert created.returncode == 0, created.stderr
    return int(created.stdout.split()[-1])
