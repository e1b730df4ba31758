"""ecod-jobs' own SLURM job arrays: task scripts, one dispatcher, and a run-wide throttle.

Used by the ``ecod-slurm`` executor plugin (``snakemake_executor_plugin_ecod_slurm``);
pure logic, so that it can be tested without a cluster.

Why not the SLURM plugin's arrays (2.8.0): it packs every task's command into one
``--slurm-jobstep-array-execs`` argument of about 1.9 KB a task. Past about 65
tasks the ``sbatch --wrap=...`` line exceeds Linux's 128 KiB argument limit, and
its fallback script puts the payload on a line of its own, so that every task runs
the sub-array's first job. Here each task's command is a file of its own on the
shared filesystem and the array's batch script only runs
``tasks/$SLURM_ARRAY_TASK_ID.sh``: its size does not grow with the array.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

TASK_ENV_PREFIX = "ECOD_JOBS_TASK_"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def dispatcher_script(task_dir: Path) -> str:
    """The array's batch script: run this task's own script (a missing one fails the task)."""
    return (
        "#!/bin/sh\n"
        "# ecod-jobs array: each task runs its own command, written before submission\n"
        f'exec /bin/bash {shlex.quote(str(task_dir))}/"$SLURM_ARRAY_TASK_ID".sh\n'
    )


def task_script(
    command: str,
    *,
    index: int,
    rule: str,
    wildcards: Mapping[str, str],
    workdir: str,
    make_dirs: Iterable[str] = (),
) -> str:
    """Array task ``index``'s script: the rule's shell command, run as Snakemake runs a
    shell rule (bash with ``set -euo pipefail``, output and log directories made first).

    The task's index and the job's wildcards are exported (``ECOD_JOBS_TASK_INDEX``,
    ``ECOD_JOBS_TASK_<NAME>``), so that what runs can check it is the job this task
    was submitted for (:func:`ecod_jobs.chunk_runner.check_task`).
    """
    lines = [
        "#!/bin/bash",
        f"# array task {index}, rule {rule}: " + ", ".join(f"{k}={v}" for k, v in wildcards.items()),
        "set -euo pipefail",
        f"export {TASK_ENV_PREFIX}INDEX={int(index)}",
    ]
    for name, value in wildcards.items():
        if _IDENTIFIER.match(name):
            lines.append(f"export {TASK_ENV_PREFIX}{name.upper()}={shlex.quote(str(value))}")
    lines.append(f"cd {shlex.quote(workdir)}")
    dirs = sorted({d for d in make_dirs if d})
    if dirs:
        lines.append("mkdir -p " + " ".join(shlex.quote(d) for d in dirs))
    lines.append(command)
    return "\n".join(lines) + "\n"


def write_task_scripts(task_dir: Path, scripts: list[str]) -> None:
    """Task ``i`` (from 1) is ``task_dir/i.sh``; all written before the array is submitted."""
    task_dir.mkdir(parents=True, exist_ok=True)
    for index, text in enumerate(scripts, start=1):
        path = task_dir / f"{index}.sh"
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(path, 0o640)


def array_spec(tasks: int, throttle: int) -> str:
    """``--array`` value: tasks 1..N, at most ``throttle`` running (0: no limit)."""
    return f"1-{tasks}" + (f"%{throttle}" if throttle else "")


# --------------------------------------------------------------------------- throttle


@dataclass
class _Array:
    tasks: int
    throttle: int  # the share of the limit; SLURM's ArrayTaskThrottle once confirmed
    held: bool  # submitted held and not yet released


@dataclass
class ThrottleChange:
    array_id: str
    throttle: int
    previous: int
    release: bool  # the array is held: release it after setting the throttle


@dataclass
class ArrayBudget:
    """At most ``limit`` array tasks of a run running at once, across all its arrays.

    SLURM's ``%N`` (ArrayTaskThrottle) limits one array. The budget shares ``limit``
    among a run's arrays so that their throttles never add up to more than it: a
    new array gets what is free, or is submitted held when nothing is. As tasks end,
    an array's throttle shrinks to the tasks it has left (no more of its tasks can
    run, so that is no change for SLURM), and what that frees goes to the arrays
    that want more, oldest first. A change counts once SLURM took it
    (:meth:`confirm`); one it refused is undone (:meth:`undo`) and proposed again at
    the next poll. ``limit`` 0 means no limit.
    """

    limit: int
    arrays: dict[str, _Array] = field(default_factory=dict)

    def admit(self, tasks: int) -> tuple[int, bool]:
        """(throttle, held) for a new array of ``tasks`` tasks."""
        if not self.limit:
            return 0, False
        free = self.limit - sum(a.throttle for a in self.arrays.values())
        if free < 1:
            return 0, True
        return min(tasks, free), False

    def submitted(self, array_id: str, tasks: int, throttle: int, held: bool) -> None:
        if self.limit:
            self.arrays[array_id] = _Array(tasks, 0 if held else throttle, held)

    def rebalance(self, remaining: Mapping[str, int]) -> list[ThrottleChange]:
        """Given each array's tasks still queued or running, the changes to make in SLURM."""
        for array_id in [a for a in self.arrays if remaining.get(a, 0) == 0]:
            del self.arrays[array_id]
        for array_id, array in self.arrays.items():
            array.throttle = min(array.throttle, remaining[array_id])
        free = self.limit - sum(a.throttle for a in self.arrays.values())
        changes = []
        for array_id, array in self.arrays.items():  # oldest first (insertion order)
            give = max(0, min(remaining[array_id] - array.throttle, free))
            if give == 0 and not (array.held and array.throttle):
                continue
            changes.append(ThrottleChange(array_id, array.throttle + give, array.throttle, array.held))
            array.throttle += give
            free -= give
        return changes

    def confirm(self, change: ThrottleChange) -> None:
        if change.release and change.array_id in self.arrays:
            self.arrays[change.array_id].held = False

    def undo(self, change: ThrottleChange) -> None:
        if change.array_id in self.arrays:
            self.arrays[change.array_id].throttle = change.previous


def tasks_by_array(external_ids: Iterable[str]) -> dict[str, int]:
    """``{"123": 2}`` from SLURM task ids such as ``123_4``, ``123_7``."""
    counts: dict[str, int] = {}
    for external in external_ids:
        array_id, sep, _task = str(external).partition("_")
        if sep:
            counts[array_id] = counts.get(array_id, 0) + 1
    return counts
