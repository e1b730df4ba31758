"""``make bench``: every measurement in one go, with its baseline, into bench/results/.

    python -m bench [--items 1000000] [--only registration,sync,...] [--out bench/results]

Writes ``latest.json`` (machine-readable) and ``latest.md`` (the README's table)
and prints the table. Nothing here asserts a speed: goals are reported, met or not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import REPO, Measurement, log, scratch_database

MEASUREMENTS = (
    "registration",
    "sync",
    "status",
    "dashboard",
    "local",
    "planning",
    "pipeline_dag",
    "pipelining",
    "slurm",
    "process_file",
)


def database_measurements(items: int, batch_size: int, only: set[str], work: Path) -> list[Measurement]:
    from . import dashboard, registration, status_query, sync_results

    results: list[Measurement] = []
    with scratch_database() as section:
        found, registered = registration.measure(section, work, items, batch_size)
        results += found
        if "sync" in only:
            results += sync_results.measure(section, registered)
        if "status" in only:
            results += status_query.measure(section, registered)
        if "dashboard" in only:
            results += dashboard.measure(registered, work)
    return results


def environment() -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        try:
            return (
                subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
            )
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unavailable"

    from importlib.metadata import version as pkg_version

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "snakemake": pkg_version("snakemake"),
        "postgresql": version(["psql", "--version"]),
        "slurm": version(["sbatch", "--version"]),
        "commit": version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
    }


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("items/s", "commands/s"):
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def markdown(results: list[Measurement], env: dict[str, Any], seconds: float) -> str:
    lines = [
        f"Measured {env['date']} on {env['host']} ({env['cpus']} CPUs), commit {env['commit']},"
        f" {env['postgresql']}, {env['slurm']}, snakemake {env['snakemake']}; `make bench` took"
        f" {seconds / 60:.1f} min.",
        "",
        "| Measurement | ecod-jobs | Baseline (same run) | Ratio | Goal | Met |",
        "|---|---:|---|---:|---|:---:|",
    ]
    for m in results:
        ratio = f"{m.ratio:.2f}x" if m.ratio is not None else "-"
        met = {True: "yes", False: "**no**", None: "-"}[m.met]
        baseline = f"{fmt(m.baseline_value, m.unit)} ({m.baseline})" if m.baseline else "-"
        lines.append(
            f"| {m.title} | {fmt(m.value, m.unit)} | {baseline} | {ratio} | {m.goal or '-'} | {met} |"
        )
    lines += [
        "",
        'Ratios read "better than the baseline" above 1x (rates: ours/baseline;'
        " times and memory: baseline/ours).",
        "",
    ]
    for m in results:
        for note in m.notes:
            lines.append(f"- {m.title.split(' (')[0]}: {note}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="items of the big batch")
    parser.add_argument("--batch-size", type=int, default=1000, help="items per chunk of the big batch")
    parser.add_argument("--only", default=",".join(MEASUREMENTS), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(MEASUREMENTS)
    if unknown:
        parser.error(
            f"unknown measurement(s) {', '.join(sorted(unknown))}; choose from {', '.join(MEASUREMENTS)}"
        )
    from . import local_overhead, pipeline_dag, pipelining, planning, process_files, slurm_submission

    started = time.monotonic()
    results: list[Measurement] = []
    steps: list[tuple[str, Callable[[Path], list[Measurement]]]] = []
    if only & {"registration", "sync", "status", "dashboard"}:
        steps.append(("database", lambda w: database_measurements(args.items, args.batch_size, only, w)))
    if "local" in only:
        steps.append(("local", local_overhead.measure))
    if "planning" in only:
        steps.append(("planning", planning.measure))
    if "pipeline_dag" in only:
        steps.append(("pipeline_dag", pipeline_dag.measure))
    if "pipelining" in only:
        steps.append(("pipelining", pipelining.measure))
    if "slurm" in only:
        steps.append(("slurm", slurm_submission.measure))
    if "process_file" in only:
        steps.append(("process_file", process_files.measure))
    for name, step in steps:
        with tempfile.TemporaryDirectory(prefix=f"ecod-bench-{name}-") as work:
            results += step(Path(work))
    seconds = time.monotonic() - started
    env = environment()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"environment": env, "seconds": round(seconds, 1), "results": [m.to_json() for m in results]}
    (args.out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(results, env, seconds)
    (args.out / "latest.md").write_text(table)
    print(table)
    log(f"wrote {args.out / 'latest.json'} and {args.out / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
