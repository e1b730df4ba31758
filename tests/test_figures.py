"""The plots and the resource advice, from hand-made job lists (no database needed)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import plotly.graph_objects as go
import pytest

from ecod_jobs.insight import figures
from ecod_jobs.insight.data import resource_fit


def job(jid: int, node: str | None, start: str | None, end: str | None, **extra: Any) -> dict[str, Any]:
    base = {
        "id": jid,
        "chunk_id": f"c{jid:05d}",
        "attempt": 1,
        "items": 10,
        "node": node,
        "start": start,
        "end": end,
        "status": "completed",
        "scheduler_state": "COMPLETED",
        "elapsed_seconds": 60.0,
        "max_rss_mb": 300.0,
        "req_mem_mb": 1024,
        "req_time_seconds": 600,
    }
    return {**base, **extra}


def test_chunks_take_the_first_free_lane_of_their_node() -> None:
    jobs = [
        job(1, "n1", "2026-11-24T10:00:00", "2026-11-24T10:05:00"),
        job(2, "n1", "2026-11-24T10:01:00", "2026-11-24T10:02:00"),
        job(3, "n1", "2026-11-24T10:03:00", "2026-11-24T10:04:00"),  # lane 2 is free again
        job(4, "n2", "2026-11-24T10:00:00", None, status="submitted"),  # running: ends now
        job(5, None, None, None, status="submitted"),  # queued: not on the timeline
    ]
    now = datetime(2026, 11, 24, 10, 10)
    lanes = {j["id"]: lane for j, lane in figures.timeline_lanes(jobs, now)}
    assert lanes == {1: "n1 #1", 2: "n1 #2", 3: "n1 #2", 4: "n2 #1"}
    fig = figures.timeline(jobs, now)
    running = next(t for t in fig["data"] if t["name"] == "running or queued")
    assert running["x"] == [600_000.0]  # 10 minutes, in milliseconds


def test_outside_text_reaches_plotly_escaped() -> None:
    """plotly.js turns <a href> in text into a link: node names and states go in escaped."""
    hostile = '<a href="https://evil.example">n1</a>'
    jobs = [job(1, hostile, "2026-11-24T10:00:00", "2026-11-24T10:01:00", scheduler_state="<b>X</b>")]
    [trace] = figures.timeline(jobs, datetime(2026, 11, 24, 11))["data"]
    assert trace["y"] == ['&lt;a href="https://evil.example"&gt;n1&lt;/a&gt; #1']
    assert trace["customdata"][0][4] == "&lt;b&gt;X&lt;/b&gt;"


def test_figures_are_valid_plotly() -> None:
    """The dicts must pass plotly's own validation (which the hot path skips)."""
    jobs = [job(i, "n1", f"2026-11-24T10:0{i}:00", f"2026-11-24T10:0{i}:30") for i in range(1, 5)]
    jobs.append(job(9, "n1", "2026-11-24T10:09:00", None, status="failed", scheduler_state="TIMEOUT"))
    view = {"jobs": jobs, "resources": resource_fit(jobs)}
    for name, fig in figures.figures(view).items():
        go.Figure(fig)  # raises ValueError on any invalid property
        assert fig["layout"]["title"]["text"], name


def test_resource_advice() -> None:
    jobs = [
        job(i, "n1", None, None, elapsed_seconds=s, max_rss_mb=m)
        for i, s, m in ((1, 100, 300), (2, 200, 700))
    ]
    fit = resource_fit(jobs)
    assert fit["runtime"]["max"] == 200 and fit["runtime"]["suggested"] == 300  # 200 s x 1.5
    assert fit["runtime"]["suggested_text"] == "00:05:00"
    assert fit["memory"]["suggested"] == 1024  # 700 MB x 1.25 = 875, up to 256 MB steps
    assert fit["memory"]["median"] == 300 and fit["memory"]["requested"] == 1024

    # a chunk killed for memory: at least twice what it had, whatever the others used
    jobs.append(job(3, "n1", None, None, status="failed", scheduler_state="OUT_OF_MEMORY", max_rss_mb=None))
    fit = resource_fit(jobs)
    assert fit["memory"]["killed"] == 1 and fit["memory"]["suggested"] == 2048
    assert fit["runtime"]["killed"] == 0

    nothing = resource_fit([job(1, None, None, None, status="submitted")])
    assert nothing["runtime"]["suggested"] is None and nothing["memory"]["n"] == 0


# the longest chunk x 1.5, up to a whole minute, in the config's time format
@pytest.mark.parametrize(
    "seconds, text", [(30, "00:01:00"), (59, "00:02:00"), (2400, "01:00:00"), (60000, "1-01:00:00")]
)
def test_suggested_time_is_slurm_time(seconds: float, text: str) -> None:
    fit = resource_fit([job(1, "n1", None, None, elapsed_seconds=seconds)])
    assert fit["runtime"]["suggested_text"] == text


# --------------------------------------------------------------------------- the stage graph


def stage(name: str, after: list[str], **counts: int) -> dict[str, Any]:
    return {"name": name, "after": after, "counts": {"pending": 0, "running": 0, **counts}}


# test_pipeline_run's shape: fan-out, a gated stage, a fan-in, a chain; domain -> summary spans two columns
STAGES = [
    stage("chain", [], success=12),
    stage("domain", [], success=11, error=1),
    stage("deep", ["chain", "domain"], success=4, skipped=7, pending=1),
    stage("summary", ["domain", "deep"], success=11, pending=1),
    stage("partition", ["summary"], success=10, running=1, pending=1),
]


def inside(x: float, y: float, node: dict[str, Any]) -> bool:
    return node["x"] < x < node["x"] + node["w"] and node["y"] < y < node["y"] + node["h"]


def path_points(path: str, steps: int = 20) -> list[tuple[float, float]]:
    """Points along an SVG path of M, L and C commands (each cubic sampled ``steps`` times)."""
    points: list[tuple[float, float]] = []
    for command, args in re.findall(r"([MLC])([^MLC]*)", path):
        xy = [(float(x), float(y)) for x, y in re.findall(r"(-?[\d.]+),(-?[\d.]+)", args)]
        if command == "C":
            (x0, y0), ((x1, y1), (x2, y2), (x3, y3)) = points[-1], xy
            for k in range(1, steps + 1):
                t = k / steps
                a, b, c, d = (1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t**3
                points.append((a * x0 + b * x1 + c * x2 + d * x3, a * y0 + b * y1 + c * y2 + d * y3))
        else:
            points.extend(xy)
    return points


def test_graph_puts_each_stage_right_of_what_it_waits_for() -> None:
    from ecod_jobs.insight.graph import layers, pipeline_graph

    assert layers(STAGES) == {"chain": 0, "domain": 0, "deep": 1, "summary": 2, "partition": 3}
    graph = pipeline_graph(STAGES)
    nodes = {n["stage"]: n for n in graph["nodes"]}
    assert list(nodes) == ["chain", "domain", "deep", "summary", "partition"]
    assert [(e["from"], e["to"]) for e in graph["edges"]] == [
        ("chain", "deep"),
        ("domain", "deep"),
        ("domain", "summary"),
        ("deep", "summary"),
        ("summary", "partition"),
    ]
    for e in graph["edges"]:
        up, down = nodes[e["from"]], nodes[e["to"]]
        assert up["x"] + up["w"] < down["x"]
        points = path_points(e["path"])
        # from the upstream box's right side to the arrow at the downstream box's left side
        assert points[0][0] == up["x"] + up["w"] and up["y"] < points[0][1] < up["y"] + up["h"]
        tip = path_points("M" + e["arrow"])[0]  # a polygon's points, its tip first
        assert tip[0] == down["x"] and down["y"] < tip[1] < down["y"] + down["h"]
        # never through another stage's box: domain -> summary goes round deep (its waypoint)
        others = [n for n in nodes.values() if n["stage"] not in (e["from"], e["to"])]
        assert not [(p, n["stage"]) for p in points for n in others if inside(*p, n)], e
    boxes = list(nodes.values())
    for i, a in enumerate(boxes):
        assert a["x"] >= 0 and a["x"] + a["w"] <= graph["width"] and a["y"] + a["h"] <= graph["height"]
        for b in boxes[i + 1 :]:
            apart = a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
            assert apart or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"], (a["stage"], b["stage"])


def test_graph_nodes_show_their_counts() -> None:
    from ecod_jobs.insight.graph import STATUS_COLOURS, pipeline_graph

    nodes = {n["stage"]: n for n in pipeline_graph(STAGES)["nodes"]}
    assert [line["text"] for line in nodes["deep"]["lines"]] == [
        "deep",
        "4 ok / 0 err / 7 skipped",
        "1 pending",
    ]
    assert [line["text"] for line in nodes["chain"]["lines"]] == ["chain", "12 ok / 0 err / 0 skipped"]
    assert nodes["partition"]["lines"][2]["text"] == "1 running / 1 pending"
    assert nodes["domain"]["failed"] and not nodes["chain"]["failed"]
    # the stacked bar: one segment per status present, in proportion, filling the bar
    deep = nodes["deep"]
    assert [(s["status"], s["count"]) for s in deep["segments"]] == [
        ("success", 4),
        ("skipped", 7),
        ("pending", 1),
    ]
    assert [s["colour"] for s in deep["segments"]] == [
        STATUS_COLOURS[s] for s in ("success", "skipped", "pending")
    ]
    assert sum(s["w"] for s in deep["segments"]) == pytest.approx(deep["bar"]["w"], abs=0.05)
    assert deep["segments"][1]["w"] == pytest.approx(deep["bar"]["w"] * 7 / 12, abs=0.01)
    # one stage alone, and an empty pipeline, still lay out
    [lone] = pipeline_graph([stage("only", [])])["nodes"]
    assert lone["segments"] == [] and lone["lines"][1]["text"] == "0 ok / 0 err / 0 skipped"
    assert pipeline_graph([]) == {"width": 24, "height": 24, "nodes": [], "edges": []}


# --------------------------------------------------------------------------- few chunks, many chunks


def completed(n: int) -> list[dict[str, Any]]:
    """``n`` completed chunks (runtime 30-49 s, 300-396 MB), one failed and one running."""
    jobs = [
        job(i, "n1", None, None, elapsed_seconds=30.0 + i % 20, max_rss_mb=300.0 + i % 97) for i in range(n)
    ]
    jobs.append(job(n, "n1", None, None, status="failed", scheduler_state="TIMEOUT", elapsed_seconds=600.0))
    jobs.append(job(n + 1, "n1", None, None, status="submitted", elapsed_seconds=None, max_rss_mb=None))
    return jobs


@pytest.mark.parametrize("n", [1, 3, figures.STRIP_MAX - 1])
def test_few_chunks_are_points(n: int) -> None:
    jobs = completed(n)
    jobs[0]["chunk_id"] = "<b>c0</b>"
    view = {"jobs": jobs, "resources": resource_fit(jobs)}
    for name, value, unit in (("runtime", "elapsed_seconds", "s"), ("memory", "max_rss_mb", "MB")):
        fig = figures.figures(view)[name]
        go.Figure(fig)
        [trace] = fig["data"]
        # one point per completed chunk, each drawn, spread across the box, over it
        assert trace["type"] == "box" and trace["orientation"] == "h"
        assert trace["boxpoints"] == "all" and trace["jitter"] > 0 and trace["pointpos"] == 0
        assert trace["x"] == [j[value] for j in jobs[:n]]
        # the mouse over a point: its chunk (escaped, as any outside text) and its value
        assert [c[0] for c in trace["customdata"]] == ["&lt;b&gt;c0&lt;/b&gt;"] + [
            j["chunk_id"] for j in jobs[1:n]
        ]
        assert trace["hoveron"] == "points"
        assert "%{customdata[0]}" in trace["hovertemplate"] and "%{x:" in trace["hovertemplate"]
        assert f"}} {unit}<extra>" in trace["hovertemplate"]


@pytest.mark.parametrize("n", [figures.STRIP_MAX, 300])
def test_many_chunks_are_a_histogram(n: int) -> None:
    jobs = completed(n)
    view = {"jobs": jobs, "resources": resource_fit(jobs)}
    for name in ("runtime", "memory"):
        fig = figures.figures(view)[name]
        go.Figure(fig)
        [trace] = fig["data"]
        assert trace["type"] == "histogram" and len(trace["x"]) == n
        assert fig["layout"]["yaxis"]["title"]["text"] == "chunks"
