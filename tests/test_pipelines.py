"""Pipelines without a database: resolution, stage selection, resume rules and the per-item
decision of a stage (run, skipped, blocked)."""

from __future__ import annotations

from typing import Any

import pytest

from ecod_jobs.config import from_mapping
from ecod_jobs.exceptions import ConfigurationError
from ecod_jobs.pipeline_plan import BLOCKED, RUN, SKIPPED, decide, stages_to_run
from ecod_jobs.pipelines import pipeline_spec, select_stages, topological_order


def job(file_type: str, metrics: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "command": f"touch {{out[{file_type}]}}",
        "outputs": {file_type: f"{file_type}/{{stem}}"},
        "metrics": list(metrics),
        "batch_size": 10,
    }


CONFIG = from_mapping(
    {
        "job_types": {
            "chain": job("chain_result"),
            "domain": job("domain_result", ("coverage",)),
            "hh": job("hhr"),
            "summary": job("summary_file"),
            "partition": job("partition_file"),
        },
        "pipelines": {
            "ecod": {
                "stages": {
                    "summary": {"after": ["domain", "hh"], "if_upstream_skipped": "run", "batch_size": 500},
                    "partition": {"after": ["summary"]},
                    "hh": {
                        "after": ["chain", "domain"],
                        "when": "is_representative and domain.coverage < 0.9",
                        "batch_size": 1,
                        "memory": "16G",
                    },
                    "chain": {},
                    "domain": {},
                }
            }
        },
    }
)
ECOD = pipeline_spec(CONFIG, "ecod")


def test_stages_resolve_in_topological_order_with_overrides() -> None:
    assert ECOD.names() == ["chain", "domain", "hh", "summary", "partition"]
    hh = ECOD.stage("hh")
    assert (hh.job.batch_size, hh.job.memory, hh.job.name) == (1, "16G", "hh")
    assert ECOD.stage("summary").job.batch_size == 500 and ECOD.stage("chain").job.batch_size == 10
    assert ECOD.upstream("summary") == {"chain", "domain", "hh"}
    assert ECOD.downstream("hh") == {"summary", "partition"}
    assert ECOD.last.name == "partition" and ECOD.run_key == "pipeline.ecod"


def test_topological_order_names_a_cycle() -> None:
    assert topological_order({"a": [], "b": ["a"]}) == ["a", "b"]
    assert topological_order({"a": ["c"], "b": ["a"], "c": ["b"]}) == [["a", "c", "b", "a"]]


def test_select_stages() -> None:
    assert select_stages(ECOD) == (ECOD.names(), [])
    assert select_stages(ECOD, start="hh") == (["hh", "summary", "partition"], [])
    assert select_stages(ECOD, stages=["chain"]) == (["chain"], [])
    assert select_stages(ECOD, stages=["chain"], rerun="summary") == (
        ["chain", "summary", "partition"],
        ["summary", "partition"],
    )
    with pytest.raises(ConfigurationError, match="has no stage 'nope'"):
        select_stages(ECOD, start="nope")


DONE = ("success", None)


@pytest.mark.parametrize(
    ("state", "retry", "forced", "expected"),
    [
        ({}, False, (), ["chain", "domain", "hh", "summary", "partition"]),
        ({s: DONE for s in ("chain", "domain", "hh", "summary", "partition")}, False, (), []),
        # a failure blocks its dependents unless retried; then they follow it
        ({"chain": DONE, "domain": ("error", None)}, False, (), []),
        ({"chain": DONE, "domain": ("error", None)}, True, (), ["domain", "hh", "summary", "partition"]),
        # a stage that is not done makes its downstream run again
        (
            {
                "chain": DONE,
                "domain": ("pending", None),
                "hh": ("skipped", None),
                "summary": DONE,
                "partition": DONE,
            },
            False,
            (),
            ["domain", "hh", "summary", "partition"],
        ),
        # --rerun forces a stage and everything downstream
        (
            {s: DONE for s in ("chain", "domain", "hh", "summary", "partition")},
            False,
            ("summary", "partition"),
            ["summary", "partition"],
        ),
    ],
)
def test_stages_to_run(
    state: dict[str, Any], retry: bool, forced: tuple[str, ...], expected: list[str]
) -> None:
    assert stages_to_run(ECOD, ECOD.names(), forced, retry, state) == expected


def test_only_selected_stages_run_and_unfinished_upstream_blocks() -> None:
    # --stages summary: hh not done and not selected -> summary cannot run
    state = {"chain": DONE, "domain": DONE}
    assert stages_to_run(ECOD, ["summary"], (), False, state) == []
    state["hh"] = ("skipped", None)
    assert stages_to_run(ECOD, ["summary"], (), False, state) == ["summary"]


def states(**by_stage: tuple[str, Any]) -> Any:
    return lambda name: by_stage.get(name, ("pending", None))


def test_decide_gates_blocks_and_follows_skips() -> None:
    rep = {"representative": True}
    hh, summary = ECOD.stage("hh"), ECOD.stage("summary")
    upstream = ["chain", "domain"]
    low = states(chain=DONE, domain=("success", {"coverage": 0.5}))
    assert decide(hh, rep, low, upstream) == (RUN, None)
    high = states(chain=DONE, domain=("success", {"coverage": 0.95}))
    assert decide(hh, rep, high, upstream)[0] == SKIPPED
    assert decide(hh, {"representative": False}, low, upstream)[0] == SKIPPED
    failed = states(chain=("error", None), domain=("success", {"coverage": 0.5}))
    assert decide(hh, rep, failed, upstream) == (BLOCKED, "not run: upstream stage chain failed")
    # summary runs although hh was skipped (if_upstream_skipped: run); partition would not
    skipped = states(domain=DONE, hh=("skipped", None), summary=("skipped", None))
    assert decide(summary, rep, skipped, ["chain", "domain", "hh"]) == (RUN, None)
    assert decide(ECOD.stage("partition"), rep, skipped, ["summary"])[0] == SKIPPED
