"""The chunk lock: a retry never overlaps its predecessor, recovery stops every leftover process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_plan

from ecod_jobs.chunk_runner import hold_chunk_lock
from ecod_jobs.exceptions import RunConflictError
from ecod_jobs.layout import RunLayout
from ecod_jobs.recovery import stop_chunk_processes

# A process that takes the lock the way the runner does, then hands it to a
# grandchild in its own session (an item that escaped its runner) and exits.
HOLDER = """
import os, subprocess, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from ecod_jobs.chunk_runner import hold_chunk_lock
fd = hold_chunk_lock(Path({lock!r}))
trap = "trap '' TERM; " if {ignore_term!r} else ""
subprocess.Popen(["bash", "-c", trap + "sleep 60 & wait"], pass_fds=(fd,), start_new_session=True)
"""


def make_run(tmp_path: Path) -> RunLayout:
    run = RunLayout(tmp_path / "run-1", "run-1")
    run.dir.mkdir()
    write_plan(run, "true", str(tmp_path), chunks=1)
    return run


def orphan_holder(run: RunLayout, *, ignore_term: bool) -> None:
    code = HOLDER.format(
        root=str(Path(__file__).parents[2]), lock=str(run.lock("c00000")), ignore_term=ignore_term
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the grandchild holds the lock once its parent is gone
        try:
            fd = hold_chunk_lock(run.lock("c00000"), wait=0)
        except RuntimeError:
            return
        os.close(fd)
        time.sleep(0.05)
    raise AssertionError("the orphan never held the lock")


@pytest.mark.parametrize("ignore_term", [False, True], ids=["sigterm", "needs-sigkill"])
def test_recovery_stops_processes_that_escaped_their_runner(tmp_path: Path, ignore_term: bool) -> None:
    run = make_run(tmp_path)
    orphan_holder(run, ignore_term=ignore_term)
    assert stop_chunk_processes(run, grace=1, timeout=10) >= 1
    fd = hold_chunk_lock(run.lock("c00000"), wait=0)  # free now: nothing of the dead run is left
    os.close(fd)


def test_finished_chunks_and_free_locks_are_left_alone(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    assert stop_chunk_processes(run) == 0
    orphan_holder(run, ignore_term=False)
    run.result("c00000").write_text("")  # finished: its leftover processes are none of recovery's business
    try:
        assert stop_chunk_processes(run) == 0
    finally:
        run.result("c00000").unlink()
        stop_chunk_processes(run, grace=1)


def test_a_lock_held_elsewhere_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path)
    orphan_holder(run, ignore_term=False)
    monkeypatch.setattr("ecod_jobs.processes.lock_holders", lambda path: [])  # as if on another host
    with pytest.raises(RunConflictError, match=r"still hold c00000\.lock"):
        stop_chunk_processes(run, grace=0.2, timeout=0.5)
    monkeypatch.undo()
    stop_chunk_processes(run, grace=1)


def test_a_retry_waits_for_its_predecessor(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    orphan_holder(run, ignore_term=False)
    with pytest.raises(RuntimeError, match="still held by an earlier attempt"):
        hold_chunk_lock(run.lock("c00000"), wait=0.5)
    stop_chunk_processes(run, grace=1)
    os.close(hold_chunk_lock(run.lock("c00000"), wait=1))
