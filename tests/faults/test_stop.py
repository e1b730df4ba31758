"""Stopping a run for real: `ecod-jobs cancel` of a Snakemake head that ignores SIGINT
and SIGTERM, and `ecod-jobs run` killed with SIGTERM or SIGHUP, locally and on SLURM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import q, setup_batch, squeue_tasks_of_run, start_cli, wait_for

from ecod_jobs.config import load_config
from ecod_jobs.db import Database
from ecod_jobs.launch import cancel_batch
from ecod_jobs.processes import group_alive, pid_alive

pytestmark = pytest.mark.slow

# Started by an item, detached from the run: removes every final chunk result as soon
# as it appears, so the chunk job exits 0 without its declared output and Snakemake
# sits in its "Waiting at most N seconds for missing files".
DELETER = """
import glob, os, re, subprocess, sys, time
if sys.argv[1] == "--spawn":
    try:  # O_EXCL: of two items starting at once, one spawns the deleter (and records it)
        fd = os.open(sys.argv[3], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        sys.exit(0)
    null = subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, __file__, sys.argv[2]], start_new_session=True,
                            stdin=null, stdout=null, stderr=null)
    os.write(fd, str(proc.pid).encode())
    sys.exit(0)
deadline = time.time() + 600
while time.time() < deadline:
    for path in glob.glob(os.path.join(sys.argv[1], "*", "results", "c*.jsonl")):
        if re.fullmatch(r"c[0-9]+\\.jsonl", os.path.basename(path)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    time.sleep(0.003)
"""


def make_batch(tmp_path: Path, scratch_db: dict[str, Any], command: str, n: int) -> Path:
    """n items of job type ``t``, one per chunk; the config is tmp_path/config.yml."""
    cfg, _batch = setup_batch(
        tmp_path,
        scratch_db,
        batch_size=1,
        command=command,
        paths=[f"item{i}" for i in range(n)],
        job_type="t",
        name="stop",
    )
    return cfg


def run_processes(run_dir: Path, snakemake_pid: int) -> list[str]:
    """What is left of a run: its Snakemake process group, and its chunk runners (recorded
    in their attempt files) and item processes (holding a chunk lock), on this host."""
    left = []
    if group_alive(snakemake_pid):
        left.append(f"process group {snakemake_pid}")
    for meta in run_dir.glob("results/*.attempt-*.json"):
        import json

        pid = json.loads(meta.read_text()).get("pid")
        if pid and pid_alive(int(pid)):
            left.append(f"runner {pid}")
    from ecod_jobs.processes import lock_holders

    for lock in run_dir.glob("results/*.lock"):
        left += [f"lock holder {p}" for p in lock_holders(lock)]
    return left


def assert_settled(pg_conn: Any) -> None:
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.ecod_jobs_lease") == [(0,)], "lease released"
    statuses = dict(q(pg_conn, "SELECT status, count(*) FROM ecod_schema.process_status GROUP BY 1"))
    assert "processing" not in statuses, statuses


def start_stuck_head(tmp_path: Path, scratch_db: dict[str, Any]) -> tuple[Path, Path, subprocess.Popen[str]]:
    """A run (as `run` starts it, with a long latency-wait) whose Snakemake sits in its
    missing-output wait; returns the config, the deleter's pid file and the process."""
    deleter = tmp_path / "deleter.py"
    deleter.write_text(DELETER)
    pid_file = tmp_path / "deleter.pid"
    runs_root = tmp_path / "work" / "batch_1" / "t" / "runs"
    cfg = make_batch(tmp_path, scratch_db, f"python {deleter} --spawn {runs_root} {pid_file}", 2)
    head = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from ecod_jobs.launch import run_batch; "
            f"run_batch(1, config_path={str(cfg)!r}, latency_wait=600)",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    logs = tmp_path / "work" / "logs"
    try:
        wait_for(
            lambda: any(
                "Waiting at most 600 seconds for missing files" in p.read_text() for p in logs.glob("*.log")
            ),
            timeout=120,
            what="Snakemake to wait for the missing chunk output",
        )
    except BaseException:
        stop_stuck(head, pid_file)
        raise
    return cfg, pid_file, head


def stop_stuck(head: subprocess.Popen[str], pid_file: Path) -> None:
    """Whatever a failed test left: the head, its Snakemake process group, the deleter."""
    if head.poll() is None:
        head.kill()
    config_arg = f"ecod_config={pid_file.parent / 'config.yml'}".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if b"snakemake" in cmdline.read_bytes() and config_arg in cmdline.read_bytes():
                os.killpg(int(cmdline.parent.name), signal.SIGKILL)
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_cancel_stops_a_head_stuck_waiting_for_missing_outputs(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    cfg, pid_file, head = start_stuck_head(tmp_path, scratch_db)
    runs_root = tmp_path / "work" / "batch_1" / "t" / "runs"
    try:
        run_id, snakemake_pid = q(pg_conn, "SELECT run_id::text, pid FROM ecod_schema.ecod_jobs_run")[0]
        run_dir = runs_root / run_id
        config = load_config(cfg)
        started = time.monotonic()
        report = cancel_batch(
            Database(config), config, 1, ((signal.SIGINT, 5), (signal.SIGTERM, 5), (signal.SIGKILL, 10))
        )
        took = time.monotonic() - started
        assert report["signalled_runs"] == [run_id]
        how = report["stopped"][run_id]
        assert how.startswith("with SIG"), how
        assert took < 60, f"cancel took {took:.0f} s"
        # after cancel returns: nothing of the run is alive, nothing is resubmitted
        assert run_processes(run_dir, snakemake_pid) == []
        attempts = sorted(p.name for p in run_dir.glob("results/*.attempt-*.json"))
        head.communicate(timeout=30)
        time.sleep(3)
        assert sorted(p.name for p in run_dir.glob("results/*.attempt-*.json")) == attempts
        assert run_processes(run_dir, snakemake_pid) == []
        assert q(pg_conn, "SELECT status, message FROM ecod_schema.ecod_jobs_run") == [
            ("cancelled", f"cancelled with ecod-jobs cancel; stopped {how}")
        ]
        assert_settled(pg_conn)
        print(f"cancel: stopped {how} in {took:.1f} s")
    finally:
        stop_stuck(head, pid_file)


def test_run_killed_with_sigterm_escalates_when_its_head_is_stuck(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    """`run`'s own stop escalates to SIGKILL (default waits: 30 s, 10 s), then settles the
    killed run as recovery does: closed as interrupted, lease released, nothing left."""
    _cfg, pid_file, head = start_stuck_head(tmp_path, scratch_db)
    try:
        run_id, snakemake_pid = q(pg_conn, "SELECT run_id::text, pid FROM ecod_schema.ecod_jobs_run")[0]
        started = time.monotonic()
        head.send_signal(signal.SIGTERM)
        out, _ = head.communicate(timeout=120)
        took = time.monotonic() - started
        assert f"run {run_id}: stopped the workflow with SIGKILL after SIGINT and SIGTERM were ignored" in out
        assert "Stopped: SIGTERM" in out
        assert took < 70, f"took {took:.0f} s to stop"
        assert run_processes(tmp_path / "work" / "batch_1" / "t" / "runs" / run_id, snakemake_pid) == []
        assert q(pg_conn, "SELECT status FROM ecod_schema.ecod_jobs_run") == [("interrupted",)]
        assert_settled(pg_conn)
    finally:
        stop_stuck(head, pid_file)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_run_killed_with_a_signal_stops_its_workflow_locally(
    sig: signal.Signals, tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    cfg = make_batch(tmp_path, scratch_db, "sleep 20", 4)
    first = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "local", cwd=tmp_path)
    runs_root = tmp_path / "work" / "batch_1" / "t" / "runs"
    try:
        wait_for(
            lambda: list(runs_root.glob("*/results/*.attempt-1.json")), timeout=120, what="chunks to run"
        )
        run_id, snakemake_pid = q(pg_conn, "SELECT run_id::text, pid FROM ecod_schema.ecod_jobs_run")[0]
        started = time.monotonic()
        first.send_signal(sig)
        out, err = first.communicate(timeout=90)
        took = time.monotonic() - started
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 128 + sig, out + err
    assert f"interrupted by {sig.name}" in err
    assert f"run {run_id}: stopped the workflow with SIG" in err
    assert took < 50, f"took {took:.0f} s to stop"
    assert run_processes(runs_root / run_id, snakemake_pid) == []
    assert q(pg_conn, "SELECT status FROM ecod_schema.ecod_jobs_run") != [("running",)]
    assert_settled(pg_conn)


@pytest.mark.slurm
def test_run_killed_with_sigterm_stops_its_workflow_on_slurm(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, slurm_cluster: None
) -> None:
    cfg = make_batch(tmp_path, scratch_db, "sleep 20", 4)
    first = start_cli("--config", str(cfg), "run", "--batch", "1", "--profile", "slurm", cwd=tmp_path)

    def queued() -> list[str]:
        return squeue_tasks_of_run(pg_conn)

    runs_root = tmp_path / "work" / "batch_1" / "t" / "runs"
    try:
        wait_for(
            lambda: list(runs_root.glob("*/results/*.attempt-1.json")), timeout=180, what="chunks to run"
        )
        assert any("|RUNNING" in t for t in queued())
        run_id, snakemake_pid = q(pg_conn, "SELECT run_id::text, pid FROM ecod_schema.ecod_jobs_run")[0]
        started = time.monotonic()
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=180)
        took = time.monotonic() - started
        assert first.returncode == 128 + signal.SIGTERM, out + err
        assert f"run {run_id}: stopped the workflow with SIG" in err
        assert took < 90, f"took {took:.0f} s to stop"
        assert not group_alive(snakemake_pid), "no Snakemake process left"
        wait_for(lambda: queued() == [], timeout=30, what="squeue to list none of the run's jobs")
        assert q(pg_conn, "SELECT status FROM ecod_schema.ecod_jobs_run") != [("running",)]
        assert_settled(pg_conn)
    finally:
        if first.poll() is None:
            first.kill()
        left = [t.split("|")[0] for t in queued()]
        if left:  # never leave the one node busy for later tests
            subprocess.run(["scancel", *left], check=False)
