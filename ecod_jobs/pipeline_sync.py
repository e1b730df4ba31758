"""Recording a pipeline stage's chunks: item-stages, process_file, and each item's status.

:func:`ecod_jobs.sync.write_rows` records a stage window's chunks like any run's (job
and job_item rows), then, instead of setting ``process_status`` from one job type,
calls :func:`write_stage_items` in the same transaction: the item-stage rows take the
results (status, metrics, error, times), every declared output of a success goes to
``process_file`` (:func:`ecod_jobs.process_files.upsert_files`), and each item's
``process_status`` is derived from all its item-stages by :func:`derive_process_status`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from .db import Database
from .db.bulk import copy_rows
from .process_files import FileRow, upsert_files


def stage_extras(records: Iterable[Mapping[str, Any]]) -> tuple[list[tuple[int, str]], list[FileRow]]:
    """From result records: (process_id, metrics JSON) and the ``process_file`` rows of successes."""
    metrics: list[tuple[int, str]] = []
    files: list[FileRow] = []
    for record in records:
        if record.get("status") != "success":
            continue
        pid = int(record["process_id"])
        if record.get("metrics"):
            metrics.append((pid, json.dumps(record["metrics"])))
        checked = datetime.fromisoformat(record["end"]) if record.get("end") else datetime.now(UTC)
        for file_type, path, size in record.get("files") or ():
            files.append(FileRow(pid, file_type, path, True, int(size), checked))
    return metrics, files


def write_stage_items(
    cur: psycopg2.extensions.cursor,
    db: Database,
    *,
    run_id: str,
    batch_id: int,
    stage: str,
    stage_order: Sequence[tuple[str, str]],
    records: Iterable[Mapping[str, Any]],
    run_over: bool,
) -> None:
    """Item-stages, process_file and process_status from the items staged in ``_ecod_items``
    (see ``sync._stage_items``) and their result ``records``."""
    metrics, files = stage_extras(records)
    cur.execute("CREATE TEMP TABLE _ecod_metrics (process_id int, metrics jsonb) ON COMMIT DROP")
    copy_rows(cur, sql.Identifier("_ecod_metrics"), ("process_id", "metrics"), metrics)
    # Only this run's rows: a later run that took the item-stage over is never undone.
    cur.execute(
        sql.SQL(
            "UPDATE {} s SET status = n.ps_status, job_id = n.job_id,"
            " error_message = CASE WHEN n.ps_status = 'error' THEN n.error END,"
            " metrics = m.metrics, start_time = n.start_time, end_time = n.end_time, updated_at = now()"
            " FROM _ecod_items n LEFT JOIN _ecod_metrics m ON m.process_id = n.process_id"
            " WHERE s.process_id = n.process_id AND s.stage = %(stage)s AND s.run_id = %(run)s"
            " AND n.ps_status IS NOT NULL AND (s.status, s.job_id, s.error_message, s.metrics::text,"
            " s.start_time, s.end_time) IS DISTINCT FROM (n.ps_status, n.job_id,"
            " CASE WHEN n.ps_status = 'error' THEN n.error END, m.metrics::text, n.start_time::timestamp,"
            " n.end_time::timestamp)"
        ).format(db.table("ecod_jobs_item_stage")),
        {"stage": stage, "run": run_id},
    )
    upsert_files(cur, db, files)
    cur.execute("SELECT array_agg(process_id) FROM _ecod_items WHERE ps_status IS NOT NULL")
    ids = cur.fetchone()[0] or []
    derive_process_status(cur, db, batch_id, stage_order, ids, in_run=not run_over)


def derive_process_status(
    cur: psycopg2.extensions.cursor,
    db: Database,
    batch_id: int,
    stage_order: Sequence[tuple[str, str]] | Any,
    process_ids: Sequence[int] | None = None,
    *,
    run_id: str | None = None,
    in_run: bool,
) -> None:
    """Each item's ``process_status`` from its item-stages of the pipeline:

    - a failed stage (the first, in pipeline order): ``error``, ``current_stage`` =
      ``<stage>_failed``, ``error_message`` = ``<stage>: <its error>``;
    - every stage done (success or skipped): ``success``, ``current_stage`` = the last
      stage's ``stage`` string;
    - otherwise ``processing`` while its run goes on (``in_run``), else ``pending``, with
      ``current_stage`` = the latest stage it succeeded in.

    ``process_ids``: the items to derive, or (None) every item of ``run_id``.
    """
    if hasattr(stage_order, "stages"):  # a PipelineSpec
        stage_order = [(s.name, s.done_stage) for s in stage_order.stages]
    names = [name for name, _ in stage_order]
    done = [done for _, done in stage_order]
    if process_ids is not None and not process_ids:
        return
    which = "s.process_id = ANY(%(ids)s)" if process_ids is not None else "s.run_id = %(run)s"
    cur.execute(
        sql.SQL(
            "WITH p AS (SELECT * FROM unnest(%(names)s::text[], %(done)s::text[]) WITH ORDINALITY"
            "   AS p(stage, done_stage, ord)),"
            " items AS (SELECT DISTINCT s.process_id FROM {s} s WHERE " + which + "),"
            " t AS (SELECT s.process_id,"
            "   count(*) FILTER (WHERE s.status IN ('success', 'skipped')) AS n_done,"
            "   (array_agg(p.stage ORDER BY p.ord) FILTER (WHERE s.status = 'error'))[1] AS failed,"
            "   (array_agg(s.error_message ORDER BY p.ord) FILTER (WHERE s.status = 'error'))[1]"
            "     AS error,"
            "   (array_agg(p.done_stage ORDER BY p.ord DESC) FILTER (WHERE s.status = 'success'))[1]"
            "     AS latest"
            "   FROM {s} s JOIN p ON p.stage = s.stage JOIN items USING (process_id) GROUP BY s.process_id),"
            " new AS (SELECT t.process_id,"
            "   CASE WHEN t.failed IS NOT NULL THEN 'error' WHEN t.n_done = %(n)s THEN 'success'"
            "        WHEN %(in_run)s THEN 'processing' ELSE 'pending' END AS status,"
            "   CASE WHEN t.failed IS NOT NULL THEN left(t.failed || '_failed', 50)"
            "        WHEN t.n_done = %(n)s THEN %(last)s END AS stage,"
            "   t.latest,"
            "   CASE WHEN t.failed IS NOT NULL THEN t.failed || ': ' || coalesce(t.error, 'failed') END"
            "     AS error"
            "   FROM t)"
            " UPDATE {ps} ps SET status = new.status,"
            " current_stage = coalesce(new.stage, new.latest, ps.current_stage),"
            " error_message = new.error, updated_at = now() FROM new"
            " WHERE ps.id = new.process_id AND ps.batch_id = %(batch)s"
            " AND (ps.status, ps.current_stage, ps.error_message) IS DISTINCT FROM"
            " (new.status, coalesce(new.stage, new.latest, ps.current_stage), new.error)"
        ).format(s=db.table("ecod_jobs_item_stage"), ps=db.table("process_status")),
        {
            "names": names,
            "done": done,
            "n": len(names),
            "last": done[-1],
            "in_run": in_run,
            "ids": list(process_ids or []),
            "run": run_id,
            "batch": batch_id,
        },
    )


def settle_pipeline_items(
    db: Database, run_id: str, batch_id: int, stage_order: Sequence[tuple[str, str]]
) -> None:
    """At a pipeline run's end (or its settling): item-stages it still holds as 'running'
    (their chunk never reported) go back to 'pending', and every item it claimed gets its
    final status."""
    with db.transaction() as cur:
        cur.execute(
            sql.SQL(
                "UPDATE {} SET status = 'pending', updated_at = now(),"
                " error_message = 'interrupted: run ' || %(run)s || ' ended before this item-stage did'"
                " WHERE run_id = %(run)s AND status = 'running'"
            ).format(db.table("ecod_jobs_item_stage")),
            {"run": run_id},
        )
        derive_process_status(cur, db, batch_id, stage_order, None, run_id=run_id, in_run=False)


def stage_counts(
    db: Database,
    batch_id: int,
    stages: Sequence[str] | None = None,
    order: Sequence[str] = (),
    total: int | None = None,
) -> dict[str, dict[str, int]]:
    """Items per stage and status; items without a row for a stage count as pending.
    ``stages``: these (default: every stage the batch has rows of, in ``order`` first);
    ``total``: the batch's items, when the caller has counted them already."""
    if (
        stages is None
        and not db.query(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE batch_id = %s)").format(
                db.table("ecod_jobs_item_stage")
            ),
            (batch_id,),
        )[0][0]
    ):
        return {}  # no pipeline ran: one index probe, not a count of the batch's items
    rows = db.query(
        sql.SQL("SELECT stage, status, count(*) FROM {} WHERE batch_id = %s GROUP BY 1, 2").format(
            db.table("ecod_jobs_item_stage")
        ),
        (batch_id,),
    )
    if total is None:
        total = db.query(
            sql.SQL("SELECT count(*) FROM {} WHERE batch_id = %s").format(db.table("process_status")),
            (batch_id,),
        )[0][0]
    counts: dict[str, dict[str, int]] = {}
    for stage, status, n in rows:
        counts.setdefault(stage, {})[status] = int(n)
    names = (
        list(stages)
        if stages is not None
        else [s for s in order if s in counts] + sorted(s for s in counts if s not in order)
    )
    result = {}
    for name in names:
        found = counts.get(name, {})
        row = {k: found.get(k, 0) for k in ("running", "success", "error", "skipped")}
        row["pending"] = int(total) - sum(row.values())
        result[name] = {k: row[k] for k in ("pending", "running", "success", "error", "skipped")}
    return result
