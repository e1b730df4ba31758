"""SLURM at the scale ECOD runs: hundreds of chunks to the end, a thousand and more at submission,
the run-wide throttle, and a task told to run another chunk.

Plugin 2.8.0's arrays broke past about 65 tasks (every task ran the first chunk);
these tests run past that, and past one array (1,000 tasks per sbatch call).
"""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import RAN, assert_each_item_once, commands_ran, q, setup_batch, start_cli, wait_for

from ecod_jobs.launch import run_batch


def _sacct(array_ids: set[str]) -> list[tuple[str, str, datetime, datetime]]:
    """(task id, state, start, end) of every task of the arrays, from accounting."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", ",".join(sorted(array_ids)), "-o", "JobID,State,Start,End"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        task, state, start, end = line.split("|")
        if "_" in task and "[" not in task:
            rows.append((task, state, datetime.fromisoformat(start), datetime.fromisoformat(end)))
    return rows


@pytest.mark.slurm
def test_150_chunks_finish_with_every_item_done_once(
    tmp_path: Path,
    scratch_db: dict[str, Any],
    pg_conn: Any,
    slurm_cluster: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    n = 150
    cfg, batch = setup_batch(tmp_path, scratch_db, n=n, batch_size=1, command=RAN)
    (tmp_path / "data" / "chain 3.fa").write_text(">p3\nM\n")  # every item has its input
    started = time.monotonic()
    result = run_batch(
        batch, profile="slurm", config_path=cfg, ecod_slurm_init_seconds_before_status_checks=5
    )
    wall = time.monotonic() - started
    log = result.log_path.read_text()
    assert result.returncode == 0, log[-3000:]
    assert result.by_status == {"success": n}
    assert_each_item_once(pg_conn, n, run_id=result.run_id, ran=tmp_path / "echo")
    jobs = q(
        pg_conn,
        "SELECT chunk_id, status, slurm_job_id FROM ecod_schema.job WHERE run_id = %s ORDER BY chunk_id",
        result.run_id,
    )
    assert len(jobs) == n and {j[1] for j in jobs} == {"completed"}, "one attempt per chunk, all completed"
    assert len({j[2] for j in jobs}) == n, "each chunk ran in its own array task"
    # each chunk's result came from the task submitted for it: its items ran in that task
    for chunk_id, _status, slurm_id in jobs[:: n // 10]:
        rows = q(
            pg_conn,
            "SELECT ps.id FROM ecod_schema.job_item ji JOIN ecod_schema.job j ON j.id = ji.job_id"
            " JOIN ecod_schema.process_status ps ON ps.id = ji.process_id WHERE j.chunk_id = %s"
            " AND j.run_id = %s",
            chunk_id,
            result.run_id,
        )
        assert [r[0] for r in rows] == [int(chunk_id[1:]) + 1], (chunk_id, slurm_id)
    sbatch_calls = log.count("Submitted array job")
    assert sbatch_calls == 1, "150 chunks are one array"
    arrays = {j[2].split("_")[0] for j in jobs}
    tasks = _sacct(arrays)
    assert len(tasks) == n and {t[1] for t in tasks} == {"COMPLETED"}
    print(
        f"\n150-chunk SLURM run: wall {wall:.1f} s, {sbatch_calls} sbatch call(s),"
        f" {wall / n:.2f} s wall per chunk on 2 cores"
    )


@pytest.mark.slurm
def test_1050_chunks_each_task_names_its_own_chunk_at_submission(
    tmp_path: Path,
    scratch_db: dict[str, Any],
    pg_conn: Any,
    slurm_cluster: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past one array (1,000 tasks per sbatch call), read without running them all: every task's
    script names its own chunk, the arrays are throttled run-wide, and the second one waits held."""
    monkeypatch.chdir(tmp_path)
    n = 1050
    cfg, batch = setup_batch(
        tmp_path, scratch_db, n=n, batch_size=1, command="sleep 300", extra={"slurm": {"array_limit": 1}}
    )
    proc = start_cli("--config", str(cfg), "run", "--batch", str(batch), "--profile", "slurm", cwd=tmp_path)
    arrays: list[str] = []
    try:
        logs = tmp_path / "work" / "logs"

        def submitted() -> list[str]:
            text = "".join(p.read_text() for p in logs.glob("run-*.log"))
            return re.findall(r"Submitted array job (\d+) with (\d+) tasks", text)

        found = wait_for(lambda: len(submitted()) == 2 and submitted(), timeout=240, what="two arrays")
        arrays = [a for a, _ in found]
        assert sorted(int(t) for _, t in found) == [50, 1000]
        run_id = q(pg_conn, "SELECT run_id::text FROM ecod_schema.ecod_jobs_run")[0][0]
        planned = {r[0] for r in q(pg_conn, "SELECT chunk_id FROM ecod_schema.job WHERE run_id = %s", run_id)}
        assert len(planned) == n
        named: list[str] = []
        for array_id in arrays:
            batch_script = subprocess.run(
                ["scontrol", "write", "batch_script", array_id, "-"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            task_dir = Path(re.search(r"exec /bin/bash (\S+)/\"\$SLURM_ARRAY_TASK_ID\"\.sh", batch_script)[1])
            scripts = sorted(task_dir.glob("*.sh"), key=lambda p: int(p.stem))
            assert [int(p.stem) for p in scripts] == list(range(1, len(scripts) + 1))
            for script in scripts:
                text = script.read_text()
                exported = re.search(r"^export ECOD_JOBS_TASK_CHUNK=(c\d+)$", text, re.M)[1]
                assert f"--chunk {exported} " in text, (
                    f"task {script.stem} of array {array_id} runs its own chunk"
                )
                assert f"export ECOD_JOBS_TASK_RUN={run_id}" in text
                named.append(exported)
        assert sorted(named) == sorted(planned), "every chunk has exactly one task"
        # the run-wide throttle: the first array runs at most 1 task, the second waits held
        first, second = (
            subprocess.run(["scontrol", "show", "job", a], capture_output=True, text=True, check=True).stdout
            for a in arrays
        )
        assert "ArrayTaskThrottle=1" in first
        assert "JobHeldUser" in second or "Reason=JobHeldUser" in second
        running = subprocess.run(
            ["squeue", "-h", "-t", "R", "-o", "%i"], capture_output=True, text=True
        ).stdout
        assert sum(1 for t in running.split() if t.split("_")[0] in arrays) <= 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=180)
        if arrays:
            subprocess.run(["scancel", *arrays], check=False)
    assert not q(pg_conn, "SELECT 1 FROM ecod_schema.process_status WHERE status = 'processing'")


@pytest.mark.slurm
def test_throttle_holds_across_arrays(
    tmp_path: Path,
    scratch_db: dict[str, Any],
    pg_conn: Any,
    slurm_cluster: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """slurm.array_limit 1 over three arrays of two tasks: never two tasks at once (the node has
    two cores, so without the throttle two would run), and every chunk done once."""
    monkeypatch.chdir(tmp_path)
    n = 6
    cfg, batch = setup_batch(
        tmp_path,
        scratch_db,
        n=n,
        batch_size=1,
        command="sleep 3; " + RAN,
        extra={"slurm": {"array_limit": 1}},
    )
    (tmp_path / "data" / "chain 3.fa").write_text(">p3\nM\n")
    result = run_batch(
        batch,
        profile="slurm",
        config_path=cfg,
        ecod_slurm_init_seconds_before_status_checks=2,
        ecod_slurm_array_limit=2,  # tasks per sbatch call: three arrays
    )
    log = result.log_path.read_text()
    assert result.returncode == 0, log[-3000:]
    assert result.by_status == {"success": n}
    assert log.count("Submitted array job") == 3
    assert log.count("(released)") == 2, "the held arrays were released as the budget freed"
    assert_each_item_once(pg_conn, n, run_id=result.run_id, ran=tmp_path / "echo")
    arrays = set(re.findall(r"Submitted array job (\d+)", log))
    tasks = sorted(_sacct(arrays), key=lambda t: t[2])
    assert len(tasks) == n
    for earlier, later in itertools.pairwise(tasks):
        assert later[2] >= earlier[3], f"{later[0]} started before {earlier[0]} ended"


def test_a_task_told_to_run_another_chunk_stops_the_run(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard: a runner whose task was submitted for c00001 refuses any other chunk, and the
    head stops the run with the reason instead of letting items wait (local profile: the same
    runner and head as on SLURM, with the task's marker injected into the environment)."""
    monkeypatch.chdir(tmp_path)
    cfg, batch = setup_batch(tmp_path, scratch_db, n=4, batch_size=1, command="sleep 2; " + RAN)
    (tmp_path / "data" / "chain 3.fa").write_text(">p3\nM\n")
    monkeypatch.setenv("ECOD_JOBS_TASK_CHUNK", "c00001")
    result = run_batch(batch, config_path=cfg, cores=1)
    assert result.returncode != 0
    status, message = q(pg_conn, "SELECT status, message FROM ecod_schema.ecod_jobs_run")[0]
    assert status == "error"
    assert "was submitted for chunk c00001 but was told to run chunk c0000" in message
    assert "stopping the run" in result.log_path.read_text()
    assert not q(pg_conn, "SELECT 1 FROM ecod_schema.process_status WHERE status = 'processing'")
    assert set(commands_ran(tmp_path / "echo")) <= {2}, "no other chunk's items ran"
