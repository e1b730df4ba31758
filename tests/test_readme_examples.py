"""Every ```sh and ```python example of README.md, run for real, so the README cannot drift.

The blocks are read from README.md when the tests are collected, and known by their
language and first line. EXAMPLES says, for each, what it assumes exists (a batch 1, a
batch 123 ...: its set-up) and what must hold after it ran; a block that is not there
fails ``test_readme_example`` until it is added (a new example is picked up by itself,
and an edited one runs as edited). A command that cannot run in a test is in
SKIPPED_COMMANDS, a block in SKIPPED_BLOCKS, with the reason, and is reported as a
skip, never silently dropped.

Each block runs in a world of its own: a scratch database, a working directory with
``config/config.yml`` pointing at it (job type ``blast``: a checksum, which fails
once for an item named ``flaky_*``), and the analysis programs the Python examples
call, as fakes on PATH.
Shell lines run one by one through bash there; Python blocks run in one namespace, in
process, after the blocks they build on (``needs``). The only edits are SUBSTITUTIONS:
absolute example paths moved under the world.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import types
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, DomainAnalysisPipeline, connect_scratch, create_batch, q, wait_for, write_config

from ecod_jobs import LocalJobManager

README = REPO / "README.md"
SHELLS = {"sh", "bash", "shell", "console"}
PYTHONS = {"python", "py", "python3"}


# --------------------------------------------------------------------------- the README's blocks


@dataclass(frozen=True)
class Block:
    lang: str  # "sh" or "python"
    line: int  # of the opening fence in README.md
    text: str

    @property
    def first_line(self) -> str:
        return next(line.strip() for line in self.text.splitlines() if line.strip())

    @property
    def key(self) -> str:
        return f"{self.lang}: {' '.join(self.first_line.split())}"


def readme_blocks() -> list[Block]:
    """Every fenced shell and Python block of README.md, in order."""
    blocks, lines = [], README.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = re.fullmatch(r"(\s*)(`{3,}|~{3,})\s*([\w+-]*).*", lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, lang = opening.groups()
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        body = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end]) + "\n"
        if lang.lower() in SHELLS | PYTHONS and body.strip():
            blocks.append(Block("sh" if lang.lower() in SHELLS else "python", i + 1, body))
        i = end + 1
    return blocks


def shell_commands(text: str) -> list[str]:
    """A shell block's commands: one a line (backslash continuations joined), no comment lines."""
    commands, pending = [], ""
    for raw in text.splitlines():
        line = pending + raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        if line.strip() and not line.strip().startswith("#"):
            commands.append(line.strip())
    return commands


def words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


# --------------------------------------------------------------------------- the world a block runs in


@dataclass
class Ran:
    """What one shell command did."""

    command: str
    returncode: int
    stdout: str
    stderr: str
    answered: str | None = None  # a server's first answer, for commands that serve until Ctrl-C


@dataclass
class World:
    dir: Path
    database: dict[str, Any]
    env: dict[str, str]
    monkeypatch: pytest.MonkeyPatch
    namespace: dict[str, Any] = field(default_factory=dict)
    ran: list[Ran] = field(default_factory=list)
    cwd: Path | None = None  # where shell commands run (default: dir)

    @property
    def config(self) -> Path:
        return self.dir / "config" / "config.yml"

    def conn(self) -> Any:
        return connect_scratch(self.database)

    def register(self, batch_id: int, paths: list[str]) -> int:
        """Register a batch that gets id ``batch_id`` (on a fresh database) with input files
        under data/ (process ids 1, 2, ... for the first batch)."""
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        for path in paths:
            (data / path).write_text(f">{path}\nMKV\n")
        items = self.dir / f"batch{batch_id}.tsv"
        items.write_text("path\n" + "".join(f"{p}\n" for p in paths))
        if batch_id > 1:
            subprocess.run(
                [sys.executable, "-m", "ecod_jobs.cli", "--config", str(self.config), "db", "init"],
                check=True,
                capture_output=True,
            )
            conn = self.conn()
            try:
                q(conn, "SELECT setval(pg_get_serial_sequence('ecod_schema.batch', 'id'), %s)", batch_id - 1)
            finally:
                conn.close()
        assert create_batch(self.config, items, f"batch{batch_id}", data) == batch_id
        return batch_id

    def statuses(self, batch_id: int) -> dict[str, int]:
        conn = self.conn()
        try:
            rows = q(
                conn,
                "SELECT status, count(*) FROM ecod_schema.process_status WHERE batch_id = %s GROUP BY 1",
                batch_id,
            )
        finally:
            conn.close()
        return dict(rows)


# A checksum per item; an item whose path holds "flaky" fails its first time, as a BLAST
# database being rebuilt would, so that run_batch's example has a failed item to list and
# retry. (Only there: each SLURM run costs about 40 s, and the shell examples' retries are
# the same code as run_batch's.)
BLAST = (
    "case {path} in *flaky*) test -e {output_dir}/{item_id}.tried"
    " || {{ touch {output_dir}/{item_id}.tried; echo 'BLAST database busy' >&2; exit 1; }} ;; esac;"
    " sha256sum {path} > {output_dir}/{item_id}.blast"
)
CHAINS = ["1abc_A.fa", "2xyz_B.fa", "3def_C.fa"]
FLAKY = "flaky_D.fa"

# Absolute example paths, moved under the world (nothing else of a block is changed).
SUBSTITUTIONS = {
    "/data/ecod/batch_031": "{world}/data/ecod/batch_031",
    '"/tmp/jobs"': '"{world}/tmp/jobs"',
    '"/results/batch_jobs"': '"{world}/results/batch_jobs"',
}


def substitute(text: str, world: Path) -> str:
    for old, new in SUBSTITUTIONS.items():
        text = text.replace(old, new.format(world=world))
    return text


# --------------------------------------------------------------------------- running blocks

# Blocks a test cannot run, by key.
SKIPPED_BLOCKS = {
    "sh: cd /path/to/ecod-jobs": "the installs into a new virtualenv take minutes and PyPI:"
    " tests/test_install.py makes both (pip install . and -e .) from a copy of the source tree"
    " and runs batches through each",
}

# Commands of a shell block that a test cannot run, matched by their first words.
SKIPPED_COMMANDS = {
    "make test": "recursion: it runs this test suite, this test included (CI runs it: .ci/run)",
    "ssh": "needs a login node and an account on it; the tunnel is ssh's, not ecod-jobs'",
}

# Commands that serve until Ctrl-C: started, asked once, then stopped with SIGINT. They
# use the README's ports (8050, 9000): a dashboard of your own on one of them fails the test.
SERVERS = {"ecod-jobs dashboard": ("/api/batches", 8050)}


def skip_reason(command: str) -> str | None:
    argv = words(command)
    for prefix, reason in SKIPPED_COMMANDS.items():
        if argv[: len(prefix.split())] == prefix.split():
            return reason
    return None


def serve_and_stop(command: str, world: World, path: str, default_port: int) -> Ran:
    argv = words(command)
    port = int(argv[argv.index("--port") + 1]) if "--port" in argv else default_port
    log = world.dir / f"server-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=world.cwd or world.dir,
            env=world.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        answered = None
        try:

            def answer() -> str | None:
                assert proc.poll() is None, f"{command!r} exited {proc.returncode}: {log.read_text()}"
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                        return f"{response.status} {response.read(200).decode()}"
                except OSError:
                    return None

            answered = wait_for(answer, 60, f"{command!r} to answer on port {port}")
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return Ran(command, proc.returncode, log.read_text(), "", answered)


def run_shell(block: Block, world: World) -> None:
    for command in shell_commands(substitute(block.text, world.dir)):
        if skip_reason(command):  # reported by test_readme_command_not_run
            continue
        served = next((v for k, v in SERVERS.items() if words(command)[: len(k.split())] == k.split()), None)
        if served:
            world.ran.append(serve_and_stop(command, world, *served))
            continue
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=world.cwd or world.dir,
            env=world.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        print(f"$ {command}\n{done.stdout}{done.stderr}")
        world.ran.append(Ran(command, done.returncode, done.stdout, done.stderr))


def run_python(block: Block, world: World) -> None:
    code = compile(substitute(block.text, world.dir), f"README.md line {block.line}", "exec")
    exec(code, world.namespace)


def run_block(block: Block, world: World) -> None:
    (run_shell if block.lang == "sh" else run_python)(block, world)


# --------------------------------------------------------------------------- what each block needs and does


@dataclass
class Example:
    check: Callable[[World, str], None]  # (world, what the block printed)
    setup: Callable[[World], None] | None = None
    needs: tuple[str, ...] = ()  # keys of blocks run first, in the same world
    slurm: bool = False
    slow: bool = False


def check_make(world: World, out: str) -> None:
    [demo] = world.ran
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "200 succeeded, 0 failed" in demo.stdout, demo.stdout[-3000:]
    # the pipeline's five stages, the gated one partly skipped, and a partition per protein
    assert re.search(r"deep_search\s+0\s+0\s+[1-9][0-9]*\s+0\s+[1-9][0-9]*\b", demo.stdout), demo.stdout
    assert re.search(r"partition\s+0\s+0\s+200\s+0\s+0\b", demo.stdout), demo.stdout
    assert "domain partitions written to" in demo.stdout and demo.stdout.split("domains/: ")[1].startswith(
        "200"
    )
    assert world.cwd is not None and (world.cwd / ".ecod_jobs" / "demo" / "report.html").is_file()


def setup_make(world: World) -> None:
    """A copy of the checkout (its files as git lists them) with this virtualenv: `make demo`
    writes .ecod_jobs/ (the embedded server's data, the demo) there, not in the checkout."""
    copy = world.dir / "checkout"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)  # keeps the times make compares
    (copy / ".venv").symlink_to(Path(sys.prefix))
    stale = subprocess.run(["make", "-q", ".venv/.installed"], cwd=copy, capture_output=True)
    assert stale.returncode == 0, (
        f"`make demo` would (re)install the virtualenv {sys.prefix} (no .installed stamp, or one older"
        " than pyproject.toml): run `make venv` first"
    )
    world.cwd = copy


def setup_chains(world: World) -> None:
    """chains.tsv beside the config, its files in the base path the block names."""
    base = world.dir / "data" / "ecod" / "batch_031"
    base.mkdir(parents=True)
    for path in CHAINS:
        (base / path).write_text(f">{path}\nMKV\n")
    (world.dir / "chains.tsv").write_text(
        "path\tprotein_id\n" + "".join(f"{p}\t{i}\n" for i, p in enumerate(CHAINS, 101))
    )


def check_cli_run(world: World, out: str) -> None:
    create, run, status, retry = world.ran
    assert create.returncode == 0 and create.stdout.split()[-1] == "1", create.stderr
    assert run.returncode == 0 and "3 succeeded, 0 failed" in run.stdout, run.stdout + run.stderr
    assert status.returncode == 0 and re.search(r"success\s+3\b", status.stdout), status.stdout
    assert retry.returncode == 0 and "nothing to do" in retry.stdout, retry.stdout + retry.stderr
    assert world.statuses(1) == {"success": 3}


def setup_batch_1(world: World) -> None:
    world.register(1, CHAINS)


def setup_flaky_batch_1(world: World) -> None:
    world.register(1, [*CHAINS, FLAKY])


def check_snakemake(world: World, out: str) -> None:
    assert [r.returncode for r in world.ran] == [0] * len(world.ran), out[-3000:]
    # the profiles copied out, a run, its retry of the failed items, a run with the installed profile
    assert len(world.ran) == 4, [r.command for r in world.ran]
    assert (world.dir / "profiles" / "slurm" / "config.yaml").is_file()
    assert world.statuses(1) == {"success": 3}
    conn = world.conn()
    try:
        runs = q(conn, "SELECT status, planned_items FROM ecod_schema.ecod_jobs_run ORDER BY started_at")
    finally:
        conn.close()
    # the retry and the last run find nothing left to do (planned_items is NULL then)
    assert runs[0] == ("success", 3) and [r for r in runs[1:] if r[0] != "success" or r[1]] == [], runs
    assert len(runs) == 3, runs


def check_run_batch(world: World, out: str) -> None:
    result = world.namespace["result"]
    assert result.ok and result.by_status == {"success": 1}, result
    assert f"{FLAKY} exit code 1: BLAST database busy" in out, out
    assert world.statuses(1) == {"success": 4}


def check_job_manager(world: World, out: str) -> None:
    ns = world.namespace
    assert ns["job_id"].startswith("local-") and f"Submitted job: {ns['job_id']}\n" in out
    assert ns["status"] in {"PENDING", "RUNNING", "COMPLETED"}, ns["status"]
    assert ns["script_path"] == str(world.dir / "tmp" / "jobs" / "hello_world.sh")


def setup_batch_123(world: World) -> None:
    world.register(123, [f"chain{i}.fa" for i in range(1, 8)])


def check_database_job_manager(world: World, out: str) -> None:
    assert out.endswith("Batch 123: 0 completed, 0 failed, 1 running\n"), out
    conn = world.conn()
    try:
        items = q(conn, "SELECT process_id FROM ecod_schema.job_item ORDER BY process_id")
    finally:
        conn.close()
    assert [i for (i,) in items] == [1, 2, 3, 4, 5]


def check_batch_jobs(world: World, out: str) -> None:
    ns = world.namespace
    manager, job_ids = ns["job_manager"], ns["job_ids"]
    assert [j["name"] for j in ns["jobs"]] == ["protein_analysis_0", "protein_analysis_1"]
    assert set(manager.wait(job_ids, timeout=60).values()) == {"COMPLETED"}
    output = manager.get_job_output(job_ids[1], world.dir / "results" / "batch_jobs", "protein_analysis_1")
    assert output["stdout"] == "analyze_protein.py --id 3 --input /data/protein3.fasta\n"


def setup_pipeline(world: World) -> None:
    """Batch 123, and ECOD's ecod.pipelines.domain_analysis (not part of ecod-jobs) as a stub."""
    setup_batch_123(world)
    ecod, pipelines, domain_analysis = (
        types.ModuleType(n) for n in ("ecod", "ecod.pipelines", "ecod.pipelines.domain_analysis")
    )
    domain_analysis.DomainAnalysisPipeline = DomainAnalysisPipeline  # type: ignore[attr-defined]
    pipelines.domain_analysis = domain_analysis  # type: ignore[attr-defined]
    ecod.pipelines = pipelines  # type: ignore[attr-defined]
    for module in (ecod, pipelines, domain_analysis):
        world.monkeypatch.setitem(sys.modules, module.__name__, module)


def check_pipeline(world: World, out: str) -> None:
    manager = world.namespace["job_manager"]
    wait_for(lambda: manager.check_all_jobs(batch_id=123) == (1, 0, 0), 60, "the pipeline's job to finish")
    assert world.statuses(123) == {"success": 7}
    job = world.namespace["job_ids"][0]
    output = manager.get_job_output(job, world.dir / "results" / "jobs", "domain_analysis_0")
    assert output["stdout"].splitlines()[0] == "analyze_domains.py --process-id 1 --input chain1.fa"


def check_errors_and_logging(world: World, out: str) -> None:
    # the create_job_manager block's job, and this one's, submitted without an error
    assert len(world.namespace["job_manager"]._submitted) == 2
    assert world.namespace["logger"].name == "ecod_jobs"


def setup_batch_42(world: World) -> None:
    world.register(42, CHAINS)


def check_report(world: World, out: str) -> None:
    [report] = world.ran
    assert report.returncode == 0, report.stderr
    assert 'id="ecod-report-data"' in (world.dir / "batch42.html").read_text()


def check_dashboards(world: World, out: str) -> None:
    assert world.ran, "no dashboard ran"
    for served in world.ran:
        assert served.answered and served.answered.startswith("200 "), (served.command, served.stdout)
        assert "batch1" in (served.answered or ""), served.answered
        # stopped by Ctrl-C: 130 (uvicorn shuts down, then passes the signal on), or 0 when the
        # test runs with SIGINT ignored (a background job of a script); never a traceback
        assert served.returncode in (0, 130), f"{served.command!r} exited {served.returncode} on Ctrl-C"
        assert "Traceback" not in served.stdout, served.stdout


def setup_pipeline_cli(world: World) -> None:
    """The README's pipeline config, its commands replaced by fakes that write each declared
    output and report the declared numbers (coverage 0.1, 0.2, 0.3 for items 1, 2, 3), over
    batch 1 whose first two chains are representatives."""
    import yaml

    [text] = [block for block in _yaml_blocks() if block.startswith("job_types:\n  chain_blast:")]
    example = yaml.safe_load(text)
    for job in example["job_types"].values():
        writes = [f'mkdir -p "$(dirname {{out[{ft}]}})" && echo x > {{out[{ft}]}}' for ft in job["outputs"]]
        reports = [f'echo {m}=0.{{item_id}} >> "$ECOD_JOBS_METRICS"' for m in job.get("metrics", ())]
        job["command"] = " && ".join(writes + reports)
    config = yaml.safe_load(world.config.read_text())
    config["job_types"].update(example["job_types"])
    config["pipelines"] = example["pipelines"]
    world.config.write_text(yaml.safe_dump(config))
    world.register(1, CHAINS)
    conn = world.conn()
    try:
        q_exec(conn, "UPDATE ecod_schema.process_status SET is_representative = (id <= 2)")
    finally:
        conn.close()


def _yaml_blocks() -> list[str]:
    text = README.read_text()
    return [m.group(1) for m in re.finditer(r"```yaml\n(.*?)```", text, re.S)]


def q_exec(conn: Any, statement: str) -> None:
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.commit()


def check_pipeline_cli(world: World, out: str) -> None:
    run, status, retry, rerun, register, snakemake = world.ran
    assert run.returncode == 0 and "3 succeeded, 0 failed" in run.stdout, run.stdout + run.stderr
    # hhsearch ran for the representatives, both below coverage 0.9; item 3 is no representative
    assert re.search(r"hhsearch\s+0\s+0\s+2\s+0\s+1\b", status.stdout), status.stdout
    assert re.search(r"partition\s+0\s+0\s+3\s+0\s+0\b", status.stdout), status.stdout
    assert retry.returncode == 0 and "nothing to do" in retry.stdout, retry.stdout + retry.stderr
    assert rerun.returncode == 0 and "3 succeeded" in rerun.stdout, rerun.stdout + rerun.stderr
    assert register.returncode == 0 and "14 present, 1 missing" in register.stdout, register.stdout
    assert snakemake.returncode == 0, snakemake.stderr[-2000:]
    conn = world.conn()
    try:
        stages = dict(q(conn, "SELECT current_stage, count(*) FROM ecod_schema.process_status GROUP BY 1"))
        assert stages == {"domain_partition_complete": 3}
    finally:
        conn.close()


def check_running_for_days(world: World, out: str) -> None:
    detach, follow, status, logs = world.ran
    assert detach.returncode == 0, detach.stdout + detach.stderr
    assert "its head runs as SLURM job" in detach.stdout, detach.stdout
    # follow ends by itself once the detached run is over
    assert follow.returncode == 0, follow.stdout + follow.stderr
    assert "no run open; 3 succeeded" in follow.stdout, follow.stdout
    assert status.returncode == 0 and re.search(r"success\s+3\b", status.stdout), status.stdout
    assert logs.returncode == 0 and "sha256sum" in logs.stdout and "exit code 0" in logs.stdout, logs.stdout
    assert world.statuses(1) == {"success": 3}


RUN_BATCH_CLI = (
    "sh: ecod-jobs batch create --name pdb_2026_11 --items chains.tsv --base-path /data/ecod/batch_031"
)
JOB_MANAGER = "python: from ecod_jobs import create_job_manager"

EXAMPLES: dict[str, Example] = {
    "sh: ecod-jobs run --batch 1 --pipeline ecod # add --profile slurm on the cluster": Example(
        check_pipeline_cli, setup_pipeline_cli, slow=True
    ),
    "sh: ecod-jobs run --batch 1 --detach --profile slurm # returns at once: log out if you like": Example(
        check_running_for_days, setup_batch_1, slurm=True, slow=True
    ),
    "sh: make demo # a demo batch of real proteins on the embedded PostgreSQL": Example(
        check_make, setup_make, slow=True
    ),
    RUN_BATCH_CLI: Example(check_cli_run, setup_chains, slurm=True, slow=True),
    "sh: ecod-jobs profiles copy profiles # once: profiles/local and profiles/slurm here": Example(
        check_snakemake, setup_batch_1, slurm=True, slow=True
    ),
    "python: from ecod_jobs import run_batch": Example(
        check_run_batch, setup_flaky_batch_1, slurm=True, slow=True
    ),
    JOB_MANAGER: Example(check_job_manager),
    "python: from ecod_jobs import DatabaseJobManager": Example(
        check_database_job_manager, setup_batch_123, needs=(JOB_MANAGER,)
    ),
    "python: items = [": Example(check_batch_jobs, needs=(JOB_MANAGER,)),
    "python: from ecod.pipelines.domain_analysis import DomainAnalysisPipeline": Example(
        check_pipeline, setup_pipeline
    ),
    "python: import logging": Example(check_errors_and_logging, needs=(JOB_MANAGER,)),
    "sh: ecod-jobs report --batch 42 -o batch42.html": Example(check_report, setup_batch_42),
    "sh: ecod-jobs dashboard # http://localhost:8050/": Example(check_dashboards, setup_batch_1),
    "sh: # on the login node (or any host that reaches the database)": Example(
        check_dashboards, setup_batch_1
    ),
}


# --------------------------------------------------------------------------- the tests


def block_params() -> list[Any]:
    params = []
    for block in readme_blocks():
        example = EXAMPLES.get(block.key)
        marks = []
        if example and example.slurm:
            marks.append(pytest.mark.slurm)
        if example and example.slow:
            marks.append(pytest.mark.slow)
        slug = re.sub(r"\W+", "-", block.first_line.split("#")[0] or block.first_line).strip("-")[:40]
        params.append(pytest.param(block, marks=marks, id=f"{block.lang}-{slug}"))
    return params


@pytest.fixture
def world(tmp_path: Path, scratch_db: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    home = tmp_path / "world"
    (home / "config").mkdir(parents=True)
    write_config(
        home / "config" / "config.yml",
        {
            "database": scratch_db,
            "job_manager": {"type": "local"},
            "pipeline": {
                "work_root": str(home / ".ecod_jobs" / "work"),
                "output_root": str(home / "results"),
            },
            "job_types": {"blast": {"command": BLAST, "batch_size": 2, "memory": "1G", "time": "00:05:00"}},
        },
    )
    bin_dir = home / "bin"
    bin_dir.mkdir()
    for program in ("analyze_protein.py", "analyze_domains.py"):
        (bin_dir / program).write_text(f'#!/bin/sh\necho "{program} $*"\n')
        (bin_dir / program).chmod(0o755)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOD_")} | {"PATH": path}
    monkeypatch.chdir(home)
    monkeypatch.setenv("PATH", path)
    monkeypatch.delenv("ECOD_CONFIG_PATH", raising=False)
    root = logging.getLogger()  # the logging example configures the root logger
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    state = World(home, scratch_db, env, monkeypatch)
    yield state
    for name in ("job_manager", "db_job_manager"):  # jobs left running: cancelled, not waited for
        manager = state.namespace.get(name)
        local = getattr(manager, "job_manager", manager)
        if isinstance(local, LocalJobManager):
            for job_id in list(local._submitted):
                local.cancel_job(job_id)
            local.shutdown()


@pytest.mark.parametrize("block", block_params())
def test_readme_example(
    block: Block, world: World, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    if block.key in SKIPPED_BLOCKS:
        pytest.skip(f"README.md line {block.line}: not run: {SKIPPED_BLOCKS[block.key]}")
    example = EXAMPLES.get(block.key)
    assert example, (
        f"README.md line {block.line}: a ```{block.lang} block this test does not know "
        f"(first line {block.first_line!r}). Add it to EXAMPLES in {Path(__file__).name}: what it needs "
        "and what must hold after it; or, for a command no test can run, to SKIPPED_COMMANDS with the reason"
    )
    if example.slurm:
        request.getfixturevalue("slurm_cluster")
    blocks = {b.key: b for b in readme_blocks()}
    for needed in example.needs:
        assert needed in blocks, f"block {block.key!r} builds on {needed!r}, which README.md no longer has"
        run_block(blocks[needed], world)
    world.ran.clear()
    if example.setup:
        example.setup(world)
    capsys.readouterr()
    started = time.monotonic()
    run_block(block, world)
    out = capsys.readouterr().out
    print(out, f"({time.monotonic() - started:.1f} s)")
    example.check(world, out)


def skipped_params() -> list[Any]:
    return [
        pytest.param(block.line, command, id=command.split("#")[0].strip())
        for block in readme_blocks()
        if block.lang == "sh"
        for command in shell_commands(block.text)
        if skip_reason(command)
    ]


@pytest.mark.parametrize(("line", "command"), skipped_params())
def test_readme_command_not_run(line: int, command: str) -> None:
    """Each README command test_readme_example leaves out, reported as a skip with its reason."""
    pytest.skip(
        f"README.md line {line}: {command.split('#')[0].strip()!r} is not run: {skip_reason(command)}"
    )


def test_every_handled_example_is_in_the_readme() -> None:
    """EXAMPLES, SKIPPED_COMMANDS and SUBSTITUTIONS name only what README.md still has."""
    blocks = readme_blocks()
    keys = {b.key for b in blocks}
    for table in (EXAMPLES, SKIPPED_BLOCKS):
        assert not set(table) - keys, f"blocks README.md no longer has: {set(table) - keys}"
    assert not set(EXAMPLES) & set(SKIPPED_BLOCKS), "a block both run and skipped"
    commands = [c for b in blocks if b.lang == "sh" for c in shell_commands(b.text)]
    for prefix in SKIPPED_COMMANDS:
        assert any(skip_reason(c) == SKIPPED_COMMANDS[prefix] for c in commands), f"no command {prefix!r}"
    text = "".join(b.text for b in blocks)
    assert all(old in text for old in SUBSTITUTIONS), [old for old in SUBSTITUTIONS if old not in text]
    assert len(keys) == len(blocks), "two blocks share a language and first line: tell them apart"


def test_every_public_name_imports() -> None:
    """The README's Python examples import from ``ecod_jobs``, whose names load lazily: each of
    ``__all__`` must resolve (``run_batch`` did not after runs.py became launch.py)."""
    import ecod_jobs

    missing = []
    for name in ecod_jobs.__all__:
        try:
            getattr(ecod_jobs, name)
        except (AttributeError, ImportError) as exc:
            missing.append(f"{name}: {exc}")
    assert not missing, missing
