"""Head-node crash mid-pipeline: SIGKILL ``ecod-jobs run`` and its Snakemake while stage
chunks run and the last windows' downstream stage is not yet selected; the same command
then finishes the batch, and each item-stage completes exactly once.

Every stage runs ``stage.sh``: it appends ``STAGE ITEM`` to ``started.log``, writes its
output, reports its coverage and appends ``STAGE ITEM`` to ``ran.log`` last. The first
run of ``chain 6`` hangs, so that its chunk (items 5 and 6) is running when the head
dies, with item 5 done: the chunk is stopped (local: the orphaned runner; SLURM:
scancel), item 5's chain is recorded from the chunk's partial results, and item 6's
chain starts again, since it never completed. No item-stage that completed runs again.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import q, run_cli, stage_job, start_cli, wait_for, write_config, write_items

pytestmark = pytest.mark.slow

STAGES = ("chain", "domain", "summary")  # summary: after chain and domain (fan-in)
ITEMS = 8
WINDOW = 4

SLOW = ("chain", 6)  # its first run hangs; chain 5, before it in its chunk, completes
STAGE_SCRIPT = r"""#!/bin/sh
stage=$1; item=$2; out=$3
here=$(dirname "$0")
echo "$stage $item" >> "$here/started.log"
if [ "$stage $item" = "@SLOW@" ] && [ ! -e "$here/slowed" ]; then touch "$here/slowed"; sleep 120; fi
mkdir -p "$(dirname "$out")"
echo "$stage $item" > "$out"
echo "coverage=0.$((item % 10))" >> "$ECOD_JOBS_METRICS"
echo "$stage $item" >> "$here/ran.log"
""".replace("@SLOW@", f"{SLOW[0]} {SLOW[1]}")


def make_batch(tmp_path: Path, database: dict[str, Any]) -> Path:
    """8 items in windows of 4; chunks of 2 items for the searches, 4 for the summary."""
    (tmp_path / "stage.sh").write_text(STAGE_SCRIPT)
    (tmp_path / "base").mkdir()

    def job(stage: str, size: int) -> dict[str, Any]:
        return stage_job(tmp_path, stage, size, time="00:10:00")

    cfg = write_config(
        tmp_path / "config.yml",
        {
            "database": database,
            "pipeline": {"work_root": str(tmp_path / "work"), "output_root": str(tmp_path / "results")},
            "job_types": {"chain": job("chain", 2), "domain": job("domain", 2), "summary": job("summary", 4)},
            "pipelines": {
                "crash": {
                    "window_size": WINDOW,
                    "stages": {"chain": {}, "domain": {}, "summary": {"after": ["chain", "domain"]}},
                }
            },
        },
    )
    items = write_items(tmp_path / "items.tsv", [f"data/chain{i}.fa" for i in range(1, ITEMS + 1)])
    base = str(tmp_path / "base")
    created = run_cli(
        "--config", str(cfg), "batch", "create", "--name", "crash", "--items", str(items), "--base-path", base
    )
    assert created.returncode == 0, created.stderr
    return cfg


def lines(path: Path) -> Counter[tuple[str, int]]:
    text = path.read_text() if path.exists() else ""
    return Counter((s, int(i)) for s, i in (line.split() for line in text.splitlines()))


def head_processes(snakemake_pid: int) -> list[int]:
    """Snakemake's main process and the Snakemake processes it started for its local
    checkpoints (same process group); not the chunk runners of the local profile, which
    a killed head leaves behind for the next run to stop."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getpgid(int(entry.name)) == snakemake_pid:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if b"snakemake" in argv or any(a.endswith(b"snakemake/__main__.py") for a in argv):
                    found.append(int(entry.name))
        except OSError:
            continue
    assert snakemake_pid in found, found
    return found


def crash_then_rerun(tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, profile: str) -> None:
    cfg = make_batch(tmp_path, scratch_db)
    command = ("--config", str(cfg), *f"run --batch 1 --pipeline crash --profile {profile}".split())
    first = start_cli(*command, cwd=tmp_path)
    ran, started = tmp_path / "ran.log", tmp_path / "started.log"
    wait_for(
        lambda: ("chain", 5) in lines(ran) and (tmp_path / "slowed").exists(),
        timeout=180,
        what=f"{SLOW} running",
    )
    snakemake_pid = q(pg_conn, "SELECT pid FROM ecod_schema.ecod_jobs_run")[0][0]
    os.kill(first.pid, signal.SIGKILL)  # the whole head side dies at once: ecod-jobs run,
    for pid in head_processes(snakemake_pid):  # Snakemake and its local checkpoints' processes
        os.kill(pid, signal.SIGKILL)
    first.wait()
    completed_at_kill = lines(ran)
    run_dir = next((tmp_path / "work" / "batch_1" / "pipeline.crash" / "runs").iterdir())
    # mid-pipeline: chunks were running, the last window's summary was not selected yet
    assert ("chain", 5) in completed_at_kill and SLOW not in completed_at_kill
    assert not (run_dir / "stages" / "summary" / f"w{ITEMS // WINDOW - 1:04d}" / "plan.json").exists()
    assert q(pg_conn, "SELECT status FROM ecod_schema.ecod_jobs_run") == [("running",)]

    second = start_cli(*command, cwd=tmp_path)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, out + err
    runs = q(pg_conn, "SELECT status FROM ecod_schema.ecod_jobs_run ORDER BY started_at")
    assert runs == [("interrupted",), ("success",)], out + err

    every = Counter({(s, i): 1 for s in STAGES for i in range(1, ITEMS + 1)})
    assert lines(ran) == every, "each item-stage completed exactly once"
    starts = lines(started)
    assert set(starts) == set(every) and starts[SLOW] == 2, "the item-stage killed mid-command ran again"
    assert starts[("chain", 5)] == 1, "the item-stage done before its chunk was stopped did not"
    assert Counter(q(pg_conn, "SELECT stage, status FROM ecod_schema.ecod_jobs_item_stage")) == {
        (s, "success"): ITEMS for s in STAGES
    }
    assert set(q(pg_conn, "SELECT status, current_stage FROM ecod_schema.process_status")) == {
        ("success", "summary_complete")
    }
    files = "SELECT count(*), count(DISTINCT (process_id, file_type)) FROM ecod_schema.process_file"
    assert q(pg_conn, files) == [(len(every), len(every))]
    assert q(pg_conn, "SELECT completed_items, status FROM ecod_schema.batch") == [(ITEMS, "completed")]


def test_local_pipeline_head_crash_then_rerun_completes_each_item_stage_once(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    crash_then_rerun(tmp_path, scratch_db, pg_conn, "local")


@pytest.mark.slurm
def test_slurm_pipeline_head_crash_then_rerun_completes_each_item_stage_once(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, slurm_cluster: None
) -> None:
    from ecod_jobs.recovery import slurm_name_prefix

    def tasks_of(run_id: str) -> list[str]:
        out = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i %j"], capture_output=True, text=True)
        return [
            t.split()[0]
            for t in out.stdout.splitlines()
            if t.split()[1].startswith(slurm_name_prefix(run_id))
        ]

    try:
        crash_then_rerun(tmp_path, scratch_db, pg_conn, "slurm")
        dead = q(pg_conn, "SELECT run_id::text FROM ecod_schema.ecod_jobs_run WHERE status = 'interrupted'")
        assert tasks_of(dead[0][0]) == [], "the dead run's tasks were cancelled"
    finally:  # never leave the one node busy for later tests
        for (run_id,) in q(pg_conn, "SELECT run_id::text FROM ecod_schema.ecod_jobs_run"):
            if left := tasks_of(run_id):
                subprocess.run(["scancel", *left], check=False)
