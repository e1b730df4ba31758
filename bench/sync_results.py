"""2. Result sync: 1,000,000 item results from chunk result files into the database.

Ours: ``record_chunks`` over every chunk of the planned run, as ``ecod-jobs sync``
and the end of a run call it (job rows, job_item and process_status updates).
Baseline: what a user would write by hand: read the same result files, COPY the
results into a temporary table, one ``UPDATE ... FROM`` per table.
"""

from __future__ import annotations

import json
from typing import Any

from ecod_jobs.layout import RunLayout, read_jsonl, write_atomic
from ecod_jobs.plan_file import Plan

from .common import Measurement, connect, log, timed
from .registration import Registered, checkpoint, copy_text

ERROR_EVERY = 20  # one item in 20 fails, with a message


def write_results(run: RunLayout, plan: Plan) -> int:
    """The files a runner leaves: one result line per item and the attempt record."""
    total = 0
    for cid in plan.chunk_ids():
        records = []
        for item in read_jsonl(run.manifest(cid)):
            ok = item["process_id"] % ERROR_EVERY != 0
            records.append(
                {
                    "process_id": item["process_id"],
                    "path": item["path"],
                    "start": "2026-11-24T10:00:00+00:00",
                    "status": "success" if ok else "error",
                    "exit_code": 0 if ok else 1,
                    "error": None if ok else "exit code 1: hhblits: no hits",
                    "stderr_tail": "",
                    "end": "2026-11-24T10:00:01+00:00",
                    "seconds": 1.0,
                    "attempt": 1,
                }
            )
        meta = {"chunk_id": cid, "attempt": 1, "start": "2026-11-24T10:00:00+00:00", "pid": 1}
        meta.update(end="2026-11-24T10:16:40+00:00", max_rss_kb=20000, cpu_seconds=990.0)
        write_atomic(run.attempt_meta(cid, 1), json.dumps(meta))
        write_atomic(run.result(cid), "".join(json.dumps(r) + "\n" for r in records))
        total += len(records)
    return total


def vacuum(section: dict[str, Any]) -> None:
    conn = connect(section)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE ecod_schema.process_status, ecod_schema.job_item")
    conn.close()
    checkpoint(section)


def update_from(section: dict[str, Any], run: RunLayout, plan: Plan) -> None:
    """The baseline: result files -> COPY into a temp table -> UPDATE ... FROM, per table."""
    rows = []
    for cid in plan.chunk_ids():
        for r in read_jsonl(run.result(cid)):
            ok = r["status"] == "success"
            rows.append(
                (r["process_id"], "completed" if ok else "failed", r["status"], r["exit_code"], r["error"])
            )
    conn = connect(section)
    with conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE results (process_id int, ji_status text, ps_status text, exit_code int,"
            " error text) ON COMMIT DROP"
        )
        cur.copy_expert("COPY results FROM STDIN", copy_text(rows))
        cur.execute(
            "UPDATE ecod_schema.job_item ji SET status = r.ji_status, exit_code = r.exit_code,"
            " error_text = r.error FROM results r WHERE ji.process_id = r.process_id"
        )
        cur.execute(
            "UPDATE ecod_schema.process_status ps SET status = r.ps_status, error_message = r.error,"
            " updated_at = now() FROM results r WHERE ps.id = r.process_id"
        )
    conn.close()


def measure(section: dict[str, Any], registered: Registered) -> list[Measurement]:
    from ecod_jobs.config import load_config
    from ecod_jobs.db import Database
    from ecod_jobs.sync import record_chunks

    run = RunLayout(registered.run_dir, registered.run_dir.name)
    plan = Plan.read(run)
    items = write_results(run, plan)
    db = Database(load_config(registered.config_path))
    chunks = plan.chunk_ids()
    log(f"sync: ecod-jobs record_chunks of {items:,} results")
    vacuum(section)
    ours, settled = timed(lambda: record_chunks(db, run, plan, chunks, run_over=True))
    assert settled == items, (settled, items)
    log(f"sync: COPY + UPDATE ... FROM of {items:,} results (baseline)")
    vacuum(section)
    baseline, _ = timed(lambda: update_from(section, run, plan))
    rate, base_rate = items / ours, items / baseline
    return [
        Measurement(
            "sync",
            f"Result sync: {items:,} item results from result files (items/s)",
            rate,
            "items/s",
            baseline="result files -> COPY temp table -> UPDATE ... FROM",
            baseline_value=base_rate,
            goal=">= 0.8x the baseline",
            met=rate >= 0.8 * base_rate,
            notes=[f"ours {ours:.1f} s (also job rows and timings), baseline {baseline:.1f} s"],
        )
    ]
