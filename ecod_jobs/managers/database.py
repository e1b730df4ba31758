"""DatabaseJobManager: a job manager whose every job is tracked in PostgreSQL.

It wraps the configured backend (local or SLURM) and writes pyECOD's ``job``,
``job_item`` and ``process_status`` rows:

* ``submit_job`` validates the batch and process ids, inserts the job row and
  one job_item per process id (one bulk statement) and moves those
  process_status rows to ``processing``, submits the script, stores the id the
  backend returned in ``job.slurm_job_id``, and commits: one transaction. If
  the database fails after the scheduler accepted the job (the commit, or the
  connection drops), the job is **cancelled** and ``DatabaseError`` is raised,
  so no job runs untracked; if even the cancel fails, the error names the job
  id to cancel by hand.
* ``check_all_jobs`` polls the batch's unfinished jobs in one round, moves
  finished ones to completed/failed (job and job_item) and success/error
  (process_status) with ``completion_time``, exit code and usage, in one
  transaction, and returns the batch's totals.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from psycopg2 import sql
from psycopg2.extras import execute_values

from .. import states
from ..db import Database, init_schema
from ..exceptions import DatabaseError, ValidationError
from .base import ConfigLike, JobInfo, JobManager, script_file
from .script import read_script_header

log = logging.getLogger(__name__)

_JOB_TYPE_MAX = 50  # job.job_type is VARCHAR(50)
# Seconds a finished job may wait for its accounting record before it is recorded without it.
DETAIL_GRACE = 30.0


def _process_ids(process_ids: Sequence[int] | None) -> list[int]:
    ids: list[int] = []
    for value in process_ids or ():
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValidationError(f"process id {value!r}: expected an integer")
        try:
            ids.append(int(value))
        except ValueError:
            raise ValidationError(f"process id {value!r}: expected an integer") from None
    return list(dict.fromkeys(ids))  # a process appears once per job


def _error_text(info: JobInfo) -> str | None:
    """``'job 123 FAILED: exit status 3'``; None for a job that succeeded."""
    if info.phase is states.Phase.SUCCEEDED:
        return None
    reason = info.reason or ""
    text = reason if reason.startswith(info.state) else f"{info.state}: {reason}".rstrip(": ")
    return f"job {info.job_id} {text}"


class DatabaseJobManager(JobManager):
    """Job manager with PostgreSQL tracking: ``DatabaseJobManager(config_path_or_dict)``."""

    backend = "database"

    def __init__(
        self,
        config_path_or_dict: ConfigLike = None,
        *,
        config_path: str | os.PathLike[str] | None = None,
        job_manager: JobManager | None = None,
    ) -> None:
        # config_path= is the keyword the original's README examples use.
        if config_path is not None and config_path_or_dict is not None:
            raise ValidationError("give the configuration once: config_path_or_dict or config_path")
        super().__init__(config_path if config_path is not None else config_path_or_dict)
        self.db = Database(self.config)
        init_schema(self.db)  # idempotent: a fresh database gets the tables
        if job_manager is None:
            from .factory import create_job_manager  # the factory imports every backend

            job_manager = create_job_manager(self.config)
        self.job_manager = job_manager

    # ----------------------------------------------------------------- delegated to the backend

    def create_job_script(self, commands: Any, job_name: str, output_dir: Any, **options: Any) -> str:
        return self.job_manager.create_job_script(commands, job_name, output_dir, **options)

    def job_info(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        return self.job_manager.job_info(job_ids)

    def _poll(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        return self.job_manager.job_info(job_ids)

    # ----------------------------------------------------------------- submit

    def submit_job(  # type: ignore[override]
        self,
        script_path: str | os.PathLike[str],
        batch_id: int | None = None,
        job_type: str = "generic",
        process_ids: Sequence[int] | None = None,
    ) -> str | None:
        """Submit and record the job, its items and their processing state in one transaction."""
        if not isinstance(job_type, str) or not job_type or len(job_type) > _JOB_TYPE_MAX:
            raise ValidationError(
                f"job_type {job_type!r}: expected a name of 1 to {_JOB_TYPE_MAX} characters"
            )
        ids = _process_ids(process_ids)
        script = script_file(script_path)
        header = read_script_header(script)
        submitted: str | None = None
        try:
            with self.db.transaction() as cur:
                self._check_references(cur, batch_id, ids)
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (batch_id, job_type, status, items_count, submission_time,"
                        " req_mem_mb, req_time_seconds, updated_at)"
                        " VALUES (%s, %s, 'submitted', %s, LOCALTIMESTAMP, %s, %s, LOCALTIMESTAMP)"
                        " RETURNING id"
                    ).format(self.db.table("job")),
                    (batch_id, job_type, len(ids), header.mem_mb, header.time_seconds),
                )
                row_id = int(cur.fetchone()[0])
                if ids:
                    execute_values(
                        cur,
                        sql.SQL("INSERT INTO {} (job_id, process_id, status) VALUES %s")
                        .format(self.db.table("job_item"))
                        .as_string(cur),
                        [(row_id, pid, "pending") for pid in ids],
                        page_size=10_000,
                    )
                    cur.execute(
                        sql.SQL(
                            "UPDATE {} SET status = 'processing', updated_at = LOCALTIMESTAMP"
                            " WHERE id = ANY(%s)"
                        ).format(self.db.table("process_status")),
                        (ids,),
                    )
                # Submit last, inside the transaction: every database error so far
                # happened before the scheduler knew anything.
                submitted = self.job_manager.submit_job(script, batch_id=batch_id)
                cur.execute(
                    sql.SQL("UPDATE {} SET slurm_job_id = %s, scheduler_state = %s WHERE id = %s").format(
                        self.db.table("job")
                    ),
                    (submitted, "PENDING", row_id),
                )
        except BaseException as exc:
            if submitted is not None:
                self._cancel_untracked(submitted, exc)
            raise
        log.info(
            "recorded job %s as job row %d (batch %s, type %s, %d items)",
            submitted,
            row_id,
            batch_id,
            job_type,
            len(ids),
        )
        return submitted

    def _check_references(self, cur: Any, batch_id: int | None, ids: list[int]) -> None:
        """Name a missing batch or process id ourselves, before anything is submitted."""
        if batch_id is not None:
            cur.execute(sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(self.db.table("batch")), (batch_id,))
            if cur.fetchone() is None:
                raise ValidationError(f"batch {batch_id} does not exist", {"batch_id": batch_id})
        if not ids:
            return
        cur.execute(
            sql.SQL("SELECT id, batch_id FROM {} WHERE id = ANY(%s)").format(self.db.table("process_status")),
            (ids,),
        )
        found = dict(cur.fetchall())
        missing = [pid for pid in ids if pid not in found]
        if missing:
            raise ValidationError(
                f"{len(missing)} process ids do not exist in process_status, e.g. {missing[:5]}",
                {"missing": missing[:100]},
            )
        if batch_id is not None:
            other = [pid for pid in ids if found[pid] != batch_id]
            if other:
                raise ValidationError(
                    f"{len(other)} process ids belong to another batch than {batch_id}, e.g. {other[:5]}",
                    {"process_ids": other[:100], "batch_id": batch_id},
                )

    def _cancel_untracked(self, job_id: str, cause: BaseException) -> None:
        """The scheduler has the job but the database does not: cancel it rather than let it run untracked."""
        try:
            self.job_manager.cancel_job(job_id)
        except Exception as cancel_error:
            message = (
                f"job {job_id} was submitted but could not be recorded in the database ({cause}), and "
                f"cancelling it failed too ({cancel_error}): cancel job {job_id} by hand"
            )
            log.error(message)
            raise DatabaseError(message, {"job_id": job_id, "cancelled": False}) from cause
        log.error("job %s was submitted but could not be recorded (%s): cancelled it", job_id, cause)
        if isinstance(cause, DatabaseError):
            raise DatabaseError(
                f"job {job_id} was submitted but could not be recorded in the database, so it was "
                f"cancelled: {cause}",
                {"job_id": job_id, "cancelled": True},
            ) from cause

    # ----------------------------------------------------------------- poll and record

    def _unfinished(self, batch_id: int | None) -> list[tuple[int, str, str | None, float]]:
        """(row id, scheduler id, last state, seconds since its last update) of jobs submitted
        through this API and not finished. Jobs of workflow runs (``run_id`` set) are the
        workflow's to track.
        """
        query = sql.SQL(
            "SELECT id, slurm_job_id, scheduler_state,"
            " extract(epoch FROM LOCALTIMESTAMP - coalesce(updated_at, submission_time, LOCALTIMESTAMP))"
            " FROM {} WHERE status = 'submitted' AND slurm_job_id IS NOT NULL AND run_id IS NULL"
        ).format(self.db.table("job"))
        params: tuple[Any, ...] = ()
        if batch_id is not None:
            query = query + sql.SQL(" AND batch_id = %s")
            params = (batch_id,)
        rows = self.db.query(query + sql.SQL(" ORDER BY id"), params)
        return [(int(r[0]), str(r[1]), r[2], float(r[3] or 0)) for r in rows]

    def check_all_jobs(self, batch_id: int | None = None) -> tuple[int, int, int]:
        """Poll the batch's unfinished jobs, record the finished ones, return the batch's
        totals ``(completed, failed, running)`` from the job table."""
        rows = self._unfinished(batch_id)
        infos = self.job_manager.job_info([scheduler_id for _, scheduler_id, _, _ in rows]) if rows else {}
        finished: list[tuple[int, JobInfo]] = []
        changed: list[tuple[int, JobInfo]] = []
        for row_id, scheduler_id, last, age in rows:
            info = infos.get(scheduler_id) or JobInfo(scheduler_id, "UNKNOWN")
            # Wait a little for accounting to give the exit code and usage, but not forever.
            if info.phase.finished and (info.complete or (info.state == last and age >= DETAIL_GRACE)):
                finished.append((row_id, info))
            elif info.state != last:
                changed.append((row_id, info))
        if finished or changed:
            with self.db.transaction() as cur:
                if finished:
                    self._record_finished(cur, finished)
                if changed:
                    self._record_progress(cur, changed)
        return self._totals(batch_id)

    def _record_finished(self, cur: Any, finished: list[tuple[int, JobInfo]]) -> None:
        values = [
            (
                row_id,
                states.job_status(info.state),
                states.job_item_status(info.state),
                states.process_status(info.state),
                info.state,
                info.exit_code,
                _error_text(info),
                info.node,
                info.start_time,
                info.elapsed_seconds,
                info.cpu_seconds,
                info.max_rss_kb,
            )
            for row_id, info in finished
        ]
        template = (
            "(%s::int, %s::varchar, %s::varchar, %s::varchar, %s::varchar, %s::int, %s::text, %s::varchar,"
            " %s::timestamp, %s::float8, %s::float8, %s::bigint)"
        )
        # job: only rows still 'submitted' (a concurrent poller may have been first)
        execute_values(
            cur,
            sql.SQL(
                "WITH v (id, job_status, item_status, process_status, state, exit_code, error, node,"
                " start_time, elapsed, cpu, rss) AS (VALUES %s),"
                " done_jobs AS (UPDATE {job} AS j SET status = v.job_status, scheduler_state = v.state,"
                "   exit_code = v.exit_code, error_text = v.error, node = coalesce(v.node, j.node),"
                "   start_time = coalesce(v.start_time, j.start_time), elapsed_seconds = v.elapsed,"
                "   cpu_seconds = v.cpu, max_rss_kb = v.rss, completion_time = LOCALTIMESTAMP,"
                "   updated_at = LOCALTIMESTAMP"
                "   FROM v WHERE j.id = v.id AND j.status = 'submitted' RETURNING j.id),"
                " done_items AS (UPDATE {item} AS i SET status = v.item_status, exit_code = v.exit_code,"
                "   end_time = LOCALTIMESTAMP, error_text = v.error"
                "   FROM v JOIN done_jobs ON done_jobs.id = v.id"
                "   WHERE i.job_id = v.id AND i.status = 'pending'"
                "   RETURNING i.process_id, v.process_status, v.error)"
                " UPDATE {process} AS p SET status = done_items.process_status,"
                "   error_message = done_items.error,"
                "   updated_at = LOCALTIMESTAMP"
                " FROM done_items WHERE p.id = done_items.process_id AND p.status = 'processing'"
            )
            .format(
                job=self.db.table("job"),
                item=self.db.table("job_item"),
                process=self.db.table("process_status"),
            )
            .as_string(cur),
            values,
            template=template,
            page_size=10_000,
        )
        for row_id, info in finished:
            log.log(
                logging.INFO if info.phase is states.Phase.SUCCEEDED else logging.WARNING,
                "job row %d (%s) finished %s%s",
                row_id,
                info.job_id,
                info.state,
                f": {info.reason}" if info.reason else "",
            )

    def _record_progress(self, cur: Any, changed: list[tuple[int, JobInfo]]) -> None:
        execute_values(
            cur,
            sql.SQL(
                "UPDATE {} AS j SET scheduler_state = v.state, node = coalesce(v.node, j.node),"
                " start_time = coalesce(v.start_time, j.start_time), error_text = v.reason,"
                " updated_at = LOCALTIMESTAMP"
                " FROM (VALUES %s) AS v (id, state, node, start_time, reason)"
                " WHERE j.id = v.id AND j.status = 'submitted'"
            )
            .format(self.db.table("job"))
            .as_string(cur),
            [
                (
                    row_id,
                    info.state,
                    info.node,
                    info.start_time,
                    info.reason if info.phase is states.Phase.UNKNOWN else None,
                )
                for row_id, info in changed
            ],
            template="(%s::int, %s::varchar, %s::varchar, %s::timestamp, %s::text)",
        )
        for row_id, info in changed:
            if info.phase is states.Phase.UNKNOWN:
                log.warning(
                    "job row %d (%s) is UNKNOWN to the scheduler: %s", row_id, info.job_id, info.reason
                )

    def _totals(self, batch_id: int | None) -> tuple[int, int, int]:
        query = sql.SQL("SELECT status, count(*) FROM {}").format(self.db.table("job"))
        params: tuple[Any, ...] = ()
        if batch_id is not None:
            query = query + sql.SQL(" WHERE batch_id = %s")
            params = (batch_id,)
        counts = dict(self.db.query(query + sql.SQL(" GROUP BY status"), params))
        completed = int(counts.pop("completed", 0))
        failed = int(counts.pop("failed", 0))
        return completed, failed, int(sum(counts.values()))

    # ----------------------------------------------------------------- cancel

    def cancel_job(self, job_id: str) -> bool:
        """Cancel through the backend and record it (job failed/CANCELLED, items failed, processes error).

        A job that had already completed before the cancel is recorded as completed.
        """
        result = self.job_manager.cancel_job(job_id)
        if not result:
            return False
        info = self.job_manager.job_info([str(job_id)]).get(str(job_id))
        if info is None or not info.phase.finished:
            # SLURM may still say RUNNING/COMPLETING for a moment after scancel
            info = JobInfo(str(job_id), "CANCELLED", reason="cancelled by user")
        elif info.state == "CANCELLED":
            info = replace(info, reason="cancelled by user")
        rows = self.db.query(
            sql.SQL(
                "SELECT id FROM {} WHERE slurm_job_id = %s AND status = 'submitted' AND run_id IS NULL"
            ).format(self.db.table("job")),
            (str(job_id),),
        )
        if rows:
            with self.db.transaction() as cur:
                self._record_finished(cur, [(int(r[0]), info) for r in rows])
        return True

    # ----------------------------------------------------------------- batch scoping for the base

    def _jobs_for(self, batch_id: int | None) -> list[str]:
        return [scheduler_id for _, scheduler_id, _, _ in self._unfinished(batch_id)]


__all__ = ["DatabaseJobManager"]
