"""Where a workflow run keeps its files: value objects shared by the Snakefile and Python.

    {work_root}/batch_{batch_id}/{job_type}/runs/{run_id}/
        plan.json                  the checkpoint's output: chunks and settings
        ended.json                 written as the run ends: success, time
        chunks/{chunk}.jsonl       chunk manifests (one item per line)
        results/{chunk}.jsonl      final per-item results (written atomically)
        results/{chunk}.partial.jsonl   results appended as items finish
        results/{chunk}.attempt-{n}.json  one per attempt: host, SLURM ids, start
        results/{chunk}.lock       flock held by the chunk's runner and its items
        results/{chunk}.misrouted.json  a SLURM task submitted for this chunk was told to run another
        logs/{chunk}.log           the items' stdout and stderr

Nothing here touches PostgreSQL, so the Snakefile can use it at parse time on
any node.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK_RE = re.compile(r"^c[0-9]{5,}$")
_ATTEMPT_RE = re.compile(r"\.attempt-([0-9]+)\.json$")
_CHUNK_ATTEMPT_RE = re.compile(r"^(.+)\.attempt-([0-9]+)\.json$")


def chunk_id(index: int) -> str:
    """Deterministic, sortable chunk ids: c00000, c00001, ..."""
    return f"c{index:05d}"


@dataclass(frozen=True)
class BatchLayout:
    """The work directory of one batch and job type (all its runs)."""

    root: Path

    @classmethod
    def create(cls, work_root: str | os.PathLike[str], batch_id: int, job_type: str) -> BatchLayout:
        return cls(Path(work_root) / f"batch_{batch_id}" / job_type)

    def run(self, run_id: str) -> RunLayout:
        return RunLayout(self.root / "runs" / run_id, run_id)

    def runs(self) -> list[RunLayout]:
        """All runs with a plan, oldest first."""
        runs_dir = self.root / "runs"
        if not runs_dir.is_dir():
            return []
        found = [self.run(p.name) for p in runs_dir.iterdir() if (p / "plan.json").exists()]
        found += [self.run(p.name) for p in runs_dir.iterdir() if (p / "pipeline.json").exists()]
        return sorted(found, key=lambda r: (r.plan if r.plan.exists() else r.pipeline_plan).stat().st_mtime)


@dataclass(frozen=True)
class RunLayout:
    dir: Path
    run_id: str

    @property
    def plan(self) -> Path:
        return self.dir / "plan.json"

    # A pipeline run (ecod_jobs.pipeline_plan): pipeline.json, its windows of items, and
    # per stage and window a RunLayout of its own (plan.json, chunks, results, logs).

    @property
    def pipeline_plan(self) -> Path:
        return self.dir / "pipeline.json"

    def window(self, window: str) -> Path:
        return self.dir / "windows" / f"{window}.jsonl"

    def stage_run(self, stage: str, window: str) -> RunLayout:
        return RunLayout(self.dir / "stages" / stage / window, self.run_id)

    def outcome(self, stage: str, window: str) -> Path:
        return self.dir / "stages" / stage / f"{window}.outcome.jsonl"

    def stage_runs(self) -> list[RunLayout]:
        """The stage windows planned so far (those with a plan.json), in path order."""
        return [RunLayout(p.parent, self.run_id) for p in sorted(self.dir.glob("stages/*/w*/plan.json"))]

    @property
    def is_pipeline(self) -> bool:
        return self.pipeline_plan.exists()

    def planned_units(self) -> list[RunLayout]:
        """What holds the run's chunks: the run itself (one job type) or its stage windows."""
        return self.stage_runs() if self.is_pipeline else ([self] if self.plan.exists() else [])

    @property
    def decisions(self) -> Path:
        """A stage window's choice for each item of the window (run, skipped, blocked, ...)."""
        return self.dir / "decisions.jsonl"

    def manifest(self, chunk: str) -> Path:
        return self.dir / "chunks" / f"{chunk}.jsonl"

    def result(self, chunk: str) -> Path:
        return self.dir / "results" / f"{chunk}.jsonl"

    def partial(self, chunk: str) -> Path:
        return self.dir / "results" / f"{chunk}.partial.jsonl"

    def attempt_meta(self, chunk: str, attempt: int) -> Path:
        return self.dir / "results" / f"{chunk}.attempt-{attempt}.json"

    def attempts(self, chunk: str) -> dict[int, dict[str, Any]]:
        """Every attempt's start record, by attempt number."""
        found: dict[int, dict[str, Any]] = {}
        results = self.dir / "results"
        if not results.is_dir():
            return found
        for path in results.glob(f"{chunk}.attempt-*.json"):
            match = _ATTEMPT_RE.search(path.name)
            if match:
                found[int(match.group(1))] = _read_meta(path)
        return dict(sorted(found.items()))

    def attempts_by_chunk(self) -> dict[str, dict[int, dict[str, Any]]]:
        """:meth:`attempts` of every chunk, from one listing of the results directory."""
        found: dict[str, dict[int, dict[str, Any]]] = {}
        results = self.dir / "results"
        if not results.is_dir():
            return found
        for entry in os.scandir(results):
            match = _CHUNK_ATTEMPT_RE.match(entry.name)
            if match:
                found.setdefault(match.group(1), {})[int(match.group(2))] = _read_meta(Path(entry.path))
        return {chunk: dict(sorted(a.items())) for chunk, a in found.items()}

    def log(self, chunk: str) -> Path:
        return self.dir / "logs" / f"{chunk}.log"

    def misrouted(self, chunk: str) -> Path:
        """Written by a runner that refused to run another chunk than its task's (see runner.check_task)."""
        return self.dir / "results" / f"{chunk}.misrouted.json"

    def misrouted_reasons(self) -> list[str]:
        """The refusal records of every chunk of the run (see :meth:`misrouted`)."""
        return [
            str(_read_meta(path).get("error") or path.name)
            for path in sorted((self.dir / "results").glob("*.misrouted.json"))
        ]

    def misrouted_reason(self, chunk: str) -> str | None:
        """Why ``chunk`` ran (or was refused) as another chunk, or None: the runner's refusal
        record, or a result file whose records name another chunk."""
        meta = _read_meta(self.misrouted(chunk)) if self.misrouted(chunk).exists() else None
        if meta is not None:
            return str(meta.get("error") or f"a task submitted for chunk {chunk} was told to run another")
        first = next(read_jsonl(self.result(chunk)), None)
        if first is not None and first.get("chunk_id") not in (None, chunk):
            return f"the result file of chunk {chunk} holds the results of chunk {first['chunk_id']}"
        return None

    def lock(self, chunk: str) -> Path:
        """Held (flock) by the chunk's runner and every item process it starts."""
        return self.dir / "results" / f"{chunk}.lock"

    @property
    def ended(self) -> Path:
        """Written when Snakemake ends (before the database is told): success and time."""
        return self.dir / "ended.json"

    def read_ended(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.ended.read_text()))
        except (OSError, ValueError):
            return None


# --------------------------------------------------------------------------- files


def _read_meta(path: Path) -> dict[str, Any]:
    """An attempt record; {} when it is unreadable (a writer killed mid-way)."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def write_atomic(path: Path, text: str, mode: int = 0o640) -> None:
    """Write a whole file or nothing: temp file in the same directory, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_unsynced(path: Path, text: str, mode: int = 0o640) -> None:
    """Write a file in place with no fsync: for a batch of files that ``sync_filesystem``
    makes durable at once, before a commit-point file (written with ``write_atomic``)
    makes them visible. About 8x faster than ``write_atomic`` for 10,000 small files."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def sync_filesystem(path: Path) -> None:
    """Flush every written file of ``path``'s filesystem to disk: one syncfs(2), on Linux,
    instead of one fsync per file; os.sync() where syncfs is missing."""
    syncfs = getattr(_libc(), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def write_jsonl_atomic(path: Path, records: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (a killed writer) is skipped."""
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    return  # torn write: the process died mid-line
                try:
                    yield json.loads(line)
                except ValueError:
                    continue
    except FileNotFoundError:
        return
