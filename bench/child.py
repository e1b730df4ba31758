"""One head-node step in a process of its own, so that its peak memory is its own.

    python -m bench.child create CONFIG ITEMS      -> {"seconds", "batch_id", "max_rss_kb"}
    python -m bench.child plan CONFIG BATCH_ID     -> {"seconds", "run_dir", "chunks", "max_rss_kb"}
    python -m bench.child fetch CONFIG BATCH_ID    -> the naive way: fetchall() of the batch's rows
    python -m bench.child idle CONFIG              -> ecod_jobs imported and connected, nothing else

Prints one JSON line. Building the item list is not timed (``batch create``
reads it from a file); everything that touches the database is.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from psycopg2 import sql

from ecod_jobs.config import job_type_spec, load_config
from ecod_jobs.db import Database
from ecod_jobs.db.batches import create_batch
from ecod_jobs.items import ItemRow
from ecod_jobs.layout import BatchLayout
from ecod_jobs.plan import plan_run

JOB_TYPE = "bench"


def _rss_kb() -> int:
    """Peak RSS of this process image (VmHWM): unlike ru_maxrss, not inherited from the parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def create(db: Database, items: int) -> dict[str, Any]:
    rows = [ItemRow(f"chains/{i:07d}.fa", protein_id=None) for i in range(items)]
    start = time.perf_counter()
    batch_id = create_batch(db, f"bench {items}", rows, base_path="/data/bench")
    return {"seconds": time.perf_counter() - start, "batch_id": batch_id}


def plan(db: Database, config: dict[str, Any], batch_id: int) -> dict[str, Any]:
    spec = job_type_spec(config, JOB_TYPE)
    run = BatchLayout.create(config["pipeline"]["work_root"], batch_id, spec.name).run(str(uuid.uuid4()))
    with db.transaction() as cur:  # the run row, as the workflow's onstart writes it
        cur.execute(
            sql.SQL("INSERT INTO {} (run_id, batch_id, job_type) VALUES (%s, %s, %s)").format(
                db.table("ecod_jobs_run")
            ),
            (run.run_id, batch_id, spec.name),
        )
    start = time.perf_counter()
    result = plan_run(db, config, spec, batch_id, run)
    return {"seconds": time.perf_counter() - start, "run_dir": str(run.dir), "chunks": len(result.chunks)}


def fetch(db: Database, batch_id: int) -> dict[str, Any]:
    start = time.perf_counter()
    rows = db.query(
        sql.SQL("SELECT id, protein_id, relative_path FROM {} WHERE batch_id = %s ORDER BY id").format(
            db.table("process_status")
        ),
        (batch_id,),
    )
    return {"seconds": time.perf_counter() - start, "rows": len(rows)}


def main(argv: list[str]) -> int:
    step, config_path, *rest = argv
    config = load_config(config_path)
    db = Database(config)
    db.query("SELECT 1")
    if step == "create":
        out = create(db, int(rest[0]))
    elif step == "plan":
        out = plan(db, config, int(rest[0]))
    elif step == "fetch":
        out = fetch(db, int(rest[0]))
    elif step == "idle":
        out = {"seconds": 0.0}
    else:
        raise SystemExit(f"unknown step {step!r}")
    print(json.dumps({**out, "max_rss_kb": _rss_kb()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
