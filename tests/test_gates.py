"""Stage conditions (gates.py): only the whitelist parses, truth is Kleene, metrics files parse strictly."""

from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import itertools
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecod_jobs import gates
from ecod_jobs.gates import (
    MAX_DEPTH,
    MAX_LENGTH,
    Gate,
    GateError,
    MetricsError,
    check_references,
    parse_gate,
    parse_metrics,
)

Metrics = Mapping[str, Mapping[str, object]]

# --- what parses ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "is_representative",
        "true",
        "false",
        "True",
        "False",
        "not is_representative",
        "domain_blast.coverage < 0.9",
        "is_representative and domain_blast.coverage < 0.9",
        "a.x <= 1 or a.y >= 2 and not (b.z == 'hit' or b.z != \"miss\")",
        "0 < a.x <= 10",
        "a.x > -1.5e-3",
        "a.x == -3",
        "hhsearch.ok",
        "hhsearch.ok == true",
        "is_representative == True",
        "a.x == a.y",
        "  a.x < 1  ",
        "a.x < 1\n",
        "(a.x < 1\n and b.y > 2)",
        "(a.x < 1  # a comment\n or b.y)",
        "a . x < 1",
        "a.__class__ == 1",  # a metric key; never a Python attribute
        "a.x == 'ünïcode in a string is fine'",
    ],
)
def test_accepted(text: str) -> None:
    gate = parse_gate(text)
    assert gate.source == text
    assert isinstance(gate, Gate)


def test_references_in_order_each_once() -> None:
    gate = parse_gate("b.y < 1 and (a.x > 2 or not b.y == 3) and a.z and is_representative and a.x != 4")
    assert gate.references() == [("b", "y"), ("a", "x"), ("a", "z")]
    assert parse_gate("is_representative").references() == []
    # a copy each time: the caller cannot change the gate
    gate.references().clear()
    assert len(gate.references()) == 3


@pytest.mark.parametrize(
    ("text", "uses"),
    [
        ("is_representative", True),
        ("not is_representative", True),
        ("a.x < 1 or (b.y and is_representative == false)", True),
        ("a.x < 1", False),
        ("true", False),
        ("a.is_representative", False),
    ],
)
def test_uses_representative(text: str, uses: bool) -> None:
    assert parse_gate(text).uses_representative is uses


def test_gate_is_a_frozen_value_equal_by_source() -> None:
    one, two = parse_gate("a.x < 1"), Gate("a.x < 1")
    assert one == two
    assert hash(one) == hash(two)
    assert one != parse_gate("a.x < 2")
    assert repr(one) == "Gate(source='a.x < 1')"
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.source = "true"  # type: ignore[misc]
    with pytest.raises(GateError):
        Gate("len(x)")


def test_gate_survives_pickle_and_copy() -> None:
    """A plan may carry gates to another process."""
    gate = parse_gate("is_representative and s.x < 1")
    for copied in (pickle.loads(pickle.dumps(gate)), copy.deepcopy(gate)):
        assert copied == gate
        assert copied.references() == [("s", "x")]
        assert copied.evaluate(True, {"s": {"x": 0}})


# --- what is refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # code execution and object access
        ("__import__('os').system('x')", "function calls are not allowed"),
        ("len(x)", "'len(x)' at column 1: function calls are not allowed"),
        ("a.x < len(b)", "'len(b)' at column 7: function calls are not allowed"),
        ("().__class__", "attributes are allowed only as STAGE.KEY"),
        ("''.join", "attributes are allowed only as STAGE.KEY"),
        ("a.b.c", "'a.b.c' at column 1: attribute chains are not allowed"),
        ("a.b.__class__.__bases__ == 1", "attribute chains are not allowed"),
        ("x[0]", "'x[0]' at column 1: indexing and slicing are not allowed"),
        ("a.x[1:2] == 1", "indexing and slicing are not allowed"),
        ("lambda: 1", "lambdas are not allowed"),
        ("(lambda: 1)()", "function calls are not allowed"),
        ("[c for c in ()]", "comprehensions are not allowed"),
        ("(c for c in ())", "comprehensions are not allowed"),
        ("{c: 1 for c in ()}", "comprehensions are not allowed"),
        ("(y := 1)", "'y := 1' at column 2: assignments (:=) are not allowed"),
        ("f'{a.x}' == 'x'", "f-strings are not allowed"),
        # arithmetic and operators outside the whitelist
        ("1+2", "'1+2' at column 1: arithmetic is not allowed"),
        ("a.x * 2 < 1", "arithmetic is not allowed"),
        ("a.x < 2 ** 10", "arithmetic is not allowed"),
        ("a.x | b.y", "arithmetic is not allowed"),
        ("~a.x", "unary '~' is not allowed"),
        ("+a.x < 1", "unary '+' is not allowed"),
        ("-a.x < 1", "unary minus applies only to a number"),
        ("-True == a.x", "unary minus applies only to a number"),
        ("a.x in (1, 2)", "'in' is not allowed"),
        ("a.x not in 'abc'", "'not in' is not allowed"),
        ("a.x is None", "'is' is not allowed (use == or !=)"),
        ("a.x is not true", "'is not' is not allowed"),
        ("a.x if b.y else c.z", "conditional expressions"),
        # containers and odd literals
        ("(1, 2)", "tuples are not allowed"),
        ("a.x == [1]", "lists are not allowed"),
        ("a.x == {1}", "sets are not allowed"),
        ("a.x == {}", "dicts are not allowed"),
        ("a.x == None", "'None' at column 8: None is not allowed"),
        ("a.x == b'x'", "bytes literals are not allowed"),
        ("a.x == 1j", "complex numbers are not allowed"),
        ("a.x == ...", "ellipsis literals are not allowed"),
        ("a.x < 1e999", "numbers must be finite"),
        # names
        (
            "is_rep",
            "unknown name 'is_rep' at column 1 (expected is_representative, true, false or STAGE.KEY)",
        ),
        ("a.x < 1 and repr", "unknown name 'repr' at column 13"),
        ("none", "unknown name 'none'"),
        ("__builtins__", "unknown name '__builtins__'"),
        ("true.x", "'true' is not a stage name"),
        ("is_representative.x == 1", "'is_representative' is not a stage name"),
        ("café.x < 1", "'café' at column 1: names must be ASCII letters, digits and _"),
        ("a.ﬁts < 1", "'ﬁts' at column 3: names must be ASCII"),  # Python would fold it into 'fits'
        # conditions where values go, values where conditions go
        ("1", "'1' at column 1: a number is not a condition"),
        ("a.x < 1 and 'yes'", "\"'yes'\" at column 13: a string is not a condition"),
        ("not -1", "a number is not a condition"),
        ("(a.x < 1) == true", "a condition cannot be compared"),
        ("a.x == (not b.y)", "a condition cannot be compared"),
        ("a.x == (b.y or c.z)", "a condition cannot be compared"),
        # comparisons that can never hold
        ("'a' == 1", "compares a string with a number, which is never true"),
        ("is_representative == 1", "compares a bool with a number"),
        ("a.x < 1 < 'b'", "compares a number with a string"),
        ("a.ok < true", "true and false can only be compared with == or !=, not <"),
        ("is_representative >= a.x", "true and false can only be compared with == or !=, not >="),
    ],
)
def test_refused(text: str, message: str) -> None:
    with pytest.raises(GateError) as caught:
        parse_gate(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("a.x < (1", "bad syntax at column 7: '(' was never closed", 7),
        ("a.x <> 1", "bad syntax at column 5", 5),
        ("a.x < 1 and", "bad syntax at column", None),
        ("a.x < 1 &&& b.y", "bad syntax at column", None),
        ("a.x = 1", "bad syntax at column", None),
        ("import os", "bad syntax at column 1", 1),
        ("a.x < 1; b", "bad syntax at column 8", 8),
        ("'unterminated", "bad syntax at column 1", 1),
        ("   a.x <> 1", "bad syntax at column 8", 8),  # leading blanks count
        ("é.x <> 1", "bad syntax at column 5", 5),  # characters, not UTF-8 bytes
    ],
)
def test_syntax_errors_name_the_column(text: str, message: str, column: int | None) -> None:
    with pytest.raises(GateError) as caught:
        parse_gate(text)
    assert str(caught.value).startswith(message)
    if column is not None:
        assert caught.value.column == column
    assert caught.value.line == 1


def test_columns_count_characters_and_leading_blanks() -> None:
    with pytest.raises(GateError) as caught:
        parse_gate("a.x == 'é' and f(x)")
    assert str(caught.value) == "'f(x)' at column 16: function calls are not allowed"
    assert (caught.value.line, caught.value.column) == (1, 16)
    with pytest.raises(GateError) as caught:
        parse_gate("  a.x < f(x)")
    assert str(caught.value) == "'f(x)' at column 9: function calls are not allowed"


def test_multiline_conditions_name_line_and_column() -> None:
    with pytest.raises(GateError) as caught:
        parse_gate("(a.x < 1\n and f(x))")
    assert str(caught.value) == "'f(x)' at line 2, column 6: function calls are not allowed"
    assert (caught.value.line, caught.value.column) == (2, 6)
    with pytest.raises(GateError) as caught:
        parse_gate("\n\n  (a.x <\n  f(x))")  # YAML block text may start with blank lines
    assert (caught.value.line, caught.value.column) == (4, 3)
    with pytest.raises(GateError) as caught:
        parse_gate("a.x < 1\nand b.y")  # a line break outside parentheses is Python's syntax error
    assert str(caught.value) == "bad syntax at line 2, column 1: invalid syntax"


def test_long_segments_are_shortened_in_messages() -> None:
    with pytest.raises(GateError) as caught:
        parse_gate("f(" + ", ".join(f"a{i}" for i in range(40)) + ")")
    assert "...' at column 1: function calls are not allowed" in str(caught.value)
    assert len(str(caught.value)) < 120


def test_empty_long_deep_and_non_string_conditions() -> None:
    for blank in ["", "   ", "\n\t\n"]:
        with pytest.raises(GateError, match="^empty condition$"):
            parse_gate(blank)
    longest = "a.x < 1 " + " " * (MAX_LENGTH - 8)
    assert parse_gate(longest).references() == [("a", "x")]
    with pytest.raises(
        GateError, match=f"condition is {MAX_LENGTH + 1} characters long; at most {MAX_LENGTH}"
    ):
        parse_gate(longest + " ")
    assert parse_gate("not " * (MAX_DEPTH - 1) + "true").evaluate(False, {}) is ((MAX_DEPTH - 1) % 2 == 0)
    with pytest.raises(GateError, match=f"^nested more than {MAX_DEPTH} levels deep at column "):
        parse_gate("not " * MAX_DEPTH + "true")
    with pytest.raises(GateError, match="nested more than"):
        parse_gate("(" * 100 + "a.x < 1" + " or b.y)" * 100)
    with pytest.raises(GateError, match="bad syntax at column 201: too many nested parentheses"):
        parse_gate("(" * 300 + "a.x" + ")" * 300)
    with pytest.raises(GateError, match="bad syntax: .*null bytes"):
        parse_gate("a.x < 1\x00")
    for value in [True, 1, None, ["a.x < 1"]]:
        with pytest.raises(GateError, match="a condition must be a string, not"):
            parse_gate(value)  # type: ignore[arg-type]


def test_gate_error_is_a_value_error() -> None:
    assert issubclass(GateError, ValueError)
    assert issubclass(MetricsError, ValueError)


# --- evaluation: Kleene logic ---------------------------------------------------------------------------

# Each truth value as a condition: a missing metric used as a boolean is unknown.
OPERAND = {True: "true", False: "false", None: "m.missing"}
VALUES = [True, False, None]


def kleene_and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def kleene_or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


@pytest.mark.parametrize(("a", "b"), list(itertools.product(VALUES, VALUES)))
def test_kleene_and_or(a: bool | None, b: bool | None) -> None:
    both_and = parse_gate(f"{OPERAND[a]} and {OPERAND[b]}")
    both_or = parse_gate(f"{OPERAND[a]} or {OPERAND[b]}")
    assert both_and.truth(False, {}) is kleene_and(a, b)
    assert both_or.truth(False, {}) is kleene_or(a, b)
    assert both_and.evaluate(False, {}) is (kleene_and(a, b) is True)
    assert both_or.evaluate(False, {}) is (kleene_or(a, b) is True)


@pytest.mark.parametrize("a", VALUES)
def test_kleene_not(a: bool | None) -> None:
    gate = parse_gate(f"not {OPERAND[a]}")
    assert gate.truth(False, {}) is (None if a is None else not a)
    assert gate.evaluate(False, {}) is (a is False)
    # unknown stays unknown however often it is negated: a final unknown is False
    assert parse_gate(f"not not {OPERAND[a]}").truth(False, {}) is a


@pytest.mark.parametrize(("a", "b", "c"), list(itertools.product(VALUES, VALUES, VALUES)))
def test_kleene_longer_chains(a: bool | None, b: bool | None, c: bool | None) -> None:
    gate = parse_gate(f"{OPERAND[a]} and {OPERAND[b]} or not {OPERAND[c]}")
    negated_c = None if c is None else not c
    assert gate.truth(False, {}) is kleene_or(kleene_and(a, b), negated_c)
    assert parse_gate(f"{OPERAND[a]} and {OPERAND[b]} and {OPERAND[c]}").truth(False, {}) is kleene_and(
        kleene_and(a, b), c
    )


def test_the_design_example() -> None:
    gate = parse_gate("is_representative and domain_blast.coverage < 0.9")
    assert gate.evaluate(True, {"domain_blast": {"coverage": 0.5, "hits": 3}})
    assert not gate.evaluate(True, {"domain_blast": {"coverage": 0.95}})
    assert not gate.evaluate(False, {"domain_blast": {"coverage": 0.5}})
    # missing evidence: unknown, so gated out ...
    assert gate.truth(True, {}) is None
    assert not gate.evaluate(True, {})
    # ... unless the known part already decides
    assert gate.truth(False, {}) is False
    either = parse_gate("not is_representative or domain_blast.coverage < 0.9")
    assert either.evaluate(False, {})
    assert not either.evaluate(True, {})


@pytest.mark.parametrize(
    ("metrics", "truth"),
    [
        ({"s": {"x": 0.5}}, True),
        ({"s": {"x": 1}}, False),
        ({"s": {"x": 0}}, True),
        ({"s": {"x": 0.9}}, False),
        ({}, None),  # stage absent
        ({"s": {}}, None),  # key absent
        ({"s": {"x": None}}, None),  # value None (JSON null)
        ({"s": None}, None),  # the stage's metrics themselves null
        ({"s": "x=1"}, None),  # not a mapping
        ({"s": {"x": "0.5"}}, None),  # a string is not a number
        ({"s": {"x": True}}, None),  # nor is a bool
        ({"s": {"x": [0.5]}}, None),  # nor anything JSON could hold besides
        ({"s": {"x": float("nan")}}, None),
        ({"s": {"x": float("-inf")}}, None),
        ({"other": {"x": 0.5}}, None),
    ],
)
def test_comparison_with_missing_or_mismatched_metrics(metrics: Metrics, truth: bool | None) -> None:
    gate = parse_gate("s.x < 0.9")
    assert gate.truth(True, metrics) is truth
    assert gate.evaluate(True, metrics) is (truth is True)
    # negation does not turn unknown into known
    assert parse_gate("not s.x < 0.9").truth(True, metrics) is (None if truth is None else not truth)


@pytest.mark.parametrize(
    ("text", "metrics", "truth"),
    [
        # bools compare as bools, and only with == and !=
        ("is_representative == true", {}, True),
        ("is_representative != True", {}, False),
        ("s.ok == true", {"s": {"ok": True}}, True),
        ("s.ok == false", {"s": {"ok": True}}, False),
        ("s.ok != false", {"s": {"ok": True}}, True),
        ("s.ok == s.done", {"s": {"ok": True, "done": False}}, False),
        ("s.ok == 1", {"s": {"ok": True}}, None),  # a bool is not the number 1
        ("s.n == true", {"s": {"n": 1}}, None),
        ("s.ok < s.done", {"s": {"ok": False, "done": True}}, None),  # booleans have no order
        # numbers: ints and floats together
        ("s.n == 3", {"s": {"n": 3.0}}, True),
        ("s.n >= 3", {"s": {"n": 3}}, True),
        ("s.n > -1", {"s": {"n": -0.5}}, True),
        ("s.n < -1", {"s": {"n": -0.5}}, False),
        ("s.n != 0", {"s": {"n": 0}}, False),
        ("s.n < t.n", {"s": {"n": 1}, "t": {"n": 2}}, True),
        ("s.n < t.n", {"s": {"n": 1}}, None),
        # strings: equality and order among strings; never with numbers
        ("s.tool == 'hhblits'", {"s": {"tool": "hhblits"}}, True),
        ("s.tool != 'hhblits'", {"s": {"tool": "jackhmmer"}}, True),
        ("s.version >= 'b'", {"s": {"version": "c"}}, True),
        ("s.tool == 'hhblits'", {"s": {"tool": 3}}, None),
        ("s.n < 1", {"s": {"n": "0"}}, None),
        ("s.n == '1'", {"s": {"n": 1}}, None),
        # chained comparisons: each pair, combined as Kleene and
        ("0 < s.n <= 10", {"s": {"n": 10}}, True),
        ("0 < s.n <= 10", {"s": {"n": 11}}, False),
        ("0 < s.n <= 10", {"s": {"n": 0}}, False),
        ("0 < s.n <= 10", {}, None),
        ("s.a < s.b < s.c", {"s": {"a": 5, "c": 1}}, None),  # b missing: neither pair known
        ("s.a < 1 < s.c", {"s": {"a": 5}}, False),  # a known pair already false
        ("s.a < 1 < s.c", {"s": {"a": 0}}, None),
        ("1 < 2 < 3", {}, True),
    ],
)
def test_comparisons(text: str, metrics: Metrics, truth: bool | None) -> None:
    assert parse_gate(text).truth(True, metrics) is truth


@pytest.mark.parametrize(
    ("value", "truth"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        (-2, True),
        (0.0, False),
        (2.5, True),
        ("yes", None),  # a string has no truth of its own
        ("", None),
        (None, None),
        ({"a": 1}, None),
    ],
)
def test_a_bare_metric_as_a_boolean(value: object, truth: bool | None) -> None:
    gate = parse_gate("hhsearch.ok")
    assert gate.truth(False, {"hhsearch": {"ok": value}}) is truth
    assert gate.truth(False, {}) is None
    assert gate.evaluate(False, {"hhsearch": {"ok": value}}) is (truth is True)


def test_is_representative_is_a_boolean() -> None:
    assert parse_gate("is_representative").evaluate(True, {})
    assert not parse_gate("is_representative").evaluate(False, {})
    assert parse_gate("not is_representative").evaluate(False, {})
    assert parse_gate("True").evaluate(False, {})
    assert not parse_gate("false").evaluate(True, {})


def test_evaluation_never_touches_python_objects() -> None:
    """STAGE.KEY is a dictionary lookup: a key named like a dunder reads the metrics, nothing else."""
    gate = parse_gate("s.__class__ == 'x' or s.__len__")
    assert gate.truth(True, {"s": {"__class__": "x"}}) is True
    assert gate.truth(True, {"s": {}}) is None


# --- references against the config ----------------------------------------------------------------------


def test_check_references() -> None:
    allowed = {"domain_blast": {"coverage", "hits"}, "chain_blast": {"hits"}, "quiet": set()}
    assert check_references(parse_gate("is_representative and domain_blast.coverage < 0.9"), allowed) == []
    assert check_references(parse_gate("true"), {}) == []
    gate = parse_gate(
        "domain_blst.coverage < 0.9 or domain_blast.cov > 1 or domain_blst.hits"
        " or quiet.x or chain_blast.hits"
    )
    assert check_references(gate, allowed) == [
        "unknown stage 'domain_blst' (upstream stages: chain_blast, domain_blast, quiet)",
        "stage 'domain_blast' reports no 'cov' (it declares: coverage, hits)",
        "stage 'quiet' reports no 'x' (it declares no metrics)",
    ]
    assert check_references(parse_gate("a.x"), {}) == ["unknown stage 'a' (no upstream stages)"]


def test_check_references_design_examples() -> None:
    allowed = {"chain_blast": {"hits"}, "domain_blast": {"coverage", "hits"}}
    assert check_references(parse_gate("domain_blst.coverage < 1"), allowed) == [
        "unknown stage 'domain_blst' (upstream stages: chain_blast, domain_blast)"
    ]
    assert check_references(parse_gate("domain_blast.cov < 1"), allowed) == [
        "stage 'domain_blast' reports no 'cov' (it declares: coverage, hits)"
    ]


# --- the metrics file -----------------------------------------------------------------------------------


def test_parse_metrics() -> None:
    text = (
        "# written by the command\n"
        "hits=12\n"
        "\n"
        "coverage=0.875\n"
        "   evalue = 1e-30  \n"
        "delta=-3\n"
        "gain=+2.5\n"
        "ok=true\n"
        "failed=False\n"
        "LOUD=TRUE\n"
        "tool=hhblits 3.3\n"
        "path=/a/b=c\n"
        "hex=0x10\n"
        "under=1_000\n"
        "dot=.5\n"
        "trailing=5.\n"
        "_private=x\n"
        "  # indented comment\n"
        "hits=13\n"  # last wins
    )
    assert parse_metrics(text) == {
        "hits": 13,
        "coverage": 0.875,
        "evalue": 1e-30,
        "delta": -3,
        "gain": 2.5,
        "ok": True,
        "failed": False,
        "LOUD": True,
        "tool": "hhblits 3.3",
        "path": "/a/b=c",
        "hex": "0x10",
        "under": "1_000",
        "dot": 0.5,
        "trailing": 5.0,
        "_private": "x",
    }
    values = parse_metrics("a=1\nb=1.0\nc=true")
    assert [type(v) for v in values.values()] == [int, float, bool]
    assert parse_metrics("") == {}
    assert parse_metrics("\n\n# nothing\n") == {}
    assert parse_metrics("a=1\r\nb=2\r\n") == {"a": 1, "b": 2}
    assert parse_metrics("a=\uff11\uff12") == {"a": "\uff11\uff12"}  # only ASCII digits make numbers


@pytest.mark.parametrize(
    ("text", "message", "line_number"),
    [
        ("hits=1\nno equals sign", "metrics line 2: expected KEY=VALUE, got 'no equals sign'", 2),
        ("1abc=3", "metrics line 1: key '1abc' is not a name", 1),
        ("a-b=3", "key 'a-b' is not a name", 1),
        ("=3", "key '' is not a name", 1),
        ("kéy=3", "key 'kéy' is not a name", 1),
        ("\n\n# c\nempty=", "metrics line 4: no value after '=': 'empty='", 4),
        ("x=nan", "metrics line 1: nan and inf are not allowed: 'x=nan'", 1),
        ("x=NaN", "nan and inf are not allowed", 1),
        ("x=inf", "nan and inf are not allowed", 1),
        ("x=-Infinity", "nan and inf are not allowed", 1),
        ("x=1e999", "number out of range", 1),
        ("x=" + "9" * 5000, "metrics line 1: ", 1),  # past Python's int digit limit
    ],
)
def test_parse_metrics_refuses(text: str, message: str, line_number: int) -> None:
    with pytest.raises(MetricsError) as caught:
        parse_metrics(text)
    assert message in str(caught.value)
    assert caught.value.line_number == line_number


def test_parse_metrics_names_its_source_and_shortens_long_lines() -> None:
    with pytest.raises(MetricsError, match=r"^/tmp/m\.txt line 1: expected KEY=VALUE, got 'x{77}\.\.\.'$"):
        parse_metrics("x" * 200, source="/tmp/m.txt")


# --- properties -----------------------------------------------------------------------------------------

TOKENS = [
    "a.x", "b.y", "a", ".", "x", "is_representative", "true", "false", "True", "None", "and", "or", "not",
    "<", "<=", "==", "!=", ">", ">=", "(", ")", "1", "-", "0.5", "'s'", "+", "*", "[", "]", ",", "lambda",
    ":", "in", "is", "if", "else", "__class__", "f'", "{", "}",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=12))
def test_any_token_soup_parses_or_raises_gate_error(tokens: list[str]) -> None:
    text = " ".join(tokens)
    try:
        gate = parse_gate(text)
    except GateError as error:
        assert str(error)
        return
    for rep in (True, False):
        for metrics in ({}, {"a": {"x": 1}, "b": {"y": "s"}}, {"a": {"x": None}, "b": {"y": True}}):
            assert gate.truth(rep, metrics) in (True, False, None)
            assert isinstance(gate.evaluate(rep, metrics), bool)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_raises_gate_error(text: str) -> None:
    with contextlib.suppress(GateError):
        parse_gate(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_metrics_text_parses_or_raises_metrics_error(text: str) -> None:
    try:
        metrics = parse_metrics(text)
    except MetricsError:
        return
    assert all(isinstance(value, bool | int | float | str) for value in metrics.values())


# --- the module itself ----------------------------------------------------------------------------------


def test_the_module_never_evaluates_code_and_uses_only_the_standard_library() -> None:
    source = Path(gates.__file__).read_text()
    tree = ast.parse(source)
    called = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not called & {"eval", "exec", "compile", "__import__", "getattr"}
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0]
