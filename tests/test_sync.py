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
from ecod_jobs.sync import record_chunks


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
    records = []
    for item in read_jsonl(run.manifest(chunk)):
        ok = item["process_id"] not in fail
        records.append(
            {
                "process_id": item["process_id"],
                "status": "success" if ok else "error",
                "exit_code": 0 if ok else 3,
                "error": None if ok else "exit code 3: boom",
                "start": "2026-11-24T10:00:00+00:00",
                "end": "2026-11-24T10:00:02+00:00",
                "seconds": 2.0,
                "attempt": attempt,
            }
        )
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
    chunks = [c["chunk_id"] for c in plan["chunks"]]
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
    assert status_counts(db, plan["batch_id"]) == {"success": 7, "error": 1, "processing": 2}

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
