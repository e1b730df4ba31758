"""A head that outlives the login: ``ecod-jobs run --detach`` / ``run_batch(detach=True)``.

Locally the head is a daemon in a session of its own; with the SLURM profile it is its
own SLURM job. The calling shell exits at once, and the batch completes; a head that
is cancelled (``ecod-jobs cancel``) or killed (scancel of its job) leaves nothing
queued, and rerunning the same command completes every item exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_each_item_once, commands_ran, q, run_cli, setup_batch, wait_for

from ecod_jobs.processes import pid_alive

SLOW = "sleep {sleep} && echo {{item_id}} >> {{output_dir}}/ran.log"


def _batch(
    tmp_path: Path, scratch_db: dict[str, Any], n: int, sleep: int, batch_size: int = 2
) -> tuple[Path, int]:
    cfg, batch = setup_batch(
        tmp_path,
        scratch_db,
        batch_size=batch_size,
        command=SLOW.format(sleep=sleep),
        paths=[f"chain{i}.fa" for i in range(1, n + 1)],
    )
    (tmp_path / "echo").mkdir()
    return cfg, batch


def _in_a_shell_that_exits(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a login-like shell that exits right after it (as a curator logs out)."""
    return subprocess.run(
        ["bash", "-c", f"{script}; exit 0"], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _run_status(conn: Any) -> list[str]:
    return [r[0] for r in q(conn, "SELECT status FROM ecod_schema.ecod_jobs_run ORDER BY started_at")]


def _head(conn: Any) -> tuple[Any, ...]:
    rows = q(
        conn,
        "SELECT run_id::text, kind, slurm_job_id, pid, started_at, ended_at, exit_code, log_path"
        " FROM ecod_schema.ecod_jobs_head",
    )
    assert len(rows) == 1, rows
    return rows[0]


def _queued(run_id: str, head_job: str) -> list[str]:
    """``name|state`` of what squeue lists of this run: its head job and its chunk jobs
    (named after the run); other tests' jobs may share the cluster."""
    from ecod_jobs.recovery import slurm_name_prefix

    out = subprocess.run(["squeue", "-h", "-o", "%i|%j|%T"], capture_output=True, text=True, check=True)
    rows = [line.split("|") for line in out.stdout.split()]
    return [
        f"{name}|{state}"
        for job, name, state in rows
        if job == head_job or name.startswith(slurm_name_prefix(run_id))
    ]


def test_a_detached_local_run_outlives_the_calling_shell(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    cfg, batch = _batch(tmp_path, scratch_db, n=6, sleep=2)
    cli = f"{sys.executable} -m ecod_jobs.cli --config {cfg}"
    shell = _in_a_shell_that_exits(f"{cli} run --batch {batch} --detach", cwd=tmp_path)
    assert shell.returncode == 0, shell.stderr
    assert "its head runs as a daemon" in shell.stdout and f"ecod-jobs follow --batch {batch}" in shell.stdout
    run_id, kind, _, pid, *_ = _head(pg_conn)
    assert kind == "local" and run_id in shell.stdout
    assert len(commands_ran(tmp_path / "echo")) < 6, "the command returned before the run was done"
    # a daemon: not our child, the leader of a session of its own, no terminal
    assert os.getsid(pid) == pid and os.getsid(pid) != os.getsid(0)
    status = run_cli("--config", str(cfg), "status", "--batch", str(batch), cwd=tmp_path)
    assert f"head of run {run_id}: pid {pid} on " in status.stdout

    wait_for(lambda: _run_status(pg_conn) == ["success"], timeout=120, what="the detached run to succeed")
    assert_each_item_once(pg_conn, 6, run_id=run_id, ran=tmp_path / "echo")
    _, _, _, _, started, _, code, log_path = wait_for(
        lambda: (h := _head(pg_conn))[5] is not None and h, timeout=30, what="the head to record its end"
    )
    assert started is not None and code == 0
    assert f"run {run_id}: 6 succeeded, 0 failed" in Path(log_path).read_text()


def test_cancel_stops_a_detached_local_run(tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any) -> None:
    cfg, batch = _batch(tmp_path, scratch_db, n=4, sleep=60)
    detached = run_cli("--config", str(cfg), "run", "--batch", str(batch), "--detach", cwd=tmp_path)
    assert detached.returncode == 0, detached.stderr
    _, _, _, pid, *_ = _head(pg_conn)
    wait_for(
        lambda: q(pg_conn, "SELECT count(*) FROM ecod_schema.job WHERE start_time IS NOT NULL")[0][0] == 2,
        timeout=90,
        what="both chunks to start",
    )
    cancelled = run_cli("--config", str(cfg), "cancel", "--batch", str(batch), cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert not pid_alive(pid), "the head is gone"
    assert _run_status(pg_conn) == ["cancelled"]
    assert _head(pg_conn)[5] is not None, "the head's end is recorded"
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.process_status WHERE status = 'processing'") == [(0,)]
    assert commands_ran(tmp_path / "echo") == {}


def test_detach_refuses_bad_input_before_starting_anything(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    cfg, batch = _batch(tmp_path, scratch_db, n=2, sleep=0)
    dry = run_cli("--config", str(cfg), "run", "--batch", str(batch), "--detach", "--dry-run", cwd=tmp_path)
    unknown = run_cli("--config", str(cfg), "run", "--batch", "99", "--detach", cwd=tmp_path)
    assert dry.returncode == 2 and "--detach and --dry-run" in dry.stderr
    assert unknown.returncode == 2 and "99" in unknown.stderr
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.ecod_jobs_head") == [(0,)]


# --------------------------------------------------------------------------- SLURM


def _detach_on_slurm(cfg: Path, batch: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``run_batch(detach=True)`` with the SLURM profile, from a shell that then exits."""
    code = (
        "from ecod_jobs import run_batch; "
        f"head = run_batch({batch}, profile='slurm', config_path={str(cfg)!r}, detach=True,"
        " ecod_slurm_init_seconds_before_status_checks=3); "
        "print(head.kind, head.slurm_job_id, head.log_path)"
    )
    return _in_a_shell_that_exits(f"{sys.executable} -c {_quote(code)}", cwd=cwd)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


@pytest.mark.slurm
def test_a_detached_slurm_head_runs_as_its_own_job(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, slurm_cluster: None
) -> None:
    cfg, batch = _batch(tmp_path, scratch_db, n=6, sleep=1)
    shell = _detach_on_slurm(cfg, batch, tmp_path)
    assert shell.returncode == 0, shell.stderr
    kind, job_id, log_path = shell.stdout.split()
    run_id, recorded_kind, recorded_job, *_ = _head(pg_conn)
    assert (kind, recorded_kind, recorded_job) == ("slurm", "slurm", job_id)
    status = run_cli("--config", str(cfg), "status", "--batch", str(batch), "--json", cwd=tmp_path)
    import json

    heads = json.loads(status.stdout)["heads"]
    assert heads and heads[0]["slurm_job_id"] == job_id and heads[0]["state"] in ("PENDING", "RUNNING")

    wait_for(lambda: _run_status(pg_conn) == ["success"], timeout=240, what="the detached run to succeed")
    assert_each_item_once(pg_conn, 6, run_id=run_id, ran=tmp_path / "echo")
    # the head ran Snakemake inside its job: the chunks were submitted from there
    host = q(pg_conn, "SELECT host FROM ecod_schema.ecod_jobs_run")[0][0]
    assert host and q(pg_conn, "SELECT count(*) FROM ecod_schema.job WHERE slurm_job_id IS NOT NULL") == [
        (3,)
    ]
    wait_for(lambda: _head(pg_conn)[5] is not None, timeout=60, what="the head to record its end")
    assert _head(pg_conn)[6] == 0
    log = Path(log_path).read_text()
    assert f"run {run_id}: 6 succeeded" in log
    wait_for(
        lambda: not _queued(run_id, job_id), timeout=60, what="the head and its chunks to leave the queue"
    )


@pytest.mark.slurm
def test_a_scancelled_head_job_is_recovered_by_the_same_command(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, slurm_cluster: None
) -> None:
    cfg, batch = _batch(tmp_path, scratch_db, n=8, sleep=4)
    shell = _detach_on_slurm(cfg, batch, tmp_path)
    assert shell.returncode == 0, shell.stderr
    _, job_id, _ = shell.stdout.split()
    run_id = _head(pg_conn)[0]
    wait_for(
        lambda: (
            q(pg_conn, "SELECT count(*) FROM ecod_schema.process_status WHERE status = 'success'")[0][0] >= 1
        ),
        timeout=240,
        what="some items done (recorded live)",
    )
    subprocess.run(["scancel", job_id], check=True)
    wait_for(
        lambda: not _queued(run_id, job_id), timeout=120, what="the head and its chunks to leave the queue"
    )
    assert len(commands_ran(tmp_path / "echo")) < 8, "the head died mid-run"

    rerun = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from ecod_jobs import run_batch; r = run_batch({batch}, profile='slurm',"
            f" config_path={str(cfg)!r}, ecod_slurm_init_seconds_before_status_checks=3);"
            " print(r.ok, r.by_status)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert rerun.returncode == 0 and rerun.stdout.startswith("True"), rerun.stdout + rerun.stderr
    assert_each_item_once(pg_conn, 8, ran=tmp_path / "echo")
    assert _run_status(pg_conn)[-1] == "success"
    assert not _queued(run_id, job_id)


@pytest.mark.slurm
def test_cancel_of_a_detached_slurm_run_leaves_nothing_queued(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, slurm_cluster: None
) -> None:
    cfg, batch = _batch(tmp_path, scratch_db, n=4, sleep=120, batch_size=4)
    shell = _detach_on_slurm(cfg, batch, tmp_path)
    assert shell.returncode == 0, shell.stderr
    _, job_id, _ = shell.stdout.split()
    run_id = _head(pg_conn)[0]
    wait_for(
        lambda: q(pg_conn, "SELECT count(*) FROM ecod_schema.job WHERE start_time IS NOT NULL")[0][0] == 1,
        timeout=240,
        what="the chunk to start (recorded live)",
    )
    assert len(_queued(run_id, job_id)) == 2, "the head and its chunk"
    cancelled = run_cli("--config", str(cfg), "cancel", "--batch", str(batch), cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled head job" in cancelled.stdout
    assert not _queued(run_id, job_id), "nothing stays queued"
    assert _run_status(pg_conn) == ["cancelled"]
    assert _head(pg_conn)[5] is not None
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.process_status WHERE status = 'processing'") == [(0,)]
