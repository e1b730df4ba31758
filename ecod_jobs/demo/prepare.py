"""Write one FASTA file per protein of the demo proteome and an items TSV for them.

    python -m ecod_jobs.demo.prepare --out DIR [--limit N] [--library-every K]

Prints the items file path. Deterministic: the first N proteins in file order.
With ``--library-every K`` it also writes DIR/chain_library.fa, the demo pipeline's
library of reference chains: every K-th protein of the whole proteome (the 1st,
(K+1)-th, ...), whatever ``--limit`` is.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..layout import write_atomic
from . import chain_library_path, proteome_path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def read_fasta(path: Path) -> list[tuple[str, str]]:
    records: list[tuple[str, list[str]]] = []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            records.append((line[1:].strip(), []))
        elif records and line.strip():
            records[-1][1].append(line.strip())
    return [(header, "".join(seq)) for header, seq in records]


def prepare(out: Path, limit: int | None, representatives: bool = False) -> Path:
    """``representatives``: add an ``is_representative`` column (every 4th protein is a
    cluster member, false; the pipeline's gated search runs for representatives only)."""
    records = read_fasta(proteome_path())
    if limit is not None:
        records = records[:limit]
    seq_dir = out / "sequences"
    seq_dir.mkdir(parents=True, exist_ok=True)
    lines = ["path\tprotein_id" + ("\tis_representative" if representatives else "")]
    for number, (header, sequence) in enumerate(records, start=1):
        name = _UNSAFE.sub("_", header.split()[0])
        fasta = seq_dir / f"{name}.fa"
        body = "\n".join(sequence[i : i + 60] for i in range(0, len(sequence), 60))
        fasta.write_text(f">{header}\n{body}\n")
        flag = f"\t{'false' if number % 4 == 0 else 'true'}" if representatives else ""
        lines.append(f"sequences/{fasta.name}\t{number}{flag}")
    items = out / "items.tsv"
    items.write_text("\n".join(lines) + "\n")
    return items


def write_chain_library(out: Path, every: int) -> Path:
    """DIR/chain_library.fa: every ``every``-th protein of the proteome, named by its id."""
    if every < 1:
        raise ValueError(f"--library-every must be at least 1, not {every}")
    chunks = []
    for header, sequence in read_fasta(proteome_path())[::every]:
        body = "\n".join(sequence[i : i + 60] for i in range(0, len(sequence), 60))
        chunks.append(f">{header.split()[0]}\n{body}\n")
    library = chain_library_path(out)
    write_atomic(library, "".join(chunks), mode=0o644)
    return library


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None, help="first N proteins (default all 2,100)")
    parser.add_argument(
        "--library-every",
        type=int,
        default=None,
        metavar="K",
        help="also write DIR/chain_library.fa: every K-th protein of the proteome (the demo pipeline's)",
    )
    parser.add_argument(
        "--representatives",
        action="store_true",
        help="add an is_representative column (false for every 4th protein)",
    )
    args = parser.parse_args()
    if args.library_every is not None and args.library_every < 1:
        parser.error("--library-every must be at least 1")
    items = prepare(args.out, args.limit, representatives=args.representatives)
    if args.library_every is not None:
        write_chain_library(args.out, args.library_every)
    print(items)


if __name__ == "__main__":
    main()
