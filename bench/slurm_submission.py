"""6. SLURM submission: 1,000 chunks onto the local cluster.

Ours: ``ecod-jobs run --profile slurm`` on a 1,000-item batch in chunks of one:
seconds from the command's start until all 1,000 chunk jobs are in SLURM's
queue, and how many sbatch calls that took (distinct array job ids: one per
array, one per plain job). Baseline: one ``sbatch`` per chunk, in a loop.
Both are cancelled once queued: the measurement is submission, not running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .common import Measurement, log, scratch_database, timed
from .registration import write_config

CHUNKS = 1000
BASELINE_NAME = "ecodbench_baseline"
TIMEOUT = 300


def queued_jobs(exclude: set[str]) -> dict[str, str]:
    """Every job SLURM knows (arrays expanded, finished ones too): job id -> array job id."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%F|%j"], capture_output=True, text=True, check=True
    ).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, array_id, name = line.split("|", 2)
        if job_id not in exclude and name.startswith("ecod") and name != BASELINE_NAME:
            jobs[job_id] = array_id
    return jobs


def cancel_all(names: set[str]) -> None:
    for name in names:
        subprocess.run(["scancel", "--name", name], capture_output=True)


def measure(work: Path) -> list[Measurement]:
    if not shutil.which("sbatch"):
        raise RuntimeError("SLURM is not installed: run scripts/slurm-cluster up (as root)")
    from ecod_jobs.config import load_config
    from ecod_jobs.db import Database, create_batch, init_schema
    from ecod_jobs.items import ItemRow

    before = set(queued_jobs(set()))
    with scratch_database() as section:
        config = write_config(work / "config.yaml", section, work / "work", 1, "sleep 60")
        db = Database(load_config(config))
        init_schema(db)
        batch_id = create_batch(db, "slurm submission", [ItemRow(f"item/{i}") for i in range(CHUNKS)])
        log(f"slurm: ecod-jobs run --profile slurm, {CHUNKS:,} chunks until all are queued")
        start = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ecod_jobs.cli",
                "--config",
                str(config),
                "run",
                "--batch",
                str(batch_id),
                "--profile",
                "slurm",
            ],
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        jobs: dict[str, str] = {}
        try:
            while time.monotonic() - start < TIMEOUT and proc.poll() is None:
                jobs = queued_jobs(before)
                if len(jobs) >= CHUNKS:
                    break
                time.sleep(0.2)
            ours = time.monotonic() - start
        finally:
            names = set(
                subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout.split()
            ) - {BASELINE_NAME}
            os.killpg(proc.pid, signal.SIGINT)  # Snakemake cancels its jobs on Ctrl-C
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            cancel_all({n for n in names if n.startswith("ecod")})
    if len(jobs) < CHUNKS:
        raise RuntimeError(f"only {len(jobs)} of {CHUNKS} chunk jobs were queued after {TIMEOUT} s")
    sbatch_calls = len(set(jobs.values()))

    log(f"slurm: {CHUNKS:,} x sbatch, one per chunk (baseline)")
    script = work / "chunk.sh"
    script.write_text("#!/bin/bash\nsleep 60\n")

    def one_per_chunk() -> None:
        for _i in range(CHUNKS):
            subprocess.run(
                [
                    "sbatch",
                    "--parsable",
                    "-J",
                    BASELINE_NAME,
                    "--mem",
                    "100M",
                    "-t",
                    "5",
                    "-o",
                    "/dev/null",
                    str(script),
                ],
                check=True,
                capture_output=True,
            )

    try:
        baseline, _ = timed(one_per_chunk)
    finally:
        cancel_all({BASELINE_NAME})
    return [
        Measurement(
            "slurm_submission",
            f"SLURM: {CHUNKS:,} chunks queued (s)",
            ours,
            "s",
            baseline="one sbatch per chunk",
            baseline_value=baseline,
            higher_is_better=False,
            notes=[f"includes Snakemake start-up and the plan checkpoint; {sbatch_calls} sbatch calls"],
        ),
        Measurement(
            "slurm_sbatch_calls",
            f"SLURM: sbatch calls for {CHUNKS:,} chunks",
            sbatch_calls,
            "calls",
            baseline="one sbatch per chunk",
            baseline_value=CHUNKS,
            higher_is_better=False,
            goal="<= 2",
            met=sbatch_calls <= 2,
        ),
    ]
