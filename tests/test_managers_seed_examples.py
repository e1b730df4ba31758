"""Every code example of the original ``ecod.jobs`` README, run for real.

The examples are copied verbatim from the original README (seed/ECOD_JOBS_README.md).
Only the import path changes (``ecod.jobs`` -> ``ecod_jobs``, ``ecod.exceptions``
-> ``ecod_jobs.exceptions``), plus what the README leaves for the reader to
fill in: the ``{...}`` database placeholder, absolute example directories
(moved under the test's directory), the analysis programs (small fakes on PATH)
and ``DomainAnalysisPipeline`` (a stub: it is not part of the jobs module).

The last example passed the dicts from ``create_batch_jobs`` back into
``submit_job``; that is rejected with a clear error, and the corrected form
(as in our README) runs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import DomainAnalysisPipeline
from psycopg2 import sql

from ecod_jobs import LocalJobManager
from ecod_jobs.db import Database, init_schema
from ecod_jobs.exceptions import ValidationError

BASIC_USAGE = """
from ecod.jobs import create_job_manager

# Create a job manager from configuration
config = {
    'job_manager': {'type': 'local'},  # or 'slurm'
    'database': {...}  # database config
}

job_manager = create_job_manager(config)

# Create and submit a simple job
script_path = job_manager.create_job_script(
    commands=["echo 'Hello World'", "sleep 10"],
    job_name="hello_world",
    output_dir="/tmp/jobs"
)

job_id = job_manager.submit_job(script_path)
print(f"Submitted job: {job_id}")

# Check job status
status = job_manager.check_job_status(job_id)
print(f"Job status: {status}")
"""

DATABASE_USAGE = """
from ecod.jobs import DatabaseJobManager

# Initialize with database integration
db_job_manager = DatabaseJobManager("config/config.yml")

# Submit job with database tracking
job_id = db_job_manager.submit_job(
    script_path,
    batch_id=123,
    job_type="domain_analysis",
    process_ids=[1, 2, 3, 4, 5]  # Track specific process items
)

# Check all jobs for a batch
completed, failed, running = db_job_manager.check_all_jobs(batch_id=123)
print(f"Batch 123: {completed} completed, {failed} failed, {running} running")
"""

BATCH_PROCESSING = """
# Define items to process
items = [
    (1, "/data/protein1.fasta"),
    (2, "/data/protein2.fasta"),
    (3, "/data/protein3.fasta"),
    # ... more items
]

# Create batch job template
job_template = {
    "name": "protein_analysis",
    "output_dir": "/results/batch_jobs",
    "command_template": lambda item_id, path: f"analyze_protein.py --id {item_id} --input {path}",
    "threads": 4,
    "memory": "8G",
    "time": "02:00:00"
}

# Create batch jobs (2 items per job)
jobs = job_manager.create_batch_jobs(items, batch_size=2, job_template=job_template)

# Submit all jobs
job_ids = []
for job in jobs:
    job_id = job_manager.submit_job(job["script_path"])
    job_ids.append(job_id)
    print(f"Submitted batch {job['batch_num']} with job ID {job_id}")
"""

ERROR_HANDLING = """
from ecod.exceptions import JobSubmissionError, JobExecutionError

try:
    job_id = job_manager.submit_job(script_path)
except JobSubmissionError as e:
    logger.error(f"Failed to submit job: {e}")
except JobExecutionError as e:
    logger.error(f"Job execution error: {e}")
"""

LOGGING = """
import logging

# Configure logging
logging.basicConfig(level=logging.INFO)
logger = logging.getLogger("ecod.jobs")

# The module will log:
# - Job submissions and completions
# - Status changes
# - Error conditions
# - Resource usage (for SLURM)
"""

PIPELINE_INTEGRATION_AS_PUBLISHED = """
# Example: Domain analysis pipeline integration
from ecod.pipelines.domain_analysis import DomainAnalysisPipeline
from ecod.jobs import DatabaseJobManager

pipeline = DomainAnalysisPipeline(config_path="config/config.yml")
job_manager = DatabaseJobManager(config_path="config/config.yml")

# Process a batch of proteins
batch_id = 123
proteins = pipeline.get_pending_proteins(batch_id)

# Create analysis jobs
job_template = {
    "name": "domain_analysis",
    "command_template": lambda protein_id, _: f"analyze_domains.py --protein-id {protein_id}",
    "threads": 8,
    "memory": "16G",
    "time": "02:00:00"
}

items = [(p.id, p.sequence_path) for p in proteins]
job_ids = job_manager.create_batch_jobs(items, batch_size=50, job_template=job_template)

# Submit and monitor
for job_id in job_ids:
    job_manager.submit_job(job_id, batch_id=batch_id, job_type="domain_analysis")
"""

# The corrected example, as in README.md ("Python API"): create_batch_jobs returns
# job dicts; each script is submitted with the process ids of its chunk.
PIPELINE_INTEGRATION_CORRECTED = """
from ecod.pipelines.domain_analysis import DomainAnalysisPipeline
from ecod_jobs import DatabaseJobManager

pipeline = DomainAnalysisPipeline(config_path="config/config.yml")
job_manager = DatabaseJobManager(config_path="config/config.yml")

batch_id = 123
proteins = pipeline.get_pending_proteins(batch_id)  # process_status rows of the batch

job_template = {
    "name": "domain_analysis",
    "command_template": lambda pid, path: f"analyze_domains.py --process-id {pid} --input {path}",
    "threads": 8,
    "memory": "16G",
    "time": "02:00:00",
}

# items are (process_status id, input path): the ids are what the database tracks
items = [(p.id, p.sequence_path) for p in proteins]
jobs = job_manager.create_batch_jobs(items, batch_size=50, job_template=job_template)

job_ids = []
for job in jobs:
    job_id = job_manager.submit_job(
        job["script_path"],
        batch_id=batch_id,
        job_type="domain_analysis",
        process_ids=[process_id for process_id, _path in job["items"]],
    )
    job_ids.append(job_id)

completed, failed, running = job_manager.check_all_jobs(batch_id=batch_id)
"""


def adapt(example: str, tmp_path: Path) -> str:
    """Only the import path, plus the placeholders the README leaves to the reader."""
    return (
        example.replace("from ecod.jobs import", "from ecod_jobs import")
        .replace("from ecod.exceptions import", "from ecod_jobs.exceptions import")
        .replace("from ecod.pipelines.domain_analysis import DomainAnalysisPipeline\n", "")
        .replace("'database': {...}", "'database': DATABASE")
        .replace('"/tmp/jobs"', repr(str(tmp_path / "jobs")))
        .replace('"/results/batch_jobs"', repr(str(tmp_path / "results" / "batch_jobs")))
    )


@pytest.fixture
def session(
    tmp_path: Path, scratch_db: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """A user's working directory: config/config.yml, batch 123 with process ids 1..5 (and
    120 more items), and the analysis programs on PATH."""
    monkeypatch.chdir(tmp_path)
    config = {"database": scratch_db, "job_manager": {"type": "local"}}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yml").write_text(yaml.safe_dump(config))
    db = Database(config)
    init_schema(db)
    with db.transaction() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (id, batch_name, base_path, type, ref_version, total_items)"
                " VALUES (123, 'batch_123', %s, 'domain_analysis', 'develop291', 125)"
            ).format(db.table("batch")),
            (str(tmp_path),),
        )
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (id, protein_id, batch_id, current_stage, status, relative_path)"
                " SELECT i, 1000 + i, 123, 'fasta_generated', 'pending', 'chain' || i || '.fa'"
                " FROM generate_series(1, 125) AS i"
            ).format(db.table("process_status")),
        )
        cur.execute("SELECT setval('ecod_schema.process_status_id_seq', 125)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("analyze_protein.py", "analyze_domains.py"):
        (bin_dir / program).write_text(f'#!/bin/sh\necho "{program} $*"\n')
        (bin_dir / program).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    namespace: dict[str, Any] = {
        "DATABASE": scratch_db,
        "DomainAnalysisPipeline": DomainAnalysisPipeline,
        "logger": logging.getLogger("seed-example"),
    }
    yield namespace
    for name in ("job_manager", "db_job_manager"):
        manager = namespace.get(name)
        local = getattr(manager, "job_manager", manager)
        if isinstance(local, LocalJobManager):
            for job_id in list(local._submitted):
                local.cancel_job(job_id)
            local.shutdown()


def run(example: str, namespace: dict[str, Any], tmp_path: Path) -> None:
    exec(compile(adapt(example, tmp_path), "<seed example>", "exec"), namespace)


def test_seed_examples_run_in_order(
    session: dict[str, Any], tmp_path: Path, pg_conn: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    run(BASIC_USAGE, session, tmp_path)
    out = capsys.readouterr().out
    job_id = session["job_id"]
    assert isinstance(session["job_manager"], LocalJobManager)
    assert f"Submitted job: {job_id}\n" in out
    assert session["status"] in {"PENDING", "RUNNING"} and f"Job status: {session['status']}\n" in out
    assert session["script_path"] == str(tmp_path / "jobs" / "hello_world.sh")

    run(DATABASE_USAGE, session, tmp_path)
    assert capsys.readouterr().out == "Batch 123: 0 completed, 0 failed, 1 running\n"
    with pg_conn.cursor() as cur:
        cur.execute("SELECT slurm_job_id, job_type, items_count, status FROM ecod_schema.job")
        assert cur.fetchall() == [(session["job_id"], "domain_analysis", 5, "submitted")]
        cur.execute("SELECT process_id FROM ecod_schema.job_item ORDER BY process_id")
        assert [r[0] for r in cur.fetchall()] == [1, 2, 3, 4, 5]
        cur.execute("SELECT count(*) FROM ecod_schema.process_status WHERE status = 'processing'")
        assert cur.fetchone() == (5,)
    session["db_job_manager"].job_manager.cancel_job(session["job_id"])  # no need to sleep 10 s

    run(BATCH_PROCESSING, session, tmp_path)
    jobs, job_ids = session["jobs"], session["job_ids"]
    assert [j["name"] for j in jobs] == ["protein_analysis_0", "protein_analysis_1"]
    assert capsys.readouterr().out == "".join(
        f"Submitted batch {n} with job ID {i}\n" for n, i in zip((0, 1), job_ids, strict=True)
    )
    manager = session["job_manager"]
    assert set(manager.wait(job_ids, timeout=30).values()) == {"COMPLETED"}
    output = manager.get_job_output(job_ids[1], tmp_path / "results" / "batch_jobs", "protein_analysis_1")
    assert output["stdout"] == "analyze_protein.py --id 3 --input /data/protein3.fasta\n"
    assert "#SBATCH --cpus-per-task=4" in Path(jobs[0]["script_path"]).read_text()

    before = set(manager._submitted)
    run(ERROR_HANDLING, session, tmp_path)
    assert len(set(manager._submitted) - before) == 1  # submitted without raising
    session["job_id"] = next(iter(set(manager._submitted) - before))
    manager.cancel_job(session["job_id"])
    session["script_path"] = str(tmp_path / "missing.sh")
    logged: list[str] = []
    session["logger"] = type("L", (), {"error": staticmethod(logged.append)})()
    run(ERROR_HANDLING, session, tmp_path)  # now the error branch runs
    assert (
        logged and logged[0].startswith("Failed to submit job: job script") and "does not exist" in logged[0]
    )


def test_logging_example_and_our_logger_hierarchy(
    session: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run(LOGGING, session, tmp_path)
    with caplog.at_level(logging.INFO, logger="ecod_jobs"):
        run(BASIC_USAGE, session, tmp_path)
    records = [r for r in caplog.records if r.name.startswith("ecod_jobs.")]
    assert any("submitted local job" in r.getMessage() for r in records)
    assert all("password" not in r.getMessage() for r in records)


def test_pipeline_example_as_published_fails_clearly(session: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"not a dict \(pass job\['script_path'\]\)"):
        run(PIPELINE_INTEGRATION_AS_PUBLISHED, session, tmp_path)


def test_pipeline_example_corrected(session: dict[str, Any], tmp_path: Path, pg_conn: Any) -> None:
    run(PIPELINE_INTEGRATION_CORRECTED, session, tmp_path)
    manager = session["job_manager"]
    jobs, job_ids = session["jobs"], session["job_ids"]
    assert [len(j["items"]) for j in jobs] == [50, 50, 25]
    # the template had no output_dir: scripts go to {pipeline.output_root}/jobs
    assert jobs[0]["script_path"] == str(tmp_path / "results" / "jobs" / "domain_analysis_0.sh")
    assert session["running"] + session["completed"] == 3
    deadline = time.monotonic() + 60
    while manager.check_all_jobs(batch_id=123) != (3, 0, 0):
        assert time.monotonic() < deadline, manager.check_all_jobs(batch_id=123)
        time.sleep(0.2)
    with pg_conn.cursor() as cur:
        cur.execute("SELECT slurm_job_id, items_count, status FROM ecod_schema.job ORDER BY id")
        assert cur.fetchall() == [(job_ids[0], 50, "completed"), (job_ids[1], 50, "completed"),
                                  (job_ids[2], 25, "completed")]  # fmt: skip
        cur.execute("SELECT status, count(*) FROM ecod_schema.process_status GROUP BY status")
        assert cur.fetchall() == [("success", 125)]
        cur.execute(
            "SELECT count(*), count(DISTINCT process_id) FROM ecod_schema.job_item WHERE status = 'completed'"
        )
        assert cur.fetchone() == (125, 125)
    output = manager.get_job_output(job_ids[2], tmp_path / "results" / "jobs", "domain_analysis_2")
    assert output["stdout"] is not None
    assert output["stdout"].splitlines()[0] == "analyze_domains.py --process-id 101 --input chain101.fa"
