"""sync_rows: what a chunk's files say -> the rows that record it. Records built in memory:
no workflow, no database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ecod_jobs.layout import RunLayout, write_atomic
from ecod_jobs.sync import read_chunk
from ecod_jobs.sync_rows import (
    ChunkRows,
    ChunkState,
    JobItemRow,
    JobRow,
    RunInfo,
    chunk_rows,
    rows_for_chunks,
)

RUN = RunInfo(run_id="r-1", batch_id=7, job_type="echo", stage="echo")
START, END = "2026-11-24T10:00:00+00:00", "2026-11-24T10:00:09.5+00:00"


def meta(attempt: int, *, ended: bool = False, **extra: Any) -> dict[str, Any]:
    """An attempt record as the runner writes it (``end`` once it got through every item)."""
    record = {"attempt": attempt, "start": START, **extra}
    if ended:
        record["end"] = END
    return record


def result(pid: int, attempt: int = 1, ok: bool = True) -> dict[str, Any]:
    return {
        "process_id": pid,
        "status": "success" if ok else "error",
        "exit_code": 0 if ok else 3,
        "error": None if ok else "exit code 3: boom",
        "start": START,
        "end": END,
        "seconds": 2.0,
        "attempt": attempt,
    }


def state(
    attempts: dict[int, dict[str, Any]],
    results: list[dict[str, Any]],
    *,
    finished: bool,
    items: list[int] | None = None,
    misrouted: str | None = None,
) -> ChunkState:
    """A chunk ``c00000`` of items 1..4 (or ``items``), as read_chunk would give it."""
    by_pid = {r["process_id"]: r for r in results}
    pids = list(by_pid) if finished else (items if items is not None else [1, 2, 3, 4])
    return ChunkState("c00000", attempts, by_pid, finished, [{"process_id": p} for p in pids], misrouted)


def jobs(rows: ChunkRows) -> dict[int, tuple[str, str | None]]:
    """Status and error of each attempt's job row."""
    return {j.attempt: (j.status, j.error_text) for j in rows.job_rows()}


def items(rows: ChunkRows) -> dict[int, JobItemRow]:
    return {r.process_id: r for r in rows.item_rows()}


def assert_settled_matches(rows: ChunkRows) -> None:
    """``settled`` is counted without making rows; it must agree with the rows."""
    final = sum(1 for r in rows.item_rows() if r.process_status in ("success", "error"))
    assert rows.settled == final


# --------------------------------------------------------------------------- finished


def test_finished_chunk() -> None:
    attempt = meta(1, ended=True, slurm_job_id="55_0", node="n1", cpu_seconds=8.0)
    st = state({1: attempt}, [result(p) for p in (1, 2, 3)], finished=True)
    rows = chunk_rows(st, RUN, run_over=False)
    (job,) = rows.job_rows()
    assert job == JobRow(
        batch_id=7,
        job_type="echo",
        run_id="r-1",
        chunk_id="c00000",
        attempt=1,
        status="completed",
        items_count=3,
        slurm_job_id="55_0",
        node="n1",
        start_time=datetime(2026, 11, 24, 10, tzinfo=UTC),
        completion_time=datetime(2026, 11, 24, 10, 0, 9, 500000, tzinfo=UTC),
        elapsed_seconds=9.5,
        cpu_seconds=8.0,
        max_rss_kb=None,
        error_text=None,
        exit_code=0,
    )
    assert items(rows)[2] == JobItemRow(
        2, "c00000", 1, "completed", "success", "echo", 0, START, END, 2.0, None
    )
    assert rows.settled == 3
    assert_settled_matches(rows)


def test_finished_chunk_with_failed_items() -> None:
    st = state({1: meta(1, ended=True)}, [result(1), result(2, ok=False), result(3)], finished=True)
    rows = chunk_rows(st, RUN, run_over=True)
    assert jobs(rows) == {1: ("completed", "1 of 3 items failed")}
    assert items(rows)[2] == JobItemRow(
        2, "c00000", 1, "failed", "error", "echo_failed", 3, START, END, 2.0, "exit code 3: boom"
    )
    assert rows.settled == 3
    assert_settled_matches(rows)


def test_failed_stage_fits_its_column() -> None:
    run = RunInfo("r-1", 7, "echo", "s" * 60)
    rows = chunk_rows(state({1: meta(1)}, [result(1, ok=False)], finished=True), run, run_over=True)
    assert items(rows)[1].stage == "s" * 50
    assert run.failed_stage == "s" * 50


# --------------------------------------------------------------------------- attempts


def test_failed_attempt_then_finished_rerun() -> None:
    """Attempt 1 died mid-chunk; attempt 2 finished: its results supersede."""
    st = state(
        {1: meta(1, slurm_job_id="9_0"), 2: meta(2, ended=True)},
        [result(p, 2) for p in (1, 2)],
        finished=True,
    )
    rows = chunk_rows(st, RUN, run_over=False)
    assert jobs(rows) == {
        1: ("failed", "attempt 1 ended before finishing its chunk"),
        2: ("completed", None),
    }
    first, second = rows.job_rows()
    assert (first.items_count, first.completion_time, first.exit_code, first.slurm_job_id) == (
        0,
        None,
        None,
        "9_0",
    )
    assert second.items_count == 2
    assert {r.attempt for r in rows.item_rows()} == {2}


def test_attempt_that_ended_yet_ran_again_counts_completed() -> None:
    """SLURM may mark a finished array task failed and run it again (plugin issue #447)."""
    st = state({1: meta(1, ended=True), 2: meta(2)}, [result(1)], finished=False)
    rows = chunk_rows(st, RUN, run_over=False)
    assert jobs(rows) == {1: ("completed", None), 2: ("submitted", None)}
    assert rows.job_rows()[0].completion_time == datetime(2026, 11, 24, 10, 0, 9, 500000, tzinfo=UTC)


def test_reported_failed_attempt_while_the_run_goes_on() -> None:
    """Snakemake reported the chunk's job failed: no attempt will finish it in this run."""
    st = state({1: meta(1)}, [result(1), result(2, ok=False)], finished=False)
    rows = chunk_rows(st, RUN, run_over=False, reported_failed=True)
    assert jobs(rows) == {1: ("failed", "attempt 1 ended before finishing its chunk")}
    assert rows.job_rows()[0].items_count == 2  # the items it produced results for
    by_pid = items(rows)
    assert (by_pid[2].status, by_pid[2].process_status) == ("failed", "error")
    assert by_pid[3] == JobItemRow(
        3,
        "c00000",
        1,
        "failed",
        "error",
        "echo_failed",
        None,
        None,
        None,
        None,
        "not run: chunk c00000 attempt 1 ended before reaching this item",
    )
    assert rows.settled == 4
    assert_settled_matches(rows)


def test_running_chunk() -> None:
    """Still running: results so far are recorded, the rest wait under the last attempt."""
    st = state({1: meta(1), 2: meta(2)}, [result(1, 2)], finished=False)
    rows = chunk_rows(st, RUN, run_over=False)
    assert jobs(rows) == {1: ("failed", "attempt 1 ended before finishing its chunk"), 2: ("submitted", None)}
    assert [j.items_count for j in rows.job_rows()] == [0, 1]
    by_pid = items(rows)
    assert by_pid[1].attempt == 2 and by_pid[1].process_status == "success"
    assert by_pid[4] == JobItemRow(4, "c00000", 2, "pending", None, None, None, None, None, None, None)
    assert rows.settled == 1
    assert_settled_matches(rows)


def test_started_attempt_without_results_counts_every_item() -> None:
    rows = chunk_rows(state({1: meta(1)}, [], finished=False), RUN, run_over=False)
    (job,) = rows.job_rows()
    assert (job.status, job.items_count, job.completion_time) == ("submitted", 4, None)


# --------------------------------------------------------------------------- interrupted


def test_interrupted_run_hands_unreached_items_back() -> None:
    """The run died, not the chunk: items without a result go back to pending."""
    st = state({1: meta(1)}, [result(1), result(2, ok=False)], finished=False)
    rows = chunk_rows(st, RUN, run_over=True, interrupted=True)
    assert jobs(rows) == {1: ("failed", "attempt 1 ended before finishing its chunk")}
    by_pid = items(rows)
    assert (by_pid[1].process_status, by_pid[2].process_status) == ("success", "error")
    assert by_pid[3] == JobItemRow(
        3,
        "c00000",
        1,
        "failed",
        "pending",
        None,
        None,
        None,
        None,
        None,
        "interrupted: run r-1 died before this item finished",
    )
    assert rows.settled == 2
    assert_settled_matches(rows)


def test_interrupted_does_not_touch_a_finished_chunk() -> None:
    st = state({1: meta(1, ended=True)}, [result(1), result(2)], finished=True)
    assert list(chunk_rows(st, RUN, run_over=True, interrupted=True).item_rows()) == list(
        chunk_rows(st, RUN, run_over=True).item_rows()
    )


# --------------------------------------------------------------------------- missing


def test_missing_chunk_once_the_run_is_over() -> None:
    """Nothing on disk but its manifest: never started, and now it never will."""
    rows = chunk_rows(state({}, [], finished=False), RUN, run_over=True)
    assert jobs(rows) == {1: ("failed", "attempt 1 ended before finishing its chunk")}
    (job,) = rows.job_rows()
    assert (job.items_count, job.start_time, job.elapsed_seconds, job.slurm_job_id) == (0, None, None, None)
    assert {(r.attempt, r.status, r.process_status) for r in rows.item_rows()} == {(1, "failed", "error")}
    assert rows.settled == 4
    assert_settled_matches(rows)


def test_missing_chunk_while_the_run_goes_on() -> None:
    rows = chunk_rows(state({}, [], finished=False), RUN, run_over=False)
    assert jobs(rows) == {1: ("submitted", None)}
    assert rows.job_rows()[0].items_count == 4
    assert {(r.status, r.process_status) for r in rows.item_rows()} == {("pending", None)}
    assert rows.settled == 0


def test_missing_chunk_without_manifest() -> None:
    rows = chunk_rows(state({}, [], finished=False, items=[]), RUN, run_over=True)
    assert jobs(rows) == {1: ("failed", "attempt 1 ended before finishing its chunk")}
    assert list(rows.item_rows()) == []
    assert rows.settled == 0


# --------------------------------------------------------------------------- could not run


def test_chunk_that_could_not_run_fails_with_the_runners_reason() -> None:
    """The runner could not run the chunk at all (its environment modules did not load) and
    wrote why in its attempt record: the attempts and the items not run say so."""
    reason = "environment module 'hhsuite/9.9' is not available (module load failed: ...)"
    st = state({1: meta(1, error=reason), 2: meta(2, error=reason)}, [], finished=False)
    going_on = chunk_rows(st, RUN, run_over=False)
    # a record that says why is over, reported or not; its items wait for the run's word
    assert jobs(going_on) == {1: ("failed", reason), 2: ("failed", reason)}
    assert {r.status for r in going_on.item_rows()} == {"pending"}
    rows = chunk_rows(st, RUN, run_over=False, reported_failed=True)
    assert jobs(rows) == {1: ("failed", reason), 2: ("failed", reason)}
    assert {(r.attempt, r.status, r.process_status, r.error) for r in rows.item_rows()} == {
        (2, "failed", "error", f"not run: {reason}")
    }
    assert_settled_matches(rows)
    # an earlier attempt's reason is not the last one's: that one was killed
    killed = state({1: meta(1, error=reason), 2: meta(2)}, [], finished=False)
    rows = chunk_rows(killed, RUN, run_over=True)
    assert jobs(rows) == {1: ("failed", reason), 2: ("failed", "attempt 2 ended before finishing its chunk")}
    assert {r.error for r in rows.item_rows()} == {
        "not run: chunk c00000 attempt 2 ended before reaching this item"
    }


# --------------------------------------------------------------------------- misrouted


def test_misrouted_chunk_fails_with_its_reason() -> None:
    reason = "task 12_3 was told to run chunk c00001"
    st = state({1: meta(1), 2: {}, 3: meta(3)}, [], finished=False, misrouted=reason)
    rows = chunk_rows(st, RUN, run_over=True)
    assert jobs(rows) == {
        1: ("failed", "attempt 1 ended before finishing its chunk"),  # its own record: an ordinary failure
        2: ("failed", reason),  # no readable record of its own
        3: ("failed", reason),
    }
    assert {r.error for r in rows.item_rows()} == {f"not run: {reason}"}
    assert {(r.attempt, r.status, r.process_status) for r in rows.item_rows()} == {(3, "failed", "error")}
    assert_settled_matches(rows)


def test_misrouted_attempt_without_a_record() -> None:
    """The last attempt has no record (the refusing task wrote none): still the reason."""
    st = state({}, [], finished=False, misrouted="elsewhere")
    assert jobs(chunk_rows(st, RUN, run_over=False)) == {1: ("failed", "elsewhere")}
    # the run goes on: its items wait for the run's end, which fails them
    assert {r.status for r in chunk_rows(st, RUN, run_over=False).item_rows()} == {"pending"}


# --------------------------------------------------------------------------- reruns


def test_rows_are_the_same_every_time() -> None:
    """Recording the same files twice gives the same rows (the writer then changes nothing)."""
    st = state({1: meta(1), 2: meta(2, ended=True)}, [result(1, 2), result(2, 2, ok=False)], finished=True)
    first, second = chunk_rows(st, RUN, run_over=True), chunk_rows(st, RUN, run_over=True)
    assert first == second
    assert first.job_rows() == second.job_rows()
    assert list(first.item_rows()) == list(first.item_rows()) == list(second.item_rows())


def test_later_attempt_supersedes_partial_results() -> None:
    """Attempt 1 left partial results; attempt 2 redid the chunk: each item goes under the
    attempt its result names, and the earlier attempt keeps no items."""
    before = chunk_rows(state({1: meta(1)}, [result(1), result(2)], finished=False), RUN, run_over=False)
    assert {p: r.attempt for p, r in items(before).items()} == {1: 1, 2: 1, 3: 1, 4: 1}
    st = state({1: meta(1), 2: meta(2, ended=True)}, [result(p, 2) for p in (1, 2, 3, 4)], finished=True)
    after = chunk_rows(st, RUN, run_over=False)
    assert {p: r.attempt for p, r in items(after).items()} == {1: 2, 2: 2, 3: 2, 4: 2}
    assert [(j.attempt, j.status, j.items_count) for j in after.job_rows()] == [
        (1, "failed", 0),
        (2, "completed", 4),
    ]


def test_rows_for_chunks_applies_reported_failures_per_chunk() -> None:
    a = ChunkState("c00000", {1: meta(1)}, {}, False, [{"process_id": 1}])
    b = ChunkState("c00001", {1: meta(1)}, {}, False, [{"process_id": 2}])
    rows = rows_for_chunks([a, b], RUN, run_over=False, failed_chunks=["c00001"])
    assert [(c.state.chunk_id, c.last_failed) for c in rows] == [("c00000", False), ("c00001", True)]
    assert [j.status for c in rows for j in c.job_rows()] == ["submitted", "failed"]


@pytest.mark.parametrize("finished", [True, False])
@pytest.mark.parametrize("run_over", [True, False])
@pytest.mark.parametrize("reported_failed", [True, False])
@pytest.mark.parametrize("interrupted", [True, False])
@pytest.mark.parametrize("misrouted", [None, "elsewhere"])
def test_every_item_gets_one_row(
    finished: bool, run_over: bool, reported_failed: bool, interrupted: bool, misrouted: str | None
) -> None:
    """Whatever the case: one job row per attempt, one item row per item, each under one of
    those attempts, and ``settled`` agreeing with the rows."""
    results = [] if misrouted else [result(1, 2), result(2, 1, ok=False)]
    st = state({1: meta(1), 2: meta(2)}, results, finished=finished and not misrouted, misrouted=misrouted)
    rows = chunk_rows(st, RUN, run_over=run_over, reported_failed=reported_failed, interrupted=interrupted)
    assert [j.attempt for j in rows.job_rows()] == [1, 2]
    assert sorted(r.process_id for r in rows.item_rows()) == [i["process_id"] for i in st.items]
    assert {r.attempt for r in rows.item_rows()} <= {1, 2}
    assert_settled_matches(rows)


# --------------------------------------------------------------------------- reading the files


def write_lines(path: Path, records: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def test_read_chunk(tmp_path: Path) -> None:
    run = RunLayout(tmp_path, "r-1")
    write_lines(run.manifest("c00000"), [{"process_id": p} for p in (1, 2, 3)])
    write_atomic(run.attempt_meta("c00000", 1), json.dumps(meta(1)))
    write_lines(run.partial("c00000"), [result(1)])
    running = read_chunk(run, "c00000")
    assert (running.finished, list(running.results), running.last_attempt) == (False, [1], 1)
    assert [i["process_id"] for i in running.items] == [1, 2, 3]

    write_lines(run.result("c00000"), [result(p) for p in (1, 2, 3)])
    done = read_chunk(run, "c00000")
    assert (done.finished, sorted(done.results), done.misrouted) == (True, [1, 2, 3], None)

    assert read_chunk(run, "c00009") == ChunkState("c00009", {}, {}, False, [], None)


def test_read_chunk_never_takes_another_chunks_results(tmp_path: Path) -> None:
    run = RunLayout(tmp_path, "r-1")
    write_lines(run.manifest("c00000"), [{"process_id": p} for p in (1, 2)])
    write_lines(run.result("c00000"), [{**result(7), "chunk_id": "c00001"}])
    st = read_chunk(run, "c00000")
    assert (st.finished, st.results) == (False, {})
    assert st.misrouted == "the result file of chunk c00000 holds the results of chunk c00001"
    assert [i["process_id"] for i in st.items] == [1, 2]  # the manifest's, to be failed

    write_atomic(run.misrouted("c00000"), json.dumps({"error": "task 4_0 was told to run c00001"}))
    assert read_chunk(run, "c00000").misrouted == "task 4_0 was told to run c00001"
