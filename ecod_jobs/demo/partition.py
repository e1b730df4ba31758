"""Cut one protein into domains from its summary and write their boundaries (TSV).

    python -m ecod_jobs.demo.partition --summary P.summary.json --out P.partition.tsv [--min-length 25]

The demo pipeline's last step, like ECOD's domain partition: greedy over the summary's
candidate domains in its order (source, then score); each takes the stretches of its
range that no earlier one took, those of at least --min-length residues becoming domains.
Writes the domains and the unassigned stretches between them along the sequence.
Metrics: ``domains`` and ``assigned`` (fraction of residues in a domain, 0..1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .common import BadInput, positive_int, report_metrics, run, write_tsv

COLUMNS = ("query", "kind", "number", "start", "end", "length", "source", "label", "score")


def _free_stretches(taken: list[bool], start: int, end: int) -> list[tuple[int, int]]:
    """Maximal runs of residues among start..end (1-based, inclusive) not taken yet."""
    runs: list[tuple[int, int]] = []
    begin = None
    for residue in range(start, end + 1):
        if not taken[residue - 1]:
            if begin is None:
                begin = residue
        elif begin is not None:
            runs.append((begin, residue - 1))
            begin = None
    if begin is not None:
        runs.append((begin, end))
    return runs


def read_summary(path: Path) -> tuple[str, int, list[dict[str, Any]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"summary {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"summary {path} is not a JSON file: {exc}") from None
    try:
        query, length, candidates = data["query"], data["length"], data["candidates"]
        if not isinstance(query, str) or not isinstance(length, int) or length < 1:
            raise TypeError("query or length")
        for c in candidates:
            start, end = c["start"], c["end"]
            if not (isinstance(start, int) and isinstance(end, int) and 1 <= start <= end <= length):
                raise TypeError(f"range {start}-{end} of a {length}-residue protein")
            float(c["score"])
            str(c["source"]), str(c["label"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{path} is not a summary written by ecod_jobs.demo.summary ({exc})") from None
    return query, length, candidates


def partition(
    query: str, length: int, candidates: list[dict[str, Any]], min_length: int
) -> tuple[list[tuple[object, ...]], dict[str, int | float]]:
    """(COLUMNS rows along the sequence, metrics)."""
    taken = [False] * length
    domains: list[tuple[int, int, dict[str, Any]]] = []
    for candidate in candidates:
        for start, end in _free_stretches(taken, candidate["start"], candidate["end"]):
            if end - start + 1 >= min_length:
                domains.append((start, end, candidate))
                taken[start - 1 : end] = [True] * (end - start + 1)
    domains.sort(key=lambda d: d[0])
    rows: list[tuple[int, tuple[object, ...]]] = []
    for number, (start, end, c) in enumerate(domains, start=1):
        row = (query, "domain", number, start, end, end - start + 1, c["source"], c["label"], c["score"])
        rows.append((start, row))
    for start, end in _free_stretches(taken, 1, length):
        rows.append((start, (query, "unassigned", "-", start, end, end - start + 1, "-", "-", "-")))
    metrics = {"domains": len(domains), "assigned": round(sum(taken) / length, 4)}
    return [row for _, row in sorted(rows, key=lambda r: r[0])], metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="partition", description=__doc__.splitlines()[0])
    parser.add_argument("--summary", type=Path, required=True, help="summary's output (JSON)")
    parser.add_argument("--out", type=Path, required=True, help="the domains (TSV), written atomically")
    parser.add_argument("--min-length", type=positive_int, default=25, help="shortest domain (25 residues)")
    args = parser.parse_args(argv)

    def body() -> int:
        query, length, candidates = read_summary(args.summary)
        rows, metrics = partition(query, length, candidates, args.min_length)
        write_tsv(args.out, COLUMNS, rows)
        report_metrics(metrics)
        print(f"{query}: {metrics['domains']} domains, {metrics['assigned']:.0%} of {length} residues")
        return 0

    return run(parser.prog, body)


if __name__ == "__main__":
    sys.exit(main())
