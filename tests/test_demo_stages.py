"""The demo pipeline's commands (ecod_jobs/demo/) on real proteins: outputs, metrics, bad input.

Each command runs as the chunk runner runs it, ``python -m ecod_jobs.demo.X`` in a
subprocess with ``$ECOD_JOBS_METRICS`` set, except the partition's pure logic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

pytest.importorskip("pyhmmer")

from ecod_jobs.demo import chain_library_path, proteome_path
from ecod_jobs.demo.common import HIT_COLUMNS
from ecod_jobs.demo.partition import partition
from ecod_jobs.demo.prepare import prepare, read_fasta, write_chain_library

SELF = "938293.PRJEB85.HG003688_1"  # the proteome's first protein: in the library (every 5th)
KR = "938293.PRJEB85.HG003688_10"  # one KR domain (Pfam), no chain hit
PARALOG = "938293.PRJEB85.HG003688_3"  # not in the library; paralogs in it, jackhmmer runs 3 rounds


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    prepare(out, limit=12)
    write_chain_library(out, 5)
    return out


def fasta(demo: Path, name: str) -> Path:
    return demo / "sequences" / f"{name}.fa"


def run_stage(
    module: str, *args: object, cwd: Path, metrics: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ECOD_JOBS_METRICS"}
    if metrics is not None:
        env["ECOD_JOBS_METRICS"] = str(metrics)
    return subprocess.run(
        [sys.executable, "-m", f"ecod_jobs.demo.{module}", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def read_metrics(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines (the design's protocol), values as written."""
    pairs = [line.split("=", 1) for line in path.read_text().splitlines() if line.strip()]
    return dict(pairs)


def tsv(path: Path) -> list[dict[str, str]]:
    header, *rows = (line.split("\t") for line in path.read_text().splitlines())
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_prepare_writes_the_chain_library_only_when_asked(demo: Path, tmp_path: Path) -> None:
    prepare(tmp_path, limit=3)
    assert not chain_library_path(tmp_path).exists()  # the existing callers' output is unchanged
    names = [line[1:] for line in chain_library_path(demo).read_text().splitlines() if line.startswith(">")]
    proteome = [header.split()[0] for header, _ in read_fasta(proteome_path())]
    assert names == proteome[::5] and len(names) == 420
    assert names[0] == SELF


def test_chain_search_finds_the_protein_itself_in_the_library(demo: Path, tmp_path: Path) -> None:
    metrics, out = tmp_path / "metrics", tmp_path / "search" / "chain" / f"{SELF}.tsv"
    library = chain_library_path(demo)
    proc = run_stage(
        "chain_search", "--fasta", fasta(demo, SELF), "--library", library, "--out", out, "--cpus", 1,
        cwd=tmp_path, metrics=metrics,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().splitlines()[0].split("\t") == list(HIT_COLUMNS)
    [row] = tsv(out)
    assert row["query"] == row["target"] == SELF and row["query_from"] == "1"
    got = read_metrics(metrics)
    assert set(got) == {"hits", "best_evalue", "coverage"}
    assert got["hits"] == "1" and float(got["best_evalue"]) < 1e-50 and 0.9 <= float(got["coverage"]) <= 1


def test_chain_search_output_is_the_same_on_more_cpus(demo: Path, tmp_path: Path) -> None:
    outs = []
    for cpus in (1, 2):
        out = tmp_path / f"{cpus}.tsv"
        proc = run_stage(
            "chain_search", "--fasta", fasta(demo, PARALOG), "--library", chain_library_path(demo),
            "--out", out, "--cpus", cpus, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert len(tsv(tmp_path / "1.tsv")) > 5  # paralogs, several aligned regions each
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.tsv", "2.tsv"]  # no metrics file: unset


def test_domain_search_reports_domains_and_their_coverage(demo: Path, tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    for name in (KR, SELF):
        proc = run_stage(
            "domain_search", "--fasta", fasta(demo, name), "--out", tmp_path / f"{name}.tsv",
            cwd=tmp_path, metrics=metrics,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    [row] = tsv(tmp_path / f"{KR}.tsv")
    assert row["hmm"] == "KR" and row["query"] == KR
    assert tsv(tmp_path / f"{SELF}.tsv") == []
    # two commands appended to one file: KR's lines, then SELF's
    assert metrics.read_text().splitlines() == ["domains=1", "coverage=0.996", "domains=0", "coverage=0"]


def test_deep_search_iterates(demo: Path, tmp_path: Path) -> None:
    metrics, out = tmp_path / "metrics", tmp_path / "deep.tsv"
    proc = run_stage(
        "deep_search", "--fasta", fasta(demo, PARALOG), "--library", chain_library_path(demo),
        "--out", out, "--iterations", 3, cwd=tmp_path, metrics=metrics,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = read_metrics(metrics)
    assert got == {"hits": got["hits"], "iterations": "3", "converged": "false"}
    rows = tsv(out)
    assert int(got["hits"]) == len({r["target"] for r in rows}) >= 15
    assert all(1 <= int(r["query_from"]) <= int(r["query_to"]) for r in rows)


def searched(demo: Path, work: Path, name: str, deep: bool) -> dict[str, Path]:
    """The three searches' outputs for one protein (deep_search's only if ``deep``)."""
    work.mkdir(parents=True, exist_ok=True)
    paths = {s: work / s / f"{name}.tsv" for s in ("chain", "domain", "deep")}
    library = chain_library_path(demo)
    runs = [
        ("chain_search", "--library", library, "--out", paths["chain"]),
        ("domain_search", "--out", paths["domain"]),
    ]
    if deep:
        runs.append(("deep_search", "--library", library, "--out", paths["deep"]))
    for module, *args in runs:
        proc = run_stage(module, "--fasta", fasta(demo, name), *args, cwd=work)
        assert proc.returncode == 0, proc.stderr
    return paths


def summarize(demo: Path, work: Path, name: str, paths: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    return run_stage(
        "summary", "--fasta", fasta(demo, name), "--chain", paths["chain"], "--domain", paths["domain"],
        "--deep", paths["deep"], "--out", work / "domains" / f"{name}.summary.json",
        cwd=work, metrics=work / "metrics",
    )  # fmt: skip


def test_summary_and_partition_with_all_three_searches(demo: Path, tmp_path: Path) -> None:
    paths = searched(demo, tmp_path, PARALOG, deep=True)
    proc = summarize(demo, tmp_path, PARALOG, paths)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "domains" / f"{PARALOG}.summary.json").read_text())
    assert summary["query"] == PARALOG and summary["blast_only"] is False
    assert summary["sources"] == ["domain_search", "chain_search", "deep_search"]
    assert {c["source"] for c in summary["candidates"]} == {"chain_search", "deep_search"}
    got = read_metrics(tmp_path / "metrics")
    assert got == {"sources": "3", "domains": str(len(summary["candidates"])), "blast_only": "false"}

    (tmp_path / "metrics").unlink()
    out = tmp_path / "domains" / f"{PARALOG}.partition.tsv"
    proc = run_stage(
        "partition", "--summary", tmp_path / "domains" / f"{PARALOG}.summary.json", "--out", out,
        cwd=tmp_path, metrics=tmp_path / "metrics",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = tsv(out)
    domains = [r for r in rows if r["kind"] == "domain"]
    assert domains and domains[0]["source"] == "chain_search"  # chain hits come before deep hits
    # the rows tile the sequence: no overlap, no hole
    assert [int(r["start"]) for r in rows] == [1] + [int(r["end"]) + 1 for r in rows[:-1]]
    assert int(rows[-1]["end"]) == summary["length"]
    assigned = sum(int(r["length"]) for r in domains) / summary["length"]
    got = read_metrics(tmp_path / "metrics")
    assert got == {"domains": str(len(domains)), "assigned": f"{round(assigned, 4):.6g}"}


def test_summary_without_deep_search_is_blast_only(demo: Path, tmp_path: Path) -> None:
    paths = searched(demo, tmp_path, KR, deep=False)
    assert not paths["deep"].exists()  # gated out
    proc = summarize(demo, tmp_path, KR, paths)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "domains" / f"{KR}.summary.json").read_text())
    assert summary["blast_only"] is True and summary["sources"] == ["domain_search", "chain_search"]
    assert summary["inputs"]["deep_search"] is None and summary["hits"]["deep_search"] is None
    [candidate] = summary["candidates"]
    assert candidate["source"] == "domain_search" and candidate["label"] == "KR"
    assert read_metrics(tmp_path / "metrics") == {"sources": "2", "domains": "1", "blast_only": "true"}

    out = tmp_path / "partition.tsv"
    proc = run_stage("partition", "--summary", tmp_path / "domains" / f"{KR}.summary.json", "--out", out,
                     cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    kinds = [(r["kind"], r["start"], r["end"], r["label"]) for r in tsv(out)]
    assert kinds == [("domain", "1", "247", "KR"), ("unassigned", "248", str(summary["length"]), "-")]


def test_partition_is_greedy_over_candidates_in_order() -> None:
    def c(label: str, start: int, end: int) -> dict[str, object]:
        return {"source": "s", "label": label, "start": start, "end": end, "score": 1.0}

    # B loses its middle to A and keeps its two ends; C's 10 free residues are too few.
    candidates = [c("A", 101, 200), c("B", 31, 300), c("C", 291, 320)]
    rows, metrics = partition("q", 400, candidates, min_length=25)
    assert [(r[1], r[3], r[4], r[7]) for r in rows] == [
        ("unassigned", 1, 30, "-"),
        ("domain", 31, 100, "B"),
        ("domain", 101, 200, "A"),
        ("domain", 201, 300, "B"),
        ("unassigned", 301, 400, "-"),
    ]
    assert [r[2] for r in rows if r[1] == "domain"] == [1, 2, 3]
    assert metrics == {"domains": 3, "assigned": 0.675}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "is empty"),
        ("junk", "is not a protein FASTA file"),
        ("two", "holds 2 sequences"),
        ("no_library", "chain library"),
    ],
)
def test_searches_exit_2_on_bad_input(demo: Path, tmp_path: Path, case: str, message: str) -> None:
    bad = {
        "missing": tmp_path / "nope.fa",
        "empty": write(tmp_path / "empty.fa", ""),
        "junk": write(tmp_path / "junk.fa", "hello\n"),
        "two": write(tmp_path / "two.fa", ">a\nMKVLA\n>b\nMKKLV\n"),
        "no_library": fasta(demo, SELF),
    }[case]
    library = tmp_path / "nope.fa" if case == "no_library" else chain_library_path(demo)
    out, metrics = tmp_path / "out.tsv", tmp_path / "metrics"
    runs = [("chain_search", "--library", library), ("deep_search", "--library", library)]
    if case != "no_library":
        runs.append(("domain_search",))
    for module, *args in runs:
        proc = run_stage(module, "--fasta", bad, *args, "--out", out, cwd=tmp_path, metrics=metrics)
        assert proc.returncode == 2, (module, proc.stdout, proc.stderr)
        assert proc.stderr.startswith(f"{module}: error: ") and message in proc.stderr
        assert proc.stderr.count("\n") == 1  # one line, no traceback
    assert not out.exists() and not metrics.exists()


def test_summary_and_partition_exit_2_on_bad_input(demo: Path, tmp_path: Path) -> None:
    paths = searched(demo, tmp_path, KR, deep=False)
    other = searched(demo, tmp_path / "other", SELF, deep=False)
    cases = {
        "does not exist": {**paths, "chain": tmp_path / "none.tsv"},
        "does not start with the header": {**paths, "chain": paths["domain"]},
        f"is about '{SELF}'": {**paths, "chain": other["chain"]},
    }
    for message, given in cases.items():
        proc = summarize(demo, tmp_path, KR, given)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "domains").exists() and not (tmp_path / "metrics").exists()

    out = tmp_path / "p.tsv"
    for summary, message in [
        (tmp_path / "none.json", "does not exist"),
        (write(tmp_path / "bad.json", "{"), "is not a JSON file"),
        (write(tmp_path / "odd.json", json.dumps({"query": "q", "length": 5})), "not a summary"),
        (
            write(tmp_path / "far.json", json.dumps({"query": "q", "length": 5, "candidates": [
                {"source": "s", "label": "x", "start": 1, "end": 9, "score": 1}]})),
            "not a summary",
        ),
    ]:  # fmt: skip
        proc = run_stage("partition", "--summary", summary, "--out", out, cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not out.exists()


def test_arguments_are_checked(tmp_path: Path) -> None:
    proc = run_stage("chain_search", "--fasta", "x.fa", "--library", "l.fa", "--out", "o", "--cpus", 0,
                     cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "--cpus: must be at least 1" in proc.stderr


def test_the_config_names_the_demo_commands() -> None:
    import yaml

    snippet = yaml.safe_load((REPO / "config" / "config.yml").read_text())
    stages = snippet["pipelines"]["demo"]["stages"]
    jobs = [snippet["job_types"][spec.get("job_type", name)] for name, spec in stages.items()]
    modules = {spec["command"].split()[2] for spec in jobs}
    stages = ("chain_search", "domain_search", "deep_search", "summary", "partition")
    assert modules == {f"ecod_jobs.demo.{m}" for m in stages}
    assert all((REPO / (m.replace(".", "/") + ".py")).is_file() for m in modules)
    demo = snippet["pipelines"]["demo"]["stages"]
    assert demo["summary"]["if_upstream_skipped"] == "run"
    assert "coverage < 0.9" in demo["deep_search"]["when"]
