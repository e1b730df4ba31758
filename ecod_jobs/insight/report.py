"""``ecod-jobs report``: one self-contained HTML file about a batch, readable offline.

The file inlines plotly.js, the style sheet and the data (as JSON in a
``<script type="application/json">`` block, escaped by Jinja2's ``tojson``), so
it opens from a laptop with no network. Every text from the database goes
through Jinja2's autoescaping: a batch name or an error message holding
``<script>`` shows as text.
"""

from __future__ import annotations

import functools
import getpass
import socket
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from .. import __version__
from ..db import Database, snapshot
from ..layout import write_atomic
from . import data, figures

REPORT_JOB_LIMIT = 20_000  # chunk jobs in the report's plots (the latest)


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ecod_jobs.insight", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def static_text(name: str) -> str:
    return (resources.files("ecod_jobs.insight") / "static" / name).read_text(encoding="utf-8")


@functools.cache
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def report_view(db: Database, batch_id: int) -> dict[str, Any]:
    """The batch view plus what only the report shows (slowest items, who made it)."""
    with snapshot(db) as snap:
        view = data.batch_view(snap, batch_id, jobs_limit=REPORT_JOB_LIMIT)
        view["slowest_items"] = data.slowest_items(snap, batch_id, view["batch"]["base_path"])
    figures.attach(view, table_rows=1000)
    view["generated"] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "by": getpass.getuser(),
        "host": socket.gethostname(),
        "ecod_jobs_version": __version__,
    }
    return view


def render_report(view: dict[str, Any]) -> str:
    return (
        environment()
        .get_template("report.html.j2")
        .render(view=view, css=static_text("style.css"), plotly_js=plotly_js(), app_js=static_text("view.js"))
    )


def write_report(db: Database, batch_id: int, out: Path) -> Path:
    """Render the batch's report to ``out`` atomically (a reader never sees half a file)."""
    write_atomic(out, render_report(report_view(db, batch_id)), mode=0o644)
    return out
