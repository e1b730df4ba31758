"""SlurmJobManager against the real single-node cluster (scripts/slurm-cluster up)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_managers_script import EXPECTED, TRICKY

from ecod_jobs import SlurmJobManager, create_job_manager, slurm_commands

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parent.parent
SMALL = {"memory": "100M", "threads": 1, "time": "00:05:00"}


@pytest.fixture
def slurm(slurm_cluster: None) -> Iterator[SlurmJobManager]:
    manager = create_job_manager({"job_manager": {"type": "SLURM"}})
    assert isinstance(manager, SlurmJobManager)
    yield manager
    unfinished = [
        j for j, s in manager.check_job_statuses(list(manager._submitted)).items() if s != "COMPLETED"
    ]
    if unfinished:
        slurm_commands.scancel(unfinished)


def test_submit_poll_output_with_tricky_commands(slurm: SlurmJobManager, tmp_path: Path) -> None:
    script = slurm.create_job_script(TRICKY, "tricky", tmp_path, **SMALL)
    job_id = slurm.submit_job(script)
    assert job_id.isdigit()
    assert slurm.check_job_status(job_id) in {"PENDING", "RUNNING", "COMPLETING", "COMPLETED"}
    assert slurm.wait(job_id, timeout=120) == {job_id: "COMPLETED"}
    output = slurm.get_job_output(job_id, tmp_path, "tricky")
    assert output["stdout"] == EXPECTED
    assert output["stderr"] is not None and "all 6 commands succeeded" in output["stderr"]
    deadline = time.monotonic() + 30
    while (info := slurm.job_info([job_id])[job_id]).req_mem_mb is None and time.monotonic() < deadline:
        time.sleep(1)  # sacct's record arrives a moment after squeue's state
    assert info.exit_code == 0 and info.node and info.req_mem_mb == 100 and info.req_time_seconds == 300


def test_failing_command_is_failed_with_its_exit_status(slurm: SlurmJobManager, tmp_path: Path) -> None:
    script = slurm.create_job_script(["echo before", "exit 7", "echo after"], "fails", tmp_path, **SMALL)
    job_id = slurm.submit_job(script)
    assert slurm.wait(job_id, timeout=120) == {job_id: "FAILED"}
    deadline = time.monotonic() + 30
    while (info := slurm.job_info([job_id])[job_id]).exit_code is None and time.monotonic() < deadline:
        time.sleep(1)  # sacct may lag squeue by a moment
    assert info.exit_code == 7
    assert slurm.get_job_output(job_id, tmp_path, "fails")["stdout"] == "before\n"


def test_cancel_running_job(slurm: SlurmJobManager, tmp_path: Path) -> None:
    job_id = slurm.submit_job(slurm.create_job_script(["sleep 300"], "cancel", tmp_path, **SMALL))
    deadline = time.monotonic() + 60
    while slurm.check_job_status(job_id) != "RUNNING":
        assert time.monotonic() < deadline, "job did not start"
        time.sleep(0.5)
    assert slurm.cancel_job(job_id) is True
    assert slurm.wait(job_id, timeout=60) == {job_id: "CANCELLED"}
    # sacct's own spelling is 'CANCELLED by 0'; it maps to CANCELLED, not running forever
    deadline = time.monotonic() + 30
    sacct = slurm_commands.sacct_records
    while (record := sacct([job_id]).get(job_id)) is None or record.state != "CANCELLED":
        assert time.monotonic() < deadline, f"sacct never recorded the cancel: {record}"
        time.sleep(1)
    assert record.raw_state is not None and record.raw_state.startswith("CANCELLED by ")
    assert slurm.check_job_status(job_id) == "CANCELLED"
    assert slurm.cancel_job(job_id) is True  # gone already: still True


def test_check_all_jobs_counts_only_the_batch(slurm: SlurmJobManager, tmp_path: Path) -> None:
    foreign = subprocess.run(
        ["sbatch", "--parsable", "--mem=50M", "-o", "/dev/null", "--wrap", "sleep 120"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        items = [(i, f"/data/p{i}.fa") for i in range(1, 61)]
        jobs = slurm.create_batch_jobs(
            items,
            batch_size=20,
            job_template={
                "name": "many",
                "output_dir": str(tmp_path),
                "command_template": lambda item_id, path: f"echo {item_id} {path}",
                **SMALL,
            },
        )
        assert len(jobs) == 3
        ids = [slurm.submit_job(job["script_path"], batch_id=11) for job in jobs]
        other = slurm.submit_job(slurm.create_job_script(["exit 2"], "other", tmp_path, **SMALL), batch_id=12)
        assert set(slurm.wait([*ids, other], timeout=180).values()) == {"COMPLETED", "FAILED"}
        assert slurm.check_all_jobs(batch_id=11) == (3, 0, 0)
        assert slurm.check_all_jobs(batch_id=12) == (0, 1, 0)
        assert slurm.check_all_jobs() == (3, 1, 0)  # this manager's jobs, not the foreign one
        assert slurm.check_job_status(foreign) in {"PENDING", "RUNNING"}
        out = slurm.get_job_output(ids[1], tmp_path, "many_1")["stdout"]
        assert out is not None and out.splitlines() == [f"{i} /data/p{i}.fa" for i in range(21, 41)]
    finally:
        slurm_commands.scancel([foreign])


def test_array_job(slurm: SlurmJobManager, tmp_path: Path) -> None:
    script = slurm.create_job_script(
        ['echo "task $SLURM_ARRAY_TASK_ID"; [ "$SLURM_ARRAY_TASK_ID" != 2 ]'],
        "arr",
        tmp_path,
        array="1-3",
        **SMALL,
    )
    job_id = slurm.submit_job(script)
    assert slurm.wait(job_id, timeout=120) == {job_id: "FAILED"}
    assert slurm.check_job_statuses([f"{job_id}_1", f"{job_id}_2"]) == {
        f"{job_id}_1": "COMPLETED",
        f"{job_id}_2": "FAILED",
    }
    assert slurm.get_job_output(f"{job_id}_3", tmp_path, "arr")["stdout"] == "task 3\n"
    assert slurm.get_job_output(job_id, tmp_path, "arr")["stdout"] == "task 1\ntask 2\ntask 3\n"


def test_submitting_from_inside_a_job(slurm: SlurmJobManager, tmp_path: Path) -> None:
    """A pipeline step running in SLURM submits a job: the parent's allocation does not leak,
    and the log records say where it came from."""
    inner = (
        "import logging; logging.basicConfig(level=logging.INFO);"
        "from ecod_jobs import SlurmJobManager;"
        "m = SlurmJobManager({'job_manager': {'type': 'slurm'}});"
        "s = m.create_job_script(['echo inner; env | grep -c ^SLURM_MEM_PER_CPU= || true'], 'inner',"
        f" {str(tmp_path)!r}, memory='100M');"
        "print(m.submit_job(s))"
    )
    outer = slurm.create_job_script(
        [f"PYTHONPATH={REPO} {sys.executable} -c {shlex.quote(inner)}"],
        "outer",
        tmp_path,
        **SMALL,
    )
    # the outer job asks for memory per CPU, which would leak into the inner job's environment
    text = Path(outer).read_text().replace("#SBATCH --mem=100M", "#SBATCH --mem-per-cpu=100M")
    Path(outer).write_text(text)
    outer_id = slurm.submit_job(outer)
    assert slurm.wait(outer_id, timeout=120) == {outer_id: "COMPLETED"}
    output = slurm.get_job_output(outer_id, tmp_path, "outer")
    inner_id = (output["stdout"] or "").strip()
    assert inner_id.isdigit(), output
    assert f"from inside SLURM job {outer_id}" in (output["stderr"] or "")
    assert "on cluster ecodtest" in (output["stderr"] or "")
    assert slurm.wait(inner_id, timeout=120) == {inner_id: "COMPLETED"}
    assert slurm.get_job_output(inner_id, tmp_path, "inner")["stdout"] == "inner\n0\n"
    shown = subprocess.run(["scontrol", "show", "job", inner_id], capture_output=True, text=True).stdout
    assert f"Comment=ecod_jobs parent={outer_id}" in shown


@pytest.mark.slow
def test_time_limit_gives_timeout(slurm: SlurmJobManager, tmp_path: Path) -> None:
    job_id = slurm.submit_job(slurm.create_job_script(["sleep 600"], "slow", tmp_path, memory="50M", time=1))
    assert slurm.wait(job_id, timeout=200, poll_interval=5) == {job_id: "TIMEOUT"}
    info = slurm.job_info([job_id])[job_id]
    assert info.phase.value == "failed" and info.reason and "time limit" in info.reason
