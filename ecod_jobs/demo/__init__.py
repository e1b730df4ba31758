"""The demo: real protein sequences and Pfam HMMs shipped in the pyhmmer wheel."""

from __future__ import annotations

from pathlib import Path

PROTEOME = "938293.PRJEB85.HG003687.faa"
# Protein profile HMMs among pyhmmer's test data (RF00001 is an RNA model: left out).
PROTEIN_HMMS = ("txt/PF02826.hmm", "txt/KR.hmm", "txt/LuxC.hmm", "db/Thioesterase.hmm", "db/RREFam.hmm")
# The demo pipeline's "chain library" (reference chains), written by `prepare --library-every N`
# into the demo directory, beside sequences/.
CHAIN_LIBRARY = "chain_library.fa"


def pyhmmer_data() -> Path:
    """pyhmmer's bundled test data directory (needs the ``demo`` extra)."""
    try:
        import pyhmmer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit("the demo needs pyhmmer: pip install 'ecod-jobs[demo]'") from exc
    return Path(pyhmmer.__file__).parent / "tests" / "data"


def proteome_path() -> Path:
    return pyhmmer_data() / "seqs" / PROTEOME


def hmm_paths() -> list[Path]:
    base = pyhmmer_data() / "hmms"
    return [base / rel for rel in PROTEIN_HMMS]


def chain_library_path(demo_dir: Path) -> Path:
    """Where ``prepare --library-every N --out DEMO_DIR`` writes the chain library."""
    return demo_dir / CHAIN_LIBRARY
