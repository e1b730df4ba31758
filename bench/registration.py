"""1. Registration and 7. head-node memory: a 1,000,000-item batch created and planned.

Ours: ``create_batch`` (the ``batch create`` path) then ``plan_run`` (the workflow's
plan checkpoint: chunk manifests, one ``job`` row per chunk, one ``job_item`` per
item, items to ``processing``), each in a process of its own for its peak RSS.

Baselines, on the same tables in the same database:
- raw COPY of the same process_status, job and job_item rows (ids chosen by the
  client, so no query in between): the physical limit;
- the original's way: one INSERT and one COMMIT per row, on a sample, scaled.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ecod_jobs.db.bulk import copy_value

from .common import REPO, Measurement, connect, log, timed

JOB_TYPE = "bench"
ROW_SAMPLE = 1000


@dataclass
class Registered:
    """The planned batch the later measurements (sync, status) work on."""

    config_path: Path
    batch_id: int
    items: int
    run_dir: Path
    chunks: int


def write_config(path: Path, section: dict[str, Any], work: Path, batch_size: int, command: str) -> Path:
    config = {
        "database": {**section, "schema": "ecod_schema"},
        "pipeline": {"work_root": str(work)},
        "job_types": {JOB_TYPE: {"command": command, "batch_size": batch_size, "check_inputs": False}},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def child(step: str, config_path: Path, *args: Any) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.child", step, str(config_path), *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench.child {step} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def checkpoint(section: dict[str, Any]) -> None:
    """Start each timed step with no dirty buffers of an earlier one (superuser only)."""
    conn = connect(section)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
    except Exception:  # not a superuser: measure without it
        pass
    finally:
        conn.close()


def copy_text(rows: list[tuple[Any, ...]]) -> io.StringIO:
    """The rows as COPY text, rendered before the clock starts."""
    return io.StringIO("".join("\t".join(map(copy_value, r)) + "\n" for r in rows))


def raw_copy(section: dict[str, Any], items: int, batch_size: int) -> float:
    """COPY the rows a plan leaves behind, with client-chosen ids; seconds to commit."""
    conn = connect(section)
    with conn, conn.cursor() as cur:
        cur.execute("SET search_path TO ecod_schema")
        cur.execute(
            "INSERT INTO batch (batch_name, base_path, type, ref_version, total_items)"
            " VALUES ('raw copy', '/data/bench', 'generic', 'unspecified', %s) RETURNING id",
            (items,),
        )
        batch_id = cur.fetchone()[0]
        cur.execute("SELECT coalesce(max(id), 0) FROM process_status")
        first_ps = cur.fetchone()[0] + 1
        cur.execute("SELECT coalesce(max(id), 0) FROM job")
        first_job = cur.fetchone()[0] + 1
    chunks = (items + batch_size - 1) // batch_size
    ps = copy_text(
        [
            (first_ps + i, batch_id, "registered", "processing", "f", f"chains/{i:07d}.fa")
            for i in range(items)
        ]
    )
    jobs = copy_text(
        [(first_job + c, batch_id, JOB_TYPE, "submitted", batch_size, f"c{c:05d}", 1) for c in range(chunks)]
    )
    job_items = copy_text([(first_job + i // batch_size, first_ps + i, "pending") for i in range(items)])
    checkpoint(section)

    def load() -> None:
        with conn, conn.cursor() as cur:
            cur.execute("SET search_path TO ecod_schema")
            cur.copy_expert(
                "COPY process_status (id, batch_id, current_stage, status, is_representative, relative_path)"
                " FROM STDIN",
                ps,
            )
            cur.copy_expert(
                "COPY job (id, batch_id, job_type, status, items_count, chunk_id, attempt) FROM STDIN", jobs
            )
            cur.copy_expert("COPY job_item (job_id, process_id, status) FROM STDIN", job_items)

    seconds, _ = timed(load)
    with conn, conn.cursor() as cur:  # keep the sequences ahead of the ids we chose
        cur.execute(
            "SELECT setval('ecod_schema.process_status_id_seq',"
            " (SELECT max(id) FROM ecod_schema.process_status))"
        )
        cur.execute("SELECT setval('ecod_schema.job_id_seq', (SELECT max(id) FROM ecod_schema.job))")
    conn.close()
    return seconds


def row_at_a_time(section: dict[str, Any], sample: int) -> float:
    """The original's way, one statement and one commit per row; seconds for ``sample`` items."""
    conn = connect(section)

    def insert() -> None:
        with conn.cursor() as cur:
            cur.execute("SET search_path TO ecod_schema")
            cur.execute(
                "INSERT INTO batch (batch_name, base_path, type, ref_version, total_items)"
                " VALUES ('row at a time', '/data/bench', 'generic', 'unspecified', %s) RETURNING id",
                (sample,),
            )
            batch_id = cur.fetchone()[0]
            conn.commit()
            ids = []
            for i in range(sample):
                cur.execute(
                    "INSERT INTO process_status (batch_id, current_stage, status, relative_path)"
                    " VALUES (%s, 'registered', 'pending', %s) RETURNING id",
                    (batch_id, f"chains/{i:07d}.fa"),
                )
                ids.append(cur.fetchone()[0])
                conn.commit()
            cur.execute(
                "INSERT INTO job (batch_id, job_type, status, items_count) VALUES (%s, %s, 'submitted', %s)"
                " RETURNING id",
                (batch_id, JOB_TYPE, sample),
            )
            job_id = cur.fetchone()[0]
            conn.commit()
            for pid in ids:
                cur.execute(
                    "INSERT INTO job_item (job_id, process_id, status) VALUES (%s, %s, 'pending')",
                    (job_id, pid),
                )
                conn.commit()
                cur.execute("UPDATE process_status SET status = 'processing' WHERE id = %s", (pid,))
                conn.commit()

    checkpoint(section)
    seconds, _ = timed(insert)
    conn.close()
    return seconds


def measure(
    section: dict[str, Any], work: Path, items: int, batch_size: int
) -> tuple[list[Measurement], Registered]:
    config = write_config(work / "bench-config.yaml", section, work / "work", batch_size, "true")
    from ecod_jobs.config import load_config
    from ecod_jobs.db import Database, init_schema

    init_schema(Database(load_config(config)))
    log(f"registration: raw COPY of {items:,} items (baseline)")
    copy_seconds = raw_copy(section, items, batch_size)
    log(f"registration: row at a time, {ROW_SAMPLE:,}-item sample (baseline)")
    row_seconds = row_at_a_time(section, ROW_SAMPLE)
    log(f"registration: ecod-jobs create + plan of {items:,} items")
    checkpoint(section)
    created = child("create", config, items)
    checkpoint(section)
    planned = child("plan", config, created["batch_id"])
    idle = child("idle", config)
    fetched = child("fetch", config, created["batch_id"])
    ours = created["seconds"] + planned["seconds"]
    rate = items / ours
    copy_rate, row_rate = items / copy_seconds, ROW_SAMPLE / row_seconds
    results = [
        Measurement(
            "registration",
            f"Registration: create + plan {items:,} items (items/s)",
            rate,
            "items/s",
            baseline="raw COPY of the same rows",
            baseline_value=copy_rate,
            goal=">= 0.8x raw COPY",
            met=rate >= 0.8 * copy_rate,
            notes=[
                f"create {created['seconds']:.1f} s, plan {planned['seconds']:.1f} s"
                f" ({planned['chunks']:,} chunks); raw COPY {copy_seconds:.1f} s"
            ],
        ),
        Measurement(
            "registration_vs_rows",
            "Registration vs the original's row-at-a-time inserts (items/s)",
            rate,
            "items/s",
            baseline=f"one INSERT + COMMIT per row ({ROW_SAMPLE:,}-item sample, scaled)",
            baseline_value=row_rate,
            goal=">= 50x row-at-a-time",
            met=rate >= 50 * row_rate,
            notes=[f"row at a time: {items / row_rate / 3600:.1f} h for {items:,} items"],
        ),
        Measurement(
            "plan_memory",
            f"Head-node peak RSS planning {items:,} items (MB)",
            planned["max_rss_kb"] / 1024,
            "MB",
            baseline="fetchall() of the same rows, nothing else",
            baseline_value=fetched["max_rss_kb"] / 1024,
            higher_is_better=False,
            notes=[
                f"interpreter with ecod_jobs imported: {idle['max_rss_kb'] / 1024:.0f} MB;"
                f" batch create of {items:,} items: {created['max_rss_kb'] / 1024:.0f} MB"
            ],
        ),
    ]
    registered = Registered(config, created["batch_id"], items, Path(planned["run_dir"]), planned["chunks"])
    return results, registered
