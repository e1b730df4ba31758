"""Search one protein against the chain library (phmmer) and write its hits (TSV).

    python -m ecod_jobs.demo.chain_search --fasta P.fa --library chain_library.fa --out P.tsv
        [--cpus N] [--evalue 1e-3]

The demo pipeline's first search, like ECOD's chain BLAST against classified chains:
one row per aligned region (domain) of each hit with E-value <= --evalue
(common.HIT_COLUMNS). Metrics: ``hits`` (hits listed), ``best_evalue`` (the smallest
E-value of any reported hit, whether listed or not; 10, phmmer's reporting threshold,
when none is reported) and ``coverage`` (fraction of the query's residues inside the
listed alignments, 0..1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (
    HIT_COLUMNS,
    HitRow,
    coverage,
    hit_rows,
    positive_float,
    positive_int,
    read_library,
    read_query,
    report_metrics,
    run,
    text,
    write_tsv,
)

REPORT_EVALUE = 10.0  # phmmer's default reporting threshold (-E)


def search(
    fasta: Path, library: Path, cpus: int, evalue: float
) -> tuple[list[HitRow], dict[str, int | float]]:
    import pyhmmer

    query = read_query(fasta)
    targets = read_library(library)
    [hits] = pyhmmer.hmmer.phmmer(
        [query], targets, cpus=cpus, E=REPORT_EVALUE, incE=evalue, domE=REPORT_EVALUE, incdomE=evalue
    )
    rows, count = hit_rows(text(query.name), hits, len(query))
    best = min((h.evalue for h in hits), default=REPORT_EVALUE)
    metrics = {
        "hits": count,
        "best_evalue": best,
        "coverage": round(coverage(((r[6], r[7]) for r in rows), len(query)), 4),
    }
    return rows, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chain_search", description=__doc__.splitlines()[0])
    parser.add_argument("--fasta", type=Path, required=True, help="the protein (one sequence)")
    parser.add_argument("--library", type=Path, required=True, help="the chain library (FASTA)")
    parser.add_argument("--out", type=Path, required=True, help="the hits (TSV), written atomically")
    parser.add_argument("--cpus", type=positive_int, default=1)
    parser.add_argument("--evalue", type=positive_float, default=1e-3, help="inclusion E-value (1e-3)")
    args = parser.parse_args(argv)

    def body() -> int:
        rows, metrics = search(args.fasta, args.library, args.cpus, args.evalue)
        write_tsv(args.out, HIT_COLUMNS, rows)
        report_metrics(metrics)
        print(f"{args.fasta.name}: {metrics['hits']} chain hits, coverage {metrics['coverage']}")
        return 0

    return run(parser.prog, body)


if __name__ == "__main__":
    sys.exit(main())
