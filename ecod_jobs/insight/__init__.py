"""Seeing a batch: the HTML report and the read-only web dashboard.

    data.py       what both show, read from PostgreSQL as JSON-ready dicts
    figures.py    the plots (Plotly figures built from those dicts)
    graph.py      a pipeline's stage graph, laid out as shapes that view.js draws as SVG
    report.py     ``ecod-jobs report``: one self-contained HTML file
    dashboard.py  ``ecod-jobs dashboard``: the page and its JSON API
    item_logs.py  one item's attempts and output (``ecod-jobs logs``, the dashboard's item page)

Every query here is bounded (counts come from the trigger-kept count table,
lists have limits), so the dashboard answers in constant time on a batch of a
million items; the one exception is the per-stage counts of a batch that ran a
pipeline (see ``data.stage_view``).
"""
