"""Items files: good ones parse, bad ones name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecod_jobs.exceptions import ValidationError
from ecod_jobs.items import ItemRow, read_items


def write(tmp_path: Path, data: bytes | str, name: str = "items.tsv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, "protein_id\tpath\n1\t/d/a b.fa\n\n2\tr/é.fa\r\n")
    assert read_items(path) == [ItemRow("/d/a b.fa", 1), ItemRow("r/é.fa", 2)]


def test_path_only(tmp_path: Path) -> None:
    assert read_items(write(tmp_path, "path\nx\ny\n")) == [ItemRow("x"), ItemRow("y")]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "line 1: the file is empty"),
        ("protein_id\n1\n", "line 1: no 'path' column"),
        ("path\tprotien_id\nx\t1\n", "line 1: unknown column 'protien_id'"),
        ("path\tprotein_id\nx\t1\ny\tabc\n", "line 3: protein_id 'abc' is not a plain positive integer"),
        ("path\tprotein_id\nx\n", "line 2: 1 columns, expected 2"),
        ("path\tprotein_id\n \t1\n", "line 2: empty path"),
        ("path\n", "no items after the header"),
        (b"path\nok\n\xff\xfe bad\n", "line 3: not valid UTF-8"),
        ("path\nok\nC:\\data\\x.fa\n", "line 3: path 'C:\\\\data\\\\x.fa': unknown escape '\\\\d'"),
    ],
)
def test_bad_files(tmp_path: Path, content: str | bytes, fragment: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ValidationError) as info:
        read_items(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot open"):
        read_items(tmp_path / "nope.tsv")


def test_escapes_carry_any_character(tmp_path: Path) -> None:
    from ecod_jobs.items import escape_field

    hostile = ["new\nline", "tab\there", "back\\slash", "cr\r", "plain é 蛋白"]
    body = "path\n" + "".join(escape_field(h) + "\n" for h in hostile)
    assert [r.path for r in read_items(write(tmp_path, body))] == hostile
