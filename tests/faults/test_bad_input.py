"""Bad input that used to get through (issue 12, section 5, and ``report -o`` targets).

Every case runs the real CLI in a subprocess from a temporary directory and must give
exit 2 and one line naming what is wrong, with no traceback, nothing written to the
database and nothing written to disk. A fuzz test then feeds generated items files and
configurations to ``ecod_jobs.cli.main``: exit 0 or 2, never an exception, and the
database either unchanged or holding the whole batch.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import connect_scratch, q, run_cli, write_config
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ecod_jobs.cli import main

SCHEMA = "ecod_schema"
JOB_TYPES = {"x": {"command": "echo {path}", "check_inputs": False}}


@dataclass
class World:
    """One scratch database holding one batch, shared by the module (reads are cheap, and
    every case checks that it changed nothing)."""

    db: dict[str, Any]
    conn: Any

    def counts(self) -> tuple[int, int, bool]:
        """(batches, items, whether the schema 'noschema' exists): what a case must not change."""
        batches = q(self.conn, f"SELECT count(*) FROM {SCHEMA}.batch")[0][0]
        items = q(self.conn, f"SELECT count(*) FROM {SCHEMA}.process_status")[0][0]
        other = q(self.conn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'noschema'")[0][0]
        return batches, items, bool(other)

    def config(self, directory: Path, **extra: Any) -> Path:
        body: dict[str, Any] = {
            "database": {**self.db, **extra.pop("database", {})},
            "pipeline": {"work_root": str(directory / "work")},
            "job_types": JOB_TYPES,
        }
        body.update(extra)
        return write_config(directory / "config.yml", body)


@pytest.fixture(scope="module")
def world(pg_admin_params: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from ecod_jobs.db.scratch import scratch_database

    with scratch_database(pg_admin_params, "ecodtest") as section:
        conn = connect_scratch(section)
        here = tmp_path_factory.mktemp("world")
        (here / "items.tsv").write_text("path\tprotein_id\na.fa\t1\nb.fa\t2\n")
        world = World(section, conn)
        created = run_cli(
            "--config", str(world.config(here)), "batch", "create", "--name", "base",
            "--items", str(here / "items.tsv"), cwd=here,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        try:
            yield world
        finally:
            conn.close()


@dataclass
class Case:
    """argv after ``--config``; files to write first (bytes or text); what stderr must name."""

    argv: list[str]
    names: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # merged over the world's config
    raw_config: str | None = None  # a config file written as is (for YAML-level cases)
    absent: list[str] = field(default_factory=list)  # stderr must not name these
    setup: Callable[[Path], Any] | None = None  # returns what the case needs kept alive


def create(items: str = "items.tsv", *extra: str) -> list[str]:
    return ["batch", "create", "--name", "bad", "--items", items, *extra]


def items_case(body: str | bytes, *names: str, extra: tuple[str, ...] = ()) -> Case:
    return Case(create("items.tsv", *extra), ["items.tsv", *names], files={"items.tsv": body})


def listening(directory: Path) -> socket.socket:
    """Something already listening on a port: the dashboard must refuse it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    (directory / "port").write_text(str(sock.getsockname()[1]))
    return sock


def device(directory: Path) -> None:
    """A device node like /dev/full (made here: a regression must not clobber the real one),
    or a FIFO when not root: both are files that are not regular."""
    if os.geteuid() == 0:
        os.mknod(directory / "full", stat.S_IFCHR | 0o666, os.makedev(1, 7))
    else:
        os.mkfifo(directory / "full")


def subdir(directory: Path) -> None:
    (directory / "sub").mkdir()


def symlink(target: str) -> Callable[[Path], None]:
    def make(directory: Path) -> None:
        subdir(directory)
        (directory / "link.html").symlink_to(target)

    return make


DUPLICATE_JOB_TYPES = """\
database: {}
job_types:
  x:
    command: echo {path}
  y:
    command: "true"
  x:
    command: echo again
"""

CASES: dict[str, Case] = {
    # items files
    "items: NUL byte in a path": items_case(b"path\na\x00b.fa\n", "line 2", "NUL byte"),
    "items: protein_id 1_000": items_case("path\tprotein_id\na\t1_000\n", "line 2", "protein_id '1_000'"),
    "items: protein_id +7": items_case("path\tprotein_id\na\t+7\n", "line 2", "protein_id '+7'"),
    "items: protein_id fullwidth digits": items_case(
        "path\tprotein_id\na\t\uff17\uff18\n", "line 2", "protein_id '\uff17\uff18'"
    ),
    "items: protein_id -5": items_case("path\tprotein_id\na\t1\nb\t-5\n", "line 3", "protein_id '-5'"),
    "items: protein_id 0": items_case("path\tprotein_id\na\t0\n", "line 2", "protein_id '0'"),
    "items: the same path twice": items_case(
        "path\na.fa\nb.fa\na.fa\n", "line 4", "'a.fa' repeats line 2", "--allow-duplicates"
    ),
    "items: the same escaped path twice": items_case(
        "path\ntab\\there\ntab\\there\n", "line 3", "repeats line 2"
    ),
    # batch create arguments
    "batch create: empty --type": Case(
        create("items.tsv", "--type", ""), ["--type must not be empty"], files={"items.tsv": "path\na\n"}
    ),
    "batch create: blank --type": Case(
        create("items.tsv", "--type", "  "), ["--type must not be empty"], files={"items.tsv": "path\na\n"}
    ),
    "batch create: empty --ref-version": Case(
        create("items.tsv", "--ref-version", ""),
        ["--ref-version must not be empty"],
        files={"items.tsv": "path\na\n"},
    ),
    "batch create: --base-path is a file": Case(
        create("items.tsv", "--base-path", "items.tsv"),
        ["--base-path items.tsv", "not an existing directory"],
        files={"items.tsv": "path\na\n"},
    ),
    "batch create: --base-path does not exist": Case(
        create("items.tsv", "--base-path", "nowhere"),
        ["--base-path nowhere", "not an existing directory"],
        files={"items.tsv": "path\na\n"},
    ),
    # configuration
    "config: memory 0G": Case(
        ["config", "validate"],
        ["config.yml line", "job_types.z.memory", "'0G'"],
        config={"job_types": {"z": {"command": "true", "memory": "0G"}}},
    ),
    "config: time 0:00:00": Case(
        ["config", "validate"],
        ["config.yml line", "job_types.z.time", "'0:00:00'"],
        config={"job_types": {"z": {"command": "true", "time": "0:00:00"}}},
    ),
    "config: default memory 0.0M": Case(
        ["config", "validate"],
        ["pipeline.default_memory", "'0.0M'"],
        config={"pipeline": {"default_memory": "0.0M"}},
    ),
    "config: blank command": Case(
        ["config", "validate"],
        ["config.yml line", "job_types.z.command", "not blank"],
        config={"job_types": {"z": {"command": "   "}}},
    ),
    "config: two job types with the same name": Case(
        ["config", "validate"],
        ["config.yml line 7", "job_types.x", "duplicate key 'x'", "lines 3 and 7"],
        raw_config=DUPLICATE_JOB_TYPES,
    ),
    "config: a NUL character in the YAML": Case(
        ["config", "validate"],
        ["config.yml line 3", "#x0000"],
        raw_config='job_types:\n  x:\n    command: "a\x00"\n',
    ),
    "config: environment override out of range": Case(
        ["config", "validate"],
        ["environment variable ECOD_DATABASE__PORT", "database.port", "99999"],
        env={"ECOD_DATABASE__PORT": "99999"},
        absent=["line"],  # the file names database.port too: it is not to blame
    ),
    "config: environment integer with an underscore": Case(
        ["config", "validate"],
        ["environment variable ECOD_PIPELINE__BATCH_SIZE", "'1_0'"],
        env={"ECOD_PIPELINE__BATCH_SIZE": "1_0"},
    ),
    # commands
    "status without the schema": Case(
        ["status", "--batch", "1"],
        ["schema noschema", "ecod-jobs db init"],
        config={"database": {"schema": "noschema"}},
    ),
    "cancel without the schema": Case(
        ["cancel", "--batch", "1"],
        ["schema noschema", "ecod-jobs db init"],
        config={"database": {"schema": "noschema"}},
    ),
    "batch list without the schema": Case(
        ["batch", "list"],
        ["schema noschema", "ecod-jobs db init"],
        config={"database": {"schema": "noschema"}},
    ),
    "sync with an unknown job type": Case(["sync", "--batch", "1", "--job-type", "nope"], ["'nope'"]),
    "dashboard on a port in use": Case(
        ["dashboard", "--port", "{port}"], ["already in use"], setup=listening
    ),
    # report -o targets
    "report -o a device node": Case(
        ["report", "--batch", "1", "-o", "full"], ["--output full", "not a regular"], setup=device
    ),
    "report -o under /proc": Case(["report", "--batch", "1", "-o", "/proc/x"], ["--output /proc/x"]),
    "report -o a directory": Case(
        ["report", "--batch", "1", "-o", "sub"], ["--output sub", "is a directory"], setup=subdir
    ),
    "report -o a name ending in /": Case(
        ["report", "--batch", "1", "-o", "nodir/"], ["--output nodir/", "'/'"]
    ),
    "report -o in a missing directory": Case(
        ["report", "--batch", "1", "-o", "nodir/r.html"], ["directory nodir does not exist"]
    ),
    "report -o a dangling symlink": Case(
        ["report", "--batch", "1", "-o", "link.html"], ["link.html", "symlink"], setup=symlink("gone.html")
    ),
    "report -o a symlink to a directory": Case(
        ["report", "--batch", "1", "-o", "link.html"], ["link.html", "symlink"], setup=symlink("sub")
    ),
}


def disk(directory: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under ``directory`` with its type, size and (for links) target."""
    return {
        str(p.relative_to(directory)): (
            stat.S_IFMT(p.lstat().st_mode),
            p.lstat().st_size,
            os.readlink(p) if p.is_symlink() else "",
        )
        for p in directory.rglob("*")
    }


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(world: World, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    for file_name, body in case.files.items():
        target = tmp_path / file_name
        target.write_bytes(body) if isinstance(body, bytes) else target.write_text(body)
    if case.raw_config is not None:
        cfg = tmp_path / "config.yml"
        cfg.write_text(case.raw_config)
    else:
        cfg = world.config(tmp_path, **case.config)
    keep = case.setup(tmp_path) if case.setup else None
    port = (tmp_path / "port").read_text() if (tmp_path / "port").exists() else ""
    argv = [arg.replace("{port}", port) for arg in case.argv]
    before_db, before_disk = world.counts(), disk(tmp_path)
    try:
        result = run_cli("--config", str(cfg), *argv, cwd=tmp_path, env=case.env)
    finally:
        if keep is not None:
            keep.close()
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ecod-jobs: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for part in case.names:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    for part in case.absent:
        assert part not in lines[0], f"{part!r} in {lines[0]!r}"
    assert result.stdout == "", "nothing printed on stdout (no banner, no batch id)"
    assert world.counts() == before_db, "the database changed"
    assert disk(tmp_path) == before_disk, "something was written to disk"
    assert not os.path.exists("/proc/x")


# --------------------------------------------------------------------------- accepted


def test_bom_and_allowed_duplicates_are_accepted(world: World, tmp_path: Path) -> None:
    cfg = world.config(tmp_path)
    (tmp_path / "bom.tsv").write_bytes(b"\xef\xbb\xbfpath\tprotein_id\nbom.fa\t7\n")
    (tmp_path / "dup.tsv").write_text("path\nd.fa\nd.fa\n")
    bom = run_cli("--config", str(cfg), *create("bom.tsv"), cwd=tmp_path)
    assert bom.returncode == 0, bom.stderr
    dup = run_cli("--config", str(cfg), *create("dup.tsv", "--allow-duplicates"), cwd=tmp_path)
    assert dup.returncode == 0, dup.stderr
    rows = q(
        world.conn,
        f"SELECT batch_id, relative_path, protein_id FROM {SCHEMA}.process_status"
        " WHERE batch_id IN (%s, %s) ORDER BY id",
        int(bom.stdout.split()[-1]),
        int(dup.stdout.split()[-1]),
    )
    assert [r[1:] for r in rows] == [("bom.fa", 7), ("d.fa", None), ("d.fa", None)]


def test_report_writes_through_a_symlink_and_keeps_it(world: World, tmp_path: Path) -> None:
    (tmp_path / "target.html").write_text("old")
    (tmp_path / "link.html").symlink_to("target.html")
    result = run_cli(
        "--config", str(world.config(tmp_path)), "report", "--batch", "1", "-o", "link.html", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "link.html").is_symlink() and os.readlink(tmp_path / "link.html") == "target.html"
    assert "<html" in (tmp_path / "target.html").read_text()[:500].lower()


# --------------------------------------------------------------------------- fuzz

# A clean file is valid; a dirty one mixes in everything the reader must refuse.
CLEAN_PATH_CHARS = st.sampled_from(["a", "b", "é", " ", "\\t", "\\\\", "\\n", "蛋", "'", "$", "*"])
DIRTY_PATH_CHARS = st.sampled_from(["\t", "\\", "\\x", "\x00", "\r", "\u2028", "\x85"])
CLEAN_IDS = st.one_of(st.just(""), st.integers(min_value=1, max_value=2**31 - 1).map(str))
DIRTY_IDS = st.sampled_from(["0", "-5", "+7", "1_000", "\uff17", " 3 ", "2147483648", "x", "1.0", "0x1"])
CLEAN_FLAGS = st.sampled_from(["", "1", "true", "no", "T", "n"])
DIRTY_FLAGS = st.sampled_from(["maybe", "2", "\x00"])


@st.composite
def items_files(draw: st.DrawFn) -> tuple[bytes, bool, bool]:
    """(file, clean, has a repeated line): a clean file without a repeat must be accepted."""
    clean = draw(st.booleans())

    def pick(good: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> str:
        return draw(good if clean or draw(st.integers(0, 3)) else bad)

    columns = list(draw(st.permutations(["path", "protein_id", "is_representative"])))
    columns = columns[: draw(st.integers(1, 3))]
    if "path" not in columns and (clean or draw(st.booleans())):
        columns.append("path")
    if not clean and draw(st.integers(0, 4)) == 0:
        columns.append(draw(st.sampled_from(["protien_id", "PATH", "path", ""])))
    rows = []
    for n in range(draw(st.integers(0 if not clean else 1, 6))):
        fields = []
        for column in columns:
            if column.lower() == "path":
                chars = draw(
                    st.lists(
                        st.one_of(CLEAN_PATH_CHARS, DIRTY_PATH_CHARS) if not clean else CLEAN_PATH_CHARS,
                        max_size=5,
                    )
                )
                fields.append(f"p{n}" * clean + "".join(chars))  # clean paths are distinct
            elif column == "protein_id":
                fields.append(pick(CLEAN_IDS, DIRTY_IDS))
            else:
                fields.append(pick(CLEAN_FLAGS, DIRTY_FLAGS))
        short = not clean and draw(st.integers(0, 9)) == 0  # a line missing its last column
        rows.append("\t".join(fields[: len(fields) - short]))
    repeated = bool(rows) and draw(st.integers(0, 3)) == 0
    if repeated:
        rows.append(draw(st.sampled_from(rows)))  # refused unless --allow-duplicates
    body = ("\ufeff" if draw(st.booleans()) else "") + "\t".join(columns) + "\n" + "\n".join(rows)
    raw = body.encode("utf-8")
    if not clean and draw(st.integers(0, 9)) == 0:
        raw += b"\n\xff\xfe"  # not UTF-8
    return raw, clean, repeated


def call(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str]:
    """``ecod_jobs.cli.main`` in this process: (exit code, stderr). Any exception fails the test."""
    err = io.StringIO()
    saved = dict(os.environ)
    os.environ.update(environ or {})
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(list(argv))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, err.getvalue()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(generated=items_files(), duplicates=st.booleans())
def test_fuzz_items_files_exit_0_or_2_and_write_a_whole_batch_or_nothing(
    world: World, tmp_path: Path, generated: tuple[bytes, bool, bool], duplicates: bool
) -> None:
    raw, clean, repeated = generated
    cfg = world.config(tmp_path)
    (tmp_path / "items.tsv").write_bytes(raw)
    before = world.counts()
    flags = ["--allow-duplicates"] if duplicates else []
    code, err = call("--config", str(cfg), *create(str(tmp_path / "items.tsv"), *flags))
    event(f"exit {code}")  # --hypothesis-show-statistics: both outcomes are exercised
    assert code in (0, 2), err
    if clean and (duplicates or not repeated):
        assert code == 0, f"a valid file was refused: {err}"
    assert "Traceback" not in err
    batches, items, _ = world.counts()
    if code == 2:
        assert (batches, items) == before[:2], "a refused file wrote something"
        assert len(err.strip().splitlines()) == 1 and str(tmp_path / "items.tsv") in err, err
        return
    new = q(world.conn, f"SELECT id, total_items FROM {SCHEMA}.batch ORDER BY id DESC LIMIT 1")[0]
    stored = q(world.conn, f"SELECT relative_path FROM {SCHEMA}.process_status WHERE batch_id = %s", new[0])
    # read_items splits on \n only (a \r inside a path is part of it)
    lines = [line for line in raw.decode("utf-8").split("\n")[1:] if line.strip()]
    assert batches == before[0] + 1 and new[1] == len(stored) == len(lines) == items - before[1]
    assert all("\x00" not in path and path.strip() for (path,) in stored)
    if not duplicates:
        assert len({p for (p,) in stored}) == len(stored)


GOOD = {
    "memory": st.sampled_from(["1G", "500M", "1.5T", "0.5g", "16GB"]),
    "time": st.sampled_from(["0:00:01", "1-00:00:00", "04:00:00"]),
    "command": st.sampled_from(["true", "echo {path}", "x {item_id} {output_dir}", "echo {{literal}}"]),
    "int": st.sampled_from(["1", "5", "100"]),
    "name": st.sampled_from(["x", "y", "blast.v2"]),
}
BAD = {
    "memory": st.sampled_from(["0G", "0.0M", "00K", "12 parsecs", "", "-1G", "1e3M"]),
    "time": st.sampled_from(["0:00:00", "00:00:00", "0-00:00:00", "24:00", "x"]),
    "command": st.sampled_from(["   ", "", "echo {nope}", "echo {0}", "\t", "{path!r}"]),
    "int": st.sampled_from(["0", "-1", "99999", "1_0", "+5", " 5", "\uff15", "abc"]),
    "name": st.sampled_from(["1bad", "x"]),  # 'x' twice is a duplicate key
}


@st.composite
def config_texts(draw: st.DrawFn) -> tuple[str, dict[str, str], bool]:
    """(YAML text, environment, clean): a clean configuration must validate."""
    clean = draw(st.booleans())

    def value(kind: str) -> str:
        bad = not clean and draw(st.integers(0, 2)) == 0
        return draw(BAD[kind] if bad else GOOD[kind])

    lines = ["job_types:"]
    names = []
    for _ in range(draw(st.integers(1, 3))):
        name = value("name")
        if clean and name in names:
            continue
        names.append(name)
        lines += [f"  {name}:", f"    command: {value('command')!r}"]
        for key in ("memory", "time"):
            if draw(st.booleans()):
                lines.append(f"    {key}: {value(key)!r}")
        if draw(st.booleans()):
            lines.append(f"    batch_size: {value('int')}")
    if draw(st.booleans()):
        lines += ["pipeline:", f"  default_memory: {value('memory')!r}", f"  default_time: {value('time')!r}"]
    if not clean and draw(st.integers(0, 4)) == 0:
        lines.append(draw(st.sampled_from(["job_types: {}", "- a", "pipeline: [", "\x00", "a: &a [*a]"])))
    environ = {}
    for var in draw(
        st.lists(st.sampled_from(["ECOD_DATABASE__PORT", "ECOD_PIPELINE__BATCH_SIZE"]), max_size=2)
    ):
        environ[var] = value("int")
    return "\n".join(lines) + "\n", environ, clean


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(generated=config_texts())
def test_fuzz_configs_exit_0_or_2_with_one_line(
    tmp_path: Path, generated: tuple[str, dict[str, str], bool]
) -> None:
    text, environ, clean = generated
    cfg = tmp_path / "config.yml"
    cfg.write_text(text)
    code, err = call("--config", str(cfg), "config", "validate", environ=environ)
    event(f"exit {code}")
    assert code in (0, 2), err
    if clean:
        assert code == 0, f"a valid configuration was refused: {err}\n{text}"
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("ecod-jobs: error: "), err
