"""slurm_commands: parsing of real squeue/sacct output, and polling with fake SLURM commands.

The sample text below is what the project's single-node SLURM 22.05 cluster
printed for these jobs (a completed job, exit 3, scancel, a job killed by
signal 9, an array with a failing task, a TIMEOUT, a throttled pending array).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ecod_jobs import slurm_commands
from ecod_jobs.exceptions import JobExecutionError, JobSubmissionError
from ecod_jobs.managers import SlurmJobManager
from ecod_jobs.managers.slurm import info_from

SACCT_SAMPLE = """\
14|14|COMPLETED|0:0|vm|3|00:00.145||1048576K|525600|2026-11-23T23:57:56|2026-11-23T23:57:59
14.batch|14.batch|COMPLETED|0:0|vm|3|00:00.145|66140K|||2026-11-23T23:57:56|2026-11-23T23:57:59
15|15|FAILED|3:0|vm|0|00:00.001||1048576K|525600|2026-11-23T23:57:56|2026-11-23T23:57:56
15.batch|15.batch|FAILED|3:0|vm|0|00:00.001||||2026-11-23T23:57:56|2026-11-23T23:57:56
16|16|CANCELLED by 0|0:0|vm|3|00:00.001||1048576K|UNLIMITED|2026-11-23T23:57:56|2026-11-23T23:57:59
16.batch|16.batch|CANCELLED|0:15|vm|3|00:00.001|3068K|||2026-11-23T23:57:56|2026-11-23T23:57:59
18|18|FAILED|0:9|vm|0|00:00.001||1048576K|UNLIMITED|2026-11-23T23:58:01|2026-11-23T23:58:01
18.batch|18.batch|CANCELLED|0:9|vm|0|00:00.001||||2026-11-23T23:58:01|2026-11-23T23:58:01
17_1|19|COMPLETED|0:0|vm|1|00:00.003||1048576K|UNLIMITED|2026-11-23T23:57:59|2026-11-23T23:58:00
17_1.batch|19.batch|COMPLETED|0:0|vm|1|00:00.003|3272K|||2026-11-23T23:57:59|2026-11-23T23:58:00
17_2|20|FAILED|5:0|vm|1|00:00.003||1048576K|UNLIMITED|2026-11-23T23:57:59|2026-11-23T23:58:00
17_2.batch|20.batch|FAILED|5:0|vm|1|00:00.003|3220K|||2026-11-23T23:57:59|2026-11-23T23:58:00
17_3|17|COMPLETED|0:0|vm|1|00:00.002||1048576K|UNLIMITED|2026-11-23T23:58:01|2026-11-23T23:58:02
17_3.batch|17.batch|COMPLETED|0:0|vm|1|00:00.002|3228K|||2026-11-23T23:58:01|2026-11-23T23:58:02
21|21|TIMEOUT|0:0|vm|83|00:00.003||1048576K|1|2026-11-23T23:58:20|2026-11-23T23:59:43
21.batch|21.batch|CANCELLED|0:15|vm|83|00:00.003|3140K|||2026-11-23T23:58:20|2026-11-23T23:59:43
34_1|35|RUNNING|0:0|vm|3|00:00:00||102400K|525600|2026-11-24T00:05:11|Unknown
34_1.batch|35.batch|RUNNING|0:0|vm|3|00:00:00||||2026-11-24T00:05:11|Unknown
34_[2-4%1]|34|PENDING|0:0|None assigned|0|00:00:00||102400K|UNLIMITED|Unknown|Unknown
10|10|FAILED|9:0|vm|6|00:00.251||153600K|UNLIMITED|2026-11-24T01:52:01|2026-11-24T01:52:07
10.batch|10.batch|FAILED|9:0|vm|6|00:00.010|12264K|||2026-11-24T01:52:01|2026-11-24T01:52:07
10.0|10.0|CANCELLED by 0|0:9|vm|6|00:00.241|422992K|||2026-11-24T01:52:01|2026-11-24T01:52:07
"""

# squeue -h -r -t all -o '%i|%T|%A|%F|%K' while array 34 ran throttled (%1)
SQUEUE_SAMPLE = """\
34_2|PENDING|34|34|2
34_3|PENDING|34|34|3
34_4|PENDING|34|34|4
34_1|RUNNING|35|34|1
16|CANCELLED|16|16|N/A
14|COMPLETED|14|14|N/A
"""


# --------------------------------------------------------------------------- pure parsing


def test_parse_sacct_folds_steps_and_maps_states() -> None:
    records = slurm_commands.parse_sacct(SACCT_SAMPLE)
    assert set(records) == {"10", "14", "15", "16", "18", "17_1", "17_2", "17_3", "21", "34_1", "34_[2-4%1]"}
    done = records["14"]
    assert done.state == "COMPLETED" and done.exit_code == 0 and done.signal == 0
    assert done.max_rss_kb == 66140  # from the .batch step line
    assert done.cpu_seconds == pytest.approx(0.145)
    assert done.req_mem_mb == 1024 and done.timelimit_seconds == 525600 * 60
    assert done.node == "vm" and done.elapsed_seconds == 3
    assert done.start == "2026-11-23T23:57:56" and done.end == "2026-11-23T23:57:59"
    assert records["15"].state == "FAILED" and records["15"].exit_code == 3
    cancelled = records["16"]
    assert cancelled.state == "CANCELLED" and cancelled.raw_state == "CANCELLED by 0"
    assert cancelled.timelimit_seconds is None  # UNLIMITED
    assert (records["18"].state, records["18"].exit_code, records["18"].signal) == ("FAILED", 0, 9)
    assert records["17_2"].state == "FAILED" and records["17_2"].exit_code == 5
    assert records["17_2"].raw_id == "20" and records["17_2"].array_job_id == "17"
    assert records["21"].state == "TIMEOUT" and records["21"].timelimit_seconds == 60
    pending = records["34_[2-4%1]"]
    assert pending.state == "PENDING" and pending.node is None and pending.start is None
    assert records["34_1"].end is None and records["34_1"].req_mem_mb == 100
    # OverMemoryKill without cgroups: FAILED with a step above the request is OUT_OF_MEMORY
    oom = records["10"]
    assert oom.state == "OUT_OF_MEMORY" and oom.raw_state == "FAILED" and oom.max_rss_kb == 422992
    assert records["18"].state == "FAILED"  # killed by signal 9, but not over its memory


def test_parse_sacct_tolerates_garbage_and_short_lines() -> None:
    # seen while slurmdbd caught up with a just-started job
    text = (
        "21|21|PENDING|0:0|vm|2|00:00:00||18889465931478580854784.00K||2026-11-23T23:58:20|Unknown\n"
        "short|line\n"
    )
    records = slurm_commands.parse_sacct(text)
    assert records["21"].req_mem_mb is None  # absurd value dropped, not an INTEGER overflow later
    assert records["21"].timelimit_seconds is None
    assert list(records) == ["21"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:00.145", 0.145), ("01:02:03", 3723), ("2-01:00:00", 176400), ("05:30", 330), ("junk", None)],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert slurm_commands.parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(
    ("text", "kb"),
    [("66140K", 66140), ("4Gn", 4 * 1024**2), ("1.5M", 1536), ("2048", 2), ("", None), ("x", None)],
)
def test_parse_size_kb(text: str, kb: int | None) -> None:
    assert slurm_commands.parse_size_kb(text) == kb


def test_parse_squeue() -> None:
    entries = slurm_commands.parse_squeue(SQUEUE_SAMPLE + "garbage\n\n")
    by_id = {e.job_id: e for e in entries}
    assert by_id["34_1"].state == "RUNNING" and by_id["34_1"].raw_id == "35"
    assert by_id["34_1"].array_job_id == "34" and by_id["34_1"].array_task_id == "1"
    assert by_id["16"].array_job_id is None and by_id["16"].state == "CANCELLED"
    assert "garbage" not in by_id and len(entries) == 6  # malformed lines are skipped


def test_info_from_failed_record_gives_reason_and_shell_exit_status() -> None:
    records = slurm_commands.parse_sacct(SACCT_SAMPLE)
    killed = info_from("18", "FAILED", records["18"])
    assert killed.exit_code == 128 + 9 and "ExitCode 0:9" in (killed.reason or "")
    cancelled = info_from("16", "CANCELLED", records["16"])
    assert cancelled.exit_code is None and cancelled.reason and cancelled.reason.startswith("CANCELLED by 0")
    ok = info_from("14", "COMPLETED", records["14"])
    assert ok.exit_code == 0 and ok.reason is None and ok.max_rss_kb == 66140
    assert info_from("99", "UNKNOWN", None).reason


# --------------------------------------------------------------------------- fake commands


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f'#!/bin/bash\necho "$0 $*" >> "{bin_dir}/calls"\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with only fake SLURM commands (plus the basics bash needs)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue.out").write_text(SQUEUE_SAMPLE)
    (bin_dir / "sacct.out").write_text(SACCT_SAMPLE)
    _fake(bin_dir, "squeue", f'cat "{bin_dir}/squeue.out"')
    _fake(bin_dir, "sacct", f'cat "{bin_dir}/sacct.out"')
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return bin_dir


def calls(bin_dir: Path) -> list[str]:
    path = bin_dir / "calls"
    return [Path(line.split()[0]).name for line in path.read_text().splitlines()] if path.exists() else []


def test_poll_one_squeue_and_one_sacct_call(fake_slurm: Path) -> None:
    ids = ["34", "34_1", "14", "16", "15", "17", "17_2", "18", "21", "999", "not-a-job"]
    snapshot = slurm_commands.poll(ids)
    assert calls(fake_slurm) == ["squeue", "sacct"]
    assert snapshot.states == {
        "34": "RUNNING",  # an array with a running task is running
        "34_1": "RUNNING",
        "14": "COMPLETED",
        "16": "CANCELLED",  # sacct's 'CANCELLED by 0'
        "15": "FAILED",
        "17": "FAILED",  # array 17 had a failing task
        "17_2": "FAILED",
        "18": "FAILED",
        "21": "TIMEOUT",
        "999": "UNKNOWN",  # nobody knows it: never assumed completed
        "not-a-job": "UNKNOWN",
    }
    assert snapshot.records["15"].exit_code == 3
    assert snapshot.records["17"].exit_code == 5  # the array's first failed task
    assert "34" not in snapshot.records  # still live: squeue answered, sacct was not asked
    squeue_line = (fake_slurm / "calls").read_text().splitlines()[0]
    assert "-j 34,34_1,14,16,15,17,17_2,18,21,999" in squeue_line


def test_poll_merges_task_by_task_while_sacct_lags(fake_slurm: Path) -> None:
    # the controller has finished everything; accounting has not caught up yet
    (fake_slurm / "squeue.out").write_text(
        "56_3|COMPLETED|56|56|3\n56_1|COMPLETED|57|56|1\n56_2|FAILED|58|56|2\n60|COMPLETED|60|60|N/A\n"
    )
    (fake_slurm / "sacct.out").write_text(
        "56_1|57|COMPLETED|0:0|vm|1|00:00.003||102400K|5|2026-11-24T00:07:47|2026-11-24T00:07:48\n"
        "56_3|56|COMPLETED|0:0|vm|1|00:00.003||102400K|5|2026-11-24T00:07:47|2026-11-24T00:07:48\n"
        "60|60|RUNNING|0:0|vm|2|00:00:00||18889465931478580854784.00K||2026-11-24T00:07:47|Unknown\n"
    )
    snapshot = slurm_commands.poll(["56", "60"])
    assert snapshot.states == {"56": "FAILED", "60": "COMPLETED"}  # not the partial or stale view
    assert snapshot.records == {}  # sacct's records disagree: no exit codes yet rather than wrong ones


def test_poll_without_accounting_keeps_squeue_states_and_unknown(fake_slurm: Path) -> None:
    _fake(fake_slurm, "sacct", 'echo "sacct: error: Slurm accounting storage is disabled" >&2; exit 1')
    states = slurm_commands.query_states(["16", "14", "15"])
    assert states == {"16": "CANCELLED", "14": "COMPLETED", "15": "UNKNOWN"}


def test_poll_squeue_invalid_single_id_falls_to_sacct(fake_slurm: Path) -> None:
    _fake(fake_slurm, "squeue", 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1')
    assert slurm_commands.query_states(["15"]) == {"15": "FAILED"}


def test_poll_raises_when_squeue_fails(fake_slurm: Path) -> None:
    _fake(
        fake_slurm, "squeue", 'echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1'
    )
    with pytest.raises(JobExecutionError, match="Unable to contact"):
        slurm_commands.query_states(["15"])


def test_sbatch_parses_id_and_reports_refusal(fake_slurm: Path, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\ntrue\n")
    _fake(fake_slurm, "sbatch", 'echo "sbatch: warning: something"; echo "4242;ecodtest"')
    assert slurm_commands.sbatch(script) == "4242"
    _fake(fake_slurm, "sbatch", 'echo "sbatch: error: invalid partition specified: nope" >&2; exit 1')
    with pytest.raises(JobSubmissionError, match="invalid partition specified: nope"):
        slurm_commands.sbatch(script, ["--partition=nope"])


def test_sbatch_from_inside_a_job_drops_the_parent_allocation(fake_slurm: Path, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\ntrue\n")
    _fake(fake_slurm, "sbatch", f'env | grep ^SLURM_ | sort > "{fake_slurm}/env"; echo 7')
    environ = {
        **os.environ,
        "SLURM_JOB_ID": "41",
        "SLURM_MEM_PER_CPU": "1000",
        "SLURM_CPUS_PER_TASK": "8",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
    }
    assert slurm_commands.sbatch(script, env=environ) == "7"
    assert (fake_slurm / "env").read_text().splitlines() == ["SLURM_CONF=/etc/slurm/slurm.conf"]
    env = slurm_commands.SlurmEnvironment.from_environ(
        {"SLURM_JOB_ID": "41", "SLURM_CLUSTER_NAME": "ecodtest", "SLURM_SUBMIT_DIR": "/w"}
    )
    assert (
        env.inside_job
        and env.describe() == " on cluster ecodtest from inside SLURM job 41 (submitted from /w)"
    )


def test_scancel_ignores_finished_jobs_but_not_other_errors(fake_slurm: Path) -> None:
    _fake(
        fake_slurm,
        "scancel",
        'echo "scancel: error: Kill job error on job id 5: Invalid job id specified" >&2; exit 1',
    )
    slurm_commands.scancel(["5"])
    _fake(fake_slurm, "scancel", 'echo "scancel: error: Unable to contact slurm controller" >&2; exit 1')
    with pytest.raises(JobExecutionError, match="Unable to contact"):
        slurm_commands.scancel(["5"])


def test_missing_slurm_commands_are_a_clear_submission_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(JobSubmissionError, match="'squeue' not found"):
        slurm_commands.query_states(["1"])
    manager = SlurmJobManager({"job_manager": {"type": "slurm"}})
    script = manager.create_job_script(["true"], "j", tmp_path)
    with pytest.raises(JobSubmissionError, match="'sbatch' not found"):
        manager.submit_job(script)
    with pytest.raises(JobSubmissionError, match="'scancel' not found"):
        manager.cancel_job("1")
