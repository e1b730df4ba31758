"""The plots and the resource advice, from hand-made job lists (no database needed)."""

from __future__ import annotations

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
