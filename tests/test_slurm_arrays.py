"""ecod-jobs' own SLURM arrays without a cluster: task scripts, the throttle budget, the task check."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, write_plan

from ecod_jobs.chunk_runner import check_task, run_chunk
from ecod_jobs.layout import RunLayout
from ecod_jobs.slurm_arrays import (
    ArrayBudget,
    array_spec,
    dispatcher_script,
    task_script,
    tasks_by_array,
    write_task_scripts,
)


def test_each_task_runs_its_own_script(tmp_path: Path) -> None:
    """The dispatcher runs tasks/$SLURM_ARRAY_TASK_ID.sh, whatever the array's size."""
    task_dir = tmp_path / "tasks dir"  # a space: quoted
    scripts = [
        task_script(
            f"echo ran $ECOD_JOBS_TASK_CHUNK $ECOD_JOBS_TASK_INDEX > {tmp_path}/out-{i}",
            index=i,
            rule="chunk",
            wildcards={"run": "r1", "chunk": f"c{i:05d}"},
            workdir=str(tmp_path),
            make_dirs=[str(tmp_path / "made" / "here")],
        )
        for i in range(1, 1201)
    ]
    write_task_scripts(task_dir, scripts)
    dispatcher = tmp_path / "dispatch.sh"
    dispatcher.write_text(dispatcher_script(task_dir))
    assert len(dispatcher_script(task_dir)) < 300, "the batch script does not grow with the array"
    for task in (1, 2, 777, 1200):
        subprocess.run(["/bin/sh", str(dispatcher)], env={"SLURM_ARRAY_TASK_ID": str(task)}, check=True)
        assert (tmp_path / f"out-{task}").read_text() == f"ran c{task:05d} {task}\n"
    assert (tmp_path / "made" / "here").is_dir()
    missing = subprocess.run(["/bin/sh", str(dispatcher)], env={"SLURM_ARRAY_TASK_ID": "1201"})
    assert missing.returncode != 0, "a task without its script fails rather than running another"


def test_task_stops_at_the_first_failure(tmp_path: Path) -> None:
    script = tmp_path / "t.sh"
    script.write_text(
        task_script("false | true; echo after > out", index=1, rule="r", wildcards={}, workdir=str(tmp_path))
    )
    assert subprocess.run(["bash", str(script)]).returncode != 0, "pipefail, as Snakemake's shell"
    assert not (tmp_path / "out").exists()


def test_a_task_running_another_tasks_script_is_refused(tmp_path: Path) -> None:
    """Two task scripts swapped on disk: each runner sees that its array task is not the one
    its script was written for, runs nothing and leaves the reason for the head."""
    run = RunLayout(tmp_path / "run1", "run1")
    run.manifest("c00000").parent.mkdir(parents=True)
    for i in range(2):
        run.manifest(f"c{i:05d}").write_text(json.dumps({"process_id": i, "path": "/x"}) + "\n")
    write_plan(run, "touch ran-{item_id}", str(tmp_path), chunks=2)
    scripts = [
        task_script(
            f"{sys.executable} -m ecod_jobs.chunk_runner --run-dir {run.dir} --chunk c0000{i - 1}",
            index=i,
            rule="chunk",
            wildcards={"run": "run1", "chunk": f"c0000{i - 1}"},
            workdir=str(REPO),
        )
        for i in (1, 2)
    ]
    task_dir = tmp_path / "tasks"
    write_task_scripts(task_dir, scripts[::-1])  # task 1 gets task 2's script and the other way round
    dispatcher = tmp_path / "dispatch.sh"
    dispatcher.write_text(dispatcher_script(task_dir))
    for task in (1, 2):
        env = {**os.environ, "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": str(task)}
        assert subprocess.run(["/bin/sh", str(dispatcher)], env=env).returncode == 4
    assert not list(tmp_path.glob("ran-*")) and not run.result("c00000").exists()
    reasons = " ".join(run.misrouted_reasons())
    assert "SLURM task 77_1 ran the script of array task 2 (chunk c00001)" in reasons
    assert "SLURM task 77_2 ran the script of array task 1 (chunk c00000)" in reasons
    # in its own slot, the same script runs its chunk
    write_task_scripts(task_dir, scripts)
    env = {**os.environ, "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "1"}
    assert subprocess.run(["/bin/sh", str(dispatcher)], env=env).returncode == 0
    assert (tmp_path / "ran-0").exists() and run.result("c00000").exists()


def test_array_spec() -> None:
    assert array_spec(150, 0) == "1-150"
    assert array_spec(150, 20) == "1-150%20"


def test_tasks_by_array() -> None:
    assert tasks_by_array(["7_1", "7_3", "9_2", "12"]) == {"7": 2, "9": 1}


def _apply(budget: ArrayBudget, remaining: dict[str, int]) -> list[tuple[str, int, bool]]:
    changes = budget.rebalance(remaining)
    for change in changes:
        budget.confirm(change)
    return [(c.array_id, c.throttle, c.release) for c in changes]


def test_budget_shares_the_limit_among_arrays() -> None:
    budget = ArrayBudget(limit=10)
    assert budget.admit(6) == (6, False)
    budget.submitted("a", 6, 6, False)
    assert budget.admit(8) == (4, False)
    budget.submitted("b", 8, 4, False)
    assert budget.admit(3) == (0, True), "nothing free: submitted held"
    budget.submitted("c", 3, 0, True)
    # a's tasks drain: its throttle shrinks to what is left, the rest goes to b, then c
    assert _apply(budget, {"a": 2, "b": 8, "c": 3}) == [("b", 8, False)]
    assert _apply(budget, {"a": 0, "b": 5, "c": 3}) == [("c", 3, True)]
    assert set(budget.arrays) == {"b", "c"} and not budget.arrays["c"].held


def test_a_refused_change_is_undone_and_proposed_again() -> None:
    budget = ArrayBudget(limit=2)
    budget.submitted("a", 2, 2, False)
    budget.submitted("b", 2, 0, True)
    [change] = budget.rebalance({"a": 0, "b": 2})
    assert (change.throttle, change.release) == (2, True)
    budget.undo(change)  # scontrol failed: nothing changed in SLURM
    assert budget.arrays["b"].throttle == 0 and budget.arrays["b"].held
    assert _apply(budget, {"b": 2}) == [("b", 2, True)]
    assert not budget.arrays["b"].held and _apply(budget, {"b": 1}) == []


def test_budget_never_exceeds_its_limit() -> None:
    """Random submissions and drains: the throttles (each array's running tasks can never
    exceed its throttle) never add up to more than the limit, and every array finishes."""
    rng = random.Random(12)
    for limit in (1, 3, 50):
        budget = ArrayBudget(limit=limit)
        left: dict[str, int] = {}
        ids = itertools.count()
        for _step in range(400):
            if rng.random() < 0.2:
                tasks = rng.randint(1, 80)
                throttle, held = budget.admit(tasks)
                array_id = str(next(ids))
                budget.submitted(array_id, tasks, throttle, held)
                left[array_id] = tasks
            # running tasks of an array are at most its throttle; some of them end
            for array_id, array in list(budget.arrays.items()):
                left[array_id] -= rng.randint(0, min(array.throttle, left[array_id]))
            _apply(budget, {a: left[a] for a in budget.arrays})
            assert sum(a.throttle for a in budget.arrays.values()) <= limit
            assert all(a.throttle >= 1 or a.held for a in budget.arrays.values())
        for _drain in range(10_000):
            if not budget.arrays:
                break
            for array_id, array in list(budget.arrays.items()):
                left[array_id] -= min(array.throttle, left[array_id])
            _apply(budget, {a: left[a] for a in budget.arrays})
        assert not budget.arrays, "held arrays are released and every array drains"


def test_unlimited_budget_never_throttles() -> None:
    budget = ArrayBudget(limit=0)
    assert budget.admit(5000) == (0, False)
    budget.submitted("a", 5000, 0, False)
    assert budget.rebalance({"a": 10}) == [] and not budget.arrays


@pytest.mark.parametrize(
    ("environ", "refused"),
    [
        ({}, False),
        ({"ECOD_JOBS_TASK_CHUNK": "c00002", "ECOD_JOBS_TASK_RUN": "run1"}, False),
        ({"ECOD_JOBS_TASK_CHUNK": "c00001"}, True),
        ({"ECOD_JOBS_TASK_CHUNK": "c00002", "ECOD_JOBS_TASK_RUN": "run0"}, True),
        ({"ECOD_JOBS_TASK_INDEX": "3", "SLURM_ARRAY_JOB_ID": "5", "SLURM_ARRAY_TASK_ID": "3"}, False),
        ({"ECOD_JOBS_TASK_INDEX": "4", "SLURM_ARRAY_JOB_ID": "5", "SLURM_ARRAY_TASK_ID": "3"}, True),
    ],
)
def test_check_task(environ: dict[str, str], refused: bool) -> None:
    reason = check_task({**environ, "SLURM_JOB_ID": "5"}, "run1", "c00002")
    assert (reason is not None) == refused
    if refused:
        assert "c00002" in str(reason) and "the array submission is broken" in str(reason)


def test_runner_refuses_another_chunk_and_leaves_a_record(tmp_path: Path) -> None:
    """A task submitted for c00001 but told to run c00000 runs nothing and says why."""
    run = RunLayout(tmp_path / "run1", "run1")
    run.manifest("c00000").parent.mkdir(parents=True)
    run.manifest("c00000").write_text(json.dumps({"process_id": 1, "path": "/x"}) + "\n")
    write_plan(run, "touch ran", str(tmp_path), chunks=1)
    environ = {"ECOD_JOBS_TASK_CHUNK": "c00001", "SLURM_ARRAY_JOB_ID": "9", "SLURM_ARRAY_TASK_ID": "2"}
    assert run_chunk(run.dir, "c00000", environ) == 4
    assert not run.result("c00000").exists() and not run.attempts("c00000")
    reason = run.misrouted_reason("c00001")
    assert reason and "SLURM task 9_2 was submitted for chunk c00001" in reason
    assert run.misrouted_reasons() == [reason]


def test_runner_of_a_pipeline_stage_window_checks_the_run_of_its_plan(tmp_path: Path) -> None:
    """A stage window's directory (runs/{run}/stages/{stage}/{window}) is named after its
    window: the task's run is checked against the plan's run id, not the directory's name."""
    run = RunLayout(tmp_path / "runs" / "run1", "run1").stage_run("chain", "w0000")
    run.manifest("c00000").parent.mkdir(parents=True)
    run.manifest("c00000").write_text(json.dumps({"process_id": 1, "path": "/x"}) + "\n")
    write_plan(run, "touch ran", str(tmp_path), chunks=1)
    environ = {
        "ECOD_JOBS_TASK_CHUNK": "c00000",
        "ECOD_JOBS_TASK_RUN": "run1",
        "SLURM_ARRAY_JOB_ID": "9",
        "SLURM_ARRAY_TASK_ID": "1",
    }
    assert run_chunk(run.dir, "c00000", environ) == 0
    assert run.result("c00000").exists() and not run.misrouted_reasons()
