"""Search one protein against the demo's Pfam HMMs (hmmscan) and write its domains (TSV).

    python -m ecod_jobs.demo.domain_search --fasta P.fa --out P.tsv [--cpus N] [--evalue 1e-5]

The demo pipeline's second search, independent of chain_search (like ECOD's domain
BLAST): ``domain_scan.scan`` on one protein, its columns (``domain_scan.COLUMNS``).
Metrics: ``domains`` (domains listed) and ``coverage`` (fraction of the query's residues
inside their envelopes, 0..1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (
    BadInput,
    coverage,
    positive_float,
    positive_int,
    read_query,
    report_metrics,
    run,
    write_tsv,
)
from .domain_scan import COLUMNS, scan

ENV_FROM, ENV_TO = COLUMNS.index("env_from"), COLUMNS.index("env_to")


def search(fasta: Path, cpus: int, evalue: float) -> tuple[list[tuple[object, ...]], dict[str, int | float]]:
    query = read_query(fasta)  # checks the file first: one protein
    try:
        rows = scan(fasta, cpus, evalue)
    except (OSError, ValueError, EOFError) as exc:
        raise BadInput(f"{fasta}: {exc}") from None
    # hmmscan lists domains by model; sort them along the sequence, whatever the model order
    rows.sort(key=lambda r: (int(str(r[ENV_FROM])), int(str(r[ENV_TO])), str(r[1])))
    ranges = ((int(str(r[ENV_FROM])), int(str(r[ENV_TO]))) for r in rows)
    return rows, {"domains": len(rows), "coverage": round(coverage(ranges, len(query)), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="domain_search", description=__doc__.splitlines()[0])
    parser.add_argument("--fasta", type=Path, required=True, help="the protein (one sequence)")
    parser.add_argument("--out", type=Path, required=True, help="the domains (TSV), written atomically")
    parser.add_argument("--cpus", type=positive_int, default=1)
    parser.add_argument("--evalue", type=positive_float, default=1e-5, help="reporting E-value (1e-5)")
    args = parser.parse_args(argv)

    def body() -> int:
        rows, metrics = search(args.fasta, args.cpus, args.evalue)
        write_tsv(args.out, COLUMNS, rows)
        report_metrics(metrics)
        print(f"{args.fasta.name}: {metrics['domains']} domains, coverage {metrics['coverage']}")
        return 0

    return run(parser.prog, body)


if __name__ == "__main__":
    sys.exit(main())
