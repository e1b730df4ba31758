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
import os
import socket
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from .. import __version__
from ..db import Database, snapshot
from ..exceptions import ValidationError
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


def report_view(db: Database, batch_id: int, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The batch view plus what only the report shows (slowest items, who made it);
    ``config`` defines the pipelines whose graphs it draws."""
    with snapshot(db) as snap:
        view = data.batch_view(snap, batch_id, jobs_limit=REPORT_JOB_LIMIT, config=config)
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


def report_target(text: str) -> Path:
    """The file ``report -o TEXT`` writes, checked before anything is read or written.

    The report replaces its target by renaming a temporary file over it, so the target
    must be a regular file or not exist yet, in an existing directory: a device node, a
    directory or a name ending in '/' is refused. A symlink is followed to its target,
    which must be a regular file (the link itself stays), as a shell's ``>`` would.
    """
    out = Path(text)
    if text.endswith("/") or (os.altsep and text.endswith(os.altsep)):
        raise _bad(text, "names a directory (it ends in '/'); give a file name")
    try:
        st: os.stat_result | None = out.lstat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _bad(text, exc.strerror or str(exc)) from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        real = Path(os.path.realpath(out))
        if not real.is_file():
            raise _bad(text, f"is a symlink to {real}, which is not an existing regular file")
        out, st = real, real.stat()
    if st is not None and not stat.S_ISREG(st.st_mode):
        dir_ = stat.S_ISDIR(st.st_mode)
        what = "is a directory" if dir_ else "is not a regular file (a device, FIFO or socket)"
        raise _bad(text, f"{what}; give a file name")
    if not out.parent.is_dir():
        raise _bad(text, f"directory {out.parent} does not exist")
    return out


def _bad(text: str, problem: str) -> ValidationError:
    return ValidationError(f"--output {text}: {problem}", {"output": text})


def write_report(db: Database, batch_id: int, out: Path, config: Mapping[str, Any] | None = None) -> Path:
    """Render the batch's report to ``out`` atomically (a reader never sees half a file).
    ``out`` is what :func:`report_target` returned."""
    text = render_report(report_view(db, batch_id, config))
    try:
        write_atomic(out, text, mode=0o644)
    except OSError as exc:  # e.g. /proc/x: nothing was written (the temp file is removed)
        raise _bad(str(out), f"cannot write there: {exc.strerror or exc}") from None
    return out
