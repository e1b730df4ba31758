"""What the demo pipeline's commands share: reading their inputs, TSV files, coverage, metrics.

Every command reads explicit paths, writes its one output with ``layout.write_atomic``,
exits 2 with a one-line message on bad input (``BadInput``), and reports its numbers as
``KEY=VALUE`` lines appended to the file named by ``$ECOD_JOBS_METRICS`` (nothing when unset).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..layout import write_atomic

if TYPE_CHECKING:
    import pyhmmer

METRICS_ENV = "ECOD_JOBS_METRICS"

# One row per included domain (HSP) of an included hit: chain_search and deep_search.
# query_from/query_to are query residues (1-based, inclusive); for phmmer and jackhmmer
# the profile is built from the query, so its match states are the query's residues.
HIT_COLUMNS = (
    "query",
    "target",
    "evalue",
    "score",
    "dom_evalue",
    "dom_score",
    "query_from",
    "query_to",
    "target_from",
    "target_to",
)
HitRow = tuple[str, str, str, str, str, str, int, int, int, int]


class BadInput(Exception):
    """An input the command cannot use: reported on one line, exit status 2."""


def text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_block(path: Path, what: str) -> pyhmmer.easel.DigitalSequenceBlock:
    import pyhmmer

    alphabet = pyhmmer.easel.Alphabet.amino()
    try:
        with pyhmmer.easel.SequenceFile(path, digital=True, alphabet=alphabet, format="fasta") as handle:
            block = handle.read_block()
    except FileNotFoundError:
        raise BadInput(f"{what} {path} does not exist") from None
    except EOFError:
        raise BadInput(f"{what} {path} is empty") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{what} {path} is not a protein FASTA file: {exc}") from None
    if len(block) == 0:
        raise BadInput(f"{what} {path} holds no sequence")
    for sequence in block:
        if len(sequence) == 0:
            raise BadInput(f"{what} {path}: sequence {text(sequence.name)!r} is empty")
    return block


def read_query(path: Path) -> pyhmmer.easel.DigitalSequence:
    """The one protein of an item's FASTA file."""
    block = _read_block(path, "FASTA file")
    if len(block) != 1:
        raise BadInput(f"FASTA file {path} holds {len(block)} sequences; one protein per file, please")
    return block[0]


def read_library(path: Path) -> pyhmmer.easel.DigitalSequenceBlock:
    """The chain library (reference chains) as one in-memory block, searched as it is."""
    return _read_block(path, "chain library")


def coverage(ranges: Iterable[tuple[int, int]], length: int) -> float:
    """Fraction of residues 1..length inside at least one of the 1-based inclusive ranges."""
    if length <= 0:
        return 0.0
    covered = [False] * length
    for start, end in ranges:
        for i in range(max(start, 1) - 1, min(end, length)):
            covered[i] = True
    return sum(covered) / length


def hit_rows(query: str, hits: pyhmmer.plan7.TopHits, length: int) -> tuple[list[HitRow], int]:
    """(HIT_COLUMNS rows, number of hits) of a phmmer or jackhmmer search's included hits,
    in a fixed order: best hit first (score, then name), its domains along the query.
    Query positions are clipped to 1..length (a jackhmmer round's profile could differ)."""
    included = sorted((h for h in hits if h.included), key=lambda h: (-h.score, text(h.name)))
    rows: list[HitRow] = []
    for hit in included:
        domains = sorted(hit.domains.included, key=lambda d: (d.alignment.hmm_from, d.alignment.hmm_to))
        for dom in domains:
            ali = dom.alignment
            rows.append(
                (
                    query,
                    text(hit.name),
                    f"{hit.evalue:.3g}",
                    f"{hit.score:.1f}",
                    f"{dom.i_evalue:.3g}",
                    f"{dom.score:.1f}",
                    min(max(ali.hmm_from, 1), length),
                    min(max(ali.hmm_to, 1), length),
                    ali.target_from,
                    ali.target_to,
                )
            )
    return rows, len(included)


def write_tsv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    lines = ["\t".join(columns)] + ["\t".join(map(str, row)) for row in rows]
    write_atomic(path, "\n".join(lines) + "\n", mode=0o644)


def read_tsv(path: Path, columns: Sequence[str], what: str) -> list[dict[str, str]]:
    """The rows of a TSV file this package wrote, checked against its header."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BadInput(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {what} {path}: {exc}") from None
    if not lines or lines[0].split("\t") != list(columns):
        raise BadInput(f"{what} {path} does not start with the header {' '.join(columns)}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise BadInput(f"{what} {path}, line {number}: {len(fields)} fields, not {len(columns)}")
        rows.append(dict(zip(columns, fields, strict=True)))
    return rows


def _metric_value(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"metric value {value} is not finite")
        return f"{value:.6g}"
    return str(value)


def report_metrics(values: Mapping[str, bool | int | float | str]) -> None:
    """Append ``KEY=VALUE`` lines to ``$ECOD_JOBS_METRICS``; nothing when it is unset or empty."""
    path = os.environ.get(METRICS_ENV)
    if not path:
        return
    lines = "".join(f"{key}={_metric_value(value)}\n" for key, value in values.items())
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(lines)


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if not (number > 0 and math.isfinite(number)):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {value}")
    return number


def run(prog: str, body: Callable[[], int]) -> int:
    """Run a command's body: bad input -> its message on stderr and exit status 2."""
    try:
        return body()
    except BadInput as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
