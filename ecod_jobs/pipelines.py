"""Pipelines: a graph of stages per item, from ``pipelines.NAME.stages`` in the config.

A stage runs a job type over the items that need it; ``after`` names the stages
it waits for (per item, not per batch), ``when`` gates it per item on
``is_representative`` and the numbers upstream stages reported, and
``if_upstream_skipped`` says whether it still runs for an item whose upstream
stage was gated out. :func:`pipeline_problems` checks all of it when the config
loads (each problem with its key path); :func:`pipeline_spec` resolves one
pipeline into :class:`PipelineSpec`, its stages in a fixed topological order;
:func:`select_stages` turns ``--stages`` / ``--from`` / ``--rerun`` into the
stages a run executes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .config import JobTypeSpec, job_type_spec, output_references
from .exceptions import ConfigurationError
from .gates import Gate, GateError, check_references, parse_gate

# Stage keys that override the job type's own setting of the same name.
STAGE_OVERRIDES = (
    "batch_size",
    "threads",
    "memory",
    "time",
    "partition",
    "account",
    "slurm_extra",
    "item_timeout",
)
RUN_IF_SKIPPED = "run"
SKIP_IF_SKIPPED = "skip"


@dataclass(frozen=True)
class StageSpec:
    name: str
    job: JobTypeSpec  # the job type with the stage's overrides applied
    after: tuple[str, ...]
    when: Gate | None
    if_upstream_skipped: str  # run | skip

    @property
    def done_stage(self) -> str:
        """``process_status.current_stage`` once the stage succeeded (the job type's ``stage``)."""
        return self.job.stage

    @property
    def failed_stage(self) -> str:
        return f"{self.name}_failed"


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    stages: tuple[StageSpec, ...]  # topological order; ties kept in the order of the config
    window_size: int | None

    @property
    def run_key(self) -> str:
        """The run's ``job_type`` in ``ecod_jobs_run`` and its work directory's name."""
        return f"pipeline.{self.name}"

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigurationError(
            f"pipeline {self.name!r} has no stage {name!r}: expected one of {', '.join(self.names())}",
            {"stage": name},
        )

    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    @property
    def last(self) -> StageSpec:
        return self.stages[-1]

    def upstream(self, name: str) -> set[str]:
        """Every stage ``name`` waits for, directly or not."""
        found: set[str] = set()
        todo = list(self.stage(name).after)
        while todo:
            current = todo.pop()
            if current not in found:
                found.add(current)
                todo.extend(self.stage(current).after)
        return found

    def downstream(self, name: str) -> set[str]:
        """Every stage that waits for ``name``, directly or not."""
        return {s.name for s in self.stages if name in self.upstream(s.name)}

    def outputs(self) -> list[tuple[str, str, str]]:
        """(stage, file type, template) of every declared output."""
        return [(s.name, ft, t) for s in self.stages for ft, t in s.job.outputs.items()]


def _stages_config(config: Mapping[str, Any], name: str) -> dict[str, dict[str, Any]]:
    pipelines = config.get("pipelines") or {}
    if name not in pipelines:
        raise ConfigurationError(
            f"unknown pipeline {name!r}: expected one of the configured pipelines"
            f" ({', '.join(pipelines) or 'none defined'})",
            {"pipeline": name},
        )
    return {stage: dict(body or {}) for stage, body in pipelines[name]["stages"].items()}


def topological_order(after: Mapping[str, Sequence[str]]) -> list[str] | list[list[str]]:
    """Stages in an order where each comes after everything it waits for (ties in the
    given order); on a cycle, ``[cycle]`` with the cycle's stages, first one repeated."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if state.get(node) == 2:
            return None
        if state.get(node) == 1:
            return [*path[path.index(node) :], node]
        state[node] = 1
        path.append(node)
        for dep in after.get(node, ()):
            if dep in after and (cycle := visit(dep)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        order.append(node)
        return None

    for node in after:
        if (cycle := visit(node)) is not None:
            return [cycle]
    # No cycle: the order itself, earliest-declared ready stage first (Kahn), so that a
    # stage listed before another it does not depend on stays before it.
    placed: list[str] = []
    while len(placed) < len(order):
        ready = next(n for n in after if n not in placed and all(d in placed for d in after[n] if d in after))
        placed.append(ready)
    return placed


def pipeline_problems(config: Mapping[str, Any]) -> list[tuple[list[str | int], str]]:
    """Every problem of every pipeline as (key path, message); the schema has passed."""
    problems: list[tuple[list[str | int], str]] = []
    job_types = config.get("job_types") or {}
    for name, body in (config.get("pipelines") or {}).items():
        stages = {stage: dict(spec or {}) for stage, spec in body["stages"].items()}
        base: list[str | int] = ["pipelines", name, "stages"]
        after: dict[str, list[str]] = {}
        for stage, spec in stages.items():
            job_type = spec.get("job_type", stage)
            if job_type not in job_types:
                key = "job_type" if "job_type" in spec else None
                problems.append(
                    (
                        [*base, stage, *([key] if key else [])],
                        f"unknown job type {job_type!r}"
                        + ("" if key else " (a stage's job type defaults to its name; set job_type)")
                        + f": expected one of the job_types ({', '.join(job_types) or 'none defined'})",
                    )
                )
            after[stage] = []
            for index, dep in enumerate(spec.get("after") or ()):
                if dep == stage:
                    problems.append(
                        ([*base, stage, "after", index], f"stage {stage!r} cannot wait for itself")
                    )
                elif dep in stages:
                    after[stage].append(dep)
                else:
                    also = " (it is a job type; name the stage that runs it)" if dep in job_types else ""
                    problems.append(
                        (
                            [*base, stage, "after", index],
                            f"unknown stage {dep!r}{also}: expected one of the stages of pipeline {name!r}"
                            f" ({', '.join(stages)})",
                        )
                    )
        ordered = topological_order(after)
        if ordered and isinstance(ordered[0], list):
            cycle = ordered[0]
            problems.append(([*base], f"the stages form a cycle: {' -> '.join(cycle)}"))
            continue
        if problems:
            continue
        upstream = _upstream_map(after)
        problems.extend(_file_type_problems(base, stages, job_types, upstream))
        problems.extend(_when_problems(base, stages, job_types, upstream))
    return problems


def _upstream_map(after: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Each stage's upstream stages (transitively), in the config's order."""
    result: dict[str, list[str]] = {}
    for stage in after:
        seen: list[str] = []
        todo = list(after[stage])
        while todo:
            current = todo.pop(0)
            if current not in seen:
                seen.append(current)
                todo.extend(after[current])
        result[stage] = [s for s in after if s in seen]
    return result


def _file_type_problems(
    base: list[str | int],
    stages: Mapping[str, Mapping[str, Any]],
    job_types: Mapping[str, Any],
    upstream: Mapping[str, list[str]],
) -> list[tuple[list[str | int], str]]:
    problems: list[tuple[list[str | int], str]] = []
    writer: dict[str, str] = {}
    for stage, spec in stages.items():
        job = job_types[spec.get("job_type", stage)]
        for file_type in job.get("outputs") or {}:
            if file_type in writer:
                problems.append(
                    (
                        [*base, stage],
                        f"writes file type {file_type!r} (job type {spec.get('job_type', stage)!r}),"
                        f" as stage {writer[file_type]!r} does: two stages cannot write the same file type",
                    )
                )
            else:
                writer[file_type] = stage
    if problems:
        return problems
    for stage, spec in stages.items():
        job_type = spec.get("job_type", stage)
        try:
            named = output_references(job_types[job_type]["command"])
        except ValueError:
            continue
        visible = {ft for s in [stage, *upstream[stage]] for ft in writer if writer[ft] == s}
        for file_type in named:
            if file_type not in visible:
                where = (
                    f"stage {writer[file_type]!r}, which is not upstream"
                    if file_type in writer
                    else "no stage"
                )
                problems.append(
                    (
                        [*base, stage],
                        f"the command of job type {job_type!r} names {{out[{file_type}]}}, which {where}"
                        f" of stage {stage!r} writes in this pipeline",
                    )
                )
    return problems


def _when_problems(
    base: list[str | int],
    stages: Mapping[str, Mapping[str, Any]],
    job_types: Mapping[str, Any],
    upstream: Mapping[str, list[str]],
) -> list[tuple[list[str | int], str]]:
    problems: list[tuple[list[str | int], str]] = []
    for stage, spec in stages.items():
        if "when" not in spec:
            continue
        try:
            gate = parse_gate(spec["when"])
        except GateError as exc:
            problems.append(([*base, stage, "when"], f"{spec['when']!r}: {exc}"))
            continue
        allowed = {
            up: set(job_types[stages[up].get("job_type", up)].get("metrics") or ()) for up in upstream[stage]
        }
        problems.extend(
            ([*base, stage, "when"], f"{spec['when']!r}: {p}") for p in check_references(gate, allowed)
        )
    return problems


def pipeline_spec(config: Mapping[str, Any], name: str) -> PipelineSpec:
    """Resolve a pipeline of a validated config; raises ``ConfigurationError`` if unknown."""
    stages = _stages_config(config, name)
    after = {stage: list(spec.get("after") or ()) for stage, spec in stages.items()}
    order = topological_order(after)
    resolved = []
    for stage in order:
        assert isinstance(stage, str)  # validated: no cycle
        spec = stages[stage]
        job = job_type_spec(config, spec.get("job_type", stage))
        overrides = {key: spec[key] for key in STAGE_OVERRIDES if key in spec}
        resolved.append(
            StageSpec(
                name=stage,
                job=replace(job, **overrides),
                after=tuple(after[stage]),
                when=parse_gate(spec["when"]) if "when" in spec else None,
                if_upstream_skipped=str(spec.get("if_upstream_skipped", SKIP_IF_SKIPPED)),
            )
        )
    body = (config.get("pipelines") or {})[name]
    return PipelineSpec(name, tuple(resolved), body.get("window_size"))


def stage_order(config: Mapping[str, Any]) -> list[str]:
    """Every configured pipeline's stages, each pipeline in its order (for reports)."""
    order: list[str] = []
    for name in config.get("pipelines") or {}:
        order.extend(s for s in pipeline_spec(config, name).names() if s not in order)
    return order


def select_stages(
    pipeline: PipelineSpec,
    *,
    stages: Iterable[str] | None = None,
    start: str | None = None,
    rerun: str | None = None,
) -> tuple[list[str], list[str]]:
    """The stages a run executes and the stages it forces (``--rerun``), in pipeline order.

    ``stages``: exactly these; ``start`` (``--from``): that stage and everything
    downstream of it; ``rerun``: that stage and its downstream, run even where done.
    """
    chosen = set(pipeline.names())
    if stages is not None:
        wanted = list(stages)
        for name in wanted:
            pipeline.stage(name)  # raises naming the pipeline's stages
        chosen = set(wanted)
    if start is not None:
        pipeline.stage(start)
        chosen &= {start} | pipeline.downstream(start)
    forced: set[str] = set()
    if rerun is not None:
        pipeline.stage(rerun)
        forced = {rerun} | pipeline.downstream(rerun)
        chosen |= forced
    ordered = [s for s in pipeline.names() if s in chosen]
    if not ordered:
        raise ConfigurationError(f"pipeline {pipeline.name!r}: no stage is selected to run")
    return ordered, [s for s in pipeline.names() if s in forced]
