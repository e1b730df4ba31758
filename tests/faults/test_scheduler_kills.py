"""Chunks killed by SLURM: an admin's scancel, the time limit, the memory limit.

Each killed chunk is retried by the same run (``retries`` in the profile) with
memory and time multiplied by the attempt number, and the database keeps one
job row per attempt with SLURM's verdict.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import RAN, assert_each_item_once, q, setup_batch, start_cli

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# Items misbehave on their first run only (a marker file remembers it), so the
# retry shows the chunk recovering rather than failing the same way again.
FIRST_TIME = (
    "if [ ! -e {output_dir}/{item_id}.seen ]; then touch {output_dir}/{item_id}.seen; {misbehave}; fi"
)
ONCE = FIRST_TIME + "; " + RAN


def setup(tmp_path: Path, scratch_db: dict[str, Any], items: list[str], command: str, **options: Any) -> Path:
    """One chunk per item of job type ``kill`` (outputs in tmp_path/kill), asking for 1 GB
    and an hour (the config's default) unless ``options`` say otherwise."""
    cfg, _batch = setup_batch(
        tmp_path,
        scratch_db,
        batch_size=1,
        command=command,
        paths=items,
        job_type="kill",
        name="kills",
        options={"time": "01:00:00", **options},
    )
    return cfg


def job_rows(pg_conn: Any) -> list[tuple[Any, ...]]:
    return q(
        pg_conn,
        "SELECT chunk_id, attempt, status, scheduler_state, req_mem_mb, req_time_seconds, error_text"
        " FROM ecod_schema.job ORDER BY chunk_id, attempt",
    )


def test_scancel_of_a_running_chunk_is_retried_and_recorded(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, slurm_cluster: None
) -> None:
    cfg = setup(tmp_path, scratch_db, ["a", "b"], "sleep 6 && " + RAN)
    run = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "slurm", cwd=tmp_path)
    metas = tmp_path / "work" / "batch_1" / "kill" / "runs"
    deadline = time.monotonic() + 180
    target = None
    while target is None and time.monotonic() < deadline:
        for meta in metas.glob("*/results/c00000.attempt-1.json"):
            target = json.loads(meta.read_text())["slurm_job_id"]
        time.sleep(0.3)
    assert target, "chunk c00000 never started"
    subprocess.run(["scancel", target], check=True)  # an admin, mid-item

    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, out + err
    rows = job_rows(pg_conn)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("c00000", 1, "failed"),
        ("c00000", 2, "completed"),
        ("c00001", 1, "completed"),
    ], rows
    assert rows[0][3] == "CANCELLED" and "CANCELLED" in rows[0][6], rows[0]
    assert rows[1][3] == "COMPLETED"
    # twice the memory (the plugin rounds the array's request up by a megabyte: 1025 then 2048)
    assert rows[1][4] >= 1.95 * rows[0][4] >= 1.95 * 1024, (rows[0], rows[1])
    assert_each_item_once(pg_conn, 2, ran=tmp_path / "kill")
    # the item the cancel interrupted was rerun under attempt 2
    assert q(
        pg_conn,
        "SELECT j.attempt FROM ecod_schema.job_item ji JOIN ecod_schema.job j ON j.id = ji.job_id"
        " WHERE j.chunk_id = 'c00000' AND ji.status = 'completed'",
    ) == [(2,)]


def test_time_and_memory_kills_are_retried_with_more_and_recorded(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, slurm_cluster: None
) -> None:
    # Item "slow" outlives the 1-minute limit once; item "big" needs 1.5 GB once
    # (the request is 1 GB; OverMemoryKill samples every second).
    misbehave = (
        'case {path} in */slow) sleep 600 ;; */big) python -c "'
        "b = bytearray(1536 << 20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(30)"
        '" ;; esac'
    )
    cfg = setup(
        tmp_path, scratch_db, ["big", "slow"], ONCE.replace("{misbehave}", misbehave), time="00:01:00"
    )
    run = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "slurm", cwd=tmp_path)
    out, err = run.communicate(timeout=900)
    assert run.returncode == 0, out + err
    rows = {(r[0], r[1]): r[2:] for r in job_rows(pg_conn)}
    assert set(rows) == {("c00000", 1), ("c00000", 2), ("c00001", 1), ("c00001", 2)}, rows
    big1, big2 = rows[("c00000", 1)], rows[("c00000", 2)]
    assert big1[:2] == ("failed", "OUT_OF_MEMORY") and "OUT_OF_MEMORY" in big1[4], big1
    assert big2[:2] == ("completed", "COMPLETED") and big2[2] >= 1.95 * big1[2], (big1, big2)
    slow1, slow2 = rows[("c00001", 1)], rows[("c00001", 2)]
    assert slow1[:2] == ("failed", "TIMEOUT") and slow1[3] == 60, slow1
    assert slow2[:2] == ("completed", "COMPLETED") and slow2[3] == 120, slow2
    assert_each_item_once(pg_conn, 2, ran=tmp_path / "kill")


def test_array_task_finishing_long_before_the_first_does_not_lose_or_rerun_anything(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, slurm_cluster: None
) -> None:
    # Plugin issue #447: every array task's outer Snakemake checks the *first*
    # chunk's output. Task 2 ends at once and waits in vain (latency-wait, 30 s)
    # for c00000, so SLURM marks it failed and Snakemake retries it. The retry
    # reruns no command (its items are in the partial file) and deletes nothing
    # of c00000 (keep-incomplete); both attempts of c00001 are recorded as having
    # finished.
    cfg = setup(tmp_path, scratch_db, ["first", "second"], "case {path} in */first) sleep 45 ;; esac; " + RAN)
    run = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "slurm", cwd=tmp_path)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, out + err
    assert_each_item_once(pg_conn, 2, ran=tmp_path / "kill")
    rows = job_rows(pg_conn)
    assert rows[0][:3] == ("c00000", 1, "completed"), rows
    assert {r[2] for r in rows} == {"completed"} and all(r[0] == "c00001" for r in rows[1:]), rows
