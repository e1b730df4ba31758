"""8. A 4-stage pipeline over 100,000 items: its planning, and Snakemake's DAG of it.

The pipeline has ECOD's shape and chunk sizes: two root searches (``chain_blast``,
``domain_blast``) at 100 items per chunk, ``hhsearch`` gated to one item in ten
(``is_representative and domain_blast.coverage < 0.9``) at 1 item per chunk, and a
``summary`` at 500 per chunk. 100,000 items make 64 windows per stage (``MAX_WINDOWS``),
12,304 chunks, and a DAG of 12,818 Snakemake jobs, 257 of them checkpoints.

1. Planning (100,000 items): ``plan_pipeline`` (the ``pipeline_plan`` checkpoint) and
   ``select_window`` for every stage and window (the ``select`` checkpoints), for real,
   on PostgreSQL. The chunks' work is faked: their result files are written directly
   (``domain_blast`` reports coverage 0.5 for one item in ten, 0.95 for the others), and
   ``collect_window`` turns them into the outcomes the downstream ``select`` reads.
   Baseline: ``plan_run`` of one job type over a batch of as many items, cut into about
   as many chunks (the flat plan checkpoint of ``--job-type``).
2. The DAG, built checkpoint by checkpoint as in a real run (20,000 items: 161
   checkpoints, 2,762 jobs; the 100,000-item run takes minutes, see the README):
   ``snakemake --touch`` of the workflow (``bench/smk_touch.py``: every job "runs" at
   once by touching its already written outputs) from ``pipeline_plan`` on, so each
   checkpoint completes in turn, Snakemake adds the jobs it now knows and re-evaluates
   the whole DAG; wall time and peak RSS of that process, and the time of each DAG
   update. Baseline: a flat Snakefile, one rule with as many wildcard jobs, run the
   same way (``--forceall``): Snakemake's own cost for a DAG of that size.
3. In the notes, the dry run at 100,000 items: ``snakemake --dry-run`` of the workflow
   with every checkpoint's output in place, against the same dry run of the flat
   Snakefile with as many jobs. Snakemake expands the dependents of a checkpoint only
   when that checkpoint completes, so the dry run evaluates only the first level (the
   ``select`` checkpoints and the ``collect`` jobs), not the chunks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from psycopg2 import sql

from .common import REPO, Measurement, log, scratch_database, timed
from .planning import MINIMAL

ITEMS = 100_000
DAG_ITEMS = 20_000  # the checkpoint-by-checkpoint run
PIPELINE = "ecod"
GATE = "is_representative and domain_blast.coverage < 0.9"
CHUNK_SIZES = {"chain_blast": 100, "domain_blast": 100, "hhsearch": 1, "summary": 500}
FLAT_JOB_TYPE = "flat"  # the planning baseline's job type (its batch size is set per run)


@dataclass
class ChildRun:
    """One Snakemake process: its wall time, its peak RSS and its output."""

    seconds: float
    max_rss_mb: float
    output: str

    def steps(self) -> int | None:
        """Jobs run, from Snakemake's last ``N of M steps`` line."""
        done = re.findall(r"(\d+) of (\d+) steps", self.output)
        return int(done[-1][1]) if done else None


# Starts the measured command and reports its peak RSS (wait4). A child forked straight
# from this process would report this process's size instead: Linux keeps the high-water
# mark of the memory a child had before its exec, and the benchmark process holds GBs by now.
_LAUNCHER = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[2:]); _, s, u = os.wait4(p.pid, 0);"
    " open(sys.argv[1], 'w').write(str(u.ru_maxrss)); sys.exit(os.waitstatus_to_exitcode(s))"
)


def run_child(argv: list[str], cwd: Path, log_name: str, env: dict[str, str] | None = None) -> ChildRun:
    """Run ``argv`` to its end: wall time, and its peak RSS from the kernel (``wait4``)."""
    log_path = cwd / log_name
    rss_path = cwd / f"{log_name}.maxrss"
    with log_path.open("w") as out:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(rss_path), *argv],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
        seconds = time.perf_counter() - start
    text = log_path.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:8])} ... failed ({proc.returncode}):\n{text[-3000:]}")
    return ChildRun(seconds, int(rss_path.read_text()) / 1024, text)


def write_config(path: Path, section: dict[str, Any], work: Path) -> Path:
    def job(size: int, **extra: Any) -> dict[str, Any]:
        return {"command": "true", "batch_size": size, "check_inputs": False, "time": "01:00:00", **extra}

    config = {
        "database": {**section, "schema": "ecod_schema"},
        "pipeline": {"work_root": str(work / "work"), "output_root": str(work / "results")},
        "job_types": {
            "chain_blast": job(CHUNK_SIZES["chain_blast"]),
            "domain_blast": job(CHUNK_SIZES["domain_blast"], metrics=["coverage"]),
            "hhsearch": job(CHUNK_SIZES["hhsearch"]),
            "summary": job(CHUNK_SIZES["summary"]),
            FLAT_JOB_TYPE: job(1),
        },
        "pipelines": {
            PIPELINE: {
                "stages": {
                    "chain_blast": {},
                    "domain_blast": {},
                    "hhsearch": {"after": ["chain_blast", "domain_blast"], "when": GATE},
                    "summary": {"after": ["domain_blast", "hhsearch"], "if_upstream_skipped": "run"},
                }
            }
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Planned:
    """A pipeline run planned to its end, every checkpoint's output on disk."""

    config_path: Path
    batch_id: int
    run_id: str
    windows: int
    chunks: dict[str, int]  # per stage
    plan_seconds: float
    select_seconds: float
    collect_seconds: float

    @property
    def checkpoints(self) -> int:
        return 1 + self.windows * len(self.chunks)

    @property
    def jobs(self) -> int:
        """Snakemake's jobs: all, the checkpoints, the chunks and one collect per stage window."""
        return 1 + self.checkpoints + sum(self.chunks.values()) + self.windows * len(self.chunks)

    def smk_config(self) -> list[str]:
        return [
            f"batch_id={self.batch_id}",
            f"pipeline={PIPELINE}",
            f"run_id={self.run_id}",
            f"ecod_config={self.config_path}",
        ]


def record_run(db: Any, run_id: str, batch_id: int, key: str) -> None:
    """The run row, as the workflow's onstart writes it before the first checkpoint."""
    with db.transaction() as cur:
        cur.execute(
            sql.SQL("INSERT INTO {} (run_id, batch_id, job_type) VALUES (%s, %s, %s)").format(
                db.table("ecod_jobs_run")
            ),
            (run_id, batch_id, key),
        )


def fake_results(unit: Any, chunk_ids: list[str], stage: str) -> None:
    """What the stage's chunks would write: every item a success (domain_blast: its coverage)."""
    from ecod_jobs.layout import read_jsonl

    for chunk in chunk_ids:
        lines = []
        for item in read_jsonl(unit.manifest(chunk)):
            pid = item["process_id"]
            record: dict[str, Any] = {"process_id": pid, "status": "success"}
            if stage == "domain_blast":
                record["metrics"] = {"coverage": 0.5 if pid % 10 == 0 else 0.95}
            lines.append(json.dumps(record))
        path = unit.result(chunk)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")


def new_batch(db: Any, name: str, items: int, base: Path) -> int:
    from ecod_jobs.db import create_batch
    from ecod_jobs.items import ItemRow

    rows = [ItemRow(f"chains/{i:07d}.fa", is_representative=True) for i in range(items)]
    return create_batch(db, name, rows, base_path=str(base))


def plan_pipeline_run(
    db: Any, config: dict[str, Any], config_path: Path, batch_id: int, *, analyze: bool = False
) -> Planned:
    """Plan a pipeline run of the batch and every stage window of it, faking the chunks.

    ``analyze``: refresh the planner's statistics of the item-stage table once the run is
    claimed (the untimed set-up of the DAG run; without it, a ``select_window`` may take
    a nested loop over the whole batch, see the README).
    """
    from ecod_jobs.layout import BatchLayout
    from ecod_jobs.pipeline_plan import collect_window, plan_pipeline, select_window
    from ecod_jobs.pipelines import pipeline_spec

    pipeline = pipeline_spec(config, PIPELINE)
    stages = pipeline.names()
    run_id = str(uuid.uuid4())
    run = BatchLayout.create(config["pipeline"]["work_root"], batch_id, pipeline.run_key).run(run_id)
    record_run(db, run_id, batch_id, pipeline.run_key)
    plan_seconds, plan = timed(lambda: plan_pipeline(db, config, pipeline, stages, (), batch_id, run))
    if analyze:
        db.query(sql.SQL("ANALYZE {}").format(db.table("ecod_jobs_item_stage")))
    select_seconds = collect_seconds = 0.0
    chunks = dict.fromkeys(stages, 0)
    for window in plan.windows:
        for stage in stages:
            start = time.perf_counter()
            stage_plan = select_window(db, config, pipeline, run, stage, window)
            select_seconds += time.perf_counter() - start
            chunk_ids = list(stage_plan.chunk_ids())
            chunks[stage] += len(chunk_ids)
            fake_results(run.stage_run(stage, window), chunk_ids, stage)
            start = time.perf_counter()
            collect_window(run, stage, window)
            collect_seconds += time.perf_counter() - start
    return Planned(
        config_path,
        batch_id,
        run_id,
        len(plan.windows),
        chunks,
        plan_seconds,
        select_seconds,
        collect_seconds,
    )


def plan_flat(db: Any, config: dict[str, Any], batch_id: int, chunks: int) -> tuple[float, int]:
    """The baseline: the plan checkpoint of one job type over the batch, about ``chunks`` chunks."""
    from ecod_jobs.config import job_type_spec
    from ecod_jobs.db import require_batch
    from ecod_jobs.layout import BatchLayout
    from ecod_jobs.plan import plan_run

    items = require_batch(db, batch_id).total_items
    spec = dataclasses.replace(job_type_spec(config, FLAT_JOB_TYPE), batch_size=max(1, items // chunks))
    run = BatchLayout.create(config["pipeline"]["work_root"], batch_id, spec.name).run(str(uuid.uuid4()))
    record_run(db, run.run_id, batch_id, spec.name)
    seconds, plan = timed(lambda: plan_run(db, config, spec, batch_id, run))
    return seconds, len(plan.chunks)


def flat_workflow(directory: Path, jobs: int) -> Path:
    """The DAG baseline: one rule, ``jobs`` wildcard jobs (and ``all``), their outputs present."""
    directory.mkdir(parents=True)
    (directory / "Snakefile").write_text(MINIMAL.format(n=jobs))
    out = directory / "out"
    out.mkdir()
    for i in range(jobs):
        (out / f"{i}.txt").touch()
    return directory / "Snakefile"


def workflow_dry_run(planned: Planned, work: Path) -> ChildRun:
    from ecod_jobs.launch import resolve_profile, snakemake_command

    argv = snakemake_command(resolve_profile("local"), planned.smk_config(), "--dry-run")
    return run_child(argv, work, "dryrun.log")


def flat_dry_run(snakefile: Path) -> ChildRun:
    argv = [sys.executable, "-m", "snakemake", "--dry-run", "--cores", "1", "--nolock"]
    return run_child(argv, snakefile.parent, "dryrun.log")


def touch_run(
    snakefile: Path, cwd: Path, config: list[str], *options: str
) -> tuple[ChildRun, dict[str, Any]]:
    """A run of ``snakefile`` whose jobs finish at once (bench/smk_touch.py), on as many
    cores as the local profile uses; no profile, so no logger plugin either. Returns the
    process and its DAG timings."""
    stats = cwd / "dag-stats.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "BENCH_SMK_STATS": str(stats),
    }
    argv = [sys.executable, "-m", "bench.smk_touch", "--snakefile", str(snakefile), "--touch"]
    argv += ["--cores", str(os.cpu_count() or 1), "--scheduler", "greedy", "--nolock", "--quiet", "rules"]
    argv += [*options, *(["--config", *config] if config else [])]
    run = run_child(argv, cwd, "touch.log", env)
    return run, json.loads(stats.read_text())


def measure(work: Path) -> list[Measurement]:
    from ecod_jobs.bundle import SNAKEFILE
    from ecod_jobs.config import load_config
    from ecod_jobs.db import Database, init_schema

    with scratch_database() as section:
        config_path = write_config(work / "config.yaml", section, work)
        config = load_config(config_path)
        db = Database(config)
        init_schema(db)
        big = new_batch(db, "pipeline planning", ITEMS, work / "base")
        log(f"pipeline dag: planning {ITEMS:,} items, 4 stages (plan_pipeline, every select_window)")
        planned = plan_pipeline_run(db, config, config_path, big)
        chunks = sum(planned.chunks.values())
        flat_batch = new_batch(db, "flat planning", ITEMS, work / "base")
        log(f"pipeline dag: plan_run of one job type, {ITEMS:,} items in about {chunks:,} chunks (baseline)")
        flat_plan_seconds, flat_chunks = plan_flat(db, config, flat_batch, chunks)

        log(f"pipeline dag: dry run of the whole workflow ({planned.jobs:,} jobs, all checkpoints done)")
        dry = workflow_dry_run(planned, work)
        if "Nothing to be done" not in dry.output:
            raise RuntimeError(f"the dry run found work to do:\n{dry.output[-3000:]}")
        flat_dry = flat_dry_run(flat_workflow(work / "flat-dry", planned.jobs - 1))

        small = new_batch(db, "pipeline dag", DAG_ITEMS, work / "base")
        log(f"pipeline dag: the DAG of {DAG_ITEMS:,} items, checkpoint by checkpoint (snakemake --touch)")
        replayed = plan_pipeline_run(db, config, config_path, small, analyze=True)
        ours, stats = touch_run(SNAKEFILE, work, replayed.smk_config(), "--forcerun", "pipeline_plan")
        if ours.steps() != replayed.jobs:
            raise RuntimeError(f"the touch run ran {ours.steps()} jobs, expected {replayed.jobs}")
        log(f"pipeline dag: a flat Snakefile's {replayed.jobs - 1:,} jobs, the same way (baseline)")
        flat_snakefile = flat_workflow(work / "flat-touch", replayed.jobs - 1)
        flat, flat_stats = touch_run(flat_snakefile, flat_snakefile.parent, [], "--forceall")

    updates = stats["updates"]
    update_seconds = sum(seconds for seconds, _jobs in updates)
    slowest = max(updates)
    planning = planned.plan_seconds + planned.select_seconds
    dag_title = f"Pipeline DAG, {DAG_ITEMS:,} items, built checkpoint by checkpoint"
    return [
        Measurement(
            "pipeline_planning",
            f"Planning a 4-stage pipeline, {ITEMS:,} items: pipeline_plan + every select (s)",
            planning,
            "s",
            baseline=f"plan_run of one job type, {flat_chunks:,} chunks",
            baseline_value=flat_plan_seconds,
            higher_is_better=False,
            notes=[
                f"pipeline_plan {planned.plan_seconds:.1f} s; {planned.checkpoints - 1} select checkpoints"
                f" ({planned.windows} windows x 4 stages) {planned.select_seconds:.1f} s, mean"
                f" {1000 * planned.select_seconds / (planned.checkpoints - 1):.0f} ms; collect"
                f" {planned.collect_seconds:.1f} s in all",
                f"{chunks:,} chunks (" + ", ".join(f"{s} {n:,}" for s, n in planned.chunks.items()) + ")",
                f"dry run with every checkpoint done: {dry.seconds:.1f} s, {dry.max_rss_mb:.0f} MB;"
                f" the flat Snakefile's ({planned.jobs - 1:,} jobs) {flat_dry.seconds:.1f} s,"
                f" {flat_dry.max_rss_mb:.0f} MB. Snakemake expands a checkpoint's dependents only when"
                " it completes, so a dry run sees the select checkpoints and collect jobs, not the chunks",
            ],
        ),
        Measurement(
            "pipeline_dag_seconds",
            f"{dag_title}: Snakemake, jobs taking no time (s)",
            ours.seconds,
            "s",
            baseline=f"a flat Snakefile, {replayed.jobs - 1:,} jobs of one rule",
            baseline_value=flat.seconds,
            higher_is_better=False,
            notes=[
                f"{replayed.jobs:,} jobs, {replayed.checkpoints} checkpoints ({replayed.windows} windows x 4"
                f" stages + pipeline_plan); {len(updates)} DAG updates took {update_seconds:.1f} s, mean"
                f" {1000 * statistics.mean(s for s, _ in updates):.0f} ms, the slowest"
                f" {1000 * slowest[0]:.0f} ms (DAG of {slowest[1]:,} jobs);"
                f" the flat DAG was built in one go in {flat_stats['init_seconds']:.1f} s",
            ],
        ),
        Measurement(
            "pipeline_dag_rss",
            f"{dag_title}: Snakemake's peak RSS (MB)",
            ours.max_rss_mb,
            "MB",
            baseline=f"a flat Snakefile, {replayed.jobs - 1:,} jobs of one rule",
            baseline_value=flat.max_rss_mb,
            higher_is_better=False,
        ),
    ]
