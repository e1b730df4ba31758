"""Head-node crash: SIGKILL the main processes mid-run; the same command finishes the batch."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    RAN,
    assert_each_item_once,
    commands_ran,
    q,
    run_cli,
    setup_batch,
    squeue_tasks_of_run,
    start_cli,
    wait_for,
)

pytestmark = pytest.mark.slow


def make_batch(
    tmp_path: Path, scratch_db: dict[str, Any], n: int, command: str = "sleep 1.5 && " + RAN
) -> Path:
    """n items, two per chunk, of job type ``slow`` (outputs in tmp_path/slow), asking for
    1 GB and an hour (the config's default)."""
    cfg, _batch = setup_batch(
        tmp_path,
        scratch_db,
        batch_size=2,
        command=command,
        paths=[f"item{i}" for i in range(1, n + 1)],
        job_type="slow",
        name="crash",
        options={"time": "01:00:00"},
    )
    return cfg


def assert_done_once(pg_conn: Any, n: int, output: Path) -> None:
    assert_each_item_once(pg_conn, n, ran=output)
    assert q(pg_conn, "SELECT completed_items, status FROM ecod_schema.batch") == [(n, "completed")]


def test_local_head_crash_then_rerun_finishes(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    n = 10
    cfg = make_batch(tmp_path, scratch_db, n)
    first = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "local", cwd=tmp_path)
    output = tmp_path / "slow"
    wait_for(lambda: len(commands_ran(output)) >= 3)  # mid-run: some items done, chunks running
    snakemake_pid = q(pg_conn, "SELECT pid FROM ecod_schema.ecod_jobs_run")[0][0]
    os.kill(first.pid, signal.SIGKILL)  # the whole head side dies at once
    os.kill(snakemake_pid, signal.SIGKILL)
    first.wait()
    assert q(pg_conn, "SELECT status FROM ecod_schema.ecod_jobs_run") == [("running",)]

    second = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "local", cwd=tmp_path)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, out + err
    runs = q(pg_conn, "SELECT status FROM ecod_schema.ecod_jobs_run ORDER BY started_at")
    assert runs == [("interrupted",), ("success",)], out + err
    assert_done_once(pg_conn, n, output)


@pytest.mark.slurm
def test_slurm_head_crash_cancels_stray_jobs_then_rerun_finishes(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, slurm_cluster: None
) -> None:
    n = 8
    cfg = make_batch(tmp_path, scratch_db, n)
    first = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "slurm", cwd=tmp_path)
    output = tmp_path / "slow"
    wait_for(lambda: len(commands_ran(output)) >= 1, timeout=180)
    snakemake_pid = q(pg_conn, "SELECT pid FROM ecod_schema.ecod_jobs_run")[0][0]
    os.kill(first.pid, signal.SIGKILL)
    os.kill(snakemake_pid, signal.SIGKILL)
    first.wait()
    second = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "slurm", cwd=tmp_path)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, out + err
    assert_done_once(pg_conn, n, output)
    dead_run = q(pg_conn, "SELECT run_id FROM ecod_schema.ecod_jobs_run WHERE status = 'interrupted'")[0][0]
    from ecod_jobs.recovery import slurm_name_prefix

    queue = subprocess.run(["squeue", "--me", "-h", "-o", "%j"], capture_output=True, text=True).stdout
    assert slurm_name_prefix(str(dead_run)) not in queue, "the dead run's jobs were cancelled"


@pytest.mark.slurm
def test_cancel_after_a_slurm_head_crash_cancels_every_queued_and_running_task(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, slurm_cluster: None
) -> None:
    """With the head killed, nobody scancels the run's array; `ecod-jobs cancel` must find
    every task, including those still queued that have written nothing yet."""

    # 2 items per chunk, 10 chunks: the one-node cluster runs 2 at a time, the rest queue
    cfg = make_batch(tmp_path, scratch_db, 20, "sleep 300")
    first = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "slurm", cwd=tmp_path)

    def run_tasks() -> list[str]:
        return squeue_tasks_of_run(pg_conn, completing=False)

    try:
        wait_for(lambda: len(run_tasks()) == 10 and any("|RUNNING" in t for t in run_tasks()), timeout=180)
        snakemake_pid = q(pg_conn, "SELECT pid FROM ecod_schema.ecod_jobs_run")[0][0]
        os.kill(first.pid, signal.SIGKILL)
        os.kill(snakemake_pid, signal.SIGKILL)
        first.wait()
        assert len(run_tasks()) == 10, "the killed head cancelled nothing"

        cancelled = run_cli("--config", str(cfg), "cancel", "--batch", "1", cwd=tmp_path)
        assert cancelled.returncode == 0, cancelled.stderr
        wait_for(lambda: run_tasks() == [], timeout=60)
        assert q(pg_conn, "SELECT DISTINCT status FROM ecod_schema.process_status") == [("error",)]
    finally:
        left = [t.split("|")[0] for t in run_tasks()]
        if left:  # never leave the one node busy for later tests
            subprocess.run(["scancel", *left], check=False)
