"""A pipeline run on the real SLURM cluster: each stage's chunks are job arrays of its own,
asking for the stage's own memory and time, and every item-stage is done exactly once.

Four stages over 24 items in windows of 8: two independent searches (fan-out), a gated
stage for the items with low coverage, and a summary over whatever ran (fan-in). Each
stage asks for its own memory and time (the summary's memory and the gated stage's
partition are the pipeline stage's overrides of its job type's), so no array can hold
chunks of two stages.

Then the scale a real batch has: a stage of 160 one-item chunks, and a fan-in after it.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import q, run_cli, stage_job, write_config, write_items

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# stage -> (batch_size, memory MB, time minutes)
STAGES = {"chain": (2, 200, 5), "domain": (4, 300, 6), "deep": (1, 400, 7), "summary": (4, 500, 8)}
ITEMS = 24
PARTITION = "debug"  # the test cluster's (scripts/slurm-cluster)
WINDOW = 8

# Writes its output, reports coverage (item id's last digit / 10), then appends
# "STAGE ITEM" to ran.log: a completed item-stage is counted once per completion.
STAGE_SCRIPT = r"""#!/bin/sh
stage=$1; item=$2; out=$3
mkdir -p "$(dirname "$out")"
echo "$stage $item" > "$out"
echo "coverage=0.$((item % 10))" >> "$ECOD_JOBS_METRICS"
echo "$stage $item" >> "$(dirname "$0")/ran.log"
"""


def pipeline_config(tmp_path: Path, database: dict[str, Any]) -> Path:
    def job(stage: str) -> dict[str, Any]:
        size, mem, minutes = STAGES[stage]
        memory = "100M" if stage == "summary" else f"{mem}M"  # summary: the stage's override
        return stage_job(tmp_path, stage, size, memory=memory, time=f"00:{minutes:02d}:00")

    stages = {
        "chain": {},
        "domain": {},
        "deep": {"after": ["chain", "domain"], "when": "domain.coverage < 0.5", "partition": PARTITION},
        "summary": {"after": ["domain", "deep"], "if_upstream_skipped": "run", "memory": "500M"},
    }
    return write_config(
        tmp_path / "config.yml",
        {
            "database": database,
            "pipeline": {"work_root": str(tmp_path / "work"), "output_root": str(tmp_path / "results")},
            "job_types": {stage: job(stage) for stage in STAGES},
            "pipelines": {"search": {"stages": stages, "window_size": WINDOW}},
        },
    )


def ran(tmp_path: Path) -> Counter[tuple[str, int]]:
    log = tmp_path / "ran.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter((s, int(i)) for s, i in (line.split() for line in lines))


def deep_runs(item: int) -> bool:
    return item % 10 < 5


def test_pipeline_stages_run_as_job_arrays_with_their_own_resources(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, slurm_cluster: None
) -> None:
    (tmp_path / "stage.sh").write_text(STAGE_SCRIPT)
    cfg = pipeline_config(tmp_path, scratch_db)
    (tmp_path / "base").mkdir()
    items = write_items(tmp_path / "items.tsv", [f"data/chain{i}.fa" for i in range(1, ITEMS + 1)])
    base = str(tmp_path / "base")
    created = run_cli(
        "--config", str(cfg), "batch", "create", "--name", "p", "--items", str(items), "--base-path", base
    )
    assert created.returncode == 0, created.stderr
    elsewhere = tmp_path / "elsewhere"  # not the source tree: the profile and workflow are found anyway
    elsewhere.mkdir()

    run = ["run", "--batch", "1", "--pipeline", "search", "--profile", "slurm"]
    result = run_cli("--config", str(cfg), *run, cwd=elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr

    # every item-stage exactly once; deep only where domain's coverage was low
    expected = Counter(
        {(s, i): 1 for s in STAGES for i in range(1, ITEMS + 1) if s != "deep" or deep_runs(i)}
    )
    assert ran(tmp_path) == expected
    states = Counter(q(pg_conn, "SELECT stage, status FROM ecod_schema.ecod_jobs_item_stage"))
    deep = sum(deep_runs(i) for i in range(1, ITEMS + 1))
    assert states == Counter(
        {
            ("chain", "success"): ITEMS,
            ("domain", "success"): ITEMS,
            ("summary", "success"): ITEMS,
            ("deep", "success"): deep,
            ("deep", "skipped"): ITEMS - deep,
        }
    )
    assert set(q(pg_conn, "SELECT status, current_stage FROM ecod_schema.process_status")) == {
        ("success", "summary_complete")
    }

    # every chunk ran once, as an array task; an array holds one stage's chunks only
    jobs = q(pg_conn, "SELECT job_type, chunk_id, status, slurm_job_id FROM ecod_schema.job")
    windows = [range(w + 1, w + WINDOW + 1) for w in range(0, ITEMS, WINDOW)]
    assert Counter(j[0] for j in jobs) == {
        s: sum(-(-sum(s != "deep" or deep_runs(i) for i in w) // STAGES[s][0]) for w in windows)
        for s in STAGES
    }, "one job row (one attempt) per chunk"
    assert {j[2] for j in jobs} == {"completed"}
    assert all(j[3] and j[3].count("_") == 1 and j[3].replace("_", "").isdigit() for j in jobs), jobs
    stage_of_array: dict[str, set[str]] = {}
    for job_type, _chunk, _status, slurm_id in jobs:
        stage_of_array.setdefault(slurm_id.split("_")[0], set()).add(job_type)
    assert all(len(s) == 1 for s in stage_of_array.values()), stage_of_array
    assert len(stage_of_array) > len(STAGES), "several arrays (one per stage and window or round)"

    # what SLURM was asked for: each stage's memory and time (and the gated stage's partition)
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", ",".join(stage_of_array), "-o", "JobID,ReqMem,Timelimit,Partition"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    asked = {line.split("|")[0]: tuple(line.split("|")[1:]) for line in out.splitlines() if line}
    for job_type, _chunk, _status, slurm_id in jobs:
        _size, mem, minutes = STAGES[job_type]
        assert asked[slurm_id][:2] == (f"{mem}M", f"00:{minutes:02d}:00"), (
            job_type,
            slurm_id,
            asked[slurm_id],
        )
    assert {asked[j[3]][2] for j in jobs if j[0] == "deep"} == {PARTITION}


def test_a_stage_of_160_chunks_finishes_each_item_stage_once(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, slurm_cluster: None
) -> None:
    """At the size where the plugin's arrays once broke (about 65 tasks): a stage of 160
    one-item chunks in one window, so in arrays of more than 65 tasks, then a fan-in stage
    over them. Every item-stage runs once, each chunk in an array task of its own."""
    n, summary_size = 160, 40
    (tmp_path / "stage.sh").write_text(STAGE_SCRIPT)

    cfg = write_config(
        tmp_path / "config.yml",
        {
            "database": scratch_db,
            "pipeline": {"work_root": str(tmp_path / "work"), "output_root": str(tmp_path / "results")},
            "job_types": {
                "chain": stage_job(tmp_path, "chain", 1),
                "summary": stage_job(tmp_path, "summary", summary_size),
            },
            "pipelines": {
                "wide": {"stages": {"chain": {}, "summary": {"after": ["chain"]}}, "window_size": n}
            },
        },
    )
    (tmp_path / "base").mkdir()
    items = write_items(tmp_path / "items.tsv", [f"data/chain{i}.fa" for i in range(1, n + 1)])
    created = run_cli(
        "--config", str(cfg), "batch", "create", "--name", "w", "--items", str(items),
        "--base-path", str(tmp_path / "base"),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    result = run_cli(
        "--config", str(cfg), "run", "--batch", "1", "--pipeline", "wide", "--profile", "slurm", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr

    assert ran(tmp_path) == Counter({(s, i): 1 for s in ("chain", "summary") for i in range(1, n + 1)})
    assert Counter(q(pg_conn, "SELECT stage, status FROM ecod_schema.ecod_jobs_item_stage")) == {
        ("chain", "success"): n,
        ("summary", "success"): n,
    }
    assert set(q(pg_conn, "SELECT status, current_stage FROM ecod_schema.process_status")) == {
        ("success", "summary_complete")
    }
    jobs = q(pg_conn, "SELECT job_type, status, slurm_job_id FROM ecod_schema.job")
    assert Counter(j[0] for j in jobs) == {"chain": n, "summary": n // summary_size}
    assert {j[1] for j in jobs} == {"completed"}
    chain_tasks = [j[2] for j in jobs if j[0] == "chain"]
    assert len(set(chain_tasks)) == n and all(t and "_" in t for t in chain_tasks), "a task per chunk"
    arrays = Counter(t.split("_")[0] for t in chain_tasks)
    assert max(arrays.values()) > 65, arrays
