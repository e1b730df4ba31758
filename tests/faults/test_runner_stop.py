"""A stop that hits an item and its runner together is a stop, not an item failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_plan

from ecod_jobs.layout import RunLayout, read_jsonl


def start_runner(tmp_path: Path) -> tuple[subprocess.Popen[bytes], RunLayout]:
    run = RunLayout(tmp_path / "run-1", "run-1")
    (run.dir / "chunks").mkdir(parents=True)
    items = [{"process_id": 1, "path": "a"}, {"process_id": 2, "path": "b"}]
    run.manifest("c00000").write_text("".join(json.dumps(i) + "\n" for i in items))
    write_plan(run, "sleep 30; echo {path}", str(tmp_path / "out"), chunks=1, items_per_chunk=2)
    with (tmp_path / "runner.err").open("wb") as err:  # read by the assertions
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecod_jobs.chunk_runner", "--run-dir", str(run.dir), "--chunk", "c00000"],
            stderr=err,
        )
    return proc, run


def item_pid(runner: int, not_pid: int = 0) -> int:
    """The running item: the runner's child once it has become the item's bash.

    Waiting for the exec matters: between fork and exec the child is not yet the
    leader of its own process group, and killpg() would find no such group.
    """
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{runner}/task").iterdir():
            for child in (int(c) for c in (task / "children").read_text().split()):
                try:
                    started = b"sleep 30" in Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    continue
                if child != not_pid and started:
                    return child
        time.sleep(0.05)
    raise AssertionError("the item never started")


def test_item_and_runner_stopped_together_leaves_the_item_unrecorded(tmp_path: Path) -> None:
    proc, run = start_runner(tmp_path)
    item = item_pid(proc.pid)
    os.killpg(item, signal.SIGTERM)  # as slurmstepd does: the item first...
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # ...then the runner
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM, (tmp_path / "runner.err").read_text()
    assert list(read_jsonl(run.partial("c00000"))) == [], "an interrupted item is rerun, not failed"


def test_an_item_killed_alone_is_its_own_failure(tmp_path: Path) -> None:
    proc, run = start_runner(tmp_path)
    first = item_pid(proc.pid)
    os.killpg(first, signal.SIGTERM)
    second = item_pid(proc.pid, not_pid=first)  # the runner went on to the second item
    os.killpg(second, signal.SIGKILL)
    assert proc.wait(timeout=20) == 0
    results = list(read_jsonl(run.result("c00000")))
    assert [(r["process_id"], r["status"], r["error"]) for r in results] == [
        (1, "error", "killed by signal 15"),
        (2, "error", "killed by signal 9"),
    ]


def test_a_stop_before_the_item_execs_kills_the_item_not_the_runner() -> None:
    """The forked child runs the runner's handler until exec: it must die of the signal.

    (Raising SystemExit there made Popen's preexec_fn fail and the runner crash with
    a traceback; the window is too short to hit from outside, so the handler is
    driven directly in a process that is not the runner.)
    """
    code = "import ecod_jobs.chunk_runner as r; r._runner_pid = -1; r._on_term(15, None); print('survived')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGTERM and "survived" not in proc.stdout


def test_an_item_whose_runner_died_before_its_death_signal_was_set_dies_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scancel at the very start of a chunk can kill the runner between the item's fork
    and its prctl(PDEATHSIG): no death signal ever comes then, so the item must notice
    that its parent is no longer the runner and die before it runs anything."""
    from ecod_jobs import chunk_runner as runner

    monkeypatch.setattr(runner, "_runner_pid", os.getpid())
    assert subprocess.Popen(["true"], preexec_fn=runner._die_with_runner).wait() == 0
    # the same fork, but its parent is no longer the runner: killed before exec
    monkeypatch.setattr(runner, "_runner_pid", 2**22 + 1)
    assert subprocess.Popen(["true"], preexec_fn=runner._die_with_runner).wait() == -signal.SIGKILL
