"""PostgreSQL goes away mid-run: the workflow goes on and the record converges.

A private server (its own port) is stopped and started under a real local run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    RAN,
    assert_each_item_once,
    commands_ran,
    connect_scratch,
    q,
    run_cli,
    setup_batch,
    start_cli,
)
from private_pg import PrivatePostgres

pytestmark = pytest.mark.slow

N = 12


@pytest.fixture
def server() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    pg.start()
    yield pg
    pg.close()


def setup(tmp_path: Path, server: PrivatePostgres) -> Path:
    """N items, two per chunk, of job type ``slow`` (outputs in tmp_path/slow) on the private server."""
    cfg, _batch = setup_batch(
        tmp_path,
        {**server.section, "retry_seconds": 15},
        batch_size=2,
        command="sleep 1 && " + RAN,
        paths=[f"item{i}" for i in range(1, N + 1)],
        job_type="slow",
        name="outage",
    )
    return cfg


def wait_for_counts(output: Path, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(commands_ran(output)) < n:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.2)


def assert_record_complete(server: PrivatePostgres, output: Path) -> None:
    conn = connect_scratch(server.section)
    try:
        assert_each_item_once(conn, N, ran=output)
        assert q(conn, "SELECT DISTINCT status FROM ecod_schema.job") == [("completed",)]
        assert q(conn, "SELECT status FROM ecod_schema.ecod_jobs_run") == [("success",)]
        assert q(conn, "SELECT count(*) FROM ecod_schema.ecod_jobs_lease") == [(0,)]
        assert q(conn, "SELECT completed_items, status FROM ecod_schema.batch") == [(N, "completed")]
    finally:
        conn.close()


def test_restart_mid_run_converges(tmp_path: Path, server: PrivatePostgres) -> None:
    cfg = setup(tmp_path, server)
    run = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "local", cwd=tmp_path)
    wait_for_counts(tmp_path / "slow", 2)
    server.stop()  # chunks end while it is away: their records wait in the backlog
    wait_for_counts(tmp_path / "slow", 6)
    server.start()
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, out + err
    assert f"{N} succeeded, 0 failed" in out
    log = next((tmp_path / "work" / "logs").glob("run-*.log")).read_text()
    assert "ended chunks wait to be recorded" in log and "database back" in log, "the backlog was used"
    assert_record_complete(server, tmp_path / "slow")


@pytest.mark.parametrize("then", ["sync", "run"])
def test_run_that_ends_while_the_database_is_away_says_so_and_is_completed_later(
    tmp_path: Path, server: PrivatePostgres, then: str
) -> None:
    cfg = setup(tmp_path, server)
    run = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "local", cwd=tmp_path)
    wait_for_counts(tmp_path / "slow", 2)
    server.stop()
    out, err = run.communicate(timeout=300)  # ends, after retrying for retry_seconds
    assert run.returncode == 1, out + err
    message = err.strip().splitlines()[-1]
    assert "ended" in message and "while the database was away" in message, err
    assert "ecod-jobs sync --batch 1" in message and "Traceback" not in err
    assert len(commands_ran(tmp_path / "slow")) == N  # the work itself was done

    server.start()
    if then == "sync":
        synced = run_cli("--config", str(cfg), "sync", "--batch", "1", cwd=tmp_path)
        assert synced.returncode == 0, synced.stderr
        assert "closed 1 runs that ended while the database was away" in synced.stdout
    else:  # the next run finishes the record first, then finds nothing left to do
        again = run_cli("--config", str(cfg), "run", "--batch", "1", cwd=tmp_path)
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    assert_record_complete(server, tmp_path / "slow")
