# Shared set-up. Runs in every Snakemake process, including SLURM jobs on
# compute nodes: it reads configuration only and never touches PostgreSQL.

import sys
from pathlib import Path

from snakemake.utils import validate

from ecod_jobs.pipeline_plan import PipelinePlan, collect_window
from ecod_jobs.plan_file import Plan
from ecod_jobs.workflow import (
    context_from_config,
    on_finish,
    on_start,
    pipeline_plan_checkpoint,
    plan_checkpoint,
    select_checkpoint,
)


validate(config, workflow.source_path("../schemas/run.schema.yaml"))

CTX = context_from_config(config)
WORK = str(CTX.batch_layout.root)
PYTHON = sys.executable


def planned_results(wildcards):
    """The current run's chunk results, known once the plan checkpoint has run."""
    plan = Plan.read(Path(checkpoints.plan.get(run=CTX.run_id).output.plan))
    run = CTX.batch_layout.run(CTX.run_id)
    return [str(run.result(chunk)) for chunk in plan.chunk_ids()]


def chunk_resources():
    """SLURM resources from the job type; memory and time grow with each retry."""
    return _resources(CTX.spec)


def _resources(spec):
    resources = {
        "mem_mb": lambda wildcards, attempt: spec.mem_mb * attempt,
        "runtime": lambda wildcards, attempt: spec.runtime_minutes * attempt,
    }
    if spec.partition:
        resources["slurm_partition"] = spec.partition
    if spec.account:
        resources["slurm_account"] = spec.account
    if spec.slurm_extra:
        resources["slurm_extra"] = spec.slurm_extra
    return resources


# --------------------------------------------------------------------------- pipelines


def pipeline_results(wildcards):
    """Every stage's outcome in every window, known once pipeline_plan has run."""
    run = CTX.batch_layout.run(CTX.run_id)
    checkpoints.pipeline_plan.get(run=CTX.run_id)
    plan = PipelinePlan.read(run)
    return [str(run.outcome(stage, window)) for stage in plan.stages for window in plan.windows]


def upstream_outcomes(wildcards):
    """A stage window waits for the same window of the run's upstream stages."""
    run = CTX.batch_layout.run(wildcards.run)
    upstream = CTX.pipeline.upstream(wildcards.stage)
    return [str(run.outcome(s, wildcards.window)) for s in CTX.stages if s in upstream]


def stage_window_results(wildcards):
    """The chunk results of one stage window, known once its select checkpoint has run."""
    checkpoints.select.get(run=wildcards.run, stage=wildcards.stage, window=wildcards.window)
    unit = CTX.batch_layout.run(wildcards.run).stage_run(wildcards.stage, wildcards.window)
    return [str(unit.result(chunk)) for chunk in Plan.read(unit).chunk_ids()]


def stage_threads(wildcards):
    return CTX.pipeline.stage(wildcards.stage).job.threads


def stage_resources():
    """Each stage's own memory, time, partition (one SLURM array per stage and request)."""
    jobs = [s.job for s in CTX.pipeline.stages]
    job = lambda wildcards: CTX.pipeline.stage(wildcards.stage).job
    resources = {
        "mem_mb": lambda wildcards, attempt: job(wildcards).mem_mb * attempt,
        "runtime": lambda wildcards, attempt: job(wildcards).runtime_minutes * attempt,
    }
    # only where some stage sets them: the plugin would pass an empty value on
    for key, field in (("slurm_partition", "partition"), ("slurm_account", "account"), ("slurm_extra", "slurm_extra")):
        if any(getattr(j, field) for j in jobs):
            resources[key] = lambda wildcards, field=field: getattr(job(wildcards), field) or ""
    return resources
