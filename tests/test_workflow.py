"""Real workflow runs (local profile, and SLURM arrays) with the database checked row by row."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from helpers import (
    REPO,
    assert_each_item_once,
    connect_scratch,
    create_batch,
    q,
    run_cli,
    setup_batch,
    write_config,
)

from ecod_jobs.launch import run_batch


def test_local_run_records_every_item_once(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, batch = setup_batch(tmp_path, scratch_db)
    out = tmp_path / "echo"
    out.mkdir()
    (out / "fail_5").touch()
    (out / "fail_6").touch()
    result = run_batch(batch, profile="local", config_path=cfg, cores=2)
    assert result.returncode == 0
    assert result.by_status == {"success": 11, "error": 3}
    assert {i["process_id"] for i in result.failed_items} == {3, 5, 6}
    assert not result.ok

    status = dict(q(pg_conn, "SELECT id, status FROM ecod_schema.process_status WHERE batch_id = %s", batch))
    assert sorted(k for k, v in status.items() if v == "error") == [3, 5, 6]
    errors = dict(
        q(pg_conn, "SELECT id, error_message FROM ecod_schema.process_status WHERE status = 'error'")
    )
    assert errors[3].startswith("input path does not exist")
    assert errors[5] == "exit code 7: marked to fail"
    stages = dict(q(pg_conn, "SELECT id, current_stage FROM ecod_schema.process_status"))
    assert stages[1] == "echo_complete" and stages[5] == "echo_complete_failed"
    assert (out / "1.out").read_text() == "done 1\n"

    jobs = q(
        pg_conn,
        "SELECT chunk_id, attempt, status, items_count, node, completion_time IS NOT NULL"
        " FROM ecod_schema.job WHERE run_id = %s ORDER BY chunk_id",
        result.run_id,
    )
    assert [(j[0], j[2], j[3]) for j in jobs] == [
        ("c00000", "completed", 4),
        ("c00001", "completed", 4),
        ("c00002", "completed", 4),
        ("c00003", "completed", 2),
    ]
    assert all(j[4] and j[5] for j in jobs)
    assert_each_item_once(pg_conn, 14, failed={3, 5, 6}, run_id=result.run_id)
    item_states = dict(q(pg_conn, "SELECT process_id, status FROM ecod_schema.job_item"))
    assert item_states[5] == "failed" and item_states[4] == "completed"
    run = q(
        pg_conn,
        "SELECT status, planned_items, planned_chunks, host, config_hash, snakemake_version,"
        " ecod_jobs_version, ended_at IS NOT NULL FROM ecod_schema.ecod_jobs_run",
    )
    assert run[0][0] == "error" and run[0][1:3] == (14, 4) and all(run[0][3:])
    assert q(pg_conn, "SELECT completed_items, status FROM ecod_schema.batch") == [(11, "processing")]

    # --retry-failed reruns exactly the failed items (after fixing them)
    (out / "fail_5").unlink()
    (out / "fail_6").unlink()
    (tmp_path / "data" / "chain 3.fa").write_text(">p3\nMKV\n")
    assert run_batch(batch, config_path=cfg, cores=2).nothing_to_do
    retry = run_batch(batch, config_path=cfg, retry_failed=True, cores=2)
    assert retry.ok and retry.by_status == {"success": 3}
    assert_each_item_once(pg_conn, {3, 5, 6}, run_id=retry.run_id)
    assert q(pg_conn, "SELECT completed_items, status FROM ecod_schema.batch") == [(14, "completed")]


def test_dry_run_writes_nothing(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, batch = setup_batch(tmp_path, scratch_db, n=6)
    before = q(pg_conn, "SELECT id, status, current_stage FROM ecod_schema.process_status ORDER BY id")
    result = run_cli("--config", str(cfg), "run", "--batch", str(batch), "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 items would run; nothing was written" in result.stdout
    assert (
        q(pg_conn, "SELECT id, status, current_stage FROM ecod_schema.process_status ORDER BY id") == before
    )
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.job") == [(0,)]
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.ecod_jobs_run") == [(0,)]
    assert not list((tmp_path / "work").glob("batch_*/*/runs/*/plan.json"))


def test_sync_rebuilds_deleted_job_rows(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, batch = setup_batch(tmp_path, scratch_db, n=9)
    first = run_cli("--config", str(cfg), "run", "--batch", str(batch), cwd=tmp_path)
    assert first.returncode == 1, first.stderr  # item 3 has no input: exit 1, summary printed
    assert "8 succeeded, 1 failed" in first.stdout and "failed 3 data/chain 3.fa" in first.stdout
    snapshot = """SELECT j.chunk_id, j.attempt, j.status, j.items_count, ji.process_id, ji.status,
                         ji.exit_code FROM ecod_schema.job j JOIN ecod_schema.job_item ji ON ji.job_id = j.id
                  ORDER BY ji.process_id"""
    before = q(pg_conn, snapshot)
    ps_before = q(pg_conn, "SELECT id, status, error_message FROM ecod_schema.process_status ORDER BY id")
    q_exec = (
        "DELETE FROM ecod_schema.job_item; DELETE FROM ecod_schema.job;"
        " UPDATE ecod_schema.process_status SET status = 'processing', error_message = NULL"
    )
    with pg_conn.cursor() as cur:
        cur.execute(q_exec)
    synced = run_cli("--config", str(cfg), "sync", "--batch", str(batch), cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    assert q(pg_conn, snapshot) == before
    assert (
        q(pg_conn, "SELECT id, status, error_message FROM ecod_schema.process_status ORDER BY id")
        == ps_before
    )
    # idempotent
    assert run_cli("--config", str(cfg), "sync", "--batch", str(batch), cwd=tmp_path).returncode == 0
    assert q(pg_conn, snapshot) == before


def test_chunks_are_recorded_while_the_run_goes_on(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The logger plugin records a finished chunk before the run ends, not only at the end."""
    monkeypatch.chdir(tmp_path)
    slow = "case {item_id} in 4) sleep 12;; esac; true"
    cfg, batch = setup_batch(tmp_path, scratch_db, n=4, batch_size=2, command=slow)
    (tmp_path / "data" / "chain 3.fa").write_text(">p3\nM\n")
    seen: list[tuple[Any, ...]] = []

    def watch() -> None:
        conn = connect_scratch(scratch_db)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                rows = q(
                    conn,
                    "SELECT j.chunk_id, j.status, r.status FROM ecod_schema.job j"
                    " JOIN ecod_schema.ecod_jobs_run r USING (run_id) WHERE j.status = 'completed'",
                )
            except psycopg2.Error:
                rows = []
            if rows:
                seen.extend(rows)
                break
            time.sleep(0.3)
        conn.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    result = run_batch(batch, config_path=cfg, cores=2)
    watcher.join()
    assert result.ok
    assert seen and seen[0][0] == "c00000" and seen[0][2] == "running", seen


def test_cli_usage_errors_exit_2(
    tmp_path: Path, scratch_db: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, batch = setup_batch(tmp_path, scratch_db, n=2)
    unknown_batch = run_cli("--config", str(cfg), "run", "--batch", "999", cwd=tmp_path)
    assert unknown_batch.returncode == 2 and "batch 999 does not exist" in unknown_batch.stderr
    unknown_type = run_cli(
        "--config", str(cfg), "run", "--batch", str(batch), "--job-type", "nope", cwd=tmp_path
    )
    assert unknown_type.returncode == 2 and "unknown job type 'nope'" in unknown_type.stderr
    bad_profile = run_cli(
        "--config", str(cfg), "run", "--batch", str(batch), "--profile", "/nowhere", cwd=tmp_path
    )
    assert bad_profile.returncode == 2 and "profile '/nowhere' not found" in bad_profile.stderr
    no_slurm = run_cli(
        "--config",
        str(cfg),
        "run",
        "--batch",
        str(batch),
        "--profile",
        "slurm",
        cwd=tmp_path,
        env={"PATH": str(Path(os.sys.executable).parent) + ":/usr/bin/nonexistent"},
    )
    assert no_slurm.returncode == 2 and "'sbatch' is not on PATH" in no_slurm.stderr
    for result in (unknown_batch, unknown_type, bad_profile, no_slurm):
        assert "Traceback" not in result.stderr


def test_status_json(tmp_path: Path, scratch_db: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.chdir(tmp_path)
    cfg, batch = setup_batch(tmp_path, scratch_db, n=5)
    assert run_cli("--config", str(cfg), "run", "--batch", str(batch), cwd=tmp_path).returncode == 1
    report = json.loads(run_cli("--config", str(cfg), "status", "--batch", str(batch), "--json").stdout)
    assert report["batch_id"] == batch and report["total"] == 5
    assert report["by_status"] == {"pending": 0, "processing": 0, "success": 4, "error": 1, "skipped": 0}
    assert report["jobs"] == {"submitted": 0, "running": 0, "completed": 2, "failed": 0}
    assert report["failed_items"][0]["process_id"] == 3


def test_demo_job_type_on_real_proteins(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pyhmmer")
    import yaml

    from ecod_jobs.demo.prepare import prepare

    monkeypatch.chdir(tmp_path)
    repo_cfg = yaml.safe_load((REPO / "config" / "config.yml").read_text())
    repo_cfg["database"] = scratch_db
    repo_cfg["pipeline"]["work_root"] = str(tmp_path / "work")
    cfg = write_config(tmp_path / "config.yml", repo_cfg)
    items = prepare(tmp_path / "demo", limit=12)  # includes HG003688_10, which has Pfam hits
    batch = create_batch(cfg, items, "demo", tmp_path / "demo")
    result = run_batch(batch, config_path=cfg, job_type="domain_scan", cores=2)
    assert result.ok and result.by_status == {"success": 12}
    outputs = sorted((tmp_path / "demo" / "domain_scan").glob("*.domains.tsv"))
    assert len(outputs) == 12
    hits = [line for p in outputs for line in p.read_text().splitlines()[1:]]
    assert hits and all(len(h.split("\t")) == 9 for h in hits)
    assert q(pg_conn, "SELECT DISTINCT current_stage FROM ecod_schema.process_status") == [
        ("domain_scan_complete",)
    ]


@pytest.mark.slurm
def test_slurm_run_uses_one_array(
    tmp_path: Path,
    scratch_db: dict[str, Any],
    pg_conn: Any,
    slurm_cluster: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, batch = setup_batch(tmp_path, scratch_db, n=10, batch_size=3)
    (tmp_path / "echo").mkdir()
    (tmp_path / "echo" / "fail_8").touch()
    result = run_batch(
        batch, profile="slurm", config_path=cfg, ecod_slurm_init_seconds_before_status_checks=5
    )
    assert result.returncode == 0, result.log_path.read_text()[-3000:]
    assert result.by_status == {"success": 8, "error": 2}
    jobs = q(
        pg_conn,
        "SELECT chunk_id, status, slurm_job_id, scheduler_state, node, elapsed_seconds,"
        " max_rss_kb FROM ecod_schema.job WHERE run_id = %s ORDER BY chunk_id",
        result.run_id,
    )
    assert len(jobs) == 4 and all(j[1] == "completed" and j[3] == "COMPLETED" for j in jobs)
    array_ids = {j[2].split("_")[0] for j in jobs}
    assert len(array_ids) == 1, "all chunks are tasks of one SLURM array"
    assert sorted(j[2].split("_")[1] for j in jobs) == ["1", "2", "3", "4"]
    assert all(j[4] and j[5] is not None and j[6] for j in jobs)
    assert_each_item_once(pg_conn, 10, failed={3, 8}, run_id=result.run_id)
    log = result.log_path.read_text()
    assert log.count("Submitted array job") == 1
    assert shutil.which("sacct")


def test_cancel_stops_a_live_run_and_records_it(
    tmp_path: Path, scratch_db: dict[str, Any], pg_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, batch = setup_batch(tmp_path, scratch_db, n=4, batch_size=2, command="sleep 60")
    (tmp_path / "data" / "chain 3.fa").write_text(">p3\nM\n")
    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.append(run_batch(batch, config_path=cfg, cores=2)))
    started = time.monotonic()
    runner.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until both chunks' first items are running
        if len(list((tmp_path / "work").glob("batch_*/echo/runs/*/results/*.attempt-1.json"))) == 2:
            break
        time.sleep(0.3)
    cancelled = run_cli("--config", str(cfg), "cancel", "--batch", str(batch), cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "stopped 1 runs" in cancelled.stdout
    runner.join(timeout=90)
    assert not runner.is_alive() and time.monotonic() - started < 60, "the run stopped well before sleep 60"
    assert q(pg_conn, "SELECT status, message FROM ecod_schema.ecod_jobs_run") == [
        ("cancelled", "cancelled with ecod-jobs cancel; stopped with SIGINT")
    ]
    assert "stopped run " in cancelled.stdout and " with SIGINT" in cancelled.stdout
    assert q(pg_conn, "SELECT count(*) FROM ecod_schema.ecod_jobs_lease") == [(0,)]
    assert q(pg_conn, "SELECT DISTINCT status FROM ecod_schema.process_status") == [("error",)]
    assert q(pg_conn, "SELECT DISTINCT status FROM ecod_schema.job") == [("failed",)]
    assert not list(tmp_path.glob("**/*.out")), "no item finished"
