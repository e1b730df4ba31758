"""record_chunks: the files are the truth; syncing them is idempotent and repairs deleted rows."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from helpers import q
from psycopg2 import sql

from ecod_jobs.config import from_mapping, job_type_spec
from ecod_jobs.db import Database, create_batch, init_schema, status_counts
from ecod_jobs.items import ItemRow
from ecod_jobs.layout import BatchLayout, RunLayout, read_jsonl, write_atomic
from ecod_jobs.plan import plan_run
from ecod_jobs.sync import record_chunks, write_rows
from ecod_jobs.sync_rows import ChunkState, RunInfo, chunk_rows


def planned_run(
    db_config: dict[str, Any], tmp_path: Path, items: int
) -> tuple[Database, RunLayout, dict[str, Any]]:
    config = from_mapping({**db_config, "pipeline": {"work_root": str(tmp_path / "work")}})
    config["job_types"]["echo"]["batch_size"] = 4
    db = Database(config)
    init_schema(db)
    batch_id = create_batch(db, "sync", [ItemRow(f"p{i}") for i in range(items)], base_path=str(tmp_path))
    run = BatchLayout.create(config["pipeline"]["work_root"], batch_id, "echo").run(str(uuid.uuid4()))
    with db.transaction() as cur:
        cur.execute(
            sql.SQL("INSERT INTO {} (run_id, batch_id, job_type) VALUES (%s, %s, 'echo')").format(
                db.table("ecod_jobs_run")
            ),
            (run.run_id, batch_id),
        )
    plan = plan_run(db, config, job_type_spec(config, "echo"), batch_id, run)
    return db, run, plan


def finish_chunk(run: RunLayout, chunk: str, attempt: int = 1, fail: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    records = [
        result(item["process_id"], attempt, item["process_id"] not in fail)
        for item in read_jsonl(run.manifest(chunk))
    ]
    for a in range(1, attempt + 1):
        meta = {"chunk_id": chunk, "attempt": a, "start": "2026-11-24T10:00:00+00:00"}
        if a == attempt:
            meta["end"] = "2026-11-24T10:00:09+00:00"
        write_atomic(run.attempt_meta(chunk, a), json.dumps(meta))
    write_atomic(run.result(chunk), "".join(json.dumps(r) + "\n" for r in records))


def job_items(pg_conn: Any, run_id: str) -> list[tuple[Any, ...]]:
    return q(
        pg_conn,
        "SELECT ji.process_id, j.chunk_id, j.attempt, ji.status, ji.exit_code, ji.error_text"
        " FROM ecod_schema.job_item ji JOIN ecod_schema.job j ON j.id = ji.job_id"
        " WHERE j.run_id = %s ORDER BY ji.process_id",
        run_id,
    )


def test_sync_is_idempotent_and_repairs(db_config: dict[str, Any], pg_conn: Any, tmp_path: Path) -> None:
    db, run, plan = planned_run(db_config, tmp_path, 10)
    chunks = plan.chunk_ids()
    assert len(chunks) == 3
    finish_chunk(run, chunks[0], fail={2})
    finish_chunk(run, chunks[1], attempt=2)  # its first attempt died; the second finished
    # the third chunk has not finished: its items stay processing under attempt 1
    assert record_chunks(db, run, plan, chunks, run_over=False) == 8
    rows = job_items(pg_conn, run.run_id)
    assert len(rows) == 10, "one job_item per item and run"
    by_item = {r[0]: r[1:] for r in rows}
    assert by_item[2] == (chunks[0], 1, "failed", 3, "exit code 3: boom")
    assert by_item[5] == (chunks[1], 2, "completed", 0, None)
    assert by_item[9] == (chunks[2], 1, "pending", None, None)
    assert status_counts(db, plan.batch_id) == {"success": 7, "error": 1, "processing": 2}

    # a second sync of the same files writes nothing
    (xmin_before,) = q(pg_conn, "SELECT array_agg(xmin::text ORDER BY id) FROM ecod_schema.job_item")[0]
    record_chunks(db, run, plan, chunks, run_over=False)
    (xmin_after,) = q(pg_conn, "SELECT array_agg(xmin::text ORDER BY id) FROM ecod_schema.job_item")[0]
    assert xmin_after == xmin_before
    assert job_items(pg_conn, run.run_id) == rows

    # rows deleted by hand come back from the files
    q(pg_conn, "DELETE FROM ecod_schema.job_item WHERE process_id IN (2, 5, 9) RETURNING id")
    record_chunks(db, run, plan, chunks, run_over=False)
    assert job_items(pg_conn, run.run_id) == rows


# --------------------------------------------------------------------------- the writer, from rows


def result(pid: int, attempt: int, ok: bool = True) -> dict[str, Any]:
    return {
        "process_id": pid,
        "status": "success" if ok else "error",
        "exit_code": 0 if ok else 3,
        "error": None if ok else "exit code 3: boom",
        "start": "2026-11-24T10:00:00+00:00",
        "end": "2026-11-24T10:00:02+00:00",
        "seconds": 2.0,
        "attempt": attempt,
    }


def jobs(pg_conn: Any, run_id: str) -> list[tuple[Any, ...]]:
    return q(
        pg_conn,
        "SELECT attempt, status, items_count, slurm_job_id, node, error_text, exit_code,"
        " completion_time IS NOT NULL FROM ecod_schema.job WHERE run_id = %s ORDER BY chunk_id, attempt",
        run_id,
    )


def item_statuses(pg_conn: Any, batch_id: int) -> dict[int, tuple[Any, ...]]:
    rows = q(
        pg_conn,
        "SELECT id, status, current_stage, error_message FROM ecod_schema.process_status WHERE batch_id = %s",
        batch_id,
    )
    return {r[0]: r[1:] for r in rows}


def test_write_rows_follows_a_chunk_through_a_failed_attempt_and_a_rerun(
    db_config: dict[str, Any], pg_conn: Any, tmp_path: Path
) -> None:
    db, run, plan = planned_run(db_config, tmp_path, 4)
    (chunk,) = plan.chunk_ids()
    info = RunInfo(run.run_id, plan.batch_id, plan.job_type, plan.stage)
    items = list(read_jsonl(run.manifest(chunk)))
    p0, p1, p2, p3 = (i["process_id"] for i in items)
    started = {"start": "2026-11-24T10:00:00+00:00", "slurm_job_id": "10_0", "node": "n1"}

    # attempt 1 runs and has one result so far
    st = ChunkState(chunk, {1: started}, {p0: result(p0, 1)}, False, items)
    write_rows(db, [chunk_rows(st, info, run_over=False)])
    assert jobs(pg_conn, run.run_id) == [(1, "submitted", 1, "10_0", "n1", None, None, False)]
    assert [r[1:4] for r in job_items(pg_conn, run.run_id)] == [
        (chunk, 1, "completed"),
        (chunk, 1, "pending"),
        (chunk, 1, "pending"),
        (chunk, 1, "pending"),
    ]
    assert status_counts(db, plan.batch_id) == {"success": 1, "processing": 3}

    # Snakemake reports attempt 1 failed; its record now lacks what the first one had
    st = ChunkState(chunk, {1: {"start": started["start"]}}, {p0: result(p0, 1)}, False, items)
    write_rows(db, [chunk_rows(st, info, run_over=False, reported_failed=True)])
    failed = "attempt 1 ended before finishing its chunk"
    assert jobs(pg_conn, run.run_id) == [(1, "failed", 1, "10_0", "n1", failed, None, True)]
    not_run = f"not run: chunk {chunk} attempt 1 ended before reaching this item"
    assert item_statuses(pg_conn, plan.batch_id)[p3] == ("error", "echo_failed", not_run)

    # attempt 2 redoes the chunk and finishes: every item moves to it
    done = {"start": "2026-11-24T10:01:00+00:00", "end": "2026-11-24T10:01:09+00:00", "slurm_job_id": "11_0"}
    results = {p: result(p, 2, ok=p != p1) for p in (p0, p1, p2, p3)}
    st = ChunkState(chunk, {1: {"start": started["start"]}, 2: done}, results, True, items)
    write_rows(db, [chunk_rows(st, info, run_over=True)])
    assert jobs(pg_conn, run.run_id) == [
        (1, "failed", 0, "10_0", "n1", failed, None, True),
        (2, "completed", 4, "11_0", None, "1 of 4 items failed", 0, True),
    ]
    ji = job_items(pg_conn, run.run_id)
    assert [(r[0], r[2], r[3]) for r in ji] == [
        (p0, 2, "completed"),
        (p1, 2, "failed"),
        (p2, 2, "completed"),
        (p3, 2, "completed"),
    ]
    assert item_statuses(pg_conn, plan.batch_id) == {
        p0: ("success", "echo", None),
        p1: ("error", "echo_failed", "exit code 3: boom"),
        p2: ("success", "echo", None),
        p3: ("success", "echo", None),
    }


def test_write_rows_hands_an_interrupted_runs_items_back(
    db_config: dict[str, Any], pg_conn: Any, tmp_path: Path
) -> None:
    db, run, plan = planned_run(db_config, tmp_path, 3)
    (chunk,) = plan.chunk_ids()
    info = RunInfo(run.run_id, plan.batch_id, plan.job_type, plan.stage)
    items = list(read_jsonl(run.manifest(chunk)))
    p0, p1, p2 = (i["process_id"] for i in items)
    st = ChunkState(chunk, {1: {"start": "2026-11-24T10:00:00+00:00"}}, {p0: result(p0, 1)}, False, items)
    write_rows(db, [chunk_rows(st, info, run_over=True, interrupted=True)])
    interrupted = f"interrupted: run {run.run_id} died before this item finished"
    assert [r[3:] for r in job_items(pg_conn, run.run_id)] == [
        ("completed", 0, None),
        ("failed", None, interrupted),
        ("failed", None, interrupted),
    ]
    statuses = item_statuses(pg_conn, plan.batch_id)
    assert (statuses[p1][0], statuses[p1][2], statuses[p2][0]) == ("pending", None, "pending")
    assert statuses[p0][0] == "success"
