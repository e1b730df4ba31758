"""Reading a batch's items file: a TSV with a header.

Columns: ``path`` (required), ``protein_id`` (optional positive integer) and
``is_representative`` (optional boolean). Every problem is reported with the
file and line, and the whole file is checked before anything is written. A
UTF-8 byte-order mark before the header is ignored (spreadsheets write one).
A path may appear once (``allow_duplicates`` lifts that), and may not hold a
NUL byte (PostgreSQL text cannot store one).

A path may hold any character. Tab, newline, carriage return and backslash are
written as ``\t``, ``\n``, ``\r`` and ``\\`` (the escapes of PostgreSQL's COPY
text format and of "linear TSV"); any other backslash sequence is an error, so
a mistyped path is never silently changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .exceptions import ValidationError

REQUIRED_COLUMNS = ("path",)
OPTIONAL_COLUMNS = ("protein_id", "is_representative")
_TRUE = {"1", "t", "true", "yes", "y"}
_FALSE = {"0", "f", "false", "no", "n", ""}
_MAX_ERRORS = 5
_BOM = b"\xef\xbb\xbf"
# Plain ASCII digits only: int() would also take '1_000', '+7', ' 7' and fullwidth digits.
_PLAIN_INT = re.compile(r"[0-9]+")
_MAX_PROTEIN_ID = 2**31 - 1  # ECOD's protein.id is a PostgreSQL integer


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}
_BACKSLASH = "\\"
_HINT = r"write a backslash as \\ (tab, newline and carriage return as \t, \n, \r)"


def unescape_field(text: str) -> str:
    r"""``\t \n \r \\`` to tab, newline, carriage return, backslash; ValueError otherwise."""
    if "\\" not in text:
        return text
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(chars, "")
        if nxt not in _ESCAPES:
            raise ValueError(f"unknown escape {_BACKSLASH + nxt!r}: {_HINT}")
        out.append(_ESCAPES[nxt])
    return "".join(out)


def escape_field(text: str) -> str:
    """The inverse of :func:`unescape_field` (for writing items files)."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


@dataclass(frozen=True, slots=True)
class ItemRow:
    path: str
    protein_id: int | None = None
    is_representative: bool = False


def _fail(path: Path, problems: list[str]) -> ValidationError:
    more = f" (and {len(problems) - _MAX_ERRORS} more)" if len(problems) > _MAX_ERRORS else ""
    return ValidationError(
        f"items file {path}: " + "; ".join(problems[:_MAX_ERRORS]) + more,
        {"path": str(path), "errors": problems},
    )


def read_items(path: str | Path, *, allow_duplicates: bool = False) -> list[ItemRow]:
    """Parse and validate the whole file; raise ``ValidationError`` naming file and line.

    A path given twice is an error naming both lines unless ``allow_duplicates``.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ValidationError(f"items file {path}: cannot open: {exc.strerror}") from None
    rows: list[ItemRow] = []
    problems: list[str] = []
    seen: dict[str, int] = {}  # path -> the line it first appeared on
    with handle:
        header_raw = handle.readline()
        if header_raw.startswith(_BOM):
            header_raw = header_raw[len(_BOM) :]
        if not header_raw.strip():
            raise ValidationError(
                f"items file {path} line 1: the file is empty; expected a header line "
                "with a 'path' column (tab-separated)",
                {"path": str(path), "line": 1},
            )
        try:
            header = header_raw.decode("utf-8").rstrip("\r\n").split("\t")
        except UnicodeDecodeError as exc:
            raise _fail(path, [f"line 1: not valid UTF-8 ({exc.reason})"]) from None
        header = [name.strip().lower() for name in header]
        unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
        if "path" not in header or unknown:
            what = f"unknown column {unknown[0]!r}" if unknown else "no 'path' column"
            raise _fail(
                path,
                [
                    f"line 1: {what} in header {header!r}: expected tab-separated columns "
                    "'path' and optionally 'protein_id', 'is_representative'"
                ],
            )
        if len(set(header)) != len(header):
            raise _fail(path, [f"line 1: duplicate column in header {header!r}"])
        i_path = header.index("path")
        i_protein = header.index("protein_id") if "protein_id" in header else None
        i_rep = header.index("is_representative") if "is_representative" in header else None
        width = len(header)
        for lineno, raw in enumerate(handle, start=2):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                problems.append(f"line {lineno}: not valid UTF-8 ({exc.reason})")
                continue
            if not line.strip():
                continue  # blank lines (e.g. a trailing one) carry nothing
            fields = line.split("\t")
            if len(fields) != width:
                problems.append(f"line {lineno}: {len(fields)} columns, expected {width}")
                continue
            try:
                item_path = unescape_field(fields[i_path])
            except ValueError as exc:
                problems.append(f"line {lineno}: path {fields[i_path]!r}: {exc}")
                continue
            if not item_path.strip():
                problems.append(f"line {lineno}: empty path")
                continue
            if "\0" in item_path:
                problems.append(f"line {lineno}: path {item_path!r} holds a NUL byte")
                continue
            protein_id = None
            if i_protein is not None and fields[i_protein].strip():
                text = fields[i_protein].strip()
                if not _PLAIN_INT.fullmatch(text) or not 0 < int(text) <= _MAX_PROTEIN_ID:
                    problems.append(
                        f"line {lineno}: protein_id {text!r} is not a plain positive integer"
                        f" (digits 0-9 only, 1 to {_MAX_PROTEIN_ID})"
                    )
                    continue
                protein_id = int(text)
            rep = False
            if i_rep is not None:
                flag = fields[i_rep].strip().lower()
                if flag not in _TRUE | _FALSE:
                    problems.append(f"line {lineno}: is_representative {flag!r} is not a boolean")
                    continue
                rep = flag in _TRUE
            first = seen.setdefault(item_path, lineno)
            if first != lineno and not allow_duplicates:
                problems.append(
                    f"line {lineno}: path {item_path!r} repeats line {first}"
                    " (--allow-duplicates accepts repeated paths)"
                )
                continue
            rows.append(ItemRow(item_path, protein_id, rep))
    if problems:
        raise _fail(path, problems)
    if not rows:
        raise ValidationError(f"items file {path}: no items after the header", {"path": str(path)})
    return rows
