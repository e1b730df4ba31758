"""Batches and their items (``batch`` and ``process_status`` rows)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2 import sql

from ..exceptions import ValidationError
from ..items import ItemRow
from ..states import JOB_STATUSES, PROCESS_STATUSES
from .bulk import copy_rows
from .connection import Database

log = logging.getLogger(__name__)

INITIAL_STAGE = "registered"
# pyECOD's column widths: checked here so the user gets our message, not the server's.
_LIMITS = {"batch_name": 100, "type": 20, "ref_version": 50, "current_stage": 50}


@dataclass(frozen=True)
class Batch:
    id: int
    batch_name: str
    base_path: str
    type: str
    ref_version: str
    total_items: int
    completed_items: int
    status: str
    created_at: datetime | None
    completed_at: datetime | None

    COLUMNS = (
        "id",
        "batch_name",
        "base_path",
        "type",
        "ref_version",
        "total_items",
        "completed_items",
        "status",
        "created_at",
        "completed_at",
    )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Batch:
        return cls(*row)


def _check_length(field: str, value: str) -> None:
    limit = _LIMITS[field]
    if len(value) > limit:
        raise ValidationError(
            f"{field} {value[:40]!r}{'...' if len(value) > 40 else ''} is {len(value)} "
            f"characters long: expected at most {limit}",
            {"field": field},
        )


def create_batch(
    db: Database,
    name: str,
    items: Sequence[ItemRow],
    *,
    batch_type: str = "generic",
    base_path: str = "",
    ref_version: str = "unspecified",
    stage: str = INITIAL_STAGE,
) -> int:
    """Insert the batch and one pending ``process_status`` per item in one transaction."""
    if not name.strip():
        raise ValidationError("batch name must not be empty")
    for field, value in (
        ("batch_name", name),
        ("type", batch_type),
        ("ref_version", ref_version),
        ("current_stage", stage),
    ):
        _check_length(field, value)
    if not items:
        raise ValidationError("a batch needs at least one item")
    with db.transaction() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (batch_name, base_path, type, ref_version, total_items,"
                " completed_items, status) VALUES (%s, %s, %s, %s, %s, 0, 'created')"
                " RETURNING id"
            ).format(db.table("batch")),
            (name, base_path, batch_type, ref_version, len(items)),
        )
        batch_id = int(cur.fetchone()[0])
        copy_rows(
            cur,
            db.table("process_status"),
            ("batch_id", "protein_id", "current_stage", "status", "is_representative", "relative_path"),
            ((batch_id, it.protein_id, stage, "pending", it.is_representative, it.path) for it in items),
        )
    log.info("created batch %d %r with %d items", batch_id, name, len(items))
    return batch_id


def get_batch(db: Database, batch_id: int) -> Batch | None:
    rows = db.query(
        sql.SQL("SELECT {} FROM {} WHERE id = %s").format(
            sql.SQL(", ").join(map(sql.Identifier, Batch.COLUMNS)), db.table("batch")
        ),
        (batch_id,),
    )
    return Batch.from_row(rows[0]) if rows else None


def require_batch(db: Database, batch_id: int) -> Batch:
    batch = get_batch(db, batch_id)
    if batch is None:
        raise ValidationError(f"batch {batch_id} does not exist", {"batch_id": batch_id})
    return batch


def list_batches(db: Database) -> list[Batch]:
    rows = db.query(
        sql.SQL("SELECT {} FROM {} ORDER BY id").format(
            sql.SQL(", ").join(map(sql.Identifier, Batch.COLUMNS)), db.table("batch")
        )
    )
    return [Batch.from_row(r) for r in rows]


def status_counts(db: Database, batch_id: int, run_id: str | None = None) -> dict[str, int]:
    """``process_status`` counts by status: the whole batch, or the items of one run."""
    if run_id is None:  # kept by triggers on process_status (schema version 5)
        query = sql.SQL("SELECT status, items FROM {} WHERE batch_id = %s AND items <> 0").format(
            db.table("ecod_jobs_status_count")
        )
        params: tuple[Any, ...] = (batch_id,)
    else:
        query = sql.SQL(
            "SELECT ps.status, count(DISTINCT ps.id) FROM {} ji JOIN {} j ON j.id = ji.job_id"
            " JOIN {} ps ON ps.id = ji.process_id WHERE j.run_id = %s GROUP BY ps.status"
        ).format(db.table("job_item"), db.table("job"), db.table("process_status"))
        params = (run_id,)
    return {str(status): int(n) for status, n in db.query(query, params)}


def ordered_counts(counts: dict[str, int]) -> dict[str, int]:
    """Item counts with every ECOD status in its usual order (zero where none), then any other."""
    ordered = {s: int(counts.get(s, 0)) for s in PROCESS_STATUSES}
    ordered.update({k: int(v) for k, v in counts.items() if k not in ordered})
    return ordered


def job_counts(db: Database, batch_id: int) -> dict[str, int]:
    """The batch's ``job`` rows by status: submitted, completed, failed (zero where none);
    ``running``: the submitted ones whose attempt has started. A chunk runs its items one
    at a time, so that is also the number of items running now."""
    rows = db.query(
        sql.SQL(
            "SELECT status, count(*), count(start_time) FROM {} WHERE batch_id = %s GROUP BY status"
        ).format(db.table("job")),
        (batch_id,),
    )
    counts = {s: 0 for s in JOB_STATUSES}
    counts.update({str(s): int(n) for s, n, _ in rows})
    counts["running"] = sum(int(started) for s, _, started in rows if s == "submitted")
    return counts


def failed_items(
    db: Database, batch_id: int, run_id: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Items in ``error`` with their messages: the whole batch, or one run's."""
    if run_id is None:
        query = sql.SQL(
            "SELECT id, relative_path, current_stage, error_message FROM {}"
            " WHERE batch_id = %s AND status = 'error' ORDER BY id LIMIT %s"
        ).format(db.table("process_status"))
        params: tuple[Any, ...] = (batch_id, limit)
    else:
        query = sql.SQL(
            "SELECT DISTINCT ps.id, ps.relative_path, ps.current_stage, ps.error_message FROM {} ji"
            " JOIN {} j ON j.id = ji.job_id JOIN {} ps ON ps.id = ji.process_id"
            " WHERE j.run_id = %s AND ps.status = 'error' ORDER BY ps.id LIMIT %s"
        ).format(db.table("job_item"), db.table("job"), db.table("process_status"))
        params = (run_id, limit)
    return [
        {"process_id": pid, "path": path, "stage": stage, "error": error}
        for pid, path, stage, error in db.query(query, params)
    ]
