"""The test cluster itself: real sbatch, arrays and accounting (what later tests rely on)."""

from __future__ import annotations

import subprocess
import time

import pytest

pytestmark = pytest.mark.slurm


def sacct_states(job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if line)


def wait_finished(job_id: str, expected: int, timeout: float = 120) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = sacct_states(job_id)
        if len(states) >= expected and all(s not in ("PENDING", "RUNNING") for s in states.values()):
            return states
        time.sleep(1)
    raise AssertionError(f"job {job_id} not finished in {timeout}s: {sacct_states(job_id)}")


def test_sbatch_and_array_with_accounting(slurm_cluster: None, tmp_path) -> None:
    single = subprocess.run(
        ["sbatch", "--parsable", "-o", str(tmp_path / "s.out"), "--wrap", "echo hi"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    array = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--array=1-4%2",
            "-o",
            str(tmp_path / "a_%A_%a.out"),
            "--wrap",
            "echo task $SLURM_ARRAY_TASK_ID",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert wait_finished(single, 1) == {single: "COMPLETED"}
    states = wait_finished(array, 4)
    assert sorted(states) == [f"{array}_{i}" for i in range(1, 5)]
    assert set(states.values()) == {"COMPLETED"}
    assert (tmp_path / f"a_{array}_3.out").read_text().strip() == "task 3"
