"""Planning a run: pick the items that need work, cut them into chunks, record it all.

Runs on the head node as the workflow's checkpoint (and from ``run_batch`` for
the "nothing to do" check). One transaction moves the items needing work to
``processing`` (one UPDATE ... RETURNING that also selects and locks them),
inserts one ``job`` row per chunk and its ``job_item`` rows with COPY. The
manifests are written before the commit and ``plan.json`` (the checkpoint's
output) last, atomically: a crash leaves either no plan or a complete one.
Everything else that can fail before the chunks start (the output directory)
is done before the transaction, so a failed plan leaves the items as they were.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from psycopg2 import sql
from psycopg2.extras import execute_values

from . import run_record
from .config import JobTypeSpec, seconds_to_time, time_to_seconds
from .db import Database, require_batch
from .db.batches import Batch
from .db.bulk import copy_rows
from .exceptions import ValidationError
from .layout import RunLayout, chunk_id, sync_filesystem, write_unsynced
from .ownership import database_id
from .plan_file import Plan, PlannedChunk, manifest_line

log = logging.getLogger(__name__)


def statuses_needing_work(retry_failed: bool) -> list[str]:
    return ["pending", "error"] if retry_failed else ["pending"]


def output_dir_for(config: Mapping[str, Any], batch: Batch, job_type: str) -> Path:
    """``{base_path}/{job_type}``, or ``{output_root}/batch_{id}/{job_type}`` without a base path."""
    if batch.base_path:
        return Path(batch.base_path) / job_type
    root = Path(config["pipeline"].get("output_root", "results"))
    return (root / f"batch_{batch.id}" / job_type).resolve()


def resolve_item_path(relative_path: str | None, base_path: str) -> str:
    path = relative_path or ""
    if base_path and not path.startswith("/"):
        return os.path.join(base_path, path)
    return os.path.abspath(path) if path else path


class _ManifestWriter(threading.Thread):
    """Writes every chunk's manifest; an exception is kept for the planner to raise."""

    def __init__(self, layout: RunLayout, rows: Sequence[tuple[Any, ...]], size: int, base_path: str) -> None:
        super().__init__(name="ecod-jobs-manifests", daemon=True)
        self.layout, self.rows, self.size, self.base_path = layout, rows, size, base_path
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            # Written in place, no fsync each: nothing reads a manifest before plan.json
            # exists, and one syncfs before plan.json makes them all durable at once.
            self.layout.manifest(chunk_id(0)).parent.mkdir(parents=True, exist_ok=True)
            for index, start in enumerate(range(0, len(self.rows), self.size)):
                write_unsynced(
                    self.layout.manifest(chunk_id(index)),
                    "".join(
                        manifest_line(pid, prot, resolve_item_path(rel, self.base_path), rel)
                        for pid, prot, rel in self.rows[start : start + self.size]
                    ),
                )
            sync_filesystem(self.layout.manifest(chunk_id(0)).parent)
        except BaseException as exc:  # handed to the planning thread
            self.error = exc


def count_needing_work(db: Database, batch_id: int, retry_failed: bool) -> int:
    rows = db.query(
        sql.SQL("SELECT count(*) FROM {} WHERE batch_id = %s AND status = ANY(%s)").format(
            db.table("process_status")
        ),
        (batch_id, statuses_needing_work(retry_failed)),
    )
    return int(rows[0][0])


def plan_run(
    db: Database,
    config: Mapping[str, Any],
    spec: JobTypeSpec,
    batch_id: int,
    layout: RunLayout,
    *,
    retry_failed: bool = False,
) -> Plan:
    """Plan the run into ``layout``; returns the plan (also written to ``plan.json``)."""
    batch = require_batch(db, batch_id)
    output_dir = output_dir_for(config, batch, spec.name)
    # ties the run's files to this database: a work root may be shared (ownership.py)
    this_database = database_id(db)
    make_output_dir(output_dir, batch_id, batch.base_path)
    with db.transaction() as cur:
        rows = _claim_items(cur, db, batch_id, statuses_needing_work(retry_failed))
        sizes = [len(rows[start : start + spec.batch_size]) for start in range(0, len(rows), spec.batch_size)]
        # The manifests are written by a second thread while the database inserts the
        # job items and updates the items (the GIL is free while it waits on the
        # server); joined before plan.json and the commit, so a crash still leaves
        # either no plan or a complete one.
        writer = _ManifestWriter(layout, rows, spec.batch_size, batch.base_path)
        writer.start()
        try:
            job_ids = _record_chunks(cur, db, spec, batch_id, layout.run_id, rows, sizes) if rows else []
        finally:
            writer.join()  # also when the database work failed: no writer outlives the plan
        if writer.error is not None:
            raise writer.error
        plan = Plan(
            run_id=layout.run_id,
            database_id=this_database,
            batch_id=batch_id,
            retry_failed=retry_failed,
            output_dir=str(output_dir),
            base_path=batch.base_path,
            **job_fields(spec),
            items=len(rows),
            chunks=tuple(
                PlannedChunk(chunk_id(i), size, job_id)
                for i, (size, job_id) in enumerate(zip(sizes, job_ids, strict=True))
            ),
        )
        # Inside the transaction: if writing the plan fails, nothing is committed.
        plan.write(layout)
    log.info("planned run %s: %d items in %d chunks", layout.run_id, len(rows), len(sizes))
    return plan


def make_output_dir(path: Path, batch_id: int, base_path: str) -> None:
    """Create a run's output directory before its items are claimed, or say why not:
    after the commit, a failure here would strand them in 'processing' (a base path
    that is a regular file did)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValidationError(
            f"batch {batch_id}: cannot create the output directory {path}"
            f" ({exc.strerror or exc}); base path {base_path!r} must be a writable directory",
            {"batch_id": batch_id, "output_dir": str(path)},
        ) from None


def job_fields(spec: JobTypeSpec) -> dict[str, Any]:
    """A plan's fields that come from its job type, config defaults resolved (what the runner runs)."""
    return {
        "job_type": spec.name,
        "command": spec.command,
        "threads": spec.threads,
        "stage": spec.stage,
        "item_timeout": spec.item_timeout,
        "check_inputs": spec.check_inputs,
        "modules": spec.modules,
        "environment": dict(spec.environment),
        "spec": {**asdict(spec), "time": seconds_to_time(time_to_seconds(spec.time))},
    }


def _claim_items(cur: Any, db: Database, batch_id: int, statuses: list[str]) -> list[tuple[Any, ...]]:
    """Select, lock and move the items to 'processing' in one statement (it was SELECT ...
    FOR UPDATE, then UPDATE: the same time, measured). A concurrent planner of the same
    batch waits on the row locks, then sees 'processing' and skips the items. Returns
    (id, protein_id, relative_path) in id order: chunks are cut in that order."""
    cur.execute(
        sql.SQL(
            "UPDATE {} SET status = 'processing', error_message = NULL, updated_at = now()"
            " WHERE batch_id = %s AND status = ANY(%s) RETURNING id, protein_id, relative_path"
        ).format(db.table("process_status")),
        (batch_id, statuses),
    )
    return sorted(cur.fetchall())  # RETURNING has no order


def _record_chunks(
    cur: Any,
    db: Database,
    spec: JobTypeSpec,
    batch_id: int,
    run_id: str,
    rows: Sequence[tuple[Any, ...]],
    sizes: Sequence[int],
) -> list[int]:
    """One ``job`` row per chunk, its ``job_item`` rows (COPY), the batch and the run record
    told; returns the job ids in chunk order."""
    ids = insert_chunk_jobs(cur, db, spec, batch_id, run_id, [chunk_id(i) for i in range(len(sizes))], sizes)

    def job_items() -> Any:
        for index, job_id in enumerate(ids):
            for pid, _prot, _rel in rows[index * spec.batch_size : (index + 1) * spec.batch_size]:
                yield (job_id, pid, "pending")

    copy_rows(cur, db.table("job_item"), ("job_id", "process_id", "status"), job_items())
    mark_batch_processing(cur, db, batch_id)
    run_record.record_planned(cur, db, run_id, len(rows), len(sizes))
    return ids


def insert_chunk_jobs(
    cur: Any,
    db: Database,
    spec: JobTypeSpec,
    batch_id: int,
    run_id: str,
    chunk_ids: Sequence[str],
    sizes: Sequence[int],
) -> list[int]:
    """The attempt-1 ``job`` row of each chunk (one statement); returns their ids in order."""
    job_ids = execute_values(
        cur,
        sql.SQL(
            "INSERT INTO {} (batch_id, job_type, status, items_count, run_id, chunk_id, attempt,"
            " req_mem_mb, req_time_seconds, updated_at) VALUES %s RETURNING id"
        )
        .format(db.table("job"))
        .as_string(cur),
        [
            (
                batch_id,
                spec.name,
                "submitted",
                size,
                run_id,
                chunk,
                1,
                spec.mem_mb,
                time_to_seconds(spec.time),
            )
            for chunk, size in zip(chunk_ids, sizes, strict=True)
        ],
        template="(%s, %s, %s, %s, %s, %s, %s, %s, %s, now())",
        fetch=True,
        page_size=1000,
    )
    return [int(j) for (j,) in job_ids]


def mark_batch_processing(cur: Any, db: Database, batch_id: int) -> None:
    cur.execute(
        sql.SQL(
            "UPDATE {} SET status = 'processing' WHERE id = %s AND status IN ('created', 'indexed')"
        ).format(db.table("batch")),
        (batch_id,),
    )
