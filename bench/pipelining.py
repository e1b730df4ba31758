"""9. Pipelining gain: a 3-stage pipeline with skewed item times, against its stages one after another.

Three stages in a chain (``first`` -> ``second`` -> ``third``), each a job type whose
command does a fixed amount of CPU work per item (an ``awk`` loop, calibrated on this
machine at the start): most items take ``FAST`` seconds, one in ``SLOW_EVERY`` takes
``SLOW``, and which items are slow differs from stage to stage (a fixed pseudo-random
choice), as a few long chains hold up a real batch. ``CHUNK`` items per chunk in every stage.

Ours: ``run_batch(pipeline=...)`` (what ``ecod-jobs run --pipeline`` does) on the local
profile: a window of a stage starts as soon as the same window has ended upstream.
Baseline: the same three job types over a batch of the same items, one
``run_batch(job_type=...)`` after another (``ecod-jobs run --job-type``), each stage
waiting for the whole batch of the one before; the items go back to ``pending`` between
the runs (not timed), as a curator resets them between stages. Same profile, same cores.

Snakemake's local executor runs the workflow's ``run:`` rules (``pipeline_plan``,
``select``, ``collect``: two per stage and window) in a Snakemake process of their own
each, unless ``--force-use-threads``, as it always does on SLURM. While the local profile
leaves that off, the pipeline is also run with ``--force-use-threads``, for the notes.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path
from typing import Any

import yaml
from psycopg2 import sql

from .common import Measurement, log, scratch_database, timed

ITEMS = 24
CHUNK = 3
FAST = 0.2  # seconds of CPU work per item
SLOW = 2.0
SLOW_EVERY = 8  # one item in SLOW_EVERY is slow, in each stage
STAGES = ("first", "second", "third")
PIPELINE = "chain"

WORK_SCRIPT = """#!/bin/sh
# CPU work, the benchmark's stand-in for a search: $1 iterations, or with three
# arguments the number in the file $1/$2/<file name of $3> (costs/STAGE/ITEM).
if [ $# -gt 1 ]; then n=$(cat "$1/$2/$(basename "$3")"); else n=$1; fi
exec awk -v n="$n" 'BEGIN { s = 0; for (i = 0; i < n; i++) s += i % 7; exit (s < 0) }'
"""


def calibrate(script: Path) -> float:
    """awk loop iterations per second on this machine (one core)."""
    n = 2_000_000
    seconds, _ = timed(lambda: subprocess.run(["sh", str(script), str(n)], check=True))
    return n / seconds


def item_seconds() -> dict[str, list[float]]:
    """Each stage's work per item (by item index): FAST, or SLOW for one item in SLOW_EVERY."""
    rng = random.Random(14)
    times = {}
    for stage in STAGES:
        slow = set(rng.sample(range(ITEMS), ITEMS // SLOW_EVERY))
        times[stage] = [SLOW if i in slow else FAST for i in range(ITEMS)]
    return times


def write_config(path: Path, section: dict[str, Any], work: Path, costs: Path) -> Path:
    def job(stage: str) -> dict[str, Any]:
        return {
            "command": f"sh {work / 'work.sh'} {costs} {stage} {{path}}",
            "batch_size": CHUNK,
            "check_inputs": False,
            "time": "00:30:00",
        }

    config = {
        "database": {**section, "schema": "ecod_schema"},
        "pipeline": {"work_root": str(work / "work"), "output_root": str(work / "results")},
        "job_types": {stage: job(stage) for stage in STAGES},
        "pipelines": {
            PIPELINE: {
                "stages": {stage: ({"after": [STAGES[i - 1]]} if i else {}) for i, stage in enumerate(STAGES)}
            }
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def pipeline_windows(config: dict[str, Any], batch_id: int, run_id: str) -> int:
    from ecod_jobs.layout import BatchLayout
    from ecod_jobs.pipeline_plan import PipelinePlan
    from ecod_jobs.pipelines import pipeline_spec

    key = pipeline_spec(config, PIPELINE).run_key
    run = BatchLayout.create(config["pipeline"]["work_root"], batch_id, key).run(run_id)
    return len(PipelinePlan.read(run).windows)


def measure(work: Path) -> list[Measurement]:
    from ecod_jobs.bundle import profile_settings
    from ecod_jobs.config import load_config
    from ecod_jobs.db import Database, create_batch, init_schema
    from ecod_jobs.items import ItemRow
    from ecod_jobs.launch import BatchResult, resolve_profile, run_batch

    cores = os.cpu_count() or 1
    threads_already = bool(profile_settings(resolve_profile("local")).get("force-use-threads"))
    script = work / "work.sh"
    script.write_text(WORK_SCRIPT)
    rate = calibrate(script)
    costs = work / "costs"
    times = item_seconds()
    for stage, seconds in times.items():
        (costs / stage).mkdir(parents=True)
        for i, s in enumerate(seconds):
            (costs / stage / f"{i}.fa").write_text(f"{int(s * rate)}\n")
    cpu = sum(sum(s) for s in times.values())

    def ok(result: BatchResult, what: str) -> None:
        if not result.ok or result.by_status.get("success") != ITEMS:
            raise RuntimeError(f"{what} did not finish every item: {result.by_status}; log {result.log_path}")

    with scratch_database() as section:
        config_path = write_config(work / "config.yaml", section, work, costs)
        config = load_config(config_path)
        db = Database(config)
        init_schema(db)
        rows = [ItemRow(f"items/{i}.fa") for i in range(ITEMS)]
        batches = [create_batch(db, name, rows, base_path=str(work / name)) for name in ("a", "b", "c")]
        log(f"pipelining: {len(STAGES)} stages x {ITEMS} items ({cpu:.0f} s of CPU work), one pipeline run")
        ours, result = timed(
            lambda: run_batch(batches[0], "local", config_path=config_path, pipeline=PIPELINE, cores=cores)
        )
        ok(result, "the pipeline run")
        windows = pipeline_windows(config, batches[0], str(result.run_id))
        log("pipelining: the same stages one after another, --job-type (baseline)")
        per_stage = []
        for stage in STAGES:
            with db.transaction() as cur:  # the curator's reset between stages
                cur.execute(
                    sql.SQL("UPDATE {} SET status = 'pending' WHERE batch_id = %s").format(
                        db.table("process_status")
                    ),
                    (batches[1],),
                )
            seconds, result = timed(
                lambda stage=stage: run_batch(
                    batches[1], "local", config_path=config_path, job_type=stage, cores=cores
                )
            )
            ok(result, f"the {stage} run")
            per_stage.append(seconds)
        threaded = None
        if not threads_already:
            log("pipelining: the pipeline again, with --force-use-threads (for the notes)")
            threaded, result = timed(
                lambda: run_batch(
                    batches[2],
                    "local",
                    config_path=config_path,
                    pipeline=PIPELINE,
                    cores=cores,
                    force_use_threads=True,
                )
            )
            ok(result, "the threaded pipeline run")
    baseline = sum(per_stage)
    notes = [
        f"{ITEMS} items, {CHUNK} per chunk; per item {FAST} s of CPU work, {SLOW} s for 1 in {SLOW_EVERY}"
        f" (other items in each stage): {cpu:.1f} s in all, {cpu / cores:.1f} s on {cores} cores at best",
        "stage by stage: " + ", ".join(f"{s} {t:.1f} s" for s, t in zip(STAGES, per_stage, strict=True)),
        f"{windows} windows per stage: {2 * windows * len(STAGES) + 1} local checkpoint and collect jobs",
    ]
    if threaded is not None:
        notes.append(
            f"with --force-use-threads (those jobs in Snakemake's own process rather than one each):"
            f" {threaded:.1f} s, {baseline / threaded:.2f}x the stages one after another"
        )
    return [
        Measurement(
            "pipelining",
            f"Pipelining: {len(STAGES)} stages x {ITEMS} items with skewed times, local profile (s)",
            ours,
            "s",
            baseline=f"the {len(STAGES)} stages one after another (--job-type)",
            baseline_value=baseline,
            higher_is_better=False,
            goal="faster than stage by stage",
            met=ours < baseline,
            notes=notes,
        )
    ]
