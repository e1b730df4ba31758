"""Which run directories belong to this database: a work root may be shared between several.

A work root (``pipeline.work_root``) is laid out by batch id, and batch ids are
per database: a test database and a production one, or a database restored from
an old backup (its batch ids start again at 1), can use the same ``batch_N/``
directories. Reading another database's run as our own would import its results
as if they had run here, or fail on a foreign key. So every reader of run
directories (``sync``, ``cancel``, recovery of dead runs) takes a run only when

- its run id is a row of this database's ``ecod_jobs_run``, for the batch and
  job type whose directory holds it (the row is written when the run starts,
  before its plan), and
- its ``plan.json`` names the same batch and job type, and the database identity
  it carries (``database_id``, schema version 7) is this database's. Plans
  written before version 7 carry none; they are taken on the run id alone.

Anything else is left alone, with a warning naming the directory and why.
"""

from __future__ import annotations

import json
import logging
import re
from typing import NamedTuple

from psycopg2 import sql

from . import run_record
from .db import Database
from .layout import BatchLayout, RunLayout
from .plan_file import Plan, PlanFileError

log = logging.getLogger(__name__)

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def database_id(db: Database) -> str | None:
    """This database's identity (made once by schema version 7); None on an older schema."""
    table = f"{db.schema}.ecod_jobs_database"
    if not db.query("SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0]:
        return None
    rows = db.query(sql.SQL("SELECT database_id::text FROM {}").format(db.table("ecod_jobs_database")))
    return str(rows[0][0]) if rows else None


def foreign_reason(
    run_id: str,
    plan: Plan | _Identity | None,
    row: tuple[int, str] | None,
    this_database: str | None,
) -> str | None:
    """Why a run directory is not this database's, or None when it is.

    ``row`` is the run's (batch id, job type) in this database's ``ecod_jobs_run``
    (None: unknown); ``plan`` its ``plan.json`` (None: unreadable, left to the
    reader to report, as before).
    """
    if row is None:
        return f"run id {run_id} is unknown to this database's ecod_jobs_run"
    batch_id, job_type = row
    if plan is None:
        return None
    if (plan.batch_id, plan.job_type) != (batch_id, job_type):
        return (
            f"its plan.json is for batch {plan.batch_id} ({plan.job_type}),"
            f" but this database started run {run_id} for batch {batch_id} ({job_type})"
        )
    theirs = plan.database_id
    if theirs is not None and theirs != this_database:
        ours = this_database or "without an identity (run: ecod-jobs db init)"
        return f"its plan.json was written by another database ({theirs}); this database is {ours}"
    return None


class _Identity(NamedTuple):
    """What ownership compares of a run's plan file (``plan.json`` or ``pipeline.json``)."""

    batch_id: int
    job_type: str
    database_id: str | None


def _read_plan(run: RunLayout) -> _Identity | None:
    if run.is_pipeline:
        try:
            data = json.loads(run.pipeline_plan.read_text())
            return _Identity(int(data["batch_id"]), f"pipeline.{data['pipeline']}", data.get("database_id"))
        except (OSError, ValueError, KeyError, TypeError):
            return None
    try:
        plan = Plan.read(run)
    except PlanFileError:
        return None
    return _Identity(plan.batch_id, plan.job_type, plan.database_id)


def warn_foreign(run: RunLayout, reason: str) -> None:
    log.warning("ignoring run directory %s: %s; nothing of it is read or imported", run.dir, reason)


def check_run(db: Database, run: RunLayout) -> str | None:
    """:func:`foreign_reason` for one run directory (for runs found by their row)."""
    row = run_record.owner(db, run.run_id) if _UUID_RE.match(run.run_id) else None
    plan = _read_plan(run) if run.plan.exists() or run.is_pipeline else None
    return foreign_reason(run.run_id, plan, row, database_id(db))


def owned_runs(db: Database, layout: BatchLayout, batch_id: int, job_type: str) -> list[RunLayout]:
    """The runs with a plan under ``layout`` that this database made, oldest first;
    every other run directory is skipped with a warning."""
    runs = layout.runs()
    if not runs:
        return []
    known = run_record.run_ids(db, batch_id, job_type)
    this_database = database_id(db)
    kept = []
    for run in runs:
        if run.run_id not in known:
            reason: str | None = (
                f"run id {run.run_id} is unknown to this database's ecod_jobs_run for batch {batch_id}"
                f" ({job_type})"
            )
        else:
            reason = foreign_reason(run.run_id, _read_plan(run), (batch_id, job_type), this_database)
        if reason is None:
            kept.append(run)
        else:
            warn_foreign(run, reason)
    return kept
