"""LocalJobManager for real: processes, a bounded pool, persisted state, cancel, time limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecod_jobs import LocalJobManager, create_job_manager
from ecod_jobs.exceptions import JobSubmissionError, ValidationError
from ecod_jobs.processes import process_alive

REPO = Path(__file__).resolve().parent.parent


def config(tmp_path: Path, **job_manager: Any) -> dict[str, Any]:
    return {"job_manager": {"type": "local", "state_dir": str(tmp_path / "state"), **job_manager}}


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[LocalJobManager]:
    manager = LocalJobManager(config(tmp_path, max_workers=2))
    manager.kill_wait = 2.0
    yield manager
    for job_id in list(manager._submitted):
        manager.cancel_job(job_id)
    manager.shutdown()


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def run_python(code: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_submit_poll_output(manager: LocalJobManager, tmp_path: Path) -> None:
    script = manager.create_job_script(["echo out", "echo err >&2"], "basic", tmp_path / "out")
    job_id = manager.submit_job(script)
    assert job_id.startswith("local-")
    assert manager.wait(job_id, timeout=10) == {job_id: "COMPLETED"}
    assert manager.check_job_status(job_id) == "COMPLETED"
    output = manager.get_job_output(job_id, tmp_path / "out", "basic")
    assert output["stdout"] == "out\n"
    assert output["stderr"] is not None and output["stderr"].endswith("all 2 commands succeeded\n")
    assert "err\n" in output["stderr"]
    assert (tmp_path / "out" / f"basic-{job_id}.out").exists()  # same naming as SLURM
    info = manager.job_info([job_id])[job_id]
    assert info.exit_code == 0 and info.req_mem_mb == 4096 and info.elapsed_seconds is not None
    missing = manager.get_job_output("local-000000000000", tmp_path / "out", "basic")
    assert missing == {"stdout": None, "stderr": None}


def test_failing_command_gives_failed_with_its_exit_status(manager: LocalJobManager, tmp_path: Path) -> None:
    script = manager.create_job_script(["echo before", "sh -c 'exit 7'", "echo after"], "fails", tmp_path)
    job_id = manager.submit_job(script)
    assert manager.wait(job_id, timeout=10) == {job_id: "FAILED"}
    info = manager.job_info([job_id])[job_id]
    assert info.exit_code == 7 and info.reason == "exit status 7"
    assert manager.get_job_output(job_id, tmp_path, "fails")["stdout"] == "before\n"


def test_cancel_running_job_ends_its_process_group(manager: LocalJobManager, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # the job starts a background grandchild; cancelling must end it too
    script = manager.create_job_script([f"sleep 300 & echo $! > {pidfile}; wait"], "cancel", tmp_path)
    job_id = manager.submit_job(script)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    child = int(pidfile.read_text())
    assert manager.check_job_status(job_id) == "RUNNING"
    assert manager.cancel_job(job_id) is True
    assert manager.check_job_status(job_id) == "CANCELLED"
    wait_for(lambda: not process_alive(child), timeout=5)
    manager.wait(job_id, timeout=10)
    time.sleep(0.3)  # give the worker time to record the exit it saw
    assert manager.check_job_status(job_id) == "CANCELLED"
    assert manager.cancel_job(job_id) is True  # already finished: still True
    assert manager.cancel_job("local-ffffffffffff") is False  # no such job


def test_cancel_is_not_overwritten_by_the_exit_status(manager: LocalJobManager, tmp_path: Path) -> None:
    """The original's race: the killed job exits non-zero and FAILED replaced CANCELLED."""
    ready = tmp_path / "ready"
    script = manager.create_job_script(
        [f"trap 'echo got TERM; exit 1' TERM; touch {ready}; sleep 300 & wait"], "race", tmp_path
    )
    job_id = manager.submit_job(script)
    wait_for(ready.exists)
    manager.cancel_job(job_id)
    future = manager._futures.get(job_id)
    if future is not None:
        future.result(timeout=10)  # the worker has seen the exit and recorded what it saw
    state = json.loads((tmp_path / "state" / f"{job_id}.json").read_text())
    assert state["status"] == "CANCELLED"
    assert state["tasks"][""]["exit_code"] in (1, 143)  # the exit was seen and recorded, the state kept
    assert manager.get_job_output(job_id, tmp_path, "race")["stdout"] == "got TERM\n"


def test_cancel_pending_job_never_starts(tmp_path: Path) -> None:
    manager = LocalJobManager(config(tmp_path, max_workers=1))
    try:
        marker = tmp_path / "started"
        first = manager.submit_job(manager.create_job_script(["sleep 1"], "first", tmp_path))
        second = manager.submit_job(manager.create_job_script([f"touch {marker}"], "second", tmp_path))
        assert manager.check_job_status(second) == "PENDING"  # the pool of one is busy
        assert manager.cancel_job(second)
        assert manager.wait([first, second], timeout=10) == {first: "COMPLETED", second: "CANCELLED"}
        assert not marker.exists()
    finally:
        manager.shutdown()


def test_pool_is_bounded(tmp_path: Path) -> None:
    manager = LocalJobManager(config(tmp_path, max_workers=2))
    try:
        log = tmp_path / "log"
        script = manager.create_job_script(
            [f"echo start $(date +%s.%N) >> {log}; sleep 0.6; echo end $(date +%s.%N) >> {log}"],
            "pool",
            tmp_path,
        )
        ids = [manager.submit_job(script) for _ in range(4)]
        # two run while two wait (the first two take 0.6 s)
        wait_for(
            lambda: (
                sorted(manager.check_job_statuses(ids).values())
                == ["PENDING", "PENDING", "RUNNING", "RUNNING"]
            )
        )
        assert set(manager.wait(ids, timeout=20).values()) == {"COMPLETED"}
        # never more than two at once
        events = sorted(
            (float(t), kind) for kind, t in (line.split() for line in log.read_text().splitlines())
        )
        running = peak = 0
        for _, kind in events:
            running += 1 if kind == "start" else -1
            peak = max(peak, running)
        assert peak == 2
    finally:
        manager.shutdown()


def test_threads_can_share_a_manager(manager: LocalJobManager, tmp_path: Path) -> None:
    script = manager.create_job_script(["echo $ECOD_JOB_ID"], "shared", tmp_path)
    ids: list[str] = []
    lock = threading.Lock()

    def submit() -> None:
        for _ in range(5):
            job_id = manager.submit_job(script)
            with lock:
                ids.append(job_id)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 20
    assert set(manager.wait(ids, timeout=30).values()) == {"COMPLETED"}
    assert manager.check_all_jobs() == (20, 0, 0)
    for job_id in ids[:3]:
        assert manager.get_job_output(job_id, tmp_path, "shared")["stdout"] == f"{job_id}\n"


def test_time_limit_gives_timeout(manager: LocalJobManager, tmp_path: Path) -> None:
    job_id = manager.submit_job(manager.create_job_script(["sleep 30"], "slow", tmp_path, time="00:00:01"))
    started = time.monotonic()
    assert manager.wait(job_id, timeout=15) == {job_id: "TIMEOUT"}
    assert time.monotonic() - started < 10
    info = manager.job_info([job_id])[job_id]
    assert info.reason == "killed at its time limit of 1 s" and info.phase.value == "failed"


def test_array_tasks(manager: LocalJobManager, tmp_path: Path) -> None:
    script = manager.create_job_script(
        ['echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID"; [ "$SLURM_ARRAY_TASK_ID" != 3 ]'],
        "arr",
        tmp_path,
        array="1-5:2",
    )
    job_id = manager.submit_job(script)
    assert manager.wait(job_id, timeout=10) == {job_id: "FAILED"}
    assert manager.check_job_statuses([f"{job_id}_1", f"{job_id}_3", f"{job_id}_5", f"{job_id}_2"]) == {
        f"{job_id}_1": "COMPLETED",
        f"{job_id}_3": "FAILED",
        f"{job_id}_5": "COMPLETED",
        f"{job_id}_2": "UNKNOWN",
    }
    assert manager.get_job_output(f"{job_id}_5", tmp_path, "arr")["stdout"] == f"task 5 of {job_id}\n"
    assert manager.get_job_output(job_id, tmp_path, "arr")["stdout"] == "".join(
        f"task {t} of {job_id}\n" for t in (1, 3, 5)
    )


def test_state_survives_a_new_manager_and_another_process(tmp_path: Path) -> None:
    first = LocalJobManager(config(tmp_path))
    script = first.create_job_script(["echo persisted"], "persist", tmp_path / "out")
    job_id = first.submit_job(script, batch_id=7)
    first.wait(job_id, timeout=10)
    first.shutdown()

    second = LocalJobManager(config(tmp_path))
    assert second.check_job_status(job_id) == "COMPLETED"
    assert second.get_job_output(job_id, tmp_path / "out", "persist")["stdout"] == "persisted\n"
    assert second.check_all_jobs(batch_id=7) == (1, 0, 0)  # batches come from the state directory
    assert second.check_all_jobs(batch_id=8) == (0, 0, 0)
    assert second.check_all_jobs() == (0, 0, 0)  # without a batch: this instance's own jobs
    second.shutdown()

    result = run_python(
        f"""
        from ecod_jobs import LocalJobManager
        m = LocalJobManager({config(tmp_path)!r})
        print(m.check_job_status({job_id!r}))
        print(m.get_job_output({job_id!r}, {str(tmp_path / "out")!r}, "persist")["stdout"], end="")
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "COMPLETED\npersisted\n"


def test_another_process_cancels_and_the_owner_keeps_cancelled(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from ecod_jobs import LocalJobManager
                m = LocalJobManager({config(tmp_path)!r})
                job = m.submit_job(m.create_job_script(["sleep 300"], "remote", {str(tmp_path)!r}))
                print(job, flush=True)
                print(m.wait(job, timeout=60)[job], flush=True)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert owner.stdout is not None
        job_id = owner.stdout.readline().strip()
        other = LocalJobManager(config(tmp_path))
        wait_for(lambda: other.check_job_status(job_id) == "RUNNING")
        assert other.cancel_job(job_id)
        assert owner.stdout.readline().strip() == "CANCELLED"
        assert owner.wait(timeout=20) == 0
        assert other.check_job_status(job_id) == "CANCELLED"
        other.shutdown()
    finally:
        owner.kill()


def test_jobs_of_a_manager_that_died(tmp_path: Path) -> None:
    """The manager process ends abruptly: its running job finishes on its own and its
    real exit status is still recorded; its queued job never ran and says so."""
    result = run_python(
        f"""
        import os, time
        from ecod_jobs import LocalJobManager
        m = LocalJobManager({config(tmp_path, max_workers=1)!r})
        a = m.submit_job(m.create_job_script(["sleep 1", "exit 3"], "orphan", {str(tmp_path)!r}))
        b = m.submit_job(m.create_job_script(["echo never"], "queued", {str(tmp_path)!r}))
        while m.check_job_status(a) != "RUNNING":
            time.sleep(0.05)
        print(a, b, flush=True)
        os._exit(0)  # no clean-up: as if killed
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    running, queued = result.stdout.split()
    manager = LocalJobManager(config(tmp_path))
    try:
        assert manager.check_job_status(running) == "RUNNING"  # it outlived its manager
        assert manager.wait(running, timeout=15) == {running: "FAILED"}
        info = manager.job_info([running])[running]
        assert info.exit_code == 3  # the real status, from the wrapper's exit file
        assert manager.check_job_status(queued) == "FAILED"
        assert "never started" in (manager.job_info([queued])[queued].reason or "")
        assert not (tmp_path / f"queued-{queued}.out").exists()
    finally:
        manager.shutdown()


def test_create_batch_jobs_with_a_callable_template(manager: LocalJobManager, tmp_path: Path) -> None:
    items = [(i, f"/data/protein {i}.fasta") for i in range(1, 251)]
    template = {
        "name": "protein_analysis",
        "output_dir": str(tmp_path / "batch"),
        "command_template": lambda item_id, path: f"echo {item_id} '{path}'",
        "threads": 1,
        "memory": "100M",
        "time": "00:05:00",
    }
    jobs = manager.create_batch_jobs(items, batch_size=100, job_template=template)
    assert [(j["name"], j["batch_num"], len(j["items"])) for j in jobs] == [
        ("protein_analysis_0", 0, 100),
        ("protein_analysis_1", 1, 100),
        ("protein_analysis_2", 2, 50),
    ]
    assert jobs[2]["items"][0] == (201, "/data/protein 201.fasta")
    assert jobs[0]["script_path"] == str(tmp_path / "batch" / "protein_analysis_0.sh")
    ids = [manager.submit_job(job["script_path"], batch_id=1) for job in jobs]
    assert set(manager.wait(ids, timeout=30).values()) == {"COMPLETED"}
    assert manager.check_all_jobs(batch_id=1) == (3, 0, 0)
    out = manager.get_job_output(ids[2], tmp_path / "batch", "protein_analysis_2")["stdout"]
    assert out is not None and out.splitlines()[0] == "201 /data/protein 201.fasta"
    assert len(out.splitlines()) == 50

    # a string template is substituted shell-quoted
    jobs = manager.create_batch_jobs(
        [(1, "it's.fa")],
        10,
        {"name": "s", "output_dir": str(tmp_path), "command_template": "echo {item_id} {path}"},
    )
    job_id = manager.submit_job(jobs[0]["script_path"])
    manager.wait(job_id, timeout=10)
    assert manager.get_job_output(job_id, tmp_path, "s_0")["stdout"] == "1 it's.fa\n"


def test_create_batch_jobs_rejects_bad_templates(manager: LocalJobManager, tmp_path: Path) -> None:
    good = {"name": "x", "output_dir": str(tmp_path), "command_template": lambda i, p: "true"}
    assert manager.create_batch_jobs([], 10, good) == []
    with pytest.raises(ValidationError, match="batch_size"):
        manager.create_batch_jobs([(1, "a")], 0, good)
    with pytest.raises(ValidationError, match="unknown job_template key 'mem'"):
        manager.create_batch_jobs([(1, "a")], 1, {**good, "mem": "4G"})
    with pytest.raises(ValidationError, match="pair"):
        manager.create_batch_jobs(["abc"], 1, good)
    with pytest.raises(ValidationError, match="placeholder"):
        manager.create_batch_jobs([(1, "a")], 1, {**good, "command_template": "run {protein}"})


def test_default_state_dir_and_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manager = create_job_manager({"job_manager": {"type": "LOCAL"}})
    try:
        assert isinstance(manager, LocalJobManager)
        assert manager.state.directory == tmp_path / ".ecod_jobs" / "local"
        assert manager.max_workers == (os.cpu_count() or 1)
        with pytest.raises(JobSubmissionError, match="does not exist"):
            manager.submit_job(tmp_path / "nope.sh")
    finally:
        manager.shutdown()
    assert isinstance(create_job_manager({}), LocalJobManager)


def test_shutdown_can_cancel_queued_jobs(tmp_path: Path) -> None:
    manager = LocalJobManager(config(tmp_path, max_workers=1))
    running = manager.submit_job(manager.create_job_script(["sleep 0.5"], "first", tmp_path))
    queued = manager.submit_job(manager.create_job_script(["echo no"], "second", tmp_path))
    wait_for(lambda: manager.check_job_status(running) == "RUNNING")
    manager.shutdown(wait=True, cancel_pending=True)
    assert manager.check_job_statuses([running, queued]) == {running: "COMPLETED", queued: "CANCELLED"}
    with pytest.raises(JobSubmissionError, match="cannot submit"):
        manager.submit_job(manager.create_job_script(["true"], "late", tmp_path))
