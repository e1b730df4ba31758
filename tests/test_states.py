"""The single state table: every SLURM spelling maps to one phase and DB vocabulary."""

from __future__ import annotations

import pytest

from ecod_jobs.states import (
    SHORT_CODES,
    STATES,
    Phase,
    job_item_status,
    job_status,
    normalize_state,
    phase_of,
    process_status,
)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("CANCELLED by 0", "CANCELLED"),
        ("CANCELLED by 1234", "CANCELLED"),
        ("CANCELLED+", "CANCELLED"),
        ("  running \n", "RUNNING"),
        ("CA", "CANCELLED"),
        ("PD", "PENDING"),
        ("OOM", "OUT_OF_MEMORY"),
        ("OUT_OF_MEMORY", "OUT_OF_MEMORY"),
        ("TO", "TIMEOUT"),
        ("NODE_FAIL", "NODE_FAIL"),
        ("canceled", "CANCELLED"),
        ("", "UNKNOWN"),
        (None, "UNKNOWN"),
        ("WEIRD_NEW_STATE", "UNKNOWN"),
    ],
)
def test_normalize(raw: str | None, canonical: str) -> None:
    assert normalize_state(raw) == canonical


@pytest.mark.parametrize(
    "state",
    [
        "FAILED",
        "TIMEOUT",
        "CANCELLED by 0",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
    ],
)
def test_failures(state: str) -> None:
    assert phase_of(state) is Phase.FAILED
    assert (job_status(state), job_item_status(state), process_status(state)) == ("failed", "failed", "error")


def test_success_and_active() -> None:
    assert (job_status("COMPLETED"), job_item_status("CD"), process_status("COMPLETED")) == (
        "completed",
        "completed",
        "success",
    )
    for state in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "SUSPENDED", "SUBMITTED"):
        assert not phase_of(state).finished
        assert (job_status(state), job_item_status(state), process_status(state)) == (
            "submitted",
            "pending",
            "processing",
        )


def test_unknown_is_never_completed() -> None:
    assert phase_of("") is Phase.UNKNOWN
    assert job_status("UNKNOWN") == "submitted"
    assert process_status("GONE") == "processing"


def test_every_short_code_resolves() -> None:
    for code, name in SHORT_CODES.items():
        assert name in STATES, code
        assert normalize_state(code) == name
