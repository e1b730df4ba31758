"""The embedded default: a real PostgreSQL from a wheel, started from nothing."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import run_cli, write_config


def test_embedded_server_from_nothing(tmp_path: Path) -> None:
    # No database section at all: ecod-jobs must start its own server under .ecod_jobs/.
    cfg = write_config(tmp_path / "config.yml", {"job_types": {"echo": {"command": "echo {path}"}}})
    result = run_cli("--config", str(cfg), "db", "init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "embedded PostgreSQL" in result.stdout
    pgdata = tmp_path / ".ecod_jobs" / "pgdata"
    assert (pgdata / "PG_VERSION").exists()

    items = tmp_path / "items.tsv"
    items.write_text("path\nA.fa\nB.fa\n")
    created = run_cli(
        "--config", str(cfg), "batch", "create", "--name", "emb", "--items", str(items), cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().splitlines()[-1] == "1"
    # reused across runs: the second command sees the first one's batch
    listing = run_cli("--config", str(cfg), "batch", "list", "--json", cwd=tmp_path)
    assert '"name": "emb"' in listing.stdout

    # stopped cleanly when the last command exits
    for _ in range(50):
        if not (pgdata / "postmaster.pid").exists():
            break
        time.sleep(0.2)
    assert not (pgdata / "postmaster.pid").exists()
    stop = run_cli("--config", str(cfg), "db", "stop", cwd=tmp_path)
    assert stop.returncode == 0 and "was not running" in stop.stdout
