"""Write one FASTA file per protein of the demo proteome and an items TSV for them.

    python -m ecod_jobs.demo.prepare --out DIR [--limit N]

Prints the items file path. Deterministic: the first N proteins in file order.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from . import proteome_path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def read_fasta(path: Path) -> list[tuple[str, str]]:
    records: list[tuple[str, list[str]]] = []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            records.append((line[1:].strip(), []))
        elif records and line.strip():
            records[-1][1].append(line.strip())
    return [(header, "".join(seq)) for header, seq in records]


def prepare(out: Path, limit: int | None) -> Path:
    records = read_fasta(proteome_path())
    if limit is not None:
        records = records[:limit]
    seq_dir = out / "sequences"
    seq_dir.mkdir(parents=True, exist_ok=True)
    lines = ["path\tprotein_id"]
    for number, (header, sequence) in enumerate(records, start=1):
        name = _UNSAFE.sub("_", header.split()[0])
        fasta = seq_dir / f"{name}.fa"
        body = "\n".join(sequence[i : i + 60] for i in range(0, len(sequence), 60))
        fasta.write_text(f">{header}\n{body}\n")
        lines.append(f"sequences/{fasta.name}\t{number}")
    items = out / "items.tsv"
    items.write_text("\n".join(lines) + "\n")
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None, help="first N proteins (default all 2,100)")
    args = parser.parse_args()
    print(prepare(args.out, args.limit))


if __name__ == "__main__":
    main()
