"""Pipeline stage conditions (``when``) and the metrics files they read.

A pipeline stage may run for an item only when a condition holds, e.g.::

    is_representative and domain_blast.coverage < 0.9

The condition comes from a config file, so it is never given to ``eval``: it is
parsed with :func:`ast.parse` and only a small whitelist of node kinds is
accepted (and, or, not, comparisons, ``is_representative``, ``true``/``false``,
``STAGE.KEY`` and literal numbers, strings and booleans); the result is turned
into this module's own small tree and evaluated by walking it. Nothing in a
condition can call, import, index or reach an attribute of a Python object:
``STAGE.KEY`` is only a lookup in the metrics mapping.

Truth is three-valued (Kleene): a comparison whose metric is missing (stage
absent, key absent, value None) or whose two sides are of different kinds
(number, string, bool) is *unknown*; ``not unknown`` is unknown; ``false and
unknown`` is false and ``true or unknown`` is true. A condition that ends
unknown does not hold, so the item-stage is gated out rather than run on
missing evidence.

:func:`parse_metrics` reads the ``KEY=VALUE`` file a stage's command writes
(the path in ``$ECOD_JOBS_METRICS``). Standard library only: the chunk runner
imports this module on compute nodes.
"""

from __future__ import annotations

import ast
import io
import math
import operator
import re
import tokenize
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Gate",
    "GateError",
    "MetricsError",
    "check_references",
    "parse_gate",
    "parse_metrics",
]

MAX_LENGTH = 1000
"""Longest condition accepted, in characters: a condition is a line of config, not a program."""

MAX_DEPTH = 32
"""Deepest nesting accepted: bounds the recursion of parsing and evaluating."""

Value = bool | int | float | str
"""What a metric or a literal can be."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAMES_EXPECTED = "expected is_representative, true, false or STAGE.KEY"
_RESERVED = frozenset({"is_representative", "true", "false"})


class GateError(ValueError):
    """A condition that cannot be accepted; the message says what and where (column)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


class MetricsError(ValueError):
    """A metrics file line that is not ``KEY=VALUE`` with a valid key and value."""

    def __init__(self, message: str, line_number: int, line: str) -> None:
        super().__init__(message)
        self.line_number = line_number
        self.line = line


# --- the tree a condition is turned into ----------------------------------------------------------


@dataclass(frozen=True)
class _Const:
    value: Value


@dataclass(frozen=True)
class _Representative:
    pass


@dataclass(frozen=True)
class _Metric:
    stage: str
    key: str


@dataclass(frozen=True)
class _Not:
    operand: _Cond


@dataclass(frozen=True)
class _And:
    operands: tuple[_Cond, ...]


@dataclass(frozen=True)
class _Or:
    operands: tuple[_Cond, ...]


@dataclass(frozen=True)
class _Compare:
    operands: tuple[_Operand, ...]  # one more than ops: a < b <= c is (a, b, c), ("<", "<=")
    ops: tuple[str, ...]


_Operand = _Const | _Representative | _Metric
_Cond = _Const | _Representative | _Metric | _Not | _And | _Or | _Compare

_COMPARE_OPS: dict[type[ast.cmpop], str] = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
}
_REFUSED_COMPARE_OPS: dict[type[ast.cmpop], str] = {
    ast.In: "'in' is not allowed",
    ast.NotIn: "'not in' is not allowed",
    ast.Is: "'is' is not allowed (use == or !=)",
    ast.IsNot: "'is not' is not allowed (use == or !=)",
}
_REFUSED: dict[type[ast.AST], str] = {
    ast.Call: "function calls are not allowed",
    ast.Subscript: "indexing and slicing are not allowed",
    ast.Slice: "indexing and slicing are not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.BinOp: "arithmetic is not allowed (compare a metric with a number instead)",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "assignments (:=) are not allowed",
    ast.IfExp: "conditional expressions (A if C else B) are not allowed; use and, or, not",
    ast.Tuple: "tuples are not allowed",
    ast.List: "lists are not allowed",
    ast.Set: "sets are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.Starred: "starred expressions are not allowed",
}


def _kind(value: object) -> str:
    """'bool', 'number' or 'string': values of different kinds are never compared."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "string"


# --- parsing ------------------------------------------------------------------------------------------


class _Parser:
    """Turns a condition's text into a :data:`_Cond`, refusing anything off the whitelist."""

    def __init__(self, text: str) -> None:
        self.text = text
        # ast.parse refuses leading whitespace ("unexpected indent"); positions are shifted back.
        self.body = text.lstrip()
        prefix = text[: len(text) - len(self.body)]
        self.line_shift = prefix.count("\n")
        self.column_shift = len(prefix) - (prefix.rfind("\n") + 1)
        self.multiline = "\n" in text.strip()
        self.lines = re.split(r"\r\n|\r|\n", self.body)

    # where -------------------------------------------------------------------------------------------

    def _where(self, line: int | None, column: int | None) -> tuple[str, int | None, int | None]:
        """('column 14' or 'line 2, column 3', line, column) in the caller's text (1-based)."""
        if line is None or column is None:
            return "", None, None
        if line == 1:
            column += self.column_shift
        line += self.line_shift
        return (f"line {line}, column {column}" if self.multiline else f"column {column}"), line, column

    def _node_position(self, node: ast.expr) -> tuple[int | None, int | None]:
        """1-based (line, character column) of a node; ast's col_offset counts UTF-8 bytes."""
        if not 1 <= node.lineno <= len(self.lines):
            return None, None
        prefix = self.lines[node.lineno - 1].encode("utf-8")[: node.col_offset]
        return node.lineno, len(prefix.decode("utf-8", errors="ignore")) + 1

    def _fail(self, node: ast.expr, reason: str, *, quote: bool = True) -> GateError:
        """A GateError: the node's text, where it is, and why it is refused."""
        line, column = self._node_position(node)
        where, line, column = self._where(line, column)
        segment = " ".join((ast.get_source_segment(self.body, node) or "").split())
        if len(segment) > 40:
            segment = segment[:37] + "..."
        at = f" at {where}" if where else ""
        if quote and segment:
            return GateError(f"{segment!r}{at}: {reason}", line, column)
        return GateError(f"{reason}{at}", line, column)

    # entry -------------------------------------------------------------------------------------------

    def parse(self) -> _Cond:
        if not self.body:
            raise GateError("empty condition")
        if len(self.text) > MAX_LENGTH:
            raise GateError(f"condition is {len(self.text)} characters long; at most {MAX_LENGTH} allowed")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SyntaxWarning / DeprecationWarning of odd literals
                tree = ast.parse(self.body, mode="eval")
        except SyntaxError as error:
            where, line, column = self._where(error.lineno, error.offset)
            message = f"bad syntax at {where}: {error.msg}" if where else f"bad syntax: {error.msg}"
            raise GateError(message, line, column) from None
        except (ValueError, RecursionError, MemoryError) as error:
            raise GateError(f"bad syntax: {error or type(error).__name__}") from None
        self._check_names()
        return self._condition(tree.body, 1)

    def _check_names(self) -> None:
        """Every name must be ASCII as metric keys are (Python would NFKC-fold 'ﬁ' into 'fi')."""
        try:
            tokens = list(tokenize.generate_tokens(io.StringIO(self.body).readline))
        except (tokenize.TokenError, SyntaxError):  # pragma: no cover - ast.parse accepted it
            return
        for token in tokens:
            if token.type == tokenize.NAME and not _NAME.fullmatch(token.string):
                where, line, column = self._where(token.start[0], token.start[1] + 1)
                raise GateError(
                    f"{token.string!r} at {where}: names must be ASCII letters, digits and _",
                    line,
                    column,
                )

    # the walk ----------------------------------------------------------------------------------------

    def _check_depth(self, node: ast.expr, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise self._fail(node, f"nested more than {MAX_DEPTH} levels deep", quote=False)

    def _condition(self, node: ast.expr, depth: int) -> _Cond:
        """Something that is true or false: and/or/not, a comparison, a boolean name or metric."""
        self._check_depth(node, depth)
        if isinstance(node, ast.BoolOp):
            operands = tuple(self._condition(value, depth + 1) for value in node.values)
            return _And(operands) if isinstance(node.op, ast.And) else _Or(operands)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return _Not(self._condition(node.operand, depth + 1))
        if isinstance(node, ast.Compare):
            return self._compare(node, depth)
        operand = self._operand(node, depth)
        if isinstance(operand, _Const) and not isinstance(operand.value, bool):
            kind = _kind(operand.value)
            raise self._fail(node, f"a {kind} is not a condition (compare it, e.g. STAGE.KEY < 0.9)")
        return operand

    def _compare(self, node: ast.Compare, depth: int) -> _Compare:
        ops: list[str] = []
        for op in node.ops:
            if type(op) in _REFUSED_COMPARE_OPS:
                raise self._fail(node, _REFUSED_COMPARE_OPS[type(op)])
            ops.append(_COMPARE_OPS[type(op)])
        operands = tuple(self._operand(value, depth + 1) for value in [node.left, *node.comparators])
        for left, op, right in zip(operands, ops, operands[1:], strict=False):
            kinds = [self._static_kind(left), self._static_kind(right)]
            if None not in kinds and kinds[0] != kinds[1]:
                raise self._fail(node, f"compares a {kinds[0]} with a {kinds[1]}, which is never true")
            if "bool" in kinds and op not in ("==", "!="):
                raise self._fail(node, f"true and false can only be compared with == or !=, not {op}")
        return _Compare(operands, tuple(ops))

    @staticmethod
    def _static_kind(operand: _Operand) -> str | None:
        """The kind of a side known before any metric is read (None for a metric)."""
        if isinstance(operand, _Const):
            return _kind(operand.value)
        if isinstance(operand, _Representative):
            return "bool"
        return None

    def _operand(self, node: ast.expr, depth: int) -> _Operand:
        """A value: a literal, a name or STAGE.KEY."""
        self._check_depth(node, depth)
        if isinstance(node, ast.Constant):
            return _Const(self._constant(node, node.value))
        if isinstance(node, ast.Name):
            if node.id == "is_representative":
                return _Representative()
            if node.id in ("true", "false"):
                return _Const(node.id == "true")
            line, column = self._node_position(node)
            where, line, column = self._where(line, column)
            raise GateError(f"unknown name {node.id!r} at {where} ({_NAMES_EXPECTED})", line, column)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name):
                if node.value.id in _RESERVED:
                    raise self._fail(node, f"{node.value.id!r} is not a stage name")
                return _Metric(node.value.id, node.attr)
            if isinstance(node.value, ast.Attribute):
                raise self._fail(node, "attribute chains are not allowed: one dot, STAGE.KEY")
            raise self._fail(node, "attributes are allowed only as STAGE.KEY")
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                inner = node.operand
                if isinstance(inner, ast.Constant) and not isinstance(inner.value, bool | str):
                    number = self._constant(inner, inner.value)
                    if isinstance(number, int | float):
                        return _Const(-number)
                raise self._fail(node, "unary minus applies only to a number")
            if isinstance(node.op, ast.Not):
                raise self._fail(node, "a condition cannot be compared; combine conditions with and, or, not")
            symbol = "+" if isinstance(node.op, ast.UAdd) else "~"
            raise self._fail(node, f"unary '{symbol}' is not allowed")
        if isinstance(node, ast.BoolOp | ast.Compare):
            raise self._fail(node, "a condition cannot be compared; combine conditions with and, or, not")
        reason = _REFUSED.get(type(node), f"{type(node).__name__} expressions are not allowed")
        raise self._fail(node, reason)

    def _constant(self, node: ast.Constant, value: object) -> Value:
        if isinstance(value, bool | str):
            return value
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self._fail(node, "numbers must be finite")
            return value
        if value is None:
            raise self._fail(node, "None is not allowed (a missing metric makes a comparison unknown)")
        if isinstance(value, bytes):
            raise self._fail(node, "bytes literals are not allowed")
        if isinstance(value, complex):
            raise self._fail(node, "complex numbers are not allowed")
        raise self._fail(node, f"{type(value).__name__} literals are not allowed")


# --- evaluation -----------------------------------------------------------------------------------------

_MISSING = object()
_ORDERING: dict[str, Callable[[object, object], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def _lookup(metric: _Metric, metrics: Mapping[str, Mapping[str, object]]) -> object:
    """The metric's value, or _MISSING when absent, None or not a usable value."""
    reported = metrics.get(metric.stage) if isinstance(metrics, Mapping) else None
    if not isinstance(reported, Mapping):
        return _MISSING
    value = reported.get(metric.key)
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return value if math.isfinite(value) else _MISSING
    return _MISSING


def _value(operand: _Operand, representative: bool, metrics: Mapping[str, Mapping[str, object]]) -> object:
    if isinstance(operand, _Const):
        return operand.value
    if isinstance(operand, _Representative):
        return representative
    return _lookup(operand, metrics)


def _compare(op: str, left: object, right: object) -> bool | None:
    """One comparison; None (unknown) for a missing side, mixed kinds or ordered booleans."""
    if left is _MISSING or right is _MISSING:
        return None
    left_kind, right_kind = _kind(left), _kind(right)
    if left_kind != right_kind or (left_kind == "bool" and op not in ("==", "!=")):
        return None
    return _ORDERING[op](left, right)


def _truth(node: _Cond, representative: bool, metrics: Mapping[str, Mapping[str, object]]) -> bool | None:
    """Kleene truth of a condition: True, False or None (unknown)."""
    if isinstance(node, _And | _Or):
        decisive = isinstance(node, _Or)  # the value that settles it: True for or, False for and
        result: bool | None = not decisive
        for operand in node.operands:
            truth = _truth(operand, representative, metrics)
            if truth is decisive:
                return decisive
            if truth is None:
                result = None
        return result
    if isinstance(node, _Not):
        truth = _truth(node.operand, representative, metrics)
        return None if truth is None else not truth
    if isinstance(node, _Compare):
        result = True
        left = _value(node.operands[0], representative, metrics)
        for op, operand in zip(node.ops, node.operands[1:], strict=True):
            right = _value(operand, representative, metrics)
            truth = _compare(op, left, right)
            if truth is False:
                return False
            if truth is None:
                result = None
            left = right
        return result
    value = _value(node, representative, metrics)
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    return None  # missing, or a string: no truth of its own


def _metrics_of(node: _Cond) -> Iterator[_Metric]:
    """Every STAGE.KEY of a condition, left to right."""
    if isinstance(node, _And | _Or):
        for operand in node.operands:
            yield from _metrics_of(operand)
    elif isinstance(node, _Not):
        yield from _metrics_of(node.operand)
    elif isinstance(node, _Compare):
        for operand in node.operands:
            yield from _metrics_of(operand)
    elif isinstance(node, _Metric):
        yield node


def _uses_representative(node: _Cond) -> bool:
    if isinstance(node, _And | _Or):
        return any(_uses_representative(operand) for operand in node.operands)
    if isinstance(node, _Not):
        return _uses_representative(node.operand)
    if isinstance(node, _Compare):
        return any(isinstance(operand, _Representative) for operand in node.operands)
    return isinstance(node, _Representative)


# --- the public API ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """A parsed stage condition; ``Gate(text)`` parses (and raises GateError) like :func:`parse_gate`.

    Equal and hashable by its source text, so a plan can carry it and compare it.
    """

    source: str
    _tree: _Cond = field(init=False, repr=False, compare=False)
    _references: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise GateError(f"a condition must be a string, not {type(self.source).__name__}")
        tree = _Parser(self.source).parse()
        object.__setattr__(self, "_tree", tree)
        references = dict.fromkeys((metric.stage, metric.key) for metric in _metrics_of(tree))
        object.__setattr__(self, "_references", tuple(references))

    def references(self) -> list[tuple[str, str]]:
        """The (stage, key) pairs the condition reads, in order of appearance, each once."""
        return list(self._references)

    @property
    def uses_representative(self) -> bool:
        """Whether the condition reads ``is_representative`` (the planner then has to look it up)."""
        return _uses_representative(self._tree)

    def truth(self, is_representative: bool, metrics: Mapping[str, Mapping[str, object]]) -> bool | None:
        """Three-valued result: True, False, or None when missing or mismatched metrics leave it unknown."""
        return _truth(self._tree, bool(is_representative), metrics)

    def evaluate(self, is_representative: bool, metrics: Mapping[str, Mapping[str, object]]) -> bool:
        """Whether the stage runs: only a condition known to hold does (unknown is False).

        ``metrics`` maps stage -> {key: value}, as stored in ``ecod_jobs_item_stage.metrics``.
        """
        return self.truth(is_representative, metrics) is True


def parse_gate(text: str) -> Gate:
    """Parse a ``when`` condition; raises GateError naming what is wrong and at which column."""
    return Gate(text)


def check_references(gate: Gate, allowed: Mapping[str, set[str]]) -> list[str]:
    """Problems with the STAGE.KEY a gate reads, given upstream stage -> declared metric names.

    The config validator calls this so that a typo fails at load time instead of
    silently gating every item out (a missing metric is unknown, and unknown is False).
    """
    problems: list[str] = []
    unknown: set[str] = set()
    for stage, key in gate.references():
        if stage not in allowed:
            if stage not in unknown:
                unknown.add(stage)
                upstream = ", ".join(sorted(allowed))
                listing = f"upstream stages: {upstream}" if allowed else "no upstream stages"
                problems.append(f"unknown stage '{stage}' ({listing})")
            continue
        declared = allowed[stage]
        if key not in declared:
            listing = f"it declares: {', '.join(sorted(declared))}" if declared else "it declares no metrics"
            problems.append(f"stage '{stage}' reports no '{key}' ({listing})")
    return problems


# --- the metrics file ------------------------------------------------------------------------------------

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


def _metric_value(text: str) -> Value:
    """int, float, bool or string; raises ValueError for what would not survive as JSON."""
    if not text:
        raise ValueError("no value after '='")
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INT.fullmatch(text):
        return int(text)  # ValueError past Python's int digit limit
    if _FLOAT.fullmatch(text):
        number = float(text)
        if not math.isfinite(number):
            raise ValueError("number out of range")
        return number
    if _NON_FINITE.fullmatch(text):
        raise ValueError("nan and inf are not allowed")
    return text


def parse_metrics(text: str, source: str = "metrics") -> dict[str, object]:
    """The metrics a command reported: ``KEY=VALUE`` lines (blank lines and ``# comments`` ignored).

    VALUE becomes an int or float when it is a plain decimal number (nan and inf are
    refused: JSON has no such value), a bool for true/false (any case: Python prints
    True), else the string; whitespace around KEY and VALUE is dropped and a repeated
    KEY keeps its last value. A malformed line raises MetricsError naming ``source``
    and the line number, so the item-stage's error says what the command wrote.
    """
    metrics: dict[str, object] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        key, value = key.strip(), value.strip()
        shown = line if len(line) <= 80 else line[:77] + "..."
        if not separator:
            raise MetricsError(f"{source} line {number}: expected KEY=VALUE, got {shown!r}", number, raw)
        if not _NAME.fullmatch(key):
            raise MetricsError(
                f"{source} line {number}: key {key!r} is not a name ([A-Za-z_][A-Za-z0-9_]*): {shown!r}",
                number,
                raw,
            )
        try:
            metrics[key] = _metric_value(value)
        except ValueError as error:
            raise MetricsError(f"{source} line {number}: {error}: {shown!r}", number, raw) from None
    return metrics
