"""Planning a pipeline run: which item-stages to run, then, window by window, which items
each stage takes once its upstream stages have ended for them.

Three steps, all on the head node (Snakemake local jobs; see ``workflow/rules/pipeline.smk``):

1. :func:`plan_pipeline` (checkpoint ``pipeline_plan``): from ``ecod_jobs_item_stage``
   and ``process_file``, each item's stages to run (``todo``): not done (a success with
   every declared output present and non-empty, or a skip), not failed unless
   ``--retry-failed``, forced by ``--rerun``, or downstream of another stage to run.
   Claims those items (``processing``), resets their item-stages to ``pending`` and
   cuts the items, in id order, into *windows*. One transaction; ``pipeline.json`` last.
2. :func:`select_window` (checkpoint ``select``, per stage and window): once the
   window's upstream stages have ended, decides per item: run, skipped (gated out by
   ``when``, or an upstream stage was skipped and the stage says ``skip``) or blocked
   (an upstream stage failed or is not done). Cuts the items to run into the stage's
   chunks, a RunLayout of their own, and records their job rows and item-stages.
3. :func:`collect_window` (rule ``collect``): the stage's outcome for every item of the
   window, read by the downstream stages' ``select``.

Windows are what makes the run pipelined per item rather than barriered per batch, at
a bounded cost: every window of every stage is a Snakemake checkpoint, and Snakemake
re-evaluates its DAG after each one, so their number is kept near ``MAX_WINDOWS``
per stage (README, "Pipelines").
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from psycopg2 import sql

from . import run_record
from .db import Database, require_batch
from .db.bulk import copy_rows
from .layout import RunLayout, read_jsonl, sync_filesystem, write_atomic, write_jsonl_atomic, write_unsynced
from .ownership import database_id
from .pipelines import RUN_IF_SKIPPED, PipelineSpec, StageSpec
from .plan import insert_chunk_jobs, job_fields, make_output_dir, mark_batch_processing, resolve_item_path
from .plan_file import Plan, PlannedChunk, manifest_line

log = logging.getLogger(__name__)

MAX_WINDOWS = 64  # per stage: each window is a checkpoint (see the module docstring)
DONE = ("success", "skipped")


def window_id(index: int) -> str:
    return f"w{index:04d}"


def stage_chunk_id(stage: str, window: str, index: int) -> str:
    """Unique within the run (job rows are keyed by run and chunk)."""
    return f"{stage}.{window}.c{index:03d}"


@dataclass(frozen=True)
class PipelinePlan:
    """``pipeline.json``: what a pipeline run does (its windows' items are in ``windows/``)."""

    run_id: str
    database_id: str | None
    batch_id: int
    pipeline: str
    stages: tuple[str, ...]  # the stages this run executes, in pipeline order
    forced: tuple[str, ...]  # --rerun: run even where done
    retry_failed: bool
    base_path: str  # outputs are relative to it; the commands' working directory
    window_size: int
    windows: tuple[str, ...]
    items: int
    item_stages: int  # (item, stage) pairs to run
    stage_order: tuple[tuple[str, str], ...]  # the pipeline's (stage, current_stage on success)

    def write(self, run: RunLayout) -> None:
        write_atomic(run.pipeline_plan, json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, run: RunLayout) -> PipelinePlan:
        data = json.loads(run.pipeline_plan.read_text())
        data.update({k: tuple(data[k]) for k in ("stages", "forced", "windows")})
        data["stage_order"] = tuple((str(a), str(b)) for a, b in data["stage_order"])
        return cls(**data)


# --------------------------------------------------------------------------- 1. the run


def base_path_for(config: Mapping[str, Any], batch: Any) -> Path:
    """The batch's base path, or ``{output_root}/batch_{id}`` for a batch without one."""
    if batch.base_path:
        return Path(batch.base_path)
    return (Path(config["pipeline"].get("output_root", "results")) / f"batch_{batch.id}").resolve()


def item_stage_states(
    db: Database, batch_id: int, pipeline: PipelineSpec
) -> dict[int, dict[str, tuple[str, dict[str, Any] | None]]]:
    """Each item's recorded state per stage of the pipeline: (status, metrics). A success
    whose declared outputs are not all present and non-empty in ``process_file`` reads as
    ``pending`` (not done): ``files register`` brings the table in line with the disk."""
    rows = db.query(
        sql.SQL(
            "SELECT s.process_id, s.stage, s.status, s.metrics FROM {} s"
            " WHERE s.batch_id = %s AND s.stage = ANY(%s)"
        ).format(db.table("ecod_jobs_item_stage")),
        (batch_id, pipeline.names()),
    )
    outputs = {s.name: list(s.job.outputs) for s in pipeline.stages}
    file_types = [ft for types in outputs.values() for ft in types]
    present: set[tuple[int, str]] = set()
    if file_types:
        present = {
            (int(pid), str(ft))
            for pid, ft in db.query(
                sql.SQL(
                    "SELECT f.process_id, f.file_type FROM {f} f JOIN {ps} ps ON ps.id = f.process_id"
                    " WHERE ps.batch_id = %s AND f.file_type = ANY(%s)"
                    " GROUP BY 1, 2 HAVING bool_and(f.file_exists AND f.file_size > 0)"
                ).format(f=db.table("process_file"), ps=db.table("process_status")),
                (batch_id, file_types),
            )
        }
    states: dict[int, dict[str, tuple[str, dict[str, Any] | None]]] = {}
    for pid, stage, status, metrics in rows:
        if status == "success" and not all((pid, ft) in present for ft in outputs.get(stage, ())):
            status = "pending"
        states.setdefault(int(pid), {})[stage] = (status, metrics)
    return states


def stages_to_run(
    pipeline: PipelineSpec,
    run_stages: Sequence[str],
    forced: Iterable[str],
    retry_failed: bool,
    state: Mapping[str, tuple[str, Any]],
) -> list[str]:
    """One item's stages to run this time, in pipeline order (see the module docstring)."""
    todo: list[str] = []
    forced = set(forced)
    run = set(run_stages)
    for stage in pipeline.stages:  # topological: upstream decisions come first
        status = state.get(stage.name, ("pending", None))[0]
        upstream = stage.after
        if stage.name not in run:
            continue
        if any(u not in todo and state.get(u, ("pending", None))[0] not in DONE for u in upstream):
            continue  # blocked: an upstream stage is neither done nor run this time (it failed)
        if (
            stage.name in forced
            or any(u in todo for u in upstream)
            or (status not in DONE and (status != "error" or retry_failed))
        ):
            todo.append(stage.name)
    return todo


def plan_pipeline(
    db: Database,
    config: Mapping[str, Any],
    pipeline: PipelineSpec,
    run_stages: Sequence[str],
    forced: Sequence[str],
    batch_id: int,
    run: RunLayout,
    *,
    retry_failed: bool = False,
) -> PipelinePlan:
    """Step 1: plan the run into ``run``; returns the plan (also ``pipeline.json``)."""
    batch = require_batch(db, batch_id)
    base = base_path_for(config, batch)
    this_database = database_id(db)
    make_output_dir(base, batch_id, batch.base_path)
    states = item_stage_states(db, batch_id, pipeline)
    items = db.query(
        sql.SQL(
            "SELECT id, protein_id, relative_path, coalesce(is_representative, false) FROM {}"
            " WHERE batch_id = %s ORDER BY id"
        ).format(db.table("process_status")),
        (batch_id,),
    )
    planned = []
    for pid, protein, rel, rep in items:
        prior = states.get(int(pid), {})
        todo = stages_to_run(pipeline, run_stages, forced, retry_failed, prior)
        if todo:
            planned.append((int(pid), protein, rel, bool(rep), todo, prior))
    sizes = [pipeline.stage(s).job.batch_size for s in run_stages]
    window = pipeline.window_size or max(max(sizes), math.ceil(len(planned) / MAX_WINDOWS), 1)
    windows = [planned[i : i + window] for i in range(0, len(planned), window)]
    with db.transaction() as cur:
        _claim(cur, db, batch_id, run.run_id, planned)
        for index, members in enumerate(windows):
            write_jsonl_atomic(
                run.window(window_id(index)),
                [
                    {
                        "process_id": pid,
                        "protein_id": protein,
                        "path": resolve_item_path(rel, str(base) if batch.base_path else ""),
                        "relative_path": rel,
                        "representative": rep,
                        "todo": todo,
                        "prior": {stage: list(value) for stage, value in prior.items() if stage not in todo},
                    }
                    for pid, protein, rel, rep, todo, prior in members
                ],
            )
        if planned:
            mark_batch_processing(cur, db, batch_id)
        run_record.record_planned(cur, db, run.run_id, len(planned), 0)
        plan = PipelinePlan(
            run_id=run.run_id,
            database_id=this_database,
            batch_id=batch_id,
            pipeline=pipeline.name,
            stages=tuple(run_stages),
            forced=tuple(forced),
            retry_failed=retry_failed,
            base_path=str(base),
            window_size=window,
            windows=tuple(window_id(i) for i in range(len(windows))),
            items=len(planned),
            item_stages=sum(len(p[4]) for p in planned),
            stage_order=tuple((s.name, s.done_stage) for s in pipeline.stages),
        )
        plan.write(run)  # inside the transaction: no plan file, no commit
    log.info(
        "planned pipeline run %s: %d items, %d item-stages, %d windows",
        run.run_id,
        plan.items,
        plan.item_stages,
        len(plan.windows),
    )
    return plan


def _claim(cur: Any, db: Database, batch_id: int, run_id: str, planned: Sequence[tuple[Any, ...]]) -> None:
    """The items move to 'processing', their stages to run to 'pending' (held by this run)."""
    cur.execute("CREATE TEMP TABLE _ecod_todo (process_id int, stage text) ON COMMIT DROP")
    copy_rows(
        cur,
        sql.Identifier("_ecod_todo"),
        ("process_id", "stage"),
        ((pid, stage) for pid, _p, _r, _rep, todo, _prior in planned for stage in todo),
    )
    cur.execute(
        sql.SQL(
            "INSERT INTO {s} AS s (process_id, stage, batch_id, status, run_id, updated_at)"
            " SELECT process_id, stage, %(batch)s, 'pending', %(run)s, now() FROM _ecod_todo"
            " ON CONFLICT (process_id, stage) DO UPDATE SET status = 'pending', run_id = EXCLUDED.run_id,"
            " job_id = NULL, attempt = NULL, metrics = NULL, error_message = NULL, start_time = NULL,"
            " end_time = NULL, updated_at = now()"
        ).format(s=db.table("ecod_jobs_item_stage")),
        {"batch": batch_id, "run": run_id},
    )
    cur.execute(
        sql.SQL(
            "UPDATE {} ps SET status = 'processing', error_message = NULL, updated_at = now()"
            " WHERE ps.batch_id = %s AND ps.id IN (SELECT DISTINCT process_id FROM _ecod_todo)"
        ).format(db.table("process_status")),
        (batch_id,),
    )
    # The statistics predate these rows: without them each window's select updated its
    # item-stages by a nested loop over the whole run's (0.8 s per 500-item window, not 9 ms).
    cur.execute(sql.SQL("ANALYZE {}").format(db.table("ecod_jobs_item_stage")))


# --------------------------------------------------------------------------- 2. a stage's window

RUN, SKIPPED, BLOCKED = "run", "skipped", "blocked"
State = tuple[str, Mapping[str, Any] | None]


def decide(
    stage: StageSpec, item: Mapping[str, Any], state_of: Callable[[str], State], upstream: Iterable[str]
) -> tuple[str, str | None]:
    """Whether ``item`` runs ``stage``: (run | skipped | blocked, why not)."""
    skipped_by = None
    for name in stage.after:
        status = state_of(name)[0]
        if status == "skipped":
            skipped_by = skipped_by or name
        elif status != "success":
            what = "failed" if status == "error" else "did not run" if status == BLOCKED else "is not done"
            return BLOCKED, f"not run: upstream stage {name} {what}"
    if skipped_by and stage.if_upstream_skipped != RUN_IF_SKIPPED:
        return SKIPPED, f"skipped: upstream stage {skipped_by} was skipped"
    if stage.when is not None:
        metrics = {name: dict(state_of(name)[1] or {}) for name in upstream}
        if not stage.when.evaluate(bool(item.get("representative")), metrics):
            return SKIPPED, f"skipped: when {stage.when.source!r} is false"
    return RUN, None


def _outcomes(run: RunLayout, stage: str, window: str) -> dict[int, State]:
    return {r["process_id"]: (r["status"], r.get("metrics")) for r in read_jsonl(run.outcome(stage, window))}


def select_window(
    db: Database,
    config: Mapping[str, Any],
    pipeline: PipelineSpec,
    run: RunLayout,
    stage_name: str,
    window: str,
) -> Plan:
    """Step 2: choose the window's items for ``stage_name``, plan their chunks, record them."""
    plan = PipelinePlan.read(run)
    stage = pipeline.stage(stage_name)
    upstream = [s for s in pipeline.names() if s in pipeline.upstream(stage_name)]
    in_run = set(plan.stages)
    outcomes = {name: _outcomes(run, name, window) for name in upstream if name in in_run}
    items = list(read_jsonl(run.window(window)))
    decisions: list[dict[str, Any]] = []
    chosen: list[dict[str, Any]] = []
    for item in items:
        if stage_name not in item["todo"]:
            continue

        def state_of(name: str, item: Mapping[str, Any] = item) -> State:
            if name in item["todo"]:
                return outcomes[name].get(item["process_id"], ("pending", None))
            prior = item["prior"].get(name)
            return (prior[0], prior[1]) if prior else ("pending", None)

        decision, why = decide(stage, item, state_of, upstream)
        decisions.append({"process_id": item["process_id"], "decision": decision, "reason": why})
        if decision == RUN:
            chosen.append(item)
    sub = run.stage_run(stage_name, window)
    size = stage.job.batch_size
    groups = [chosen[i : i + size] for i in range(0, len(chosen), size)]
    chunk_ids = [stage_chunk_id(stage_name, window, i) for i in range(len(groups))]
    with db.transaction() as cur:
        job_ids = (
            insert_chunk_jobs(
                cur, db, stage.job, plan.batch_id, run.run_id, chunk_ids, [len(g) for g in groups]
            )
            if groups
            else []
        )
        copy_rows(
            cur,
            db.table("job_item"),
            ("job_id", "process_id", "status"),
            (
                (job, item["process_id"], "pending")
                for job, group in zip(job_ids, groups, strict=True)
                for item in group
            ),
        )
        job_of = {
            item["process_id"]: job for job, group in zip(job_ids, groups, strict=True) for item in group
        }
        _record_decisions(cur, db, run.run_id, stage_name, decisions, job_of)
        from .pipeline_sync import derive_process_status

        derive_process_status(
            cur,
            db,
            plan.batch_id,
            pipeline,
            [d["process_id"] for d in decisions if d["decision"] == SKIPPED],
            in_run=True,
        )
        run_record.add_planned_chunks(cur, db, run.run_id, len(groups))
        if groups:
            sub.manifest(chunk_ids[0]).parent.mkdir(parents=True, exist_ok=True)
        for chunk, group in zip(chunk_ids, groups, strict=True):
            write_unsynced(  # in place; one syncfs below for all, as plan_run does
                sub.manifest(chunk),
                "".join(
                    manifest_line(i["process_id"], i["protein_id"], i["path"], i["relative_path"])
                    for i in group
                ),
            )
        write_jsonl_atomic(sub.decisions, decisions)
        if groups:  # the manifests durable before plan.json makes them visible
            sync_filesystem(sub.manifest(chunk_ids[0]).parent)
        stage_plan = _stage_plan(config, pipeline, plan, run, stage, chunk_ids, groups, job_ids)
        stage_plan.write(sub)  # last, inside the transaction
    return stage_plan


def _record_decisions(
    cur: Any,
    db: Database,
    run_id: str,
    stage: str,
    decisions: Sequence[Mapping[str, Any]],
    job_of: Mapping[int, int],
) -> None:
    """Items to run: 'running' under their chunk's job; skipped ones: 'skipped' with why;
    blocked ones stay 'pending', with why."""
    cur.execute(
        "CREATE TEMP TABLE _ecod_decisions (process_id int, status text, job_id int, reason text)"
        " ON COMMIT DROP"
    )
    status = {RUN: "running", SKIPPED: "skipped", BLOCKED: "pending"}
    copy_rows(
        cur,
        sql.Identifier("_ecod_decisions"),
        ("process_id", "status", "job_id", "reason"),
        (
            (d["process_id"], status[d["decision"]], job_of.get(d["process_id"]), d["reason"])
            for d in decisions
        ),
    )
    cur.execute("ANALYZE _ecod_decisions")  # a temp table has no statistics: hash joins, not loops
    cur.execute(
        sql.SQL(
            "UPDATE {} s SET status = d.status, job_id = d.job_id,"
            " attempt = CASE WHEN d.job_id IS NULL THEN NULL ELSE 1 END, error_message = d.reason,"
            " metrics = NULL, updated_at = now(),"
            " end_time = CASE WHEN d.status = 'skipped' THEN now() END"
            " FROM _ecod_decisions d WHERE s.process_id = d.process_id AND s.stage = %s AND s.run_id = %s"
        ).format(db.table("ecod_jobs_item_stage")),
        (stage, run_id),
    )


def _stage_plan(
    config: Mapping[str, Any],
    pipeline: PipelineSpec,
    plan: PipelinePlan,
    run: RunLayout,
    stage: StageSpec,
    chunk_ids: Sequence[str],
    groups: Sequence[Sequence[Any]],
    job_ids: Sequence[int],
) -> Plan:
    spec = stage.job
    visible = [stage.name, *pipeline.upstream(stage.name)]
    return Plan(
        run_id=run.run_id,
        database_id=plan.database_id,
        batch_id=plan.batch_id,
        retry_failed=plan.retry_failed,
        output_dir=plan.base_path,
        base_path=plan.base_path,
        **job_fields(spec),
        items=sum(len(g) for g in groups),
        chunks=tuple(PlannedChunk(c, len(g), j) for c, g, j in zip(chunk_ids, groups, job_ids, strict=True)),
        pipeline=pipeline.name,
        pipeline_stage=stage.name,
        outputs=dict(spec.outputs),
        out_templates={
            ft: t for s in pipeline.stages if s.name in visible for ft, t in s.job.outputs.items()
        },
        metrics=spec.metrics,
        stage_order=tuple((s.name, s.done_stage) for s in pipeline.stages),
    )


# --------------------------------------------------------------------------- 3. its outcome


def collect_window(run: RunLayout, stage: str, window: str, log_path: str | None = None) -> int:
    """Step 3: the stage's outcome for every item of the window; returns the items run
    (also written to ``log_path``)."""
    sub = run.stage_run(stage, window)
    plan = Plan.read(sub)
    results: dict[int, Mapping[str, Any]] = {}
    for chunk in plan.chunk_ids():
        for record in read_jsonl(sub.result(chunk)):
            results[record["process_id"]] = record
    decided = {d["process_id"]: d for d in read_jsonl(sub.decisions)}
    outcome = []
    for item in read_jsonl(run.window(window)):
        pid = item["process_id"]
        if pid in results:
            record = results[pid]
            outcome.append({"process_id": pid, "status": record["status"], "metrics": record.get("metrics")})
        elif pid in decided:
            status = {SKIPPED: "skipped", BLOCKED: BLOCKED}.get(decided[pid]["decision"], "error")
            outcome.append({"process_id": pid, "status": status, "metrics": None})
        else:  # not a stage this run runs for it: what it was
            prior = item["prior"].get(stage)
            outcome.append(
                {
                    "process_id": pid,
                    "status": prior[0] if prior else "pending",
                    "metrics": prior[1] if prior else None,
                }
            )
    write_jsonl_atomic(run.outcome(stage, window), outcome)
    if log_path is not None:
        Path(log_path).write_text(f"{stage} {window}: {len(results)} of {len(outcome)} items ran\n")
    return len(results)
