"""A pipeline run end to end on the local profile: fan-out, a gated stage, fan-in, a chain;
failures, skips, process_file, resume, --retry-failed, --rerun and per-item pipelining.

Every stage runs ``stage.sh`` (below): it writes its output, reports ``coverage`` (the
item id's last digit / 10) to ``$ECOD_JOBS_METRICS``, appends ``STAGE ITEM`` to a log
(to count how often each item-stage ran), and fails where a ``fail/STAGE.ITEM`` marker
exists.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import connect_scratch, q, run_cli, write_config, write_items

STAGE_SCRIPT = r"""#!/bin/sh
stage=$1; item=$2; out=$3; shift 3
mkdir -p "$(dirname "$out")"
if [ -e "$ECOD_TEST_DIR/fail/$stage.$item" ]; then echo "marked to fail: $stage $item" >&2; exit 3; fi
# a stage may have to wait for a file (the pipelining test): at most 60 s
if [ -n "$1" ] && [ "$1" != "-" ]; then
  n=0
  while [ ! -e "$1" ]; do
    n=$((n+1)); [ $n -gt 600 ] && { echo "waited for $1" >&2; exit 4; }; sleep 0.1
  done
fi
echo "$stage $item" > "$out"
echo "coverage=0.$((item % 10))" >> "$ECOD_JOBS_METRICS"
echo "$stage $item" >> "$ECOD_TEST_DIR/ran.log"
"""


def stage_job(tmp_path: Path, stage: str, file_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "command": f"sh {tmp_path}/stage.sh {stage} {{item_id}} {{out[{file_type}]}} -",
        "outputs": {file_type: f"out/{stage}/{{stem}}.txt"},
        "metrics": ["coverage"],
        "stage": f"{stage}_complete",
        "memory": "100M",
        "time": "00:05:00",
        "check_inputs": False,
        **extra,
    }


def pipeline_config(tmp_path: Path, database: dict[str, Any], **pipeline: Any) -> Path:
    stages = {
        "chain": {},
        "domain": {},
        "deep": {"after": ["chain", "domain"], "when": "is_representative and domain.coverage < 0.5"},
        "summary": {"after": ["domain", "deep"], "if_upstream_skipped": "run"},
        "partition": {"after": ["summary"]},
    }
    return write_config(
        tmp_path / "config.yml",
        {
            "database": database,
            "pipeline": {"work_root": str(tmp_path / "work"), "output_root": str(tmp_path / "results")},
            "job_types": {
                "chain": stage_job(tmp_path, "chain", "chain_result", batch_size=3),
                "domain": stage_job(tmp_path, "domain", "domain_result", batch_size=2),
                "deep": stage_job(tmp_path, "deep", "deep_result", batch_size=1),
                "summary": stage_job(tmp_path, "summary", "summary_file", batch_size=4),
                "partition": stage_job(tmp_path, "partition", "partition_file", batch_size=5),
            },
            "pipelines": {"full": {"stages": stages, **pipeline}},
        },
    )


@pytest.fixture
def batch(tmp_path: Path, scratch_db: dict[str, Any]) -> tuple[Path, int, Any]:
    """12 items; items 1-8 are representatives."""
    (tmp_path / "stage.sh").write_text(STAGE_SCRIPT)
    (tmp_path / "fail").mkdir()
    data = tmp_path / "base" / "data"
    data.mkdir(parents=True)
    # one window: fewer Snakemake jobs (the pipelining test sets its own windows)
    cfg = pipeline_config(tmp_path, scratch_db, window_size=12)
    items = write_items(tmp_path / "items.tsv", [f"data/chain{i}.fa" for i in range(1, 13)])
    created = run_cli(
        "--config",
        str(cfg),
        "batch",
        "create",
        "--name",
        "p",
        "--items",
        str(items),
        "--base-path",
        str(tmp_path / "base"),
    )
    assert created.returncode == 0, created.stderr
    batch_id = int(created.stdout.split()[-1])
    conn = connect_scratch(scratch_db)
    q_exec(conn, "UPDATE ecod_schema.process_status SET is_representative = (id <= 8)")
    return cfg, batch_id, conn


def q_exec(conn: Any, statement: str, *params: Any) -> None:
    with conn.cursor() as cur:
        cur.execute(statement, params)
    conn.commit()


def run(cfg: Path, batch_id: int, *args: str, cwd: Path) -> Any:
    env = {"ECOD_TEST_DIR": str(cfg.parent)}
    return run_cli(
        "--config", str(cfg), "run", "--batch", str(batch_id), "--pipeline", "full", *args, cwd=cwd, env=env
    )


def ran(tmp_path: Path) -> Counter[tuple[str, int]]:
    log = tmp_path / "ran.log"
    lines = log.read_text().split("\n") if log.exists() else []
    return Counter((s, int(i)) for s, i in (line.split() for line in lines if line))


def stage_states(conn: Any) -> dict[tuple[int, str], str]:
    conn.rollback()
    return {
        (pid, st): status
        for pid, st, status in q(
            conn, "SELECT process_id, stage, status FROM ecod_schema.ecod_jobs_item_stage"
        )
    }


def expected_deep(item: int) -> bool:
    return item <= 8 and item % 10 < 5


def test_pipeline_runs_the_graph_records_stages_files_and_resumes(
    batch: tuple[Path, int, Any], tmp_path: Path
) -> None:
    cfg, batch_id, conn = batch
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "fail" / "domain.7").touch()  # item 7 fails domain: deep, summary, partition never run

    first = run(cfg, batch_id, cwd=outside)
    assert first.returncode == 1, first.stdout + first.stderr  # an item failed
    counts = ran(tmp_path)
    states = stage_states(conn)
    for item in range(1, 13):
        assert counts[("chain", item)] == 1
        if item == 7:
            assert states[(7, "domain")] == "error"
            assert all(counts[(s, 7)] == 0 for s in ("domain", "deep", "summary", "partition"))
            assert states[(7, "summary")] == "pending"
            continue
        assert counts[("domain", item)] == 1
        assert counts[("deep", item)] == (1 if expected_deep(item) else 0)
        assert states[(item, "deep")] == ("success" if expected_deep(item) else "skipped")
        assert counts[("summary", item)] == 1 and counts[("partition", item)] == 1
    conn.rollback()
    status = dict(
        (pid, (st, stage, err))
        for pid, st, stage, err in q(
            conn, "SELECT id, status, current_stage, error_message FROM ecod_schema.process_status"
        )
    )
    assert status[7][0] == "error" and status[7][1] == "domain_failed"
    assert status[7][2].startswith("domain: exit code 3: marked to fail")
    assert all(status[i][:2] == ("success", "partition_complete") for i in range(1, 13) if i != 7)
    metrics = dict(
        q(
            conn,
            "SELECT process_id, metrics->>'coverage' FROM ecod_schema.ecod_jobs_item_stage"
            " WHERE stage = 'domain' AND status = 'success'",
        )
    )
    assert metrics[4] == "0.4"
    files = q(
        conn, "SELECT process_id, file_type, file_path, file_exists, file_size FROM ecod_schema.process_file"
    )
    assert ("summary_file" in {f[1] for f in files}) and all(f[3] and f[4] > 0 for f in files)
    assert (1, "chain_result", "out/chain/chain1.txt", True, len("chain 1\n")) in files
    assert (
        len(files)
        == len(set((f[0], f[1]) for f in files))
        == sum(1 for s in states.values() if s == "success")
    )

    # status: a stage x status table, and `stages` in --json
    shown = run_cli("--config", str(cfg), "status", "--batch", str(batch_id), "--json")
    stages = json.loads(shown.stdout)["stages"]
    assert list(stages) == ["chain", "domain", "deep", "summary", "partition"]
    deep = sum(expected_deep(i) for i in range(1, 13) if i != 7)
    assert stages["chain"] == {"pending": 0, "running": 0, "success": 12, "error": 0, "skipped": 0}
    assert stages["domain"] == {"pending": 0, "running": 0, "success": 11, "error": 1, "skipped": 0}
    assert stages["deep"] == {"pending": 1, "running": 0, "success": deep, "error": 0, "skipped": 11 - deep}
    table = run_cli("--config", str(cfg), "status", "--batch", str(batch_id)).stdout
    assert re.search(r"^stage\s+pending\s+running\s+success\s+error\s+skipped$", table, re.M), table
    assert re.search(r"^domain\s+0\s+0\s+11\s+1\s+0$", table, re.M), table

    # the same command again: nothing is left to do without --retry-failed
    again = run(cfg, batch_id, cwd=outside)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert ran(tmp_path) == counts

    # fixed, --retry-failed: item 7's domain, then its dependents, each once
    (tmp_path / "fail" / "domain.7").unlink()
    retried = run(cfg, batch_id, "--retry-failed", cwd=outside)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    delta = ran(tmp_path) - counts
    assert delta == Counter({("domain", 7): 1, ("summary", 7): 1, ("partition", 7): 1})
    assert stage_states(conn)[(7, "deep")] == "skipped"  # coverage 0.7

    # --rerun summary: summary and partition again for every item, nothing upstream
    before = ran(tmp_path)
    rerun = run(cfg, batch_id, "--rerun", "summary", cwd=outside)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    delta = ran(tmp_path) - before
    assert set(delta) == {(s, i) for s in ("summary", "partition") for i in range(1, 13)}
    assert set(delta.values()) == {1}
    conn.rollback()
    assert (
        q(conn, "SELECT count(*), count(DISTINCT (process_id, file_type)) FROM ecod_schema.process_file")[0][
            0
        ]
        == len(files) + 3
    )  # item 7's domain, summary and partition files: updated in place, never twice

    # an output whose process_file row says it is gone: that stage and its downstream run again
    q_exec(
        conn,
        "UPDATE ecod_schema.process_file SET file_exists = false WHERE process_id = 2"
        " AND file_type = 'domain_result'",
    )
    before = ran(tmp_path)
    resumed = run(cfg, batch_id, cwd=outside)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert ran(tmp_path) - before == Counter(
        {("domain", 2): 1, ("deep", 2): 1, ("summary", 2): 1, ("partition", 2): 1}
    )


def test_downstream_chunks_start_before_the_upstream_stage_has_ended(
    batch: tuple[Path, int, Any], tmp_path: Path
) -> None:
    """Windows of 4 items: item 12's chain chunk waits until item 1's summary has run, which
    it can only if the summary of window 0 does not wait for the whole chain stage."""
    cfg, batch_id, conn = batch
    import yaml

    data = yaml.safe_load(cfg.read_text())
    data["pipelines"]["full"]["window_size"] = 4
    data["job_types"]["chain"]["command"] = (
        f"sh {tmp_path}/stage.sh chain {{item_id}} {{out[chain_result]}}"
        f" $(test {{item_id}} = 12 && echo {tmp_path}/base/out/summary/chain1.txt || echo -)"
    )
    cfg.write_text(yaml.safe_dump(data))
    result = run(cfg, batch_id, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    order = (tmp_path / "ran.log").read_text().split("\n")
    assert order.index("summary 1") < order.index("chain 12")
    assert all(status == "success" for (status,) in q(conn, "SELECT status FROM ecod_schema.process_status"))


def test_pipeline_config_errors_name_the_key_path(tmp_path: Path, scratch_db: dict[str, Any]) -> None:
    import yaml

    cfg = pipeline_config(tmp_path, scratch_db)
    base = yaml.safe_load(cfg.read_text())
    cases = [
        (
            ("pipelines", "full", "stages", "chain", "after"),
            ["partition"],
            "pipelines.full.stages: the stages form a cycle: ",
        ),
        (
            ("pipelines", "full", "stages", "deep", "after"),
            ["chain", "blast"],
            "pipelines.full.stages.deep.after.1: unknown stage 'blast'",
        ),
        (
            ("pipelines", "full", "stages", "deep", "job_type"),
            "hhsearch",
            "pipelines.full.stages.deep.job_type: unknown job type 'hhsearch'",
        ),
        (
            ("pipelines", "full", "stages", "deep", "when"),
            "domain.coverage <",
            "pipelines.full.stages.deep.when:",
        ),
        (("pipelines", "full", "stages", "deep", "when"), "domian.coverage < 0.5", "unknown stage 'domian'"),
        (("pipelines", "full", "stages", "deep", "when"), "domain.cov < 0.5", "'cov'"),
        (
            ("pipelines", "full", "stages", "deep", "when"),
            "__import__('os').system('true')",
            "pipelines.full.stages.deep.when:",
        ),
        (
            ("job_types", "chain", "outputs", "chain_result"),
            "out/{pdb}.txt",
            "job_types.chain.outputs.chain_result: unknown placeholder {pdb}",
        ),
        (
            ("job_types", "deep", "outputs"),
            {"deep_result": "d/{stem}", "domain_result": "x/{stem}"},
            "writes file type 'domain_result'",
        ),
        (
            ("job_types", "chain", "command"),
            "cat {out[summary_file]}",
            "names {out[summary_file]}, which stage 'summary', which is not upstream",
        ),
    ]
    for keys, value, expected in cases:
        data = yaml.safe_load(yaml.safe_dump(base))
        node = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
        bad = write_config(tmp_path / "bad.yml", data)
        result = run_cli("--config", str(bad), "config", "validate")
        assert result.returncode == 2, (keys, result.stdout)
        assert expected in result.stderr, (expected, result.stderr)
    unknown = run_cli("--config", str(cfg), "run", "--batch", "1", "--pipeline", "nope")
    assert unknown.returncode == 2 and "unknown pipeline 'nope'" in unknown.stderr


def test_a_second_run_with_overlapping_stages_is_refused(
    batch: tuple[Path, int, Any], tmp_path: Path
) -> None:
    from ecod_jobs.config import load_config
    from ecod_jobs.db import Database
    from ecod_jobs.exceptions import RunConflictError
    from ecod_jobs.lease import acquire_all

    cfg, batch_id, _conn = batch
    db = Database(load_config(cfg))
    holder = "00000000-0000-4000-8000-000000000001"
    acquire_all(db, batch_id, ["summary"], holder)  # a live run (this very process) holds summary
    blocked = run(cfg, batch_id, "--from", "deep", cwd=tmp_path)
    assert blocked.returncode != 0 and holder in blocked.stderr + blocked.stdout
    with pytest.raises(RunConflictError):
        acquire_all(db, batch_id, ["chain", "summary"], "00000000-0000-4000-8000-000000000002")
    # disjoint stages are free
    assert acquire_all(db, batch_id, ["chain", "domain"], "00000000-0000-4000-8000-000000000002") == []
    assert os.path.exists(cfg)


def test_cancel_stops_a_pipeline_run_and_settles_its_item_stages(
    batch: tuple[Path, int, Any], tmp_path: Path
) -> None:
    """Cancelled while item 1's domain search waits: nothing stays running or processing,
    what ended is kept, and the next run does the rest."""
    import time

    import yaml
    from helpers import start_cli, wait_for

    cfg, batch_id, conn = batch
    data = yaml.safe_load(cfg.read_text())
    gate = tmp_path / "go"
    data["job_types"]["domain"]["command"] = (
        f"sh {tmp_path}/stage.sh domain {{item_id}} {{out[domain_result]}}"
        f" $(test {{item_id}} = 1 && echo {gate} || echo -)"
    )
    cfg.write_text(yaml.safe_dump(data))
    env_run = start_cli(
        "--config",
        str(cfg),
        "run",
        "--batch",
        str(batch_id),
        "--pipeline",
        "full",
        cwd=tmp_path,
        env={"ECOD_TEST_DIR": str(tmp_path)},
    )
    # every chain item, not just the last: with two cores Snakemake may start chain
    # chunks in any order, so item 12 can end before items 7-9 start
    wait_for(lambda: all(("chain", i) in ran(tmp_path) for i in range(1, 13)), what="the chain stage to end")
    time.sleep(1)
    cancelled = run_cli("--config", str(cfg), "cancel", "--batch", str(batch_id), cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    env_run.wait(timeout=120)
    conn.rollback()
    assert q(conn, "SELECT status FROM ecod_schema.ecod_jobs_run") == [("cancelled",)]
    assert q(conn, "SELECT count(*) FROM ecod_schema.ecod_jobs_item_stage WHERE status = 'running'") == [(0,)]
    assert q(conn, "SELECT count(*) FROM ecod_schema.process_status WHERE status = 'processing'") == [(0,)]
    assert q(conn, "SELECT count(*) FROM ecod_schema.ecod_jobs_lease") == [(0,)]
    chain = q(
        conn,
        "SELECT process_id, status, error_message FROM ecod_schema.ecod_jobs_item_stage WHERE stage = 'chain'"
        " ORDER BY process_id",
    )
    assert {status for _, status, _ in chain} == {"success"}, chain
    before = ran(tmp_path)
    gate.touch()
    rerun = run(cfg, batch_id, "--retry-failed", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = ran(tmp_path)
    assert all(after[("chain", i)] == 1 for i in range(1, 13)), "chain is not run again"
    assert all(after[(s, i)] == 1 for s in ("summary", "partition") for i in range(1, 13))
    assert after - before  # the rest ran
    conn.rollback()
    assert q(conn, "SELECT DISTINCT status FROM ecod_schema.process_status") == [("success",)]
