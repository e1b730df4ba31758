"""Combine one protein's search results into one summary (JSON): the pipeline's fan-in.

    python -m ecod_jobs.demo.summary --fasta P.fa --chain P.chain.tsv --domain P.domain.tsv
        --deep P.deep.tsv --out P.summary.json

Reads chain_search's and domain_search's outputs (both required) and deep_search's if
its file exists: the gate may have left the protein out of that stage, and then the
summary says ``"blast_only": true``, like ECOD's summaries of chains that never went
to HHsearch. Lists every hit region as a candidate domain for ``partition``, ordered
by source (domain_search, chain_search, deep_search), then score. Metrics: ``sources``
(inputs used, 2 or 3), ``domains`` (candidate domains listed) and ``blast_only``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..layout import write_atomic
from .common import HIT_COLUMNS, BadInput, coverage, read_query, read_tsv, report_metrics, run, text
from .domain_scan import COLUMNS as DOMAIN_COLUMNS

# The order in which partition considers candidates: family models first, then
# reference chains, then the iterative search's remote homologs.
SOURCES = ("domain_search", "chain_search", "deep_search")


# Which columns of each source's TSV make a candidate: label, start, end, score, evalue.
FIELDS = {
    "domain_search": ("hmm", "env_from", "env_to", "score", "evalue"),
    "chain_search": ("target", "query_from", "query_to", "dom_score", "dom_evalue"),
    "deep_search": ("target", "query_from", "query_to", "dom_score", "dom_evalue"),
}


def _candidates(source: str, rows: list[dict[str, str]], path: Path, query: str) -> list[dict[str, Any]]:
    what = f"{source} output {path}"
    label_key, start_key, end_key, score_key, evalue_key = FIELDS[source]
    found = []
    for row in rows:
        if row["query"] != query:
            raise BadInput(f"{what} is about {row['query']!r}, not {query!r}")
        try:
            start, end = int(row[start_key]), int(row[end_key])
            score, evalue = float(row[score_key]), float(row[evalue_key])
        except ValueError as exc:
            raise BadInput(f"{what}: {exc}") from None
        if not 1 <= start <= end:
            raise BadInput(f"{what}: range {start}-{end} of {row[label_key]} is not a residue range")
        found.append(
            {
                "source": source,
                "label": row[label_key],
                "start": start,
                "end": end,
                "score": score,
                "evalue": evalue,
            }
        )
    return found


def summarize(fasta: Path, chain: Path, domain: Path, deep: Path) -> dict[str, Any]:
    query = read_query(fasta)
    name, length = text(query.name), len(query)
    inputs: dict[str, Path | None] = {"chain_search": chain, "domain_search": domain}
    inputs["deep_search"] = deep if deep.exists() else None
    candidates: list[dict[str, Any]] = []
    hits: dict[str, int | None] = {}
    covered: dict[str, float | None] = {}
    for source in SOURCES:
        path = inputs[source]
        if path is None:
            hits[source] = covered[source] = None
            continue
        columns = DOMAIN_COLUMNS if source == "domain_search" else HIT_COLUMNS
        rows = read_tsv(path, columns, f"{source} output")
        found = _candidates(source, rows, path, name)
        hits[source] = len(rows) if source == "domain_search" else len({r["target"] for r in rows})
        covered[source] = round(coverage(((c["start"], c["end"]) for c in found), length), 4)
        candidates.extend(sorted(found, key=lambda c: (-c["score"], c["start"], c["end"], c["label"])))
    for c in candidates:
        if c["end"] > length:
            raise BadInput(f"{c['source']} output: {c['label']} ends at {c['end']}, past residue {length}")
    return {
        "query": name,
        "length": length,
        "sources": [s for s in SOURCES if inputs[s] is not None],
        "blast_only": inputs["deep_search"] is None,
        "inputs": {s: (str(p) if p is not None else None) for s, p in inputs.items()},
        "hits": hits,
        "coverage": covered,
        "candidates": candidates,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="summary", description=__doc__.splitlines()[0])
    parser.add_argument("--fasta", type=Path, required=True, help="the protein (one sequence)")
    parser.add_argument("--chain", type=Path, required=True, help="chain_search's output (TSV)")
    parser.add_argument("--domain", type=Path, required=True, help="domain_search's output (TSV)")
    parser.add_argument("--deep", type=Path, required=True, help="deep_search's output (TSV), if it ran")
    parser.add_argument("--out", type=Path, required=True, help="the summary (JSON), written atomically")
    args = parser.parse_args(argv)

    def body() -> int:
        summary = summarize(args.fasta, args.chain, args.domain, args.deep)
        write_atomic(args.out, json.dumps(summary, indent=1) + "\n", mode=0o644)
        metrics = {
            "sources": len(summary["sources"]),
            "domains": len(summary["candidates"]),
            "blast_only": summary["blast_only"],
        }
        report_metrics(metrics)
        print(
            f"{args.fasta.name}: {metrics['domains']} candidate domains from {', '.join(summary['sources'])}"
        )
        return 0

    return run(parser.prog, body)


if __name__ == "__main__":
    sys.exit(main())
