"""A pipeline's stage graph, laid out here as shapes that ``view.js`` draws as SVG.

The layout is computed on the server, in Python, so the page needs no graph
library (the report stays one offline file) and the browser only turns
rectangles, texts and paths into SVG elements (with ``textContent``, as the
rest of the page). Stages go in columns by their longest path from a stage
with no ``after`` (each stage right of everything it waits for), edges run
left to right, and each node shows its counts as text and as a stacked bar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The order and colours of a stage's statuses (the stacked bar's segments, left to right).
STATUS_COLOURS = {
    "success": "#2e8b57",
    "error": "#c0392b",
    "skipped": "#9aa3b0",
    "running": "#3b7dd8",
    "pending": "#e3e6eb",
}
PAD = 12
GAP_X = 56  # between columns: room for the edges' curves and arrows
GAP_Y = 16
LINE = 16  # one text line
BAR = 8  # the stacked bar under the text
# SVG text is not measured server-side: a generous width per character (system-ui at
# 12-13 px averages 6.5-7.5 px), so that names up to the schema's 43 characters fit.
CHAR_PX = 7.4
MIN_W, MAX_W = 150, 340
ARROW = 7
WAYPOINT = 12  # the height an edge takes where it crosses a column


def count_lines(counts: Mapping[str, int]) -> list[str]:
    """The node's count lines: success, error and skipped always (what a finished stage
    shows), running and pending only while there are some."""
    ok, err, skipped = (counts.get(s, 0) for s in ("success", "error", "skipped"))
    lines = [f"{ok:,} ok / {err:,} err / {skipped:,} skipped"]
    waiting = [f"{counts[s]:,} {s}" for s in ("running", "pending") if counts.get(s)]
    if waiting:
        lines.append(" / ".join(waiting))
    return lines


def layers(stages: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each stage's column: 0 without ``after``, else one more than its furthest upstream
    stage. ``stages`` are in topological order (as ``PipelineSpec.stages``)."""
    layer: dict[str, int] = {}
    for stage in stages:
        ups = [layer[a] for a in stage["after"] if a in layer]
        layer[stage["name"]] = 1 + max(ups) if ups else 0
    return layer


def _columns(
    names: Sequence[str], after: Mapping[str, Sequence[str]], layer: Mapping[str, int]
) -> list[list[str]]:
    """Names per column, each column ordered by the mean row of its upstream names (one
    barycentre pass, left to right: fewer crossings; ties keep the given order)."""
    columns: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for name in names:
        columns[layer[name]].append(name)
    row: dict[str, float] = {}
    for column in columns:

        def centre(name: str) -> float:
            ups = [row[a] for a in after[name] if a in row]
            return sum(ups) / len(ups) if ups else 0.0

        column.sort(key=centre)  # stable: ties in the given order
        row.update({name: i for i, name in enumerate(column)})
    return columns


def _curve(x1: float, y1: float, x2: float, y2: float) -> str:
    """A cubic from (x1, y1) to (x2, y2), leaving and arriving horizontally."""
    bend = (x2 - x1) / 2
    return f" C{x1 + bend:g},{y1:g} {x2 - bend:g},{y2:g} {x2:g},{y2:g}"


def pipeline_graph(stages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Nodes (one per stage: box, text lines, bar segments) and edges (one per ``after``
    entry: an SVG path and its arrowhead) of a pipeline, in pixels.

    ``stages``: ``{"name", "after", "counts"}`` in topological order. An edge that spans
    columns passes through a waypoint in each column between (a Sugiyama "dummy node",
    placed and ordered like a stage), so it runs between boxes instead of across them.
    """
    layer = layers(stages)
    names = [s["name"] for s in stages]
    after: dict[str, list[str]] = {s["name"]: [a for a in s["after"] if a in layer] for s in stages}
    via: dict[tuple[str, str], list[str]] = {}  # (from, to): the waypoints between
    for stage in stages:
        for i, up in enumerate(after[stage["name"]]):
            previous, points = up, []
            for col in range(layer[up] + 1, layer[stage["name"]]):
                point = f"\0{up}\0{stage['name']}\0{col}"  # cannot clash: stage names are \w+
                layer[point], after[point] = col, [previous]
                names.append(point)
                points.append(point)
                previous = point
            via[(up, stage["name"])] = points
            after[stage["name"]][i] = previous  # the ordering sees the edge's last waypoint
    columns = _columns(names, after, layer)

    texts = {s["name"]: [s["name"], *count_lines(s["counts"])] for s in stages}
    longest = max((len(t) for lines in texts.values() for t in lines), default=0)
    w = int(min(MAX_W, max(MIN_W, longest * CHAR_PX + 2 * PAD)))
    n_lines = max((len(lines) for lines in texts.values()), default=1)
    h = PAD + n_lines * LINE + 6 + BAR + PAD // 2

    def size(name: str) -> int:
        return h if name in texts else WAYPOINT

    spans = [sum(size(n) for n in column) + GAP_Y * max(0, len(column) - 1) for column in columns]
    tallest = max(spans, default=0)
    height = 2 * PAD + tallest
    width = 2 * PAD + len(columns) * w + max(0, len(columns) - 1) * GAP_X
    where: dict[str, tuple[int, int]] = {}  # top left corner
    for col, column in enumerate(columns):
        # each column centred vertically: a lone fan-in stage sits between its inputs
        y = PAD + (tallest - spans[col]) // 2
        for name in column:
            where[name] = (PAD + col * (w + GAP_X), y)
            y += size(name) + GAP_Y

    nodes = []
    for stage in stages:
        name = stage["name"]
        x, y = where[name]
        counts = stage["counts"]
        total = sum(counts.get(s, 0) for s in STATUS_COLOURS)
        bar_w = w - 2 * PAD
        segments, left = [], 0.0
        for status, colour in STATUS_COLOURS.items():
            n = counts.get(status, 0)
            if n and total:
                seg = bar_w * n / total
                segments.append(
                    {
                        "status": status,
                        "count": n,
                        "colour": colour,
                        "x": round(PAD + left, 2),
                        "w": round(seg, 2),
                    }
                )
                left += seg
        nodes.append(
            {
                "stage": name,
                "layer": layer[name],
                "x": x,
                "y": y,
                "w": w,
                "h": h,
                # baselines: the stage's name (bold), then its counts
                "lines": [
                    {"text": t, "y": PAD + (i + 1) * LINE - 4, "bold": i == 0}
                    for i, t in enumerate(texts[name])
                ],
                "bar": {"x": PAD, "y": PAD + n_lines * LINE + 6, "w": bar_w, "h": BAR},
                "segments": segments,
                "failed": bool(counts.get("error")),
            }
        )

    edges = []
    for stage in stages:
        for up in stage["after"]:
            if up not in where:
                continue
            sx, sy = where[up]
            x, y = sx + w, sy + h // 2
            path = f"M{x},{y}"
            for point in via[(up, stage["name"])]:
                px, py = where[point]
                py += WAYPOINT // 2
                path += _curve(x, y, px, py) + f" L{px + w},{py}"  # straight through the column
                x, y = px + w, py
            tx, ty = where[stage["name"]]
            end_x, end_y = tx - ARROW, ty + h // 2
            path += _curve(x, y, end_x, end_y)
            edges.append(
                {
                    "from": up,
                    "to": stage["name"],
                    "path": path,
                    "arrow": f"{tx},{end_y} {end_x},{end_y - ARROW / 2:g} {end_x},{end_y + ARROW / 2:g}",
                }
            )
    return {"width": width, "height": height, "nodes": nodes, "edges": edges}
