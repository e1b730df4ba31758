"""Snakemake's scheduler and DAG, with jobs that finish at once: a head node's bookkeeping alone.

    python -m bench.smk_touch SNAKEMAKE-ARGS... --touch ...

Runs ``snakemake`` in this process with its ``--touch`` executor: each job "runs" by
touching its (already written) outputs, in the order the scheduler picks, and is then
finished exactly as a real job is (``DAG.finish``: for a checkpoint, the update of its
dependencies and the re-evaluation of the whole DAG). Two changes, for the benchmark only:
the touch executor's 0.1 s sleep per job is gone, and the workflow's onstart/onsuccess
hooks (PostgreSQL: run record, lease, final sync) do nothing, as in a dry run.

With ``$BENCH_SMK_STATS`` set, it also times Snakemake's DAG work and writes it there as
JSON: the first DAG build (``DAG.init``) and every checkpoint's update of the DAG
(``DAG.update_checkpoint_dependencies``: the dependent jobs re-evaluated, then the whole
DAG post-processed), with the DAG's size at each.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any


def _nothing(*_args: Any, **_kwargs: Any) -> None:
    return None


def _timed(
    method: Callable[..., Coroutine[Any, Any, Any]], record: Callable[[Any, float, Any], None]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def wrapper(dag: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        value = await method(dag, *args, **kwargs)
        record(dag, time.perf_counter() - start, value)
        return value

    return wrapper


def instrument(path: Path) -> None:
    """Time DAG.init and each checkpoint's DAG update; write the figures to ``path`` at exit."""
    from snakemake.dag import DAG

    stats: dict[str, Any] = {"init_seconds": 0.0, "init_jobs": 0, "updates": []}

    def on_init(dag: Any, seconds: float, _value: Any) -> None:
        stats["init_seconds"] += seconds
        stats["init_jobs"] = len(dag.jobs)
        stats["init_updates"] = len(stats["updates"])

    def on_update(dag: Any, seconds: float, updated: Any) -> None:
        if updated:  # a checkpoint with dependents: the DAG was re-evaluated
            stats["updates"].append([round(seconds, 6), len(dag.jobs)])

    DAG.init = _timed(DAG.init, on_init)  # type: ignore[method-assign]
    DAG.update_checkpoint_dependencies = _timed(  # type: ignore[method-assign]
        DAG.update_checkpoint_dependencies, on_update
    )
    started = time.perf_counter()

    def write() -> None:
        stats["seconds"] = time.perf_counter() - started
        path.write_text(json.dumps(stats))

    atexit.register(write)


def main(argv: list[str]) -> int:
    import snakemake.executors.touch as touch
    from snakemake.cli import main as snakemake_main

    import ecod_jobs.workflow as hooks

    if os.environ.get("BENCH_SMK_STATS"):
        instrument(Path(os.environ["BENCH_SMK_STATS"]))
    touch.Executor.SLEEPING_TIME = 0  # type: ignore[attr-defined]
    hooks.on_start = _nothing  # type: ignore[assignment]
    hooks.on_finish = _nothing  # type: ignore[assignment]

    try:
        snakemake_main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
