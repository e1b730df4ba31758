"""Search one protein against the demo's Pfam HMMs and write its domain hits (TSV).

    python -m ecod_jobs.demo.domain_scan --fasta P.fa --out P.domains.tsv [--cpus N] [--evalue 1e-5]

The demo's stand-in for an ECOD stage: a real profile-HMM search (HMMER3 via
pyhmmer) on real proteins. Writes the output atomically; exits 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..layout import write_atomic
from . import hmm_paths

COLUMNS = ("query", "hmm", "accession", "evalue", "score", "env_from", "env_to", "ali_from", "ali_to")


def load_hmms() -> list:
    import pyhmmer

    hmms = []
    for path in hmm_paths():
        with pyhmmer.plan7.HMMFile(path) as handle:
            hmms.extend(handle)
    return hmms


def scan(fasta: Path, cpus: int, evalue: float) -> list[tuple[object, ...]]:
    import pyhmmer

    alphabet = pyhmmer.easel.Alphabet.amino()
    with pyhmmer.easel.SequenceFile(fasta, digital=True, alphabet=alphabet) as handle:
        sequences = handle.read_block()
    if len(sequences) == 0:
        raise ValueError(f"{fasta}: no sequences")
    rows: list[tuple[object, ...]] = []
    for hits in pyhmmer.hmmer.hmmscan(sequences, load_hmms(), cpus=cpus, E=evalue):
        query = hits.query.name.decode() if isinstance(hits.query.name, bytes) else str(hits.query.name)
        for hit in hits:
            if not hit.included:
                continue
            name = hit.name.decode() if isinstance(hit.name, bytes) else str(hit.name)
            acc = hit.accession.decode() if isinstance(hit.accession, bytes) else (hit.accession or "")
            for dom in hit.domains.included:
                rows.append(
                    (
                        query,
                        name,
                        acc,
                        f"{dom.i_evalue:.3g}",
                        f"{dom.score:.1f}",
                        dom.env_from,
                        dom.env_to,
                        dom.alignment.target_from,
                        dom.alignment.target_to,
                    )
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fasta", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--evalue", type=float, default=1e-5)
    args = parser.parse_args(argv)
    try:
        rows = scan(args.fasta, args.cpus, args.evalue)
    except (OSError, ValueError, EOFError) as exc:
        print(f"domain_scan: {exc}", file=sys.stderr)
        return 2
    lines = ["\t".join(COLUMNS)] + ["\t".join(map(str, row)) for row in rows]
    write_atomic(args.out, "\n".join(lines) + "\n")
    print(f"{args.fasta.name}: {len(rows)} domain hits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
