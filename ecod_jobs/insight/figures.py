"""The plots of a batch, as Plotly figures (JSON-ready dicts) built from ``data.batch_view``.

Plotly, because one figure description serves both views: the report inlines
plotly.js and the figures into one offline HTML file, and the dashboard serves
the same plotly.js from the installed package and draws the same figures from
its JSON API. plotly.js reads a little HTML in text (links, bold), so text that
comes from outside (node names, chunk ids, scheduler states) is HTML-escaped
first and shows as written.

The figures are written as plain dicts in plotly's figure schema: building them
with ``plotly.graph_objects`` validated every value and took 50 ms per request;
the tests check the dicts against that validation instead.
"""

from __future__ import annotations

import heapq
import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .graph import pipeline_graph

OUTCOME_COLOURS = {"completed": "#2e8b57", "failed": "#c0392b", "submitted": "#3b7dd8"}
OUTCOME_NAMES = {"completed": "completed", "failed": "failed", "submitted": "running or queued"}
# The title sits at the top left, below the band of plotly's mode bar (top right, about
# 30 px tall): a long title in a half-width plot would otherwise run under the bar.
# Below the title, above the plot: the legend and the requested/suggested labels.
_LAYOUT = {"margin": {"l": 70, "r": 20, "t": 100, "b": 50}, "height": 390}
_TITLE = {
    "x": 0,
    "xref": "container",
    "xanchor": "left",
    "y": 1,
    "yref": "container",
    "yanchor": "top",
    "pad": {"l": 12, "t": 36},
}
# Fewer completed chunks than this: each chunk a point (a histogram of a handful of
# values is a few lonely bars); from this many on, a histogram.
STRIP_MAX = 30


def _title(text: str) -> dict[str, Any]:
    return {**_TITLE, "text": text}


def _text(value: str | None) -> str:
    """Text for plotly.js, which would read ``<a href>`` and friends as markup."""
    return html.escape(value or "", quote=False)


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def timeline_lanes(jobs: Sequence[Mapping[str, Any]], now: datetime) -> list[tuple[Mapping[str, Any], str]]:
    """Each started job with its lane: ``node #k``, the k-th chunk running side by side there.

    Greedy interval partitioning per node: a chunk takes the first lane free at
    its start, so lanes per node equal the most chunks it ran at once.
    """
    by_node: dict[str, list[tuple[datetime, datetime, Mapping[str, Any]]]] = {}
    for job in jobs:
        start = _when(job["start"])
        if start is None:
            continue
        end = _when(job["end"]) or now
        by_node.setdefault(_text(job["node"] or "unknown node"), []).append((start, max(end, start), job))
    placed = []
    for node in sorted(by_node):
        free: list[tuple[datetime, int]] = []  # (free from, lane) for lanes in use
        lanes = 0
        for start, end, job in sorted(by_node[node], key=lambda t: (t[0], t[2]["id"])):
            if free and free[0][0] <= start:
                _, lane = heapq.heappop(free)
            else:
                lanes += 1
                lane = lanes
            heapq.heappush(free, (end, lane))
            placed.append((job, f"{node} #{lane}"))
    return placed


def timeline(jobs: Sequence[Mapping[str, Any]], now: datetime | None = None) -> dict[str, Any]:
    """Chunks from start to end on their nodes, coloured by outcome."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    placed = timeline_lanes(jobs, now)
    traces = []
    for outcome, colour in OUTCOME_COLOURS.items():
        rows = [(job, lane) for job, lane in placed if job["status"] == outcome]
        if not rows:
            continue
        starts = [_when(job["start"]) or now for job, _ in rows]
        ends = [max(_when(job["end"]) or now, start) for (job, _), start in zip(rows, starts, strict=True)]
        traces.append(
            {
                "type": "bar",
                "name": OUTCOME_NAMES[outcome],
                "orientation": "h",
                "base": [s.isoformat() for s in starts],
                "x": [(e - s).total_seconds() * 1000 for s, e in zip(starts, ends, strict=True)],
                "y": [lane for _, lane in rows],
                "marker": {"color": colour},
                "customdata": [
                    [
                        _text(j["chunk_id"]),
                        j["attempt"],
                        j["items"],
                        j["elapsed_seconds"],
                        _text(j["scheduler_state"]),
                    ]
                    for j, _ in rows
                ],
                "hovertemplate": "chunk %{customdata[0]} attempt %{customdata[1]}<br>%{customdata[2]} items,"
                " %{customdata[3]:.1f} s %{customdata[4]}<extra>%{y}</extra>",
            }
        )
    lanes = len({lane for _, lane in placed})
    return {
        "data": traces,
        "layout": {
            **_LAYOUT,
            "height": max(260, min(1200, 120 + 18 * lanes)),
            "title": _title("Chunks over time, per node"),
            "barmode": "overlay",
            "xaxis": {"type": "date", "title": {"text": "time (database server's clock)"}},
            "yaxis": {"categoryorder": "category descending", "automargin": True},
            "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1, "yanchor": "bottom"},
        },
    }


def _distribution(
    chunks: Sequence[tuple[float, Mapping[str, Any]]],
    requested: float | None,
    suggested: float | None,
    title: str,
    unit: str,
    value_format: str,
) -> dict[str, Any]:
    """``chunks``: (value, job) of each completed chunk. A strip of points (hover: the chunk
    and its value) under ``STRIP_MAX`` chunks, else a histogram; requested and suggested
    as dashed lines."""
    shapes, notes = [], []
    # the two labels on two lines: a suggestion close to the request would overwrite it
    lines = ((requested, "requested", "#c0392b", 0), (suggested, "suggested", "#2e8b57", 18))
    for x, label, colour, shift in lines:
        if x:
            shapes.append(
                {
                    "type": "line",
                    "xref": "x",
                    "yref": "paper",
                    "x0": x,
                    "x1": x,
                    "y0": 0,
                    "y1": 1,
                    "line": {"color": colour, "dash": "dash"},
                }
            )
            notes.append(
                {
                    "x": x,
                    "xref": "x",
                    "y": 1,
                    "yref": "paper",
                    "text": f"{label} {x:g} {unit}",
                    "showarrow": False,
                    "xanchor": "left",
                    "yanchor": "bottom",
                    "yshift": shift,
                }
            )
    values = [value for value, _ in chunks]
    if len(chunks) < STRIP_MAX:
        # a box trace whose points are all drawn, jittered across its height, over the box
        trace: dict[str, Any] = {
            "type": "box",
            "orientation": "h",
            "x": values,
            "name": "chunks",
            "boxpoints": "all",
            "jitter": 0.6,
            "pointpos": 0,
            "hoveron": "points",
            "marker": {"color": "#3b7dd8", "size": 9, "opacity": 0.85},
            "line": {"color": "#9db8e0", "width": 1},
            "fillcolor": "rgba(59, 125, 216, 0.08)",
            "customdata": [[_text(job["chunk_id"]), job["attempt"]] for _, job in chunks],
            "hovertemplate": f"chunk %{{customdata[0]}} attempt %{{customdata[1]}}: %{{x:{value_format}}}"
            f" {unit}<extra></extra>",
        }
        yaxis: dict[str, Any] = {"title": {"text": "one point per chunk"}, "showticklabels": False}
    else:
        trace = {
            "type": "histogram",
            "x": values,
            "name": "chunks",
            "marker": {"color": "#3b7dd8"},
            "nbinsx": 40,
        }
        yaxis = {"title": {"text": "chunks"}}
    return {
        "data": [trace],
        "layout": {
            **_LAYOUT,
            "title": _title(title),
            "xaxis": {"title": {"text": unit}, "rangemode": "tozero"},
            "yaxis": yaxis,
            "shapes": shapes,
            "annotations": notes,
            "showlegend": False,
        },
    }


def runtime(jobs: Sequence[Mapping[str, Any]], fit: Mapping[str, Any]) -> dict[str, Any]:
    chunks = [(j["elapsed_seconds"], j) for j in jobs if j["status"] == "completed" and j["elapsed_seconds"]]
    return _distribution(
        chunks, fit["requested"], fit["suggested"], "Chunk runtime against the time requested", "s", ".1f"
    )


def memory(jobs: Sequence[Mapping[str, Any]], fit: Mapping[str, Any]) -> dict[str, Any]:
    chunks = [
        (j["max_rss_mb"], j) for j in jobs if j["status"] == "completed" and j["max_rss_mb"] is not None
    ]
    return _distribution(
        chunks,
        fit["requested"],
        fit["suggested"],
        "Chunk peak memory against the memory requested",
        "MB",
        ",.0f",
    )


def figures(view: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """All plots of a batch view, by name."""
    jobs, fit = view["jobs"], view["resources"]
    return {
        "timeline": timeline(jobs, _when(view.get("now"))),
        "runtime": runtime(jobs, fit["runtime"]),
        "memory": memory(jobs, fit["memory"]),
    }


def attach(view: dict[str, Any], table_rows: int = 200) -> dict[str, Any]:
    """Add the plots (and each pipeline's stage graph) to a batch view; keep only the
    latest ``table_rows`` jobs for its table."""
    view["figures"] = figures(view)
    for pipeline in (view.get("stages") or {}).get("pipelines", ()):
        pipeline["graph"] = pipeline_graph(pipeline["stages"])
    view["jobs"] = view["jobs"][-table_rows:]
    return view
