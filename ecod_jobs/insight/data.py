"""What the report and the dashboard show, read from PostgreSQL as JSON-ready dicts.

Every function is bounded whatever the batch size: item counts come from the
count table kept by triggers (schema version 5), chunk jobs and failed items are
read with limits, and only the report's slowest-items list scans a batch's items.
The one exception is :func:`stage_view`, for batches that ran a pipeline: its
counts per stage and status read the batch's item-stages (an index-only scan of
``ecod_jobs_item_stage_batch_idx``), as ``ecod-jobs status`` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from psycopg2 import sql

from .. import run_record
from ..config import seconds_to_time
from ..db import Database, job_counts, ordered_counts, require_batch, status_counts
from ..db import require_schema as require_db_schema
from ..exceptions import ConfigurationError
from ..pipelines import pipeline_spec, stage_order
from ..plan import resolve_item_path
from ..run_record import LEASE_SECONDS

MIN_SCHEMA = 5  # ecod_jobs_status_count
JOB_LIMIT = 5000  # the latest chunk jobs shown in plots and tables
FAILURE_SAMPLE = 10_000  # failed items read to group errors
FAILURE_GROUPS = 20
PATHS_PER_GROUP = 5
# Scheduler states that say the request was too small for the chunk.
TOO_LITTLE_TIME = frozenset({"TIMEOUT", "DEADLINE"})
TOO_LITTLE_MEMORY = frozenset({"OUT_OF_MEMORY", "OUT_OF_ME+"})
MEMORY_STEP_MB = 256
MEMORY_HEADROOM = 1.25
TIME_HEADROOM = 1.5


def require_schema(db: Database) -> Database:
    """The database, once its schema has the count table these views read (version 5)."""
    return require_db_schema(db, MIN_SCHEMA, "reports and the dashboard")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _progress(counts: Mapping[str, int]) -> dict[str, Any]:
    """Items finished (success, error or skipped) of all; the bar and the figures."""
    by_status = ordered_counts(dict(counts))
    total = sum(by_status.values())
    finished = by_status["success"] + by_status["error"] + by_status["skipped"]
    return {
        "by_status": by_status,
        "total": total,
        "finished": finished,
        "progress": finished / total if total else 0.0,
        "progress_percent": round(100 * finished / total, 1) if total else 0.0,
    }


def batches(db: Database, limit: int = 500) -> list[dict[str, Any]]:
    """The latest batches with their counts and whether a run is live (one query)."""
    rows = db.query(
        sql.SQL(
            "SELECT b.id, b.batch_name, b.type, b.status, b.total_items, b.created_at, c.counts, l.live"
            " FROM {batch} b"
            " LEFT JOIN LATERAL (SELECT json_object_agg(status, items) AS counts FROM {counts}"
            "   WHERE batch_id = b.id AND items <> 0) c ON true"
            " LEFT JOIN LATERAL (SELECT count(*) AS live FROM {lease}"
            "   WHERE batch_id = b.id AND heartbeat_at > now() - make_interval(secs => %s)) l ON true"
            " ORDER BY b.id DESC LIMIT %s"
        ).format(
            batch=db.table("batch"),
            counts=db.table("ecod_jobs_status_count"),
            lease=db.table("ecod_jobs_lease"),
        ),
        (LEASE_SECONDS, limit),
    )
    return [
        {
            "id": bid,
            "name": name,
            "type": btype,
            "status": status,
            "created_at": _iso(created),
            "active": bool(live),
            **_progress(counts or {}),
            "registered_items": total_items,
        }
        for bid, name, btype, status, total_items, created, counts, live in rows
    ]


def runs(db: Database, batch_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """Run provenance, newest first: who ran what where, with which tools and config."""
    return run_record.history(db, batch_id, limit)


def chunk_jobs(db: Database, batch_id: int, limit: int = JOB_LIMIT) -> list[dict[str, Any]]:
    """The batch's latest chunk jobs (one per chunk and attempt), oldest first."""
    rows = db.query(
        sql.SQL(
            "SELECT id, run_id, job_type, chunk_id, attempt, status, scheduler_state, slurm_job_id, node,"
            " items_count, start_time, coalesce(completion_time, start_time"
            "   + make_interval(secs => elapsed_seconds)), elapsed_seconds, cpu_seconds, max_rss_kb,"
            " req_mem_mb, req_time_seconds, exit_code, error_text"
            " FROM {} WHERE batch_id = %s ORDER BY id DESC LIMIT %s"
        ).format(db.table("job")),
        (batch_id, limit),
    )
    jobs = []
    for (
        jid, run_id, job_type, chunk, attempt, status, state, slurm_id, node, items, start, end, elapsed,
        cpu, rss_kb, req_mem, req_time, exit_code, error,
    ) in reversed(rows):  # fmt: skip
        jobs.append(
            {
                "id": jid,
                "run_id": str(run_id) if run_id else None,
                "job_type": job_type,
                "chunk_id": chunk,
                "attempt": attempt,
                "status": status,
                "scheduler_state": state,
                "slurm_job_id": slurm_id,
                "node": node,
                "items": items,
                "start": _iso(start),
                "end": _iso(end),
                "elapsed_seconds": elapsed,
                "cpu_seconds": cpu,
                "max_rss_mb": round(rss_kb / 1024, 1) if rss_kb is not None else None,
                "req_mem_mb": req_mem,
                "req_time_seconds": req_time,
                "exit_code": exit_code,
                "error": error,
            }
        )
    return jobs


def failures(
    db: Database, batch_id: int, base_path: str, failed_total: int, sample: int = FAILURE_SAMPLE
) -> dict[str, Any]:
    """Failed items grouped by error message (largest group first), each with some paths.

    Groups are made from the first ``sample`` failed items by id, so a batch where
    everything failed still answers at once; ``sampled`` says how many were read.
    """
    rows = db.query(
        sql.SQL(
            "WITH f AS (SELECT id, relative_path, current_stage, error_message FROM {}"
            "   WHERE batch_id = %s AND status = 'error' ORDER BY id LIMIT %s)"
            " SELECT coalesce(error_message, ''), count(*), min(current_stage),"
            "  (array_agg(id ORDER BY id))[1:%s], (array_agg(relative_path ORDER BY id))[1:%s]"
            " FROM f GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT %s"
        ).format(db.table("process_status")),
        (batch_id, sample, PATHS_PER_GROUP, PATHS_PER_GROUP, FAILURE_GROUPS),
    )
    groups = [
        {
            "error": error,
            "count": int(count),
            "stage": stage,
            "items": [
                {"process_id": pid, "path": resolve_item_path(rel, base_path)}
                for pid, rel in zip(ids, paths, strict=True)
            ],
        }
        for error, count, stage, ids, paths in rows
    ]
    return {"failed": failed_total, "sampled": min(failed_total, sample), "groups": groups}


def failed_items(
    db: Database, batch_id: int, base_path: str, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """A page of the batch's failed items with their errors, by id."""
    rows = db.query(
        sql.SQL(
            "SELECT id, relative_path, current_stage, error_message, updated_at FROM {}"
            " WHERE batch_id = %s AND status = 'error' ORDER BY id LIMIT %s OFFSET %s"
        ).format(db.table("process_status")),
        (batch_id, limit, offset),
    )
    return [
        {
            "process_id": pid,
            "path": resolve_item_path(rel, base_path),
            "stage": stage,
            "error": error,
            "updated_at": _iso(updated),
        }
        for pid, rel, stage, error, updated in rows
    ]


def slowest_items(db: Database, batch_id: int, base_path: str, limit: int = 10) -> list[dict[str, Any]]:
    """The items that took longest in any run of the batch (reads all its job items: report only)."""
    rows = db.query(
        sql.SQL(
            "SELECT ji.process_id, ps.relative_path, ji.elapsed_seconds, ji.status, j.chunk_id, j.attempt,"
            " j.node FROM {ji} ji JOIN {job} j ON j.id = ji.job_id JOIN {ps} ps ON ps.id = ji.process_id"
            " WHERE j.batch_id = %s AND ji.elapsed_seconds IS NOT NULL"
            " ORDER BY ji.elapsed_seconds DESC, ji.process_id LIMIT %s"
        ).format(ji=db.table("job_item"), job=db.table("job"), ps=db.table("process_status")),
        (batch_id, limit),
    )
    return [
        {
            "process_id": pid,
            "path": resolve_item_path(rel, base_path),
            "seconds": elapsed,
            "status": status,
            "chunk_id": chunk,
            "attempt": attempt,
            "node": node,
        }
        for pid, rel, elapsed, status, chunk, attempt, node in rows
    ]


def slowest_chunks(jobs: Sequence[Mapping[str, Any]], limit: int = 10) -> list[Mapping[str, Any]]:
    timed = [j for j in jobs if j["elapsed_seconds"] is not None]
    return sorted(timed, key=lambda j: (-j["elapsed_seconds"], j["id"]))[:limit]


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def resource_fit(jobs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Runtime and peak memory of the chunks against their requests, and what to ask next time.

    Suggested memory: the largest peak seen times 1.25, rounded up to 256 MB;
    suggested time: the longest chunk times 1.5, rounded up to a minute. A chunk
    killed for running out of either means the request was too small: the
    suggestion is then at least twice the largest request that was killed.
    """
    finished = [j for j in jobs if j["status"] == "completed"]
    elapsed = [float(j["elapsed_seconds"]) for j in finished if j["elapsed_seconds"] is not None]
    rss = [float(j["max_rss_mb"]) for j in finished if j["max_rss_mb"] is not None]
    killed_time = [j["req_time_seconds"] for j in jobs if (j["scheduler_state"] or "") in TOO_LITTLE_TIME]
    killed_mem = [j["req_mem_mb"] for j in jobs if (j["scheduler_state"] or "") in TOO_LITTLE_MEMORY]
    req_time = [j["req_time_seconds"] for j in jobs if j["req_time_seconds"]]
    req_mem = [j["req_mem_mb"] for j in jobs if j["req_mem_mb"]]

    def summary(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"n": 0, "median": None, "p95": None, "max": None}
        return {
            "n": len(values),
            "median": _quantile(values, 0.5),
            "p95": _quantile(values, 0.95),
            "max": max(values),
        }

    suggested_time = None
    if elapsed or killed_time:
        seconds = max(elapsed, default=0) * TIME_HEADROOM
        seconds = max(seconds, 2 * max((t for t in killed_time if t), default=0))
        suggested_time = max(60, math.ceil(seconds / 60) * 60)
    suggested_mem = None
    if rss or killed_mem:
        mb = max(rss, default=0) * MEMORY_HEADROOM
        mb = max(mb, 2 * max((m for m in killed_mem if m), default=0))
        suggested_mem = max(MEMORY_STEP_MB, math.ceil(mb / MEMORY_STEP_MB) * MEMORY_STEP_MB)
    return {
        "runtime": {
            **summary(elapsed),
            "requested": max(req_time) if req_time else None,
            "killed": len(killed_time),
            "suggested": suggested_time,
            "suggested_text": seconds_to_time(suggested_time) if suggested_time else None,
        },
        "memory": {
            **summary(rss),
            "requested": max(req_mem) if req_mem else None,
            "killed": len(killed_mem),
            "suggested": suggested_mem,
            "suggested_text": f"{suggested_mem} MB" if suggested_mem else None,
        },
    }


PIPELINE_PREFIX = "pipeline."  # a pipeline run's ecod_jobs_run.job_type: pipeline.NAME
STAGE_STATUSES = ("pending", "running", "success", "error", "skipped")


def pipelines_run(db: Database, batch_id: int) -> list[str]:
    """The pipelines the batch ran (from its runs' ``job_type``), the latest run's first."""
    rows = db.query(
        sql.SQL(
            "SELECT substr(job_type, %s), max(started_at) FROM {} WHERE batch_id = %s AND job_type LIKE %s"
            " GROUP BY 1 ORDER BY 2 DESC NULLS LAST, 1"
        ).format(db.table("ecod_jobs_run")),
        (len(PIPELINE_PREFIX) + 1, batch_id, PIPELINE_PREFIX + "%"),  # no LIKE wildcard in the prefix
    )
    return [name for name, _ in rows]


def _stage_row(name: str, counts: Mapping[str, int], **definition: Any) -> dict[str, Any]:
    total = sum(counts.values())
    finished = counts["success"] + counts["error"] + counts["skipped"]
    return {
        "name": name,
        **definition,
        "counts": dict(counts),
        "total": total,
        "finished": finished,
        "progress": finished / total if total else 0.0,
    }


def stage_view(
    db: Database, batch_id: int, config: Mapping[str, Any] | None, total_items: int
) -> dict[str, Any] | None:
    """Per-stage progress of the pipelines the batch ran, with each pipeline's definition
    from ``config`` (for its graph); None for a batch that never ran a pipeline, whose
    pages then look as they always did.

    A pipeline the config no longer defines has no graph: its stages (those with
    item-stage rows that no configured pipeline has) are listed under ``other_stages``.
    """
    names = pipelines_run(db, batch_id)
    if not names:
        return None
    # Here, not at the top: pipeline_sync brings the writers (process_files), which a
    # batch without pipelines never needs (as launch.batch_status imports it).
    from ..pipeline_sync import stage_counts

    config = config or {}
    try:
        order = stage_order(config)
    except ConfigurationError:  # a config that does not load its pipelines: rows only
        order = []
    counts = stage_counts(db, batch_id, order=order, total=total_items)
    # A stage no item has reached yet has no rows: all of the batch's items wait for it.
    waiting = dict.fromkeys(STAGE_STATUSES, 0) | {"pending": total_items}
    pipelines, unconfigured, shown = [], [], set()
    for name in names:
        try:
            spec = pipeline_spec(config, name)
        except ConfigurationError:
            unconfigured.append(name)
            continue
        body = config["pipelines"][name]
        stages = []
        for stage in spec.stages:
            raw = body["stages"][stage.name] or {}
            stages.append(
                _stage_row(
                    stage.name,
                    counts.get(stage.name, waiting),
                    job_type=raw.get("job_type", stage.name),
                    after=list(stage.after),
                    when=raw.get("when"),
                    if_upstream_skipped=stage.if_upstream_skipped,
                )
            )
            shown.add(stage.name)
        pipelines.append({"name": name, "description": body.get("description"), "stages": stages})
    other = [_stage_row(name, c) for name, c in counts.items() if name not in shown]
    return {"pipelines": pipelines, "unconfigured": unconfigured, "other_stages": other}


def batch_view(
    db: Database,
    batch_id: int,
    *,
    jobs_limit: int = JOB_LIMIT,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the dashboard's batch page shows (and the report, with ``report_extras``);
    ``config`` defines the pipelines whose graphs ``stages`` shows."""
    batch = require_batch(db, batch_id)
    progress = _progress(status_counts(db, batch_id))
    jobs = chunk_jobs(db, batch_id, jobs_limit)
    run_list = runs(db, batch_id)
    # The server's clock, in the time zone its TIMESTAMP columns hold: running chunks end "now".
    (now,) = db.query("SELECT LOCALTIMESTAMP")[0]
    return {
        "now": _iso(now),
        "batch": {
            "id": batch.id,
            "name": batch.batch_name,
            "type": batch.type,
            "status": batch.status,
            "base_path": batch.base_path,
            "ref_version": batch.ref_version,
            "registered_items": batch.total_items,
            "created_at": _iso(batch.created_at),
            "completed_at": _iso(batch.completed_at),
        },
        **progress,
        "active": any(r["live"] for r in run_list),
        "job_counts": job_counts(db, batch_id),
        "jobs": jobs,
        "jobs_shown": len(jobs),
        "jobs_limit": jobs_limit,
        "slowest_chunks": slowest_chunks(jobs),
        "resources": resource_fit(jobs),
        "failures": failures(db, batch_id, batch.base_path, progress["by_status"]["error"]),
        "failed_items": failed_items(db, batch_id, batch.base_path, limit=100),
        "runs": run_list,
        "stages": stage_view(db, batch_id, config, progress["total"]),
    }
