"""Search one protein iteratively against the chain library (jackhmmer) and write its hits (TSV).

    python -m ecod_jobs.demo.deep_search --fasta P.fa --library chain_library.fa --out P.tsv
        [--cpus N] [--iterations 3] [--evalue 1e-3]

The demo pipeline's expensive, gated search (like ECOD's HHsearch, run only for chains
the cheaper searches left poorly covered): up to --iterations rounds of jackhmmer, each
building a profile from the hits included so far. Writes the last round's included hits
(common.HIT_COLUMNS). Metrics: ``hits``, ``iterations`` (rounds run) and ``converged``
(true when a round included no new hit before the limit).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (
    HIT_COLUMNS,
    HitRow,
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


def search(
    fasta: Path, library: Path, cpus: int, iterations: int, evalue: float
) -> tuple[list[HitRow], dict[str, int | bool]]:
    import pyhmmer

    query = read_query(fasta)
    targets = read_library(library)
    [result] = pyhmmer.hmmer.jackhmmer(
        [query], targets, max_iterations=iterations, cpus=cpus, incE=evalue, incdomE=evalue
    )
    rows, count = hit_rows(text(query.name), result.hits, len(query))
    return rows, {"hits": count, "iterations": result.iteration, "converged": bool(result.converged)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deep_search", description=__doc__.splitlines()[0])
    parser.add_argument("--fasta", type=Path, required=True, help="the protein (one sequence)")
    parser.add_argument("--library", type=Path, required=True, help="the chain library (FASTA)")
    parser.add_argument("--out", type=Path, required=True, help="the hits (TSV), written atomically")
    parser.add_argument("--cpus", type=positive_int, default=1)
    parser.add_argument("--iterations", type=positive_int, default=3, help="at most this many rounds (3)")
    parser.add_argument("--evalue", type=positive_float, default=1e-3, help="inclusion E-value (1e-3)")
    args = parser.parse_args(argv)

    def body() -> int:
        rows, metrics = search(args.fasta, args.library, args.cpus, args.iterations, args.evalue)
        write_tsv(args.out, HIT_COLUMNS, rows)
        report_metrics(metrics)
        print(f"{args.fasta.name}: {metrics['hits']} hits after {metrics['iterations']} iterations")
        return 0

    return run(parser.prog, body)


if __name__ == "__main__":
    sys.exit(main())
