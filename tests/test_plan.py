"""plan_run: chunks cut in id order, items moved to processing once, planners never overlap."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import q

from ecod_jobs.config import from_mapping, job_type_spec
from ecod_jobs.db import Database, create_batch, init_schema
from ecod_jobs.items import ItemRow
from ecod_jobs.layout import BatchLayout, read_jsonl
from ecod_jobs.plan import plan_run


def setup(db_config: dict[str, Any], tmp_path: Path, items: int) -> tuple[Database, dict[str, Any], int]:
    config = from_mapping({**db_config, "pipeline": {"work_root": str(tmp_path / "work")}})
    config["job_types"]["echo"]["batch_size"] = 4
    db = Database(config)
    init_schema(db)
    batch_id = create_batch(db, "plan", [ItemRow(f"p{i}") for i in range(items)], base_path=str(tmp_path))
    return db, config, batch_id


def plan(db: Database, config: dict[str, Any], batch_id: int, retry_failed: bool = False) -> Any:
    run = BatchLayout.create(config["pipeline"]["work_root"], batch_id, "echo").run(str(uuid.uuid4()))
    return run, plan_run(db, config, job_type_spec(config, "echo"), batch_id, run, retry_failed=retry_failed)


def test_plan_cuts_chunks_in_id_order(
    db_config: dict[str, Any], pg_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, config, batch_id = setup(db_config, tmp_path, 10)
    # shuffle the physical order and make the planner scan the table in that order,
    # so only an explicit sort gives id order
    q(pg_conn, "UPDATE ecod_schema.process_status SET updated_at = now() WHERE id %% 2 = 0 RETURNING id")
    monkeypatch.setenv("PGOPTIONS", "-c enable_indexscan=off -c enable_bitmapscan=off")
    q(
        pg_conn,
        "UPDATE ecod_schema.process_status SET status = 'error', error_message = 'old'"
        " WHERE relative_path = 'p3' RETURNING id",
    )
    run, planned = plan(db, config, batch_id)
    ids = [r[0] for r in q(pg_conn, "SELECT id FROM ecod_schema.process_status ORDER BY id")]
    expected = [i for i in ids if i != ids[3]]
    assert [c.items for c in planned.chunks] == [4, 4, 1]
    chunk_ids = planned.chunk_ids()
    manifests = [[r["process_id"] for r in read_jsonl(run.manifest(c))] for c in chunk_ids]
    assert manifests == [expected[0:4], expected[4:8], expected[8:]]
    assert q(pg_conn, "SELECT status, count(*) FROM ecod_schema.process_status GROUP BY 1 ORDER BY 1") == [
        ("error", 1),
        ("processing", 9),
    ]
    # job_item rows follow the chunks
    rows = q(
        pg_conn,
        "SELECT j.chunk_id, array_agg(ji.process_id ORDER BY ji.process_id) FROM ecod_schema.job_item ji"
        " JOIN ecod_schema.job j ON j.id = ji.job_id GROUP BY 1 ORDER BY 1",
    )
    assert [r[1] for r in rows] == manifests

    # --retry-failed takes the failed item, and clears its old error
    _, retried = plan(db, config, batch_id, retry_failed=True)
    assert retried.items == 1
    item = q(pg_conn, "SELECT status, error_message FROM ecod_schema.process_status WHERE id = %s", ids[3])
    assert item == [("processing", None)]


def test_a_second_planner_waits_and_takes_nothing(
    db_config: dict[str, Any], pg_conn: Any, tmp_path: Path
) -> None:
    """Another transaction claiming the same items holds their row locks; the planner
    waits on them and, once that transaction commits, finds nothing left to plan."""
    db, config, batch_id = setup(db_config, tmp_path, 6)
    pg_conn.autocommit = False
    with pg_conn.cursor() as cur:
        cur.execute(
            "UPDATE ecod_schema.process_status SET status = 'processing'"
            " WHERE batch_id = %s AND status = 'pending'",
            (batch_id,),
        )
    result: dict[str, Any] = {}
    planner = threading.Thread(target=lambda: result.update(plan=plan(db, config, batch_id)[1]))
    planner.start()
    deadline = time.monotonic() + 30
    waiting = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    while db.query(waiting)[0][0] < 1:
        assert time.monotonic() < deadline, "the planner never waited for the row locks"
        time.sleep(0.05)
    assert planner.is_alive()
    pg_conn.commit()
    planner.join(30)
    assert not planner.is_alive()
    assert result["plan"].items == 0
    assert result["plan"].chunks == ()
