"""Reading a batch's items file: a TSV with a header.

Columns: ``path`` (required), ``protein_id`` (optional integer) and
``is_representative`` (optional boolean). Every problem is reported with the
file and line, and the whole file is checked before anything is written.

A path may hold any character. Tab, newline, carriage return and backslash are
written as ``\t``, ``\n``, ``\r`` and ``\\`` (the escapes of PostgreSQL's COPY
text format and of "linear TSV"); any other backslash sequence is an error, so
a mistyped path is never silently changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .exceptions import ValidationError

REQUIRED_COLUMNS = ("path",)
OPTIONAL_COLUMNS = ("protein_id", "is_representative")
_TRUE = {"1", "t", "true", "yes", "y"}
_FALSE = {"0", "f", "false", "no", "n", ""}
_MAX_ERRORS = 5


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


def read_items(path: str | Path) -> list[ItemRow]:
    """Parse and validate the whole file; raise ``ValidationError`` naming file and line."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ValidationError(f"items file {path}: cannot open: {exc.strerror}") from None
    rows: list[ItemRow] = []
    problems: list[str] = []
    with handle:
        header_raw = handle.readline()
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
            protein_id = None
            if i_protein is not None and fields[i_protein].strip():
                text = fields[i_protein].strip()
                try:
                    protein_id = int(text)
                except ValueError:
                    problems.append(f"line {lineno}: protein_id {text!r} is not an integer")
                    continue
                if not -(2**31) <= protein_id < 2**31:
                    problems.append(f"line {lineno}: protein_id {text!r} is out of range")
                    continue
            rep = False
            if i_rep is not None:
                flag = fields[i_rep].strip().lower()
                if flag not in _TRUE | _FALSE:
                    problems.append(f"line {lineno}: is_representative {flag!r} is not a boolean")
                    continue
                rep = flag in _TRUE
            rows.append(ItemRow(item_path, protein_id, rep))
    if problems:
        raise _fail(path, problems)
    if not rows:
        raise ValidationError(f"items file {path}: no items after the header", {"path": str(path)})
    return rows
