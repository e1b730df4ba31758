"""5. Planning: the plan checkpoint and Snakemake's DAG for 10,000 chunks (dry run).

Ours: ``plan_run`` writing 10,000 chunk manifests with their rows (the checkpoint),
then ``snakemake --dry-run`` of the workflow with that plan in place, so the DAG
holds all 10,000 chunk jobs. Baseline: the same dry run of a minimal Snakefile
with 10,000 jobs of one rule: what Snakemake itself costs for a DAG that size.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

from .common import Measurement, log, scratch_database, timed
from .registration import JOB_TYPE, write_config

CHUNKS = 10_000

MINIMAL = """
rule all:
    input: expand("out/{{i}}.txt", i=range({n}))

rule one:
    output: "out/{{i}}.txt"
    shell: "touch {{output}}"
"""


def dry_run(argv: list[str], cwd: Path, log_name: str) -> tuple[float, int]:
    """Seconds of a dry run, and the number of jobs it would run."""
    with (cwd / log_name).open("w") as out:
        seconds, proc = timed(lambda: subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT))
    text = (cwd / log_name).read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"dry run failed ({' '.join(argv[:6])} ...):\n{text[-3000:]}")
    totals = re.findall(r"^total\s+(\d+)", text, re.MULTILINE)
    return seconds, int(totals[-1]) if totals else 0


def measure(work: Path) -> list[Measurement]:
    from ecod_jobs.config import job_type_spec, load_config
    from ecod_jobs.db import Database, create_batch, init_schema
    from ecod_jobs.items import ItemRow
    from ecod_jobs.launch import resolve_profile, snakemake_command
    from ecod_jobs.layout import BatchLayout
    from ecod_jobs.plan import plan_run

    (work / "minimal").mkdir()
    (work / "minimal" / "Snakefile").write_text(MINIMAL.format(n=CHUNKS))
    log(f"planning: dry run of a minimal Snakefile with {CHUNKS:,} jobs (baseline)")
    baseline, base_jobs = dry_run(
        [sys.executable, "-m", "snakemake", "--dry-run", "--cores", "1"], work / "minimal", "dryrun.log"
    )
    with scratch_database() as section:
        config_path = write_config(work / "config.yaml", section, work / "work", 1, "true")
        config = load_config(config_path)
        db = Database(config)
        init_schema(db)
        batch_id = create_batch(db, "planning", [ItemRow(f"item/{i}") for i in range(CHUNKS)])
        spec = job_type_spec(config, JOB_TYPE)
        run_id = str(uuid.uuid4())
        run = BatchLayout.create(config["pipeline"]["work_root"], batch_id, spec.name).run(run_id)
        log(f"planning: plan checkpoint of {CHUNKS:,} chunks")
        plan_seconds, plan = timed(lambda: plan_run(db, config, spec, batch_id, run))
        log(f"planning: snakemake --dry-run with {CHUNKS:,} planned chunks")
        argv = snakemake_command(
            resolve_profile("local"),
            [
                f"batch_id={batch_id}",
                f"job_type={spec.name}",
                f"run_id={run_id}",
                f"ecod_config={config_path}",
            ],
            "--dry-run",
        )
        dag_seconds, jobs = dry_run(argv, work, "dryrun.log")
    if jobs < CHUNKS or base_jobs < CHUNKS:
        raise RuntimeError(f"dry runs planned {jobs} and {base_jobs} jobs, expected {CHUNKS}+")
    total = plan_seconds + dag_seconds
    return [
        Measurement(
            "planning",
            f"Planning {CHUNKS:,} chunks: checkpoint + Snakemake DAG, dry run (s)",
            total,
            "s",
            baseline=f"dry run of a minimal Snakefile, {CHUNKS:,} jobs",
            baseline_value=baseline,
            higher_is_better=False,
            goal="< 15 s",
            met=total < 15,
            notes=[
                f"checkpoint {plan_seconds:.1f} s ({len(plan.chunks):,} manifests and job rows),"
                f" DAG {dag_seconds:.1f} s ({jobs:,} jobs)"
            ],
        )
    ]
