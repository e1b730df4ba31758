"""The live progress view: rate and ETA, plain lines for logs, the rich display, and
``ecod-jobs run`` / ``ecod-jobs follow`` against real PostgreSQL and real local runs."""

from __future__ import annotations

import io
import queue
import re
import signal
import subprocess
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    RAN,
    assert_each_item_once,
    q,
    run_cli,
    setup_batch,
    start_cli,
    wait_for,
    write_config,
    write_items,
)
from rich.console import Console

from ecod_jobs.db import Database
from ecod_jobs.progress import (
    BatchProgress,
    Paced,
    ProgressSnapshot,
    ProgressView,
    RateEstimator,
    format_eta,
    plain_lines,
    render,
    running_items,
)

ANSI = re.compile(r"\x1b\[")
NOW = datetime(2026, 11, 30, 12, 0, 5)


def snap(done: int = 0, **fields: Any) -> ProgressSnapshot:
    values: dict[str, Any] = {
        "title": "batch 7 'demo'",
        "total": 100,
        "done": done,
        "failed": 0,
        "processing": 100 - done,
        "running": 2,
        "remaining": 100 - done,
        "at": 0.0,
    }
    return ProgressSnapshot(**{**values, **fields})


STAGES = {
    "chain": {"pending": 10, "running": 2, "success": 85, "error": 3, "skipped": 0},
    "domain": {"pending": 60, "running": 4, "success": 30, "error": 0, "skipped": 6},
}


# --------------------------------------------------------------------------- rate and ETA


def test_rate_is_unknown_until_two_samples_and_spans_the_window() -> None:
    rate = RateEstimator(window=60)
    assert rate.rate() is None and rate.eta(50) is None
    rate.add(100.0, 40)  # attached mid-run: the first count is not progress
    assert rate.rate() is None
    rate.add(110.0, 60)
    assert rate.rate() == pytest.approx(2.0) and rate.eta(50) == pytest.approx(25.0)
    for t in range(120, 200, 10):  # nothing more: the window slides over the burst
        rate.add(float(t), 60)
    assert rate.rate() == 0.0 and rate.eta(50) is None
    assert rate.eta(0) == 0.0, "nothing left: no wait, even without a rate"


def test_rate_keeps_one_anchor_before_the_window() -> None:
    rate = RateEstimator(window=30)
    for t, done in ((0, 0), (20, 10), (40, 20), (50, 30)):
        rate.add(float(t), done)
    # the anchor is the newest sample at or before 50 - 30 = 20: (20, 10)
    assert rate.samples[0] == (20.0, 10)
    assert rate.rate() == pytest.approx(20 / 30)


def test_rate_restarts_when_the_count_goes_down() -> None:
    rate = RateEstimator(window=60)
    rate.add(0.0, 50)
    rate.add(10.0, 60)
    rate.add(20.0, 20)  # failed items retried: 'error' moved back to 'processing'
    assert rate.rate() is None
    rate.add(30.0, 25)
    assert rate.rate() == pytest.approx(0.5)
    rate.add(30.0, 27)  # the same moment twice: the newest count, no division by zero
    assert rate.rate() == pytest.approx(0.7)


def test_a_costly_reading_is_paced_by_its_cost() -> None:
    clock = [0.0]

    def polls(cost: float) -> list[float]:
        """When a reading that takes ``cost`` s is redone, polled every second for 12 s."""
        paced = Paced[float](2.0, clock=lambda: clock[0])
        reads: list[float] = []

        def read() -> float:
            reads.append(clock[0])
            clock[0] += cost  # the query's own time
            return clock[0]

        for poll in range(13):
            clock[0] = float(poll)
            paced.get(read)
        clock[0] = 12.5
        assert paced.get(read, fresh=True) == 12.5 + cost, "fresh: read now, whatever the pace"
        return reads

    assert polls(0.01) == [0, 2, 4, 6, 8, 10, 12, 12.5], "a cheap reading: at its interval"
    assert polls(0.5) == [0, 5, 10, 12.5], "0.5 s each: every 5 s (10% of the time)"


def test_eta_formats() -> None:
    assert format_eta(None) == "unknown"
    assert format_eta(0) == "0:00:00"
    assert format_eta(3725.4) == "1:02:05"
    assert format_eta(2 * 86400 + 61) == "2d 0:01:01"


# --------------------------------------------------------------------------- plain lines


def test_plain_lines_hold_every_number_and_no_terminal_codes() -> None:
    runs = ("run 1234 echo on node7 pid 99, started 2026-11-30 11:00:00",)
    lines = plain_lines(snap(40, failed=3, stages=STAGES, runs=runs), 2.5, 24.0, NOW)
    assert lines[0] == (
        "2026-11-30 12:00:05 batch 7 'demo': 40/100 items done (40.0%), 3 failed, 2 running now,"
        " 58 queued; 2.5 items/s, ETA 0:00:24"
    )
    assert lines[1] == "  stage chain: 85 success, 3 error, 0 skipped, 2 running, 10 pending"
    assert lines[2] == "  stage domain: 30 success, 0 error, 6 skipped, 4 running, 60 pending"
    assert lines[3] == "  " + runs[0]
    # items in no run's hands (before the plan) are named; unknown rate and ETA too
    lines = plain_lines(snap(0, processing=0, running=0), None, None, NOW)
    assert lines == [
        "2026-11-30 12:00:05 batch 7 'demo': 0/100 items done (0.0%), 0 failed, 0 running now,"
        " 0 queued, 100 pending; - items/s, ETA unknown"
    ]


def test_plain_lines_escape_control_characters_of_names() -> None:
    hostile = snap(1, title="batch 8 'x\x1b[31mred\rback'", runs=("run on host\x07",))
    text = "\n".join(plain_lines(hostile, 1.0, 99.0, NOW))
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert "x\\x1b[31mred\\rback" in text and "host\\x07" in text


def test_plain_view_prints_at_once_then_only_changes_at_its_pace() -> None:
    out = io.StringIO()
    clock = [0.0]
    view = ProgressView(out, every=30, clock=lambda: clock[0], wall=lambda: NOW)
    assert not view.live_view, "a StringIO is no terminal"

    def update(t: float, done: int) -> int:
        clock[0] = t
        view.update(snap(done, at=t))
        return out.getvalue().count("\n")

    assert update(0, 10) == 1, "the first snapshot at once"
    assert update(5, 20) == 1, "a change within 30 s waits"
    assert update(31, 20) == 2, "then it is printed"
    assert update(70, 20) == 2, "nothing changed: nothing printed"
    assert update(75, 30) == 3, "a change 44 s after the last line"
    assert update(80, 40) == 3
    view.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "40/100 items done" in lines[-1], "the last numbers end the log"
    assert "20/100 items done" in lines[1] and "ETA" in lines[1]
    view.close()
    assert len(out.getvalue().splitlines()) == 4, "closing twice prints nothing more"


# --------------------------------------------------------------------------- rich


def console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=120, color_system="standard"), buffer


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_rich_display_shows_the_bar_rate_eta_counts_and_stages() -> None:
    cons, buffer = console()
    cons.print(render(snap(40, failed=3, stages=STAGES, runs=("run 1234 on node7",)), 2.5, 24.0))
    text = plain(buffer.getvalue())
    assert ANSI.search(buffer.getvalue()), "a terminal gets colours"
    first = text.splitlines()[1]
    assert "━" in first and "40/100 items" in first and "40.0%" in first
    assert "2.5 items/s" in first and "ETA 0:00:24" in first
    assert "done 40 · failed 3 · running now 2 · queued 58" in text
    stage_lines = [line for line in text.splitlines() if line.startswith("stage ")]
    assert len(stage_lines) == 2 and "━" in stage_lines[0]
    assert "85 success, 3 error, 0 skipped, 2 running, 10 pending" in stage_lines[0]
    assert "run 1234 on node7" in text


def test_rich_display_takes_no_markup_or_codes_from_names() -> None:
    cons, buffer = console()
    cons.print(render(snap(1, title="batch 9 '[bold red]x[/] \x1b[2J'"), None, None))
    text = plain(buffer.getvalue())
    assert "'[bold red]x[/] \\x1b[2J'" in text and "\x1b[2J" not in buffer.getvalue()
    assert "- items/s" in text and "ETA unknown" in text


def test_live_view_redraws_in_place_on_a_terminal() -> None:
    cons, buffer = console()
    with ProgressView(io.StringIO(), console=cons) as view:
        assert view.live_view
        for t, done in ((0, 10), (10, 30), (20, 50)):
            view.update(snap(done, at=float(t), stages=STAGES))
    raw = buffer.getvalue()
    assert "\x1b[1A" in raw or "\x1b[2K" in raw, "frames are redrawn in place"
    last = plain(raw)[plain(raw).rindex("batch 7") :]
    assert "50/100 items" in last and "2 items/s" in last and "ETA 0:00:25" in last
    assert "stage domain" in last


# --------------------------------------------------------------------------- the database


def test_running_now_and_queued_come_from_started_chunk_attempts(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    _, batch = setup_batch(tmp_path, scratch_db, paths=[f"p{i}" for i in range(6)])
    db = Database({"database": scratch_db})
    # as a run that planned three chunks of two leaves it, one chunk attempt having
    # started (its row 'submitted' with a start) and one ended
    q(pg_conn, "UPDATE ecod_schema.process_status SET status = 'processing' RETURNING id")
    q(pg_conn, "UPDATE ecod_schema.process_status SET status = 'success' WHERE id <= 2 RETURNING id")
    run = "6f0c1f4e-8a0e-4a43-9d36-0a9d4c8a1b21"
    q(
        pg_conn,
        "INSERT INTO ecod_schema.job (batch_id, job_type, status, items_count, run_id, chunk_id, attempt,"
        " start_time) VALUES (%s, 'echo', 'completed', 2, %s, 'c00000', 1, now()),"
        " (%s, 'echo', 'submitted', 2, %s, 'c00001', 1, now()),"
        " (%s, 'echo', 'submitted', 2, %s, 'c00002', 1, NULL) RETURNING id",
        batch,
        run,
        batch,
        run,
        batch,
        run,
    )
    assert running_items(db, batch) == 1
    assert running_items(db, batch, run) == 1
    assert running_items(db, batch, "00000000-0000-0000-0000-000000000000") == 0
    state = BatchProgress(db, batch).read()
    assert (state.snapshot.done, state.snapshot.running, state.snapshot.queued) == (2, 1, 3)
    assert not state.active and state.snapshot.runs == (), "no run recorded, no lease"


def test_follow_once_and_an_unknown_batch(tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    cfg, batch = setup_batch(tmp_path, scratch_db, n=5)
    once = run_cli("--config", str(cfg), "follow", "--batch", str(batch), "--once", cwd=tmp_path)
    assert once.returncode == 0, once.stderr
    assert once.stdout.endswith(
        f"batch {batch} 'wf': 0/5 items done (0.0%), 0 failed, 0 running now, 0 queued, 5 pending;"
        " - items/s, ETA unknown\n"
    )
    assert run_cli("--config", str(cfg), "run", "--batch", str(batch), cwd=tmp_path).returncode == 1
    after = run_cli("--config", str(cfg), "watch", "--batch", str(batch), "--once", cwd=tmp_path)
    assert after.returncode == 0 and "5/5 items done (100.0%), 1 failed, 0 running now" in after.stdout
    # with no run open, following ends at once with the batch's counts
    done = run_cli("--config", str(cfg), "follow", "--batch", str(batch), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        f"batch {batch} 'wf': no run open; 4 succeeded, 1 failed, 0 skipped, 0 pending,"
        " 0 processing of 5 items"
    )
    for args in (["--batch", "999"], ["--batch", "999", "--once"]):
        unknown = run_cli("--config", str(cfg), "follow", *args, cwd=tmp_path)
        assert unknown.returncode == 2 and "batch 999 does not exist" in unknown.stderr
        assert "Traceback" not in unknown.stderr


def test_follow_once_shows_a_pipeline_batch_stage_by_stage(
    tmp_path: Path, scratch_db: dict[str, Any]
) -> None:
    def stage(name: str) -> dict[str, Any]:
        return {
            "command": f"mkdir -p $(dirname {{out[{name}_file]}}) && echo {name} > {{out[{name}_file]}}",
            "outputs": {f"{name}_file": f"out/{name}/{{stem}}.txt"},
            "stage": f"{name}_complete",
            "batch_size": 3,
            "check_inputs": False,
        }

    cfg = write_config(
        tmp_path / "config.yml",
        {
            "database": scratch_db,
            "pipeline": {"work_root": str(tmp_path / "work"), "output_root": str(tmp_path / "results")},
            "job_types": {"align": stage("align"), "score": stage("score")},
            "pipelines": {"two": {"stages": {"align": {}, "score": {"after": ["align"]}}}},
        },
    )
    items = write_items(tmp_path / "items.tsv", [f"p{i}" for i in range(4)])
    created = run_cli("--config", str(cfg), "batch", "create", "--name", "two", "--items", str(items))
    batch = created.stdout.split()[-1]
    ran = run_cli("--config", str(cfg), "run", "--batch", batch, "--pipeline", "two", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    once = run_cli("--config", str(cfg), "follow", "--batch", batch, "--once", cwd=tmp_path)
    assert once.returncode == 0, once.stderr
    assert once.stdout.splitlines()[1:] == [
        "  stage align: 4 success, 0 error, 0 skipped, 0 running, 0 pending",
        "  stage score: 4 success, 0 error, 0 skipped, 0 running, 0 pending",
    ]
    assert ": 4/4 items done (100.0%), 0 failed" in once.stdout


# --------------------------------------------------------------------------- real runs


def test_run_in_a_log_prints_plain_lines(tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    cfg, batch = setup_batch(tmp_path, scratch_db, n=6, batch_size=2)
    # stdout and stderr are pipes, as under nohup or in a SLURM job's log
    result = run_cli("--config", str(cfg), "run", "--batch", str(batch), cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # item 3 has no input file
    for stream in (result.stdout, result.stderr):
        assert "\r" not in stream and not ANSI.search(stream), stream
    progress = [line for line in result.stderr.splitlines() if " items done (" in line]
    assert len(progress) >= 2, result.stderr
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d batch {batch} 'wf': 0/6 items done \(0\.0%\), 0 failed,"
        r" 0 running now, 0 queued, 6 pending; - items/s, ETA unknown",
        progress[0],
    ), progress[0]
    assert ": 6/6 items done (100.0%), 1 failed, 0 running now, 0 queued;" in progress[-1]
    assert re.search(r"  run [0-9a-f-]{36}, Snakemake's log .*\.log$", result.stderr, re.M)
    assert (
        result.stdout.startswith("run ") and "5 succeeded, 1 failed, 0 unfinished of 6 items" in result.stdout
    )


class Lines:
    """``proc``'s stdout lines as they come, read by a thread (a select on a buffered pipe
    misses lines already in the buffer)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc, self.queue, self.seen = proc, queue.Queue[str](), []
        assert proc.stdout is not None
        threading.Thread(target=lambda: [self.queue.put(line) for line in proc.stdout], daemon=True).start()

    def next(self, timeout: float) -> str:
        try:
            line = self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line from {self.proc.args} within {timeout} s") from None
        self.seen.append(line)
        return line


def test_follow_leaves_on_ctrl_c_without_stopping_the_run_and_ends_with_it(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    # the items wait for a gate the test opens: the run cannot end before the test says so
    gate = tmp_path / "go"
    wait = f"while [ ! -e {gate} ]; do sleep 0.1; done"
    cfg, batch = setup_batch(
        tmp_path, scratch_db, paths=[f"p{i}" for i in range(8)], batch_size=2, command=f"{wait} && {RAN}"
    )
    run = start_cli("--config", str(cfg), "run", "--batch", str(batch), cwd=tmp_path)
    followers: list[subprocess.Popen[str]] = []
    try:
        wait_for(
            lambda: q(pg_conn, "SELECT run_id::text FROM ecod_schema.ecod_jobs_run WHERE status = 'running'"),
            60,
            "the run to be recorded as running",
        )
        leaving, staying = (
            start_cli("--config", str(cfg), "follow", "--batch", str(batch), cwd=tmp_path) for _ in range(2)
        )
        followers += [leaving, staying]
        lines = Lines(leaving)
        first = lines.next(30)
        assert f"batch {batch} 'wf': " in first and " items done (" in first, first
        assert lines.next(30).startswith("  run "), "the open run is named"

        leaving.send_signal(signal.SIGINT)  # Ctrl-C: to the follower only, as in its own terminal
        leaving.wait(timeout=30)
        err = leaving.stderr.read() if leaving.stderr else ""
        assert leaving.returncode == 130, err
        assert "left the view; batch" in err and "runs go on" in err and "Traceback" not in err
        assert run.poll() is None, "the run goes on"
        assert q(pg_conn, "SELECT status FROM ecod_schema.ecod_jobs_run") == [("running",)]
        assert staying.poll() is None, "the other follower stays while the run goes on"

        # each running chunk's first item waits at the gate: as many items running now as
        # chunks the cores run at once (the head records started attempts every 10 s)
        def running_and_queued() -> tuple[int, int] | None:
            once = run_cli("--config", str(cfg), "follow", "--batch", str(batch), "--once", cwd=tmp_path)
            found = re.search(r", (\d+) running now, (\d+) queued", once.stdout)
            return (int(found[1]), int(found[2])) if found and found[1] != "0" else None

        running, queued = wait_for(running_and_queued, 60, "chunks recorded running")
        assert running + queued == 8 and running <= 4, (running, queued)

        gate.touch()
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert "8 succeeded, 0 failed, 0 unfinished of 8 items" in out
        # the other follower ends by itself with the run, with the final counts
        out, err = staying.communicate(timeout=30)
        assert staying.returncode == 0, err
        assert out.splitlines()[-1] == (
            f"batch {batch} 'wf': no run open; 8 succeeded, 0 failed, 0 skipped, 0 pending,"
            " 0 processing of 8 items"
        )
        assert "\r" not in out and not ANSI.search(out)
    finally:
        gate.touch()  # on a failure too: no item waits on after the test
        for proc in followers:
            if proc.poll() is None:
                proc.kill()
        for proc in (run, *followers):
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert q(pg_conn, "SELECT status FROM ecod_schema.ecod_jobs_run") == [("success",)]
    assert_each_item_once(pg_conn, 8, ran=tmp_path / "echo")


def test_follow_usage_errors(tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    cfg, batch = setup_batch(tmp_path, scratch_db, n=1)
    bad = run_cli("--config", str(cfg), "follow", "--batch", str(batch), "--interval", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "--interval 0: must be more than 0 seconds" in bad.stderr
    helped = run_cli("follow", "--help", cwd=tmp_path)
    assert "exit 130" in helped.stdout.replace("\n", " ") and "--once" in helped.stdout


def test_follow_right_after_a_detached_run_stays_to_its_end(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    cfg, batch = setup_batch(tmp_path, scratch_db, paths=[f"p{i}" for i in range(4)], batch_size=2)
    detached = run_cli("--config", str(cfg), "run", "--batch", str(batch), "--detach", cwd=tmp_path)
    assert detached.returncode == 0, detached.stderr
    # at once: the head may not have taken the batch's lease yet, nor recorded its run
    followed = run_cli("--config", str(cfg), "follow", "--batch", str(batch), cwd=tmp_path)
    assert followed.returncode == 0, followed.stderr
    (run_id,) = q(pg_conn, "SELECT run_id::text FROM ecod_schema.ecod_jobs_run")[0]
    assert f"  head of run {run_id}: pid " in followed.stdout, "where the head runs"
    assert followed.stdout.splitlines()[-1] == (
        f"batch {batch} 'wf': no run open; 4 succeeded, 0 failed, 0 skipped, 0 pending,"
        " 0 processing of 4 items"
    )
    assert q(pg_conn, "SELECT status FROM ecod_schema.ecod_jobs_run") == [("success",)]


def test_a_head_still_to_start_keeps_follow_going_until_it_is_gone(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any
) -> None:
    """A detached head recorded by `run --detach` but not yet running its run (waiting in
    SLURM's queue, or a daemon starting) has no lease and no run record: follow waits for
    it, and stops waiting once its process is gone."""
    import socket

    _, batch = setup_batch(tmp_path, scratch_db, paths=["p1"])
    db = Database({"database": scratch_db})
    head = subprocess.Popen(["sleep", "60"])  # stands for the daemon, alive and then gone
    try:
        run_id = "0c2d6f0e-5b1a-4c3e-9f7d-2a4b6c8d0e1f"
        q(
            pg_conn,
            "INSERT INTO ecod_schema.ecod_jobs_head (run_id, batch_id, job_type, kind, host, pid, log_path)"
            " VALUES (%s, %s, 'echo', 'local', %s, %s, '/logs/head.log') RETURNING run_id",
            run_id,
            batch,
            socket.gethostname(),
            head.pid,
        )
        state = BatchProgress(db, batch).read()
        assert state.active
        assert state.snapshot.runs == (
            f"head of run {run_id}: pid {head.pid} on {socket.gethostname()}, to start; log /logs/head.log",
        )
    finally:
        head.kill()
        head.wait()
    state = BatchProgress(db, batch).read()
    assert not state.active, "a head whose process is gone will not start its run"
    assert state.snapshot.runs == (
        f"head of run {run_id}: pid {head.pid} on {socket.gethostname()}; log /logs/head.log",
    )
