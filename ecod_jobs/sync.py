"""Bring PostgreSQL in line with a run's files: the one reconciliation used everywhere.

The chunk result files are the truth; the database is a view of them. The same
code records a chunk live (from the logger plugin as each chunk job ends),
reconciles a whole run in ``onsuccess``/``onerror``, and rebuilds everything in
``ecod-jobs sync`` (after a head-node crash, a database outage, or deleted
rows). It is idempotent: job rows are keyed by (run, chunk, attempt), each item's
job_item row of the run is updated in place (or written again if missing), and
process_status follows the newest result.

Recording goes files -> rows -> database: :func:`read_chunk` reads a chunk's
files, :mod:`ecod_jobs.sync_rows` turns them into named rows (pure functions,
where every decision about statuses lives), and :func:`write_rows` writes them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any

import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import execute_values

from . import run_record
from .db import Database
from .db.bulk import copy_rows, copy_value
from .layout import BatchLayout, RunLayout, read_jsonl
from .plan_file import Plan
from .states import PROCESS_DONE, Liveness, RunStatus, is_failure, normalize_state
from .sync_rows import ChunkRows, ChunkState, JobItemRow, JobRow, RunInfo, rows_for_chunks

log = logging.getLogger(__name__)


def read_chunk(
    layout: RunLayout, chunk: str, attempts: dict[int, dict[str, Any]] | None = None
) -> ChunkState:
    """What the files of ``chunk`` say (``attempts``: its attempt records, when the caller
    has already read every chunk's at once)."""
    final = layout.result(chunk)
    finished = final.exists()
    results = {r["process_id"]: r for r in read_jsonl(final if finished else layout.partial(chunk))}
    misrouted = None
    if (
        any(r.get("chunk_id") not in (None, chunk) for r in results.values())
        or layout.misrouted(chunk).exists()
    ):
        # never record another chunk's results as this one's: the chunk failed, loudly
        misrouted = layout.misrouted_reason(chunk) or f"results of another chunk in the files of {chunk}"
        finished, results = False, {}
    # A final result holds every item of the manifest (the runner writes it last):
    # no need to read the manifest again, which halves the reading of a large sync.
    manifest = layout.manifest(chunk)
    items = [{"process_id": pid} for pid in results] if finished else list(read_jsonl(manifest))
    if attempts is None:
        attempts = layout.attempts(chunk)
    return ChunkState(chunk, attempts, results, finished, items, misrouted)


def record_chunks(
    db: Database,
    layout: RunLayout,
    plan: Plan,
    chunks: Iterable[str],
    *,
    run_over: bool,
    failed_chunks: Sequence[str] = (),
    interrupted: bool = False,
) -> int:
    """Record chunks' jobs, job items and item statuses in one transaction.

    ``run_over``: no attempt is still running (the run ended or died), so a chunk
    without its final result has failed. ``failed_chunks``: chunks whose latest
    attempt is known to have failed (Snakemake reported the job's error) even
    though the run goes on. ``interrupted``: the run died (head node crash, kill):
    items it never reached go back to ``pending`` for the next run instead of
    ``error``. Returns the number of items given a final status.
    """
    chunks = list(chunks)
    attempts = layout.attempts_by_chunk() if len(chunks) > 1 else None
    states = [read_chunk(layout, c, None if attempts is None else attempts.get(c, {})) for c in chunks]
    if not states:
        return 0
    run = RunInfo(layout.run_id, plan.batch_id, plan.job_type, plan.stage)
    rows = rows_for_chunks(
        states, run, run_over=run_over, failed_chunks=failed_chunks, interrupted=interrupted
    )
    stage = None
    if plan.pipeline_stage:  # a stage window of a pipeline run (ecod_jobs.pipeline_sync)
        stage = {
            "run_id": layout.run_id,
            "batch_id": plan.batch_id,
            "stage": plan.pipeline_stage,
            "stage_order": plan.stage_order,
            "records": [r for state in states for r in state.results.values()],
            "run_over": run_over,
        }
    write_rows(db, rows, stage)
    return sum(chunk.settled for chunk in rows)


# --------------------------------------------------------------------------- the writer


def write_rows(db: Database, chunks: Sequence[ChunkRows], stage: Mapping[str, Any] | None = None) -> None:
    """Write the rows of some chunks of one run in one transaction: upsert the job rows,
    then bring each item's job_item row of the run and its process_status row in line
    (for a pipeline ``stage``: its item-stages, process_file, and the status derived from
    them). Idempotent: writing the same rows again changes nothing."""
    jobs = [job for chunk in chunks for job in chunk.job_rows()]
    if not jobs:
        return
    with db.transaction() as cur:
        job_of = _upsert_jobs(cur, db, jobs)
        # item rows are made as COPY takes them (see ChunkRows)
        staged = _stage_items(cur, chain.from_iterable(chunk.item_rows() for chunk in chunks), job_of)
        run_jobs = sorted(job_of.values())
        _update_job_items(cur, db, run_jobs)
        _insert_missing_job_items(cur, db, run_jobs, staged)
        if stage is None:
            _update_process_status(cur, db, chunks[0].run.batch_id)
        else:
            from .pipeline_sync import write_stage_items

            write_stage_items(cur, db, **stage)


def _upsert_jobs(
    cur: psycopg2.extensions.cursor, db: Database, jobs: Sequence[JobRow]
) -> dict[tuple[str, int], int]:
    """Insert or update the job rows (keyed by run, chunk, attempt); returns their ids by
    (chunk, attempt). A known value is never replaced by an unknown one, and a failed
    attempt keeps the first error it was given."""
    job_ids = execute_values(
        cur,
        sql.SQL(
            "INSERT INTO {} AS j (batch_id, job_type, run_id, chunk_id, attempt, status, items_count,"
            " slurm_job_id, node, start_time, completion_time, elapsed_seconds, cpu_seconds,"
            " max_rss_kb, error_text, exit_code, updated_at) VALUES %s"
            " ON CONFLICT (run_id, chunk_id, attempt) WHERE run_id IS NOT NULL DO UPDATE SET"
            " status = EXCLUDED.status, items_count = EXCLUDED.items_count,"
            " slurm_job_id = coalesce(EXCLUDED.slurm_job_id, j.slurm_job_id),"
            " node = coalesce(EXCLUDED.node, j.node),"
            " start_time = coalesce(EXCLUDED.start_time, j.start_time),"
            " completion_time = coalesce(EXCLUDED.completion_time, j.completion_time,"
            "   CASE WHEN EXCLUDED.status = 'failed' THEN now() END),"
            " elapsed_seconds = coalesce(EXCLUDED.elapsed_seconds, j.elapsed_seconds),"
            " cpu_seconds = coalesce(EXCLUDED.cpu_seconds, j.cpu_seconds),"
            " max_rss_kb = coalesce(EXCLUDED.max_rss_kb, j.max_rss_kb),"
            " error_text = CASE WHEN EXCLUDED.status = 'failed' THEN"
            "   coalesce(j.error_text, EXCLUDED.error_text) ELSE EXCLUDED.error_text END,"
            " exit_code = coalesce(EXCLUDED.exit_code, j.exit_code), updated_at = now()"
            " RETURNING chunk_id, attempt, id"
        )
        .format(db.table("job"))
        .as_string(cur),
        jobs,  # a JobRow's fields are in the order of the columns
        template="(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())",
        page_size=1000,
        fetch=True,
    )
    return {(chunk, attempt): job_id for chunk, attempt, job_id in job_ids}


_NULL = "\\N"
_ITEM_COLUMNS = (
    "process_id",
    "job_id",
    "ji_status",
    "ps_status",
    "stage",
    "exit_code",
    "start_time",
    "end_time",
    "elapsed",
    "error",
)


def _item_fields(row: JobItemRow, job_id: int) -> list[str]:
    """One ``_ecod_items`` row (:data:`_ITEM_COLUMNS`) as COPY fields; a million of them per
    large sync, so only the free-text fields go through :func:`copy_value`."""
    return [
        str(row.process_id),
        str(job_id),
        row.status,
        _NULL if row.process_status is None else row.process_status,
        copy_value(row.stage),
        _NULL if row.exit_code is None else str(int(row.exit_code)),
        copy_value(row.start),
        copy_value(row.end),
        _NULL if row.seconds is None else str(float(row.seconds)),
        copy_value(row.error),
    ]


def _stage_items(
    cur: psycopg2.extensions.cursor, items: Iterable[JobItemRow], job_of: Mapping[tuple[str, int], int]
) -> int:
    """COPY the item rows, each with its attempt's job id, into the temp table ``_ecod_items``
    that the statements below join against; returns their number."""
    cur.execute(
        "CREATE TEMP TABLE _ecod_items (process_id int, job_id int, ji_status text,"
        " ps_status text, stage text, exit_code int, start_time timestamptz, end_time timestamptz,"
        " elapsed double precision, error text) ON COMMIT DROP"
    )
    staged = copy_rows(
        cur,
        sql.Identifier("_ecod_items"),
        _ITEM_COLUMNS,
        (_item_fields(r, job_of[(r.chunk_id, r.attempt)]) for r in items),
        preformatted=True,
    )
    cur.execute("ANALYZE _ecod_items")  # a temp table has no statistics: hash joins, not loops
    return staged


def _update_job_items(cur: psycopg2.extensions.cursor, db: Database, run_jobs: list[int]) -> None:
    # Each item's job_item row of this run moves to the attempt that produced its
    # result, with that result: updated in place (no foreign-key checks unless the
    # attempt changed), and only where something changed, so a second sync of the
    # same files writes nothing.
    cur.execute(
        sql.SQL(
            "UPDATE {} ji SET job_id = n.job_id, status = n.ji_status, exit_code = n.exit_code,"
            " start_time = n.start_time, end_time = n.end_time, elapsed_seconds = n.elapsed,"
            " error_text = n.error FROM _ecod_items n"
            " WHERE ji.process_id = n.process_id AND ji.job_id = ANY(%(jobs)s)"
            " AND (ji.job_id, ji.status, ji.exit_code, ji.start_time, ji.end_time, ji.elapsed_seconds,"
            " ji.error_text) IS DISTINCT FROM (n.job_id, n.ji_status, n.exit_code,"
            " n.start_time::timestamp, n.end_time::timestamp, n.elapsed, n.error)"
        ).format(db.table("job_item")),
        {"jobs": run_jobs},
    )


def _insert_missing_job_items(
    cur: psycopg2.extensions.cursor, db: Database, run_jobs: list[int], expected: int
) -> None:
    # Rows that are missing (deleted by hand, or never planned) are written anew;
    # the usual case, none missing, costs one index count instead of an anti-join.
    cur.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE job_id = ANY(%s)").format(db.table("job_item")),
        (run_jobs,),
    )
    if cur.fetchone()[0] < expected:
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (job_id, process_id, status, exit_code, start_time, end_time,"
                " elapsed_seconds, error_text)"
                " SELECT n.job_id, n.process_id, n.ji_status, n.exit_code, n.start_time, n.end_time,"
                " n.elapsed, n.error FROM _ecod_items n WHERE NOT EXISTS"
                " (SELECT 1 FROM {} ji WHERE ji.process_id = n.process_id AND ji.job_id = ANY(%(jobs)s))"
            ).format(db.table("job_item"), db.table("job_item")),
            {"jobs": run_jobs},
        )


def _update_process_status(cur: psycopg2.extensions.cursor, db: Database, batch_id: int) -> None:
    # Only items with a new process status, and only where it changes something.
    cur.execute(
        sql.SQL(
            "UPDATE {} ps SET status = t.ps_status, current_stage = coalesce(t.stage, ps.current_stage),"
            " error_message = CASE WHEN t.ps_status = 'error' THEN t.error END,"
            " updated_at = now() FROM _ecod_items t"
            " WHERE ps.id = t.process_id AND ps.batch_id = %s AND t.ps_status IS NOT NULL"
            " AND (ps.status IS DISTINCT FROM t.ps_status"
            "      OR ps.error_message IS DISTINCT FROM CASE WHEN t.ps_status = 'error' THEN t.error END"
            "      OR ps.current_stage IS DISTINCT FROM coalesce(t.stage, ps.current_stage))"
        ).format(db.table("process_status")),
        (batch_id,),
    )


# --------------------------------------------------------------------------- scheduler detail


def enrich_from_scheduler(db: Database, run_id: str) -> int:
    """Fill state, exit code, node, elapsed, CPU and peak memory from sacct (one call)."""
    from . import slurm_commands

    rows = db.query(
        sql.SQL("SELECT id, slurm_job_id FROM {} WHERE run_id = %s AND slurm_job_id IS NOT NULL").format(
            db.table("job")
        ),
        (run_id,),
    )
    if not rows or not slurm_commands.available("sacct"):
        return 0
    try:
        records = slurm_commands.sacct_records([r[1] for r in rows])
    except Exception as exc:  # accounting may be disabled: the files already gave us the basics
        log.warning("sacct unavailable, keeping runner-measured figures: %s", exc)
        return 0
    updates = []
    for job_id, slurm_id in rows:
        rec = records.get(slurm_id)
        if rec is None:
            continue
        state = normalize_state(rec.state)
        updates.append(
            (
                job_id,
                state,
                rec.exit_code if not rec.signal else 128 + rec.signal,
                rec.node,
                rec.elapsed_seconds,
                rec.cpu_seconds,
                rec.max_rss_kb,
                rec.req_mem_mb,
                rec.timelimit_seconds,
                _scheduler_error(state, rec) if is_failure(state) else None,
            )
        )
    if not updates:
        return 0
    with db.transaction() as cur:
        execute_values(
            cur,
            sql.SQL(
                "UPDATE {} j SET scheduler_state = v.state, exit_code = v.exit_code,"
                " node = coalesce(v.node, j.node), elapsed_seconds = coalesce(v.elapsed, j.elapsed_seconds),"
                " cpu_seconds = coalesce(v.cpu, j.cpu_seconds),"
                " max_rss_kb = greatest(v.rss, j.max_rss_kb),"
                " req_mem_mb = coalesce(v.req_mem, j.req_mem_mb),"
                " req_time_seconds = coalesce(v.req_time, j.req_time_seconds),"
                " error_text = CASE WHEN v.error IS NOT NULL AND j.status = 'failed'"
                "   THEN v.error || ': ' || coalesce(j.error_text, '') ELSE j.error_text END,"
                " updated_at = now()"
                " FROM (VALUES %s) AS v (id, state, exit_code, node, elapsed, cpu, rss, req_mem, req_time,"
                " error)"
                " WHERE j.id = v.id"
            )
            .format(db.table("job"))
            .as_string(cur),
            updates,
            template="(%s::int, %s::text, %s::int, %s::text, %s::float8, %s::float8, %s::bigint,"
            " %s::int, %s::int, %s::text)",
        )
    return len(updates)


def _scheduler_error(state: str, rec: Any) -> str:
    """``TIMEOUT (exit 0:15)``; names SLURM's own spelling when ours differs."""
    raw = f", SLURM says {rec.raw_state}" if rec.raw_state and normalize_state(rec.raw_state) != state else ""
    return f"{state} (exit {rec.exit_code}:{rec.signal}{raw})"


# --------------------------------------------------------------------------- runs and batches


def update_batch_totals(db: Database, batch_id: int) -> tuple[int, int]:
    """Set batch.completed_items (success + skipped) and completed status; returns (done, total)."""
    with db.transaction() as cur:
        cur.execute(
            sql.SQL(
                "SELECT coalesce(sum(items) FILTER (WHERE status = ANY(%s)), 0), coalesce(sum(items), 0)"
                " FROM {} WHERE batch_id = %s"
            ).format(db.table("ecod_jobs_status_count")),
            (sorted(PROCESS_DONE), batch_id),
        )
        done, total = cur.fetchone()
        cur.execute(
            sql.SQL(
                "UPDATE {} SET completed_items = %s,"
                " status = CASE WHEN %s = total_items AND %s > 0 THEN 'completed'"
                "   WHEN status = 'completed' THEN 'processing' ELSE status END,"
                " completed_at = CASE WHEN %s = total_items AND %s > 0 THEN coalesce(completed_at, now())"
                "   ELSE NULL END WHERE id = %s"
            ).format(db.table("batch")),
            (done, done, done, done, done, batch_id),
        )
    return int(done), int(total)


def reconcile_run(
    db: Database, layout: RunLayout, *, run_over: bool = True, interrupted: bool = False
) -> dict[str, int]:
    """Record every chunk of a run from its files, then the scheduler's detail and batch totals."""
    chunks = settled = 0
    batch_id = None
    for unit in layout.planned_units():  # the run, or each stage window of a pipeline run
        plan = Plan.read(unit)
        batch_id = plan.batch_id
        settled += record_chunks(db, unit, plan, plan.chunk_ids(), run_over=run_over, interrupted=interrupted)
        chunks += len(plan.chunks)
    if layout.is_pipeline:
        from .pipeline_plan import PipelinePlan
        from .pipeline_sync import settle_pipeline_items

        pipeline = PipelinePlan.read(layout)
        batch_id = pipeline.batch_id
        if run_over:
            settle_pipeline_items(db, layout.run_id, batch_id, pipeline.stage_order)
    enrich_from_scheduler(db, layout.run_id)
    done, total = update_batch_totals(db, batch_id) if batch_id is not None else (0, 0)
    return {"chunks": chunks, "settled": settled, "done": done, "total": total}


def finish_run(db: Database, run: RunLayout, batch_id: int, success: bool) -> dict[str, Any]:
    """Reconcile a run that ended and close its run row; returns the reconcile summary and message."""
    from .db import status_counts

    if not run.plan.exists() and not run.is_pipeline:  # failed before planning, or plan.json removed
        message = "the run ended before it was planned"
        if handed_back := release_unstarted_items(db, run.run_id):
            message += f"; its {handed_back} items are pending again"
        run_record.close(db, run.run_id, RunStatus.ERROR, message)
        return {"chunks": 0, "settled": 0, "message": message}
    # A run that failed before any chunk started (no attempt file) did nothing to its
    # items: they go back to 'pending', as a dead run's do, instead of 'error'.
    unstarted = not success and not any(unit.attempts_by_chunk() for unit in run.planned_units())
    if unstarted:
        from .recovery import cancel_slurm_jobs

        cancel_slurm_jobs(db, run)  # a task starting after its items were handed back would run them twice
    summary: dict[str, Any] = dict(reconcile_run(db, run, run_over=True, interrupted=unstarted))
    by_status = status_counts(db, batch_id, run.run_id)
    failed_items = by_status.get("error", 0)
    status = RunStatus.SUCCESS if success and not failed_items else RunStatus.ERROR
    message = f"{by_status.get('success', 0)} succeeded, {failed_items} failed of {summary['settled']} items"
    if run.is_pipeline:  # settled counts item-stages there; the statuses are items'
        from .pipeline_plan import PipelinePlan

        planned = PipelinePlan.read(run)
        message = (
            f"{by_status.get('success', 0)} succeeded, {failed_items} failed of {planned.items} items"
            f" ({summary['settled']} item-stages ended)"
        )
    if unstarted:
        message = f"the run ended before any chunk started; its {summary['chunks']} chunks' items are pending"
    if misrouted := run.misrouted_reasons():
        status, message = RunStatus.ERROR, f"{message}; stopped: {misrouted[0]}"
    run_record.close(db, run.run_id, status, message)
    return {**summary, "message": message}


def sync_batch(
    db: Database, config: Mapping[str, Any], batch_id: int, job_type: str | None = None
) -> dict[str, Any]:
    """Rebuild the batch's job, job_item and process_status rows from every run's files."""
    from .ownership import owned_runs

    work_root = config["pipeline"].get("work_root", ".ecod_jobs/work")
    types = (
        [job_type]
        if job_type
        else sorted(
            p.name for p in (BatchLayout.create(work_root, batch_id, "x").root.parent).glob("*") if p.is_dir()
        )
    )
    report: dict[str, Any] = {"batch_id": batch_id, "runs": 0, "chunks": 0, "settled": 0, "finished_runs": 0}
    for name in types:
        # only this database's runs: a work root may be shared (see ownership.py)
        for run in owned_runs(db, BatchLayout.create(work_root, batch_id, name), batch_id, name):
            state = run_record.liveness(db, run.run_id)
            if state is Liveness.DEAD or (state is Liveness.ALIVE and run.read_ended() is not None):
                # it died, or it ended while the database was away: settle it, once
                from .recovery import settle_run

                result = settle_run(db, run, batch_id)
                report["finished_runs"] += result["ended"]
            else:
                result = reconcile_run(db, run, run_over=state is Liveness.ENDED)
            report["runs"] += 1
            report["chunks"] += result["chunks"]
            report["settled"] += result["settled"]
    done, total = update_batch_totals(db, batch_id)
    report.update(done=done, total=total)
    return report


def release_unstarted_items(db: Database, run_id: str) -> int:
    """Hand back the items a run took without a plan file to run them by: its plan
    committed but ``plan.json`` is gone (Snakemake deletes a failed checkpoint's
    output). Its items go back to ``pending``, its jobs and job items to ``failed``.
    Returns the number of items handed back."""
    with db.transaction() as cur:
        cur.execute(
            sql.SQL(
                "UPDATE {ps} ps SET status = 'pending', updated_at = now(),"
                " error_message = 'interrupted: run ' || %(run)s || ' ended before its chunks started'"
                " FROM {ji} ji JOIN {job} j ON j.id = ji.job_id"
                " WHERE j.run_id = %(run)s AND ji.process_id = ps.id AND ps.status = 'processing'"
            ).format(ps=db.table("process_status"), ji=db.table("job_item"), job=db.table("job")),
            {"run": run_id},
        )
        handed_back = cur.rowcount
        cur.execute(
            sql.SQL(
                "UPDATE {ji} ji SET status = 'failed', error_text = 'the run ended before its chunks started'"
                " FROM {job} j WHERE j.id = ji.job_id AND j.run_id = %(run)s AND ji.status = 'pending'"
            ).format(ji=db.table("job_item"), job=db.table("job")),
            {"run": run_id},
        )
        cur.execute(
            sql.SQL(
                "UPDATE {} SET status = 'failed', completion_time = now(), updated_at = now(),"
                " error_text = 'the run ended before its chunks started'"
                " WHERE run_id = %s AND status = 'submitted'"
            ).format(db.table("job")),
            (run_id,),
        )
    return int(handed_back)
