"""``plan.json`` as a typed value: a run's settings, its chunks, and each chunk's items.

The plan checkpoint (:mod:`ecod_jobs.plan`) writes it once, atomically, as its
last step; everything else reads it through :meth:`Plan.read`: the Snakefile
(the chunk wildcards), the chunk runner on compute nodes (the command and its
settings), sync, recovery and ownership. Its items are in the chunk manifests
(``chunks/{chunk}.jsonl``, one JSON object per item), read with
:func:`chunk_items`. Standard library only: the chunk runner imports it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from json.encoder import encode_basestring as _json_string  # type: ignore[attr-defined]
from pathlib import Path, PurePosixPath
from typing import Any

from .layout import RunLayout, read_jsonl, write_atomic


class PlanFileError(ValueError):
    """``plan.json`` is unreadable or lacks what a plan must say."""


@dataclass(frozen=True)
class PlannedChunk:
    chunk_id: str  # c00000, c00001, ...: the chunk rule's wildcard
    items: int
    job_id: int  # its attempt-1 ``job`` row


@dataclass(frozen=True)
class Plan:
    run_id: str
    database_id: str | None  # the database that planned it (see ownership.py); None in old plans
    batch_id: int
    job_type: str
    retry_failed: bool
    output_dir: str  # the commands' working directory
    base_path: str | None
    command: str
    threads: int
    stage: str  # process_status.current_stage on success
    item_timeout: float | None
    check_inputs: bool
    modules: tuple[str, ...]
    environment: Mapping[str, str]
    spec: Mapping[str, Any]  # the job type as planned (JobTypeSpec's fields)
    items: int
    chunks: tuple[PlannedChunk, ...] = field(default=())
    # A stage of a pipeline run (None for a run of one job type): see ecod_jobs.pipeline_plan.
    pipeline: str | None = None
    pipeline_stage: str | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)  # its own: file type -> template
    out_templates: Mapping[str, str] = field(default_factory=dict)  # {out[..]}: its own and upstream
    metrics: tuple[str, ...] = ()  # the numbers its command must report
    stage_order: tuple[tuple[str, str], ...] = ()  # the pipeline's (stage, current_stage on success)

    def chunk_ids(self) -> list[str]:
        return [c.chunk_id for c in self.chunks]

    def chunk(self, chunk_id: str) -> PlannedChunk | None:
        return next((c for c in self.chunks if c.chunk_id == chunk_id), None)

    # ------------------------------------------------------------------ the file

    def to_json(self) -> str:
        data = asdict(self)
        data["modules"] = list(self.modules)
        data["environment"] = dict(self.environment)
        data["spec"] = dict(self.spec)
        data["outputs"] = dict(self.outputs)
        data["out_templates"] = dict(self.out_templates)
        data["metrics"] = list(self.metrics)
        data["stage_order"] = [list(pair) for pair in self.stage_order]
        return json.dumps(data, indent=1)

    def write(self, run: RunLayout) -> None:
        """Written atomically: a crash leaves either no plan or this one."""
        write_atomic(run.plan, self.to_json())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        try:
            return cls(
                run_id=str(data["run_id"]),
                database_id=data.get("database_id"),
                batch_id=int(data["batch_id"]),
                job_type=str(data["job_type"]),
                retry_failed=bool(data.get("retry_failed", False)),
                output_dir=str(data["output_dir"]),
                base_path=data.get("base_path"),
                command=str(data["command"]),
                threads=int(data["threads"]),
                stage=str(data["stage"]),
                item_timeout=data.get("item_timeout"),
                check_inputs=bool(data.get("check_inputs", True)),
                modules=tuple(data.get("modules") or ()),
                environment=dict(data.get("environment") or {}),
                spec=dict(data.get("spec") or {}),
                items=int(data["items"]),
                chunks=tuple(
                    PlannedChunk(str(c["chunk_id"]), int(c["items"]), int(c["job_id"]))
                    for c in data["chunks"]
                ),
                pipeline=data.get("pipeline"),
                pipeline_stage=data.get("pipeline_stage"),
                outputs=dict(data.get("outputs") or {}),
                out_templates=dict(data.get("out_templates") or {}),
                metrics=tuple(data.get("metrics") or ()),
                stage_order=tuple((str(a), str(b)) for a, b in data.get("stage_order") or ()),
            )
        except KeyError as exc:
            raise PlanFileError(f"no {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise PlanFileError(str(exc)) from None

    @classmethod
    def read(cls, path: RunLayout | Path) -> Plan:
        """The plan of a run (or at a path); ``PlanFileError`` naming the file and what is wrong."""
        file = path.plan if isinstance(path, RunLayout) else path
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise PlanFileError(f"{file}: cannot read the plan: {exc}") from None
        if not isinstance(data, dict):
            raise PlanFileError(f"{file}: not a plan (a JSON object)")
        try:
            return cls.from_dict(data)
        except PlanFileError as exc:
            raise PlanFileError(f"{file}: {exc}") from None


def chunk_items(run: RunLayout, chunk_id: str) -> Iterator[dict[str, Any]]:
    """A chunk's items from its manifest: ``process_id``, ``protein_id``, ``path``, ``relative_path``."""
    return read_jsonl(run.manifest(chunk_id))


def manifest_line(process_id: int, protein_id: int | None, path: str, relative_path: str | None) -> str:
    """One manifest record as a JSON line (formatted directly: 4x faster than json.dumps)."""
    protein = "null" if protein_id is None else int(protein_id)
    relative = "null" if relative_path is None else _json_string(relative_path)
    return (
        f'{{"process_id": {int(process_id)}, "protein_id": {protein}, "path": {_json_string(path)},'
        f' "relative_path": {relative}}}\n'
    )


def template_values(
    process_id: int, protein_id: int | None, batch_id: int, relative_path: str | None
) -> dict[str, Any]:
    """The values of an output template's placeholders for one item (``stem``: the item's
    file name without its last extension)."""
    name = PurePosixPath(relative_path or "").name
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return {"item_id": process_id, "protein_id": protein_id, "batch_id": batch_id, "stem": stem}


def render_output(template: str, values: Mapping[str, Any]) -> str:
    """An output's path relative to the base path; ``ValueError`` if it would leave it."""
    path = template.format(**{k: "" if v is None else str(v) for k, v in values.items()})
    if not path or path.startswith("/") or ".." in PurePosixPath(path).parts:
        raise ValueError(f"output template {template!r} gives {path!r}: not a path inside the base path")
    return path
