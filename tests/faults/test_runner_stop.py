"""A stop that hits an item and its runner together is a stop, not an item failure; an
item that ended on its own is recorded whatever stop follows (locally and under scancel)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import RAN, wait_for, write_plan

from ecod_jobs import slurm_commands
from ecod_jobs.layout import RunLayout, read_jsonl
from ecod_jobs.slurm_arrays import dispatcher_script, task_script, write_task_scripts


def write_chunk(tmp_path: Path, command: str, items: int = 2) -> RunLayout:
    """Run ``run-1`` with one chunk ``c00000`` of ``items`` items (process ids 1..n) running
    ``command``; its outputs in ``tmp_path/out``."""
    run = RunLayout(tmp_path / "run-1", "run-1")
    (run.dir / "chunks").mkdir(parents=True)
    rows = [{"process_id": i, "path": f"p{i}"} for i in range(1, items + 1)]
    run.manifest("c00000").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_plan(run, command, str(tmp_path / "out"), chunks=1, items_per_chunk=items)
    return run


def start_runner(
    tmp_path: Path, command: str = "sleep 30; echo {path}"
) -> tuple[subprocess.Popen[bytes], RunLayout]:
    run = write_chunk(tmp_path, command)
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


def test_a_shell_reporting_its_stopped_child_with_the_runner_stopped_leaves_the_item_unrecorded(
    tmp_path: Path,
) -> None:
    """SLURM signals children before their parents: a shell that outlives its child's
    SIGTERM exits 143 (128 + 15) itself, a moment before the runner's own stop comes."""
    proc, run = start_runner(tmp_path, "trap : TERM; sleep 30")
    item = item_pid(proc.pid)
    os.killpg(item, signal.SIGTERM)  # the sleep dies; the shell goes on and exits 143
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM, (tmp_path / "runner.err").read_text()
    assert list(read_jsonl(run.partial("c00000"))) == [], "an interrupted item is rerun, not failed"


def test_an_item_that_ends_as_the_stop_arrives_is_recorded_and_the_next_is_not_started(
    tmp_path: Path,
) -> None:
    """The item's effects happened: it must be recorded, or the next run repeats them.

    The item closes its stderr first, so that the runner's main thread is inside
    ``Popen.wait`` when the stop comes (a handler that waited there for the item could
    not reap it and lost the record), and it finishes despite the runner's SIGTERM.
    """
    command = "exec 2>&-; trap : TERM; echo {item_id} >> {output_dir}/ran.log; kill -TERM $PPID"
    proc, run = start_runner(tmp_path, command)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM, (tmp_path / "runner.err").read_text()
    records = [(r["process_id"], r["status"]) for r in read_jsonl(run.partial("c00000"))]
    assert records == [(1, "success")]
    assert (tmp_path / "out" / "ran.log").read_text().split() == ["1"], "item 2 never started"
    assert not run.result("c00000").exists()
    assert "Traceback" not in (tmp_path / "runner.err").read_text()


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


# --------------------------------------------------------------------------- under SLURM


def submit_chunk(tmp_path: Path, command: str, items: int) -> tuple[RunLayout, str]:
    """The chunk as the ``ecod-slurm`` executor runs it: task 1 of an array whose batch
    script execs the task's own script (bash), which runs the runner. Returns the task's id."""
    run = write_chunk(tmp_path, command, items)
    runner = (
        f"{shlex.quote(sys.executable)} -m ecod_jobs.chunk_runner --run-dir {shlex.quote(str(run.dir))}"
        f" --chunk c00000 2> {shlex.quote(str(tmp_path / 'runner.err'))}"
    )
    tasks = tmp_path / "tasks"
    wildcards = {"run": run.run_id, "chunk": "c00000"}
    write_task_scripts(
        tasks, [task_script(runner, index=1, rule="chunk", wildcards=wildcards, workdir=str(tmp_path))]
    )
    (tmp_path / "array.sh").write_text(dispatcher_script(tasks))
    sbatch = [
        "sbatch",
        "--parsable",
        "--array=1",
        "--time=10",
        "--mem=200M",
        "-o",
        str(tmp_path / "slurm.out"),
    ]
    submitted = subprocess.run(
        [*sbatch, str(tmp_path / "array.sh")],
        capture_output=True,
        text=True,
        check=True,
    )
    return run, submitted.stdout.strip().split(";")[0] + "_1"


def cancel_during_item(run: RunLayout, job: str, item: int) -> None:
    """scancel the task (as recovery does) about a second into ``item``; return once SLURM
    no longer lists it."""
    log = run.log("c00000")
    started = f"### item {item} "
    wait_for(lambda: log.exists() and started in log.read_text(errors="replace"), 300, f"item {item}")
    time.sleep(1)
    assert slurm_commands.cancel_and_wait([job]) == [job]


def chunk_processes(tmp_path: Path) -> list[str]:
    """Live processes of the chunk: the runner (its command line names the run) and the
    items (they run in the output directory)."""
    out, found = str(tmp_path / "out"), []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if (str(tmp_path) in cmdline or os.readlink(proc / "cwd") == out) and proc.name != str(
                os.getpid()
            ):
                found.append(f"{proc.name}: {cmdline}")
        except OSError:  # gone meanwhile, or not a process
            continue
    return found


@pytest.mark.slurm
def test_a_scancelled_chunk_kills_its_running_item(tmp_path: Path, slurm_cluster: None) -> None:
    """SLURM's cancel reaches the item (in a session of its own) and the runner, and no
    process of the chunk outlives the job: the item's last step never runs."""
    run, job = submit_chunk(tmp_path, "sleep 4 && " + RAN, items=3)
    cancel_during_item(run, job, 2)
    assert chunk_processes(tmp_path) == []
    assert (tmp_path / "out" / "ran.log").read_text().split() == ["1"]
    assert [(r["process_id"], r["status"]) for r in read_jsonl(run.partial("c00000"))] == [(1, "success")]
    assert "Traceback" not in (tmp_path / "runner.err").read_text()


@pytest.mark.slurm
def test_an_item_that_finishes_during_a_scancel_is_recorded(tmp_path: Path, slurm_cluster: None) -> None:
    """SLURM signals a job's processes one at a time, children before their parents, the
    runner after its item: the item's shell can go on to its next step, and end, before
    its own signal (here it ignores that one). Its command ran to the end: it must be
    recorded, or the next attempt runs it again; the runner starts no further item."""
    run, job = submit_chunk(tmp_path, "trap : TERM; sleep 4; " + RAN, items=3)
    cancel_during_item(run, job, 2)
    assert chunk_processes(tmp_path) == []
    assert (tmp_path / "out" / "ran.log").read_text().split() == ["1", "2"]
    records = [(r["process_id"], r["status"]) for r in read_jsonl(run.partial("c00000"))]
    assert records == [(1, "success"), (2, "success")], (tmp_path / "runner.err").read_text()
    assert "Traceback" not in (tmp_path / "runner.err").read_text()
