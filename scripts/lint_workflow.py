"""make lint's Snakemake half: the workflow's lints must be exactly the allowed ones below.

Snakemake's linter exits 1 on any lint, and the chunk rule has one we keep on
purpose, so plain ``snakemake --lint`` can never pass here. This runs the same
lint (``--lint json``, through Snakemake's API: the 9.x command line ignores
``json`` and prints text, since ``cli.py`` calls ``workflow_api.lint()``
without it) and fails on

- any lint not in ALLOWED (a new one: fix it, or allow it here with the reason
  and say so in README.md's Testing section), and
- any ALLOWED entry Snakemake no longer reports (remove it, and from the README).

The Snakefile touches no database at parse time, so this needs none: it runs on
a fresh clone with ``batch_id=1`` and ``config/config.yml``.

    .venv/bin/python scripts/lint_workflow.py
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "workflow" / "Snakefile"

# (what, lint title) -> why it stays. "what" is "rule NAME" or "snakefile PATH"
# (relative to the repository).
_CHUNK_REASON = (
    "the chunk rule runs ecod-jobs' own runner from the environment the workflow was started in "
    "(a shared-filesystem virtualenv on a cluster), and a job type's software comes from its "
    "`modules` or its command; an environment file we cannot test here would be a promise we do "
    "not keep, and a `run:` rule (which silences the lint) costs a Snakemake process per chunk. "
    "A conda or container directive would also make the ecod-slurm executor submit each chunk as a "
    "job of its own rather than as array tasks."
)
ALLOWED: dict[tuple[str, str], str] = {
    ("rule chunk", "Specify a conda environment or container for each rule."): _CHUNK_REASON,
    # a pipeline stage's chunks: the same runner, the same reason
    ("rule stage_chunk", "Specify a conda environment or container for each rule."): _CHUNK_REASON,
}
# The Snakefile includes other rules for a pipeline run: lint both.
CONFIGS: tuple[dict[str, object], ...] = ({"batch_id": 1}, {"batch_id": 1, "pipeline": "demo"})


def workflow_lints(config: dict[str, object]) -> list[tuple[str, str, str]]:
    """(what, title, body) of every lint Snakemake reports for the workflow."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    printed = io.StringIO()
    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(config=dict(config)),
            snakefile=SNAKEFILE,
            workdir=REPO,
        )
        with contextlib.redirect_stdout(printed):
            workflow.lint(json=True)
    report = json.loads(printed.getvalue())
    found = []
    for entry in report["snakefiles"]:
        path = Path(entry["for"]["snakefile"])
        what = f"snakefile {path.relative_to(REPO) if path.is_relative_to(REPO) else path}"
        found += [(what, lint["title"], lint["body"]) for lint in entry["lints"]]
    for entry in report["rules"]:
        found += [(f"rule {entry['for']['rule']}", lint["title"], lint["body"]) for lint in entry["lints"]]
    return found


def main() -> int:
    os.chdir(REPO)
    found = sorted({lint for config in CONFIGS for lint in workflow_lints(config)})
    new = [(what, title, body) for what, title, body in found if (what, title) not in ALLOWED]
    gone = sorted(set(ALLOWED) - {(what, title) for what, title, _ in found})
    for what, title, body in new:
        print(f"snakemake --lint: {what}: {title}\n    {body}", file=sys.stderr)
    for what, title in gone:
        print(
            f"snakemake --lint no longer reports the allowed lint '{title}' for {what}: remove it from "
            f"ALLOWED in {Path(__file__).relative_to(REPO)} and from README.md's Testing section",
            file=sys.stderr,
        )
    if new:
        print(
            f"{len(new)} new lint(s): fix them, or add each to ALLOWED in "
            f"{Path(__file__).relative_to(REPO)} with the reason (and say so in README.md's Testing section)",
            file=sys.stderr,
        )
    if new or gone:
        return 1
    allowed = "; ".join(f"{what}: {title}" for what, title in sorted(ALLOWED))
    print(f"snakemake --lint: only the allowed lint(s) ({allowed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
