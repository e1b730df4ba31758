"""Head-node crash: SIGKILL the main processes mid-run; the same command finishes the batch."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import create_batch, q, run_cli, squeue_tasks_of_run, start_cli, wait_for, write_config

pytestmark = pytest.mark.slow

COMMAND = "sleep 1.5 && echo ran >> {output_dir}/{item_id}.count"


def make_batch(
    tmp_path: Path, scratch_db: dict[str, Any], n: int, extra: dict[str, Any] | None = None
) -> Path:

    (tmp_path / "items.tsv").write_text("path\n" + "".join(f"item{i}\n" for i in range(1, n + 1)))
    cfg = write_config(
        tmp_path / "config.yml",
        {
            "database": scratch_db,
            "pipeline": {"work_root": str(tmp_path / "work")},
            "job_types": {
                "slow": {
                    "command": COMMAND,
                    "batch_size": 2,
                    "memory": "1G",
                    "check_inputs": False,
                    **(extra or {}),
                }
            },
        },
    )
    create_batch(cfg, tmp_path / "items.tsv", "crash", tmp_path)
    return cfg


def assert_counted_once(pg_conn: Any, tmp_path: Path, n: int, output: Path) -> None:
    assert q(pg_conn, "SELECT status, count(*) FROM ecod_schema.process_status GROUP BY status") == [
        ("success", n)
    ]
    per_item = q(
        pg_conn,
        "SELECT process_id, count(*) FROM ecod_schema.job_item WHERE status = 'completed'"
        " GROUP BY process_id ORDER BY process_id",
    )
    assert per_item == [(i, 1) for i in range(1, n + 1)], "each item completed exactly once"
    counts = {p.name: p.read_text().count("ran") for p in output.glob("*.count")}
    assert len(counts) == n, f"every command ran: {counts}"
    assert set(counts.values()) == {1}, f"each command ran once: {counts}"
    assert q(pg_conn, "SELECT completed_items, status FROM ecod_schema.batch") == [(n, "completed")]


def test_local_head_crash_then_rerun_finishes(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    n = 10
    cfg = make_batch(tmp_path, scratch_db, n)
    first = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "local", cwd=tmp_path)
    output = tmp_path / "slow"
    wait_for(lambda: len(list(output.glob("*.count"))) >= 3)  # mid-run: some items done, chunks running
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
    assert_counted_once(pg_conn, tmp_path, n, output)


@pytest.mark.slurm
def test_slurm_head_crash_cancels_stray_jobs_then_rerun_finishes(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, slurm_cluster: None
) -> None:
    n = 8
    cfg = make_batch(tmp_path, scratch_db, n)
    first = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "slurm", cwd=tmp_path)
    output = tmp_path / "slow"
    wait_for(lambda: len(list(output.glob("*.count"))) >= 1, timeout=180)
    snakemake_pid = q(pg_conn, "SELECT pid FROM ecod_schema.ecod_jobs_run")[0][0]
    os.kill(first.pid, signal.SIGKILL)
    os.kill(snakemake_pid, signal.SIGKILL)
    first.wait()
    second = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "slurm", cwd=tmp_path)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, out + err
    assert_counted_once(pg_conn, tmp_path, n, output)
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
    cfg = make_batch(tmp_path, scratch_db, 20, {"command": "sleep 300"})
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
