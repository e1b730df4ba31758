# Shared set-up. Runs in every Snakemake process, including SLURM jobs on
# compute nodes: it reads configuration only and never touches PostgreSQL.

import sys
from pathlib import Path

from snakemake.utils import validate

from ecod_jobs.plan_file import Plan
from ecod_jobs.workflow import context_from_config, on_finish, on_start, plan_checkpoint


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
    spec = CTX.spec
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
