"""Live progress inside a running chunk: what a chunk's runner has finished reaches
PostgreSQL while the chunk still runs (the head reads the chunk's partial results),
and the attempt's SLURM id, node and start are recorded when it starts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_each_item_once, q, setup_batch, wait_for

from ecod_jobs import run_batch

SLOW = "sleep 3 && echo {item_id} >> {output_dir}/ran.log"


def _mid_chunk(conn: Any) -> tuple[Any, ...] | None:
    """The chunk's job row while it still runs with some of its items recorded done:
    (status, slurm_job_id, node, start_time, items succeeded), else None."""
    rows = q(
        conn,
        "SELECT j.status, j.slurm_job_id, j.node, j.start_time,"
        " (SELECT count(*) FROM ecod_schema.process_status WHERE status = 'success'),"
        " (SELECT count(*) FROM ecod_schema.job_item WHERE job_id = j.id AND status = 'completed')"
        " FROM ecod_schema.job j",
    )
    if len(rows) != 1:
        return None
    status, slurm_id, node, start, succeeded, completed = rows[0]
    if status == "submitted" and 0 < succeeded < 10 and completed == succeeded:
        return status, slurm_id, node, start, succeeded
    return None


def _run_in_background(batch: int, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(run_batch(batch, **kwargs)))
    thread.start()
    return thread, results


@pytest.mark.slurm
def test_items_of_a_running_slurm_chunk_reach_the_database(
    tmp_path: Path,
    scratch_db: dict[str, Any],
    pg_conn: Any,
    slurm_cluster: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    paths = [f"chain{i}.fa" for i in range(1, 11)]
    cfg, batch = setup_batch(tmp_path, scratch_db, batch_size=10, command=SLOW, paths=paths)
    (tmp_path / "echo").mkdir()
    thread, results = _run_in_background(
        batch, profile="slurm", config_path=cfg, ecod_slurm_init_seconds_before_status_checks=5
    )
    # 10 items of 3 s: the chunk runs about 30 s, and the head records every 10 s
    _, slurm_id, node, start, succeeded = wait_for(
        lambda: _mid_chunk(pg_conn), timeout=150, what="items of the running chunk recorded done"
    )
    assert slurm_id and "_" in slurm_id, "the job row holds the array task's SLURM id"
    assert node and start is not None
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.process_status WHERE status = 'processing'") == [
        (10 - succeeded,)
    ]
    thread.join(timeout=240)
    assert results and results[0].ok, results and results[0].log_path.read_text()[-3000:]
    assert_each_item_once(pg_conn, 10, run_id=results[0].run_id)
    assert q(pg_conn, "SELECT status, slurm_job_id FROM ecod_schema.job") == [("completed", slurm_id)]


def test_items_of_a_running_local_chunk_reach_the_database(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    paths = [f"chain{i}.fa" for i in range(1, 11)]
    cfg, batch = setup_batch(tmp_path, scratch_db, batch_size=10, command=SLOW, paths=paths)
    (tmp_path / "echo").mkdir()
    thread, results = _run_in_background(batch, config_path=cfg, cores=1)
    _, slurm_id, node, start, _ = wait_for(
        lambda: _mid_chunk(pg_conn), timeout=60, what="items of the running chunk recorded done"
    )
    assert slurm_id is None and node and start is not None
    thread.join(timeout=120)
    assert results and results[0].ok
    assert_each_item_once(pg_conn, 10, run_id=results[0].run_id, ran=tmp_path / "echo")
