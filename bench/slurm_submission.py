"""6. SLURM: 1,000 chunks submitted, and a run of 300 chunks to the end.

Submission. Ours: ``ecod-jobs run --profile slurm`` on a 1,000-item batch in
chunks of one: seconds from the command's start until all 1,000 chunk jobs are
in SLURM's queue, and how many sbatch calls that took (distinct array job ids).
Baseline: one ``sbatch`` per chunk, in a loop. Both are cancelled once queued.

Completion. The same ``run_batch`` of 300 one-item chunks (command ``true``, so
that all of it is overhead) to the end on the SLURM profile, against the same
chunks on the local profile (2 cores) in the same run; every item must end
``success``. Per-chunk overhead: the wall-time difference per chunk, and the
CPU SLURM accounted to each array task (sacct TotalCPU), mean.
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
RUN_CHUNKS = 300
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


def _total_cpu_seconds(text: str) -> float:
    """sacct's TotalCPU ``[DD-][HH:]MM:SS.mmm`` in seconds."""
    days, _, clock = text.rpartition("-")
    parts = [float(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return (int(days or 0) * 24 + parts[0]) * 3600 + parts[1] * 60 + parts[2]


def run_to_completion(work: Path) -> list[Measurement]:
    """RUN_CHUNKS one-item chunks to the end on SLURM and on local cores, same run."""
    from ecod_jobs.config import load_config
    from ecod_jobs.db import Database, create_batch, init_schema, status_counts
    from ecod_jobs.items import ItemRow
    from ecod_jobs.launch import run_batch

    walls: dict[str, float] = {}
    with scratch_database() as section:
        config = write_config(work / "config.yaml", section, work / "work", 1, "true")
        db = Database(load_config(config))
        init_schema(db)
        cwd = os.getcwd()
        os.chdir(work)  # Snakemake's .snakemake/ and the SLURM logs go there
        try:
            for profile in ("local", "slurm"):
                batch_id = create_batch(db, profile, [ItemRow(f"item/{i}") for i in range(RUN_CHUNKS)])
                log(f"slurm: {RUN_CHUNKS} one-item chunks to the end on the {profile} profile")
                start = time.monotonic()
                result = run_batch(batch_id, profile=profile, config_path=config)
                walls[profile] = time.monotonic() - start
                counts = status_counts(db, batch_id)
                if result.returncode != 0 or counts != {"success": RUN_CHUNKS}:
                    raise RuntimeError(
                        f"{profile} run did not finish every item: {counts}, see {result.log_path}"
                    )
                if profile == "slurm":
                    log_text = result.log_path.read_text()
                    sbatch_calls = log_text.count("Submitted array job")
                    arrays = {
                        r[0].split("_")[0]
                        for r in db.query(
                            "SELECT slurm_job_id FROM ecod_schema.job WHERE batch_id = %s", (batch_id,)
                        )
                    }
        finally:
            os.chdir(cwd)
    out = subprocess.run(
        # not -X: a task's own line sums its steps' CPU only when the steps are asked for too
        ["sacct", "-n", "-P", "-j", ",".join(sorted(arrays)), "-o", "JobID,TotalCPU"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = [
        _total_cpu_seconds(total)
        for task, _, total in (line.partition("|") for line in out.splitlines())
        if total and "." not in task
    ]
    per_chunk = (walls["slurm"] - walls["local"]) / RUN_CHUNKS
    mean_cpu = sum(cpu) / max(len(cpu), 1)
    return [
        Measurement(
            "slurm_completion",
            f"SLURM: {RUN_CHUNKS} one-item chunks run to the end (s)",
            walls["slurm"],
            "s",
            baseline="the same chunks on the local profile, 2 cores",
            baseline_value=walls["local"],
            higher_is_better=False,
            notes=[
                f"{sbatch_calls} sbatch call(s); every item success",
                f"wall per chunk {walls['slurm'] / RUN_CHUNKS:.2f} s on SLURM,"
                f" {walls['local'] / RUN_CHUNKS:.2f} s locally: {per_chunk:.2f} s more per chunk",
                f"mean CPU per array task (sacct TotalCPU, {len(cpu)} tasks) {mean_cpu:.2f} s"
                " (about 10 s when each task started Snakemake twice)",
            ],
        )
    ]


def measure(work: Path) -> list[Measurement]:
    return submission(work) + run_to_completion(work)


def submission(work: Path) -> list[Measurement]:
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
            # stops the workflow as Ctrl-C does (SIGINT may be ignored: a background job)
            os.killpg(proc.pid, signal.SIGTERM)
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
            notes=["ecod-slurm arrays: up to 1,000 tasks per sbatch call (ecod-slurm-array-limit)"],
        ),
    ]
