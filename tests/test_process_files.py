"""process_file: bulk, in-place writes (pyECOD's duplicates included), output templates, scans."""

from __future__ import annotations

import os
import threading
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import q, wait_for

from ecod_jobs.db import Database, create_batch, init_schema
from ecod_jobs.exceptions import DatabaseError, ValidationError
from ecod_jobs.items import ItemRow
from ecod_jobs.process_files import (
    FileRow,
    check_output_template,
    item_template_values,
    register_files,
    render_output,
    scan_outputs,
    upsert_files,
    write_files,
)

T0 = datetime(2026, 12, 1, 10, 0, 0)
T1 = datetime(2026, 12, 1, 11, 0, 0)
OUTPUTS = [
    ("chain_blast_result", "blast/chain/{stem}.xml"),
    ("domain_blast_result", "blast/domain/{stem}.xml"),
]


def batch_db(db_config: dict[str, Any], items: int, base_path: str = "") -> tuple[Database, int]:
    """A fresh schema and one batch of ``items`` items ``sequences/P{i}.fa`` (process ids 1..n)."""
    db = Database(db_config)
    init_schema(db)
    rows = [ItemRow(f"sequences/P{i}.fa", protein_id=100 + i) for i in range(1, items + 1)]
    return db, create_batch(db, "files", rows, base_path=base_path)


def files(pg_conn: Any) -> list[tuple[Any, ...]]:
    return q(
        pg_conn,
        "SELECT id, process_id, file_type, file_path, file_exists, file_size, last_checked"
        " FROM ecod_schema.process_file ORDER BY process_id, file_type, id",
    )


def upsert(db: Database, rows: list[FileRow]) -> int:
    with db.transaction() as cur:
        return upsert_files(cur, db, rows)


def test_insert_update_and_idempotence(db_config: dict[str, Any], pg_conn: Any) -> None:
    db, _ = batch_db(db_config, 3)
    rows = [FileRow(pid, "chain_blast_result", f"blast/P{pid}.xml", True, 10 * pid, T0) for pid in (1, 2, 3)]
    assert upsert(db, rows) == 3
    assert [r[1:] for r in files(pg_conn)] == [
        (1, "chain_blast_result", "blast/P1.xml", True, 10, T0),
        (2, "chain_blast_result", "blast/P2.xml", True, 20, T0),
        (3, "chain_blast_result", "blast/P3.xml", True, 30, T0),
    ]
    ids = [r[0] for r in files(pg_conn)]

    # the same files checked again later: nothing changed, nothing written (last_checked stays)
    assert (
        upsert(db, [FileRow(r.process_id, r.file_type, r.file_path, True, r.file_size, T1) for r in rows])
        == 0
    )
    assert [r[6] for r in files(pg_conn)] == [T0, T0, T0]

    # one file gone, one new file type: one row updated in place, one inserted
    changed = [
        FileRow(2, "chain_blast_result", "blast/P2.xml", False, None, T1),
        FileRow(2, "domain_blast_result", "blast/d/P2.xml", True, 5, T1),
    ]
    with db.transaction() as cur:
        counts = write_files(cur, db, [*rows[:1], *changed, rows[2]])
    assert (counts.staged, counts.updated, counts.inserted, counts.unchanged, counts.written) == (
        4,
        1,
        1,
        2,
        2,
    )
    after = files(pg_conn)
    assert [r[0] for r in after if r[2] == "chain_blast_result"] == ids, (
        "updated in place: same rows, same ids"
    )
    assert [r[1:] for r in after] == [
        (1, "chain_blast_result", "blast/P1.xml", True, 10, T0),
        (2, "chain_blast_result", "blast/P2.xml", False, None, T1),
        (2, "domain_blast_result", "blast/d/P2.xml", True, 5, T1),
        (3, "chain_blast_result", "blast/P3.xml", True, 30, T0),
    ]


def test_the_last_of_a_repeated_pair_wins(db_config: dict[str, Any], pg_conn: Any) -> None:
    db, _ = batch_db(db_config, 2)
    rows = [
        FileRow(1, "fasta", "first.fa", True, 1, T0),
        FileRow(2, "fasta", "other.fa", True, 7, T0),
        FileRow(1, "fasta", "second.fa", True, 2, T0),
        FileRow(1, "fasta", "third.fa", False, None, T1),
    ]
    assert upsert(db, rows) == 2
    assert sorted(r[1:6] for r in files(pg_conn)) == [
        (1, "fasta", "third.fa", False, None),
        (2, "fasta", "other.fa", True, 7),
    ]
    # and over an existing row, too
    assert (
        upsert(db, [FileRow(2, "fasta", "a.fa", True, 1, T1), FileRow(2, "fasta", "b.fa", True, 2, T1)]) == 1
    )
    assert sorted(r[1:6] for r in files(pg_conn))[1] == (2, "fasta", "b.fa", True, 2)


def test_repeats_in_item_order_and_copy_special_characters(db_config: dict[str, Any], pg_conn: Any) -> None:
    db, _ = batch_db(db_config, 3)
    odd = "odd\tname\\with\nescapes\r.xml"
    rows = [
        FileRow(1, "a", "1a-first", True, 1, T0),
        FileRow(1, "b", odd, True, 2, T0),
        FileRow(1, "a", "1a-last", True, 3, T0),  # in process-id order, but repeated within the item
        FileRow(2, "a", "2a", False, None, T0),
        FileRow(3, "a\tb", "3", True, 4, T0),
    ]
    with db.transaction() as cur:
        counts = write_files(cur, db, rows)
    assert (counts.staged, counts.inserted) == (4, 4)
    assert [r[1:6] for r in files(pg_conn)] == [
        (1, "a", "1a-last", True, 3),
        (1, "b", odd, True, 2),
        (2, "a", "2a", False, None),
        (3, "a\tb", "3", True, 4),
    ]
    assert upsert(db, rows) == 0


def test_a_database_populated_by_pyecod_keeps_its_duplicates_and_other_types(
    db_config: dict[str, Any], pg_conn: Any
) -> None:
    db, _ = batch_db(db_config, 3)
    # pyECOD's way: plain INSERTs, one per file, no check for an existing row; so an item
    # re-run by hand holds two rows of one file type, and there are types we do not write.
    for pid, file_type, path, exists, size in [
        (1, "chain_blast_result", "old/P1.xml", True, 11),
        (1, "chain_blast_result", "older/P1.xml", False, None),
        (1, "fasta", "sequences/P1.fa", True, 50),
        (2, "fasta", "sequences/P2.fa", True, 60),
        (2, "domain_blast_result", "old/d/P2.xml", True, 12),
        (3, "hhsearch_result", "hh/P3.hhr", True, 99),
    ]:
        q(
            pg_conn,
            "INSERT INTO ecod_schema.process_file (process_id, file_type, file_path, file_exists, file_size)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            pid,
            file_type,
            path,
            exists,
            size,
        )
    before = files(pg_conn)
    per_pair_before = Counter((r[1], r[2]) for r in before)
    assert per_pair_before[(1, "chain_blast_result")] == 2

    ours = [
        FileRow(1, "chain_blast_result", "blast/chain/P1.xml", True, 100, T1),
        FileRow(2, "chain_blast_result", "blast/chain/P2.xml", True, 200, T1),
        FileRow(2, "domain_blast_result", "blast/domain/P2.xml", True, 300, T1),
        FileRow(3, "chain_blast_result", "blast/chain/P3.xml", False, None, T1),
    ]
    with db.transaction() as cur:
        counts = write_files(cur, db, ours)
    assert (counts.updated, counts.updated_pairs, counts.inserted) == (3, 2, 2)
    after = files(pg_conn)
    per_pair_after = Counter((r[1], r[2]) for r in after)
    expected = per_pair_before + Counter({(2, "chain_blast_result"): 1, (3, "chain_blast_result"): 1})
    assert per_pair_after == expected, "never a second row of a pair; the duplicates stay two"
    by_id = {r[0]: r[1:] for r in after}
    for row in before:
        pid, file_type = row[1], row[2]
        mine = [o for o in ours if (o.process_id, o.file_type) == (pid, file_type)]
        if mine:  # both duplicates updated in place
            assert by_id[row[0]] == (
                pid,
                file_type,
                mine[0].file_path,
                mine[0].file_exists,
                mine[0].file_size,
                T1,
            )
        else:  # other file types untouched, their last_checked too
            assert by_id[row[0]] == row[1:]
    # and a second write of the same rows changes nothing, duplicates or not
    assert upsert(db, ours) == 0
    assert files(pg_conn) == after


def test_writes_are_the_callers_transaction(db_config: dict[str, Any], pg_conn: Any) -> None:
    db, _ = batch_db(db_config, 2)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), db.transaction() as cur:
        assert upsert_files(cur, db, [FileRow(1, "fasta", "a.fa", True, 1, T0)]) == 1
        raise Boom
    assert files(pg_conn) == [], "rolled back with the caller's other writes"
    with db.transaction() as cur:  # twice in one transaction: the staging table is per write
        assert upsert_files(cur, db, [FileRow(1, "fasta", "a.fa", True, 1, T0)]) == 1
        assert upsert_files(cur, db, [FileRow(2, "fasta", "b.fa", True, 1, T0)]) == 1
        assert upsert_files(cur, db, []) == 0
    assert len(files(pg_conn)) == 2
    with pytest.raises(DatabaseError), db.transaction() as cur:  # no such item: the foreign key says so
        upsert_files(cur, db, [FileRow(99, "fasta", "x.fa", True, 1, T0)])


def test_two_writers_of_a_new_pair_make_one_row(db_config: dict[str, Any], pg_conn: Any) -> None:
    """Without a unique key only the writers' lock keeps two concurrent writers of one new
    pair from each inserting it: the second waits, then finds the first's row and updates it."""
    db, _ = batch_db(db_config, 1)
    first, second = db.connect(), db.connect()
    try:
        with first.cursor() as cur:
            assert upsert_files(cur, db, [FileRow(1, "fasta", "first.fa", True, 1, T0)]) == 1
        result: list[int] = []
        writer = threading.Thread(
            target=lambda: result.append(
                upsert_in(second, db, [FileRow(1, "fasta", "second.fa", True, 2, T1)])
            )
        )
        writer.start()
        wait_for(
            lambda: q(pg_conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")[
                0
            ][0],
            what="the second writer to wait for the first",
        )
        first.commit()
        writer.join(timeout=60)
        assert result == [1]
    finally:
        first.close()
        second.close()
    assert [r[1:6] for r in files(pg_conn)] == [(1, "fasta", "second.fa", True, 2)]


def upsert_in(conn: Any, db: Database, rows: list[FileRow]) -> int:
    with conn, conn.cursor() as cur:
        return upsert_files(cur, db, rows)


def test_render_output_and_template_values() -> None:
    values = item_template_values(7, 1234, 3, "sequences/P12345.fa")
    assert values == {"item_id": 7, "protein_id": 1234, "batch_id": 3, "stem": "P12345"}
    assert item_template_values(7, None, 3, "x/a.fa.gz")["stem"] == "a.fa"
    assert item_template_values(7, None, 3, None)["stem"] is None
    assert item_template_values(7, None, 3, "")["stem"] is None
    assert render_output("blast/chain/{stem}.xml", values) == "blast/chain/P12345.xml"
    assert render_output("b{batch_id}/{item_id:06d}/{protein_id}.hhr", values) == "b3/000007/1234.hhr"
    assert render_output("./out//{stem}/../{stem}.txt", values) == "out/P12345.txt", "normalised"
    for template, message in [
        ("/abs/{stem}.xml", "relative"),
        ("../{stem}.xml", "not inside"),
        ("a/../../{stem}.xml", "not inside"),
        ("{stem}/..", "not inside"),
        ("", "relative"),
        ("{path}.xml", "unknown placeholder {path}"),
        ("{stem.upper}.xml", "unknown placeholder"),
        ("{stem[0]}.xml", "unknown placeholder"),
        ("{stem.xml", "output template"),
    ]:
        with pytest.raises(ValueError, match="output template") as err:
            render_output(template, values)
        assert repr(template) in str(err.value) and message in str(err.value), (template, err.value)
        with pytest.raises(ValueError):
            check_output_template(template)
    with pytest.raises(ValueError, match=r"has no \{protein_id\}"):
        render_output("{protein_id}.xml", item_template_values(1, None, 1, "a.fa"))
    with pytest.raises(ValueError, match=r"has no \{stem\}"):
        render_output("{stem}.xml", item_template_values(1, None, 1, None))
    check_output_template("blast/chain/{stem}.xml")


def test_scan_outputs_stats_in_order(tmp_path: Path) -> None:
    (tmp_path / "blast" / "chain").mkdir(parents=True)
    (tmp_path / "blast" / "domain" / "P3.xml").mkdir(parents=True)  # a directory is not the file
    for i in range(1, 1500, 2):  # odd items have a chain result; more items than one stat block
        (tmp_path / "blast" / "chain" / f"P{i}.xml").write_text("x" * i)
    items = [(i, item_template_values(i, None, 1, f"sequences/P{i}.fa")) for i in range(1, 1501)]
    rows = list(scan_outputs(str(tmp_path), iter(items), OUTPUTS, T0, workers=4))
    assert [(r.process_id, r.file_type) for r in rows] == [(i, t) for i, _ in items for t, _ in OUTPUTS]
    by_key = {(r.process_id, r.file_type): r for r in rows}
    assert by_key[(5, "chain_blast_result")] == FileRow(
        5, "chain_blast_result", "blast/chain/P5.xml", True, 5, T0
    )
    assert by_key[(4, "chain_blast_result")] == FileRow(
        4, "chain_blast_result", "blast/chain/P4.xml", False, None, T0
    )
    assert by_key[(3, "domain_blast_result")].file_exists is False
    assert sum(r.file_exists for r in rows) == 750
    assert list(scan_outputs(str(tmp_path), items, [], T0)) == []
    with pytest.raises(ValueError, match="not inside"):
        list(scan_outputs(str(tmp_path), items, [("x", "../{stem}")], T0))


def test_register_files_end_to_end(db_config: dict[str, Any], pg_conn: Any, tmp_path: Path) -> None:
    db, batch_id = batch_db(db_config, 4, base_path=str(tmp_path))
    for rel, text in [
        ("blast/chain/P1.xml", "one"),
        ("blast/chain/P2.xml", "two!"),
        ("blast/domain/P1.xml", ""),
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)

    first = register_files(db, batch_id, OUTPUTS)
    assert first == {
        "items": 4,
        "files": 8,
        "present": 3,
        "missing": 5,
        "written": 8,
        "inserted": 8,
        "updated": 0,
        "unchanged": 0,
    }
    rows = {(r[1], r[2]): r[3:6] for r in files(pg_conn)}
    assert rows[(1, "chain_blast_result")] == ("blast/chain/P1.xml", True, 3)
    assert rows[(2, "chain_blast_result")] == ("blast/chain/P2.xml", True, 4)
    assert rows[(1, "domain_blast_result")] == ("blast/domain/P1.xml", True, 0), "empty, but there"
    assert rows[(4, "domain_blast_result")] == ("blast/domain/P4.xml", False, None), "missing, recorded"

    again = register_files(db, batch_id, OUTPUTS)
    assert (again["written"], again["unchanged"], again["files"]) == (0, 8, 8), "idempotent"

    os.remove(tmp_path / "blast/chain/P2.xml")
    (tmp_path / "blast/domain/P4.xml").write_text("four")
    third = register_files(db, batch_id, OUTPUTS)
    assert (third["written"], third["updated"], third["unchanged"], third["present"]) == (2, 2, 6, 3)
    rows = {(r[1], r[2]): r[3:6] for r in files(pg_conn)}
    assert rows[(2, "chain_blast_result")] == ("blast/chain/P2.xml", False, None)
    assert rows[(4, "domain_blast_result")] == ("blast/domain/P4.xml", True, 4)
    assert len(files(pg_conn)) == 8

    nothing = register_files(db, batch_id, [])  # no declared outputs: nothing to look at
    assert (nothing["items"], nothing["files"], nothing["written"]) == (4, 0, 0)

    with pytest.raises(ValidationError, match=f"batch {batch_id}: output template '/abs/{{stem}}'"):
        register_files(db, batch_id, [("x", "/abs/{stem}")])
    with pg_conn.cursor() as cur:  # an item without a path has no {stem}
        cur.execute("UPDATE ecod_schema.process_status SET relative_path = NULL WHERE id = 3")
    with pytest.raises(ValidationError, match=r"has no \{stem\}"):
        register_files(db, batch_id, OUTPUTS)
    assert len(files(pg_conn)) == 8, "a failed scan writes nothing"


def test_register_files_needs_a_base_path(db_config: dict[str, Any], pg_conn: Any, tmp_path: Path) -> None:
    db, batch_id = batch_db(db_config, 2, base_path="")
    with pytest.raises(ValidationError, match=f"batch {batch_id} has no base_path"):
        register_files(db, batch_id, OUTPUTS)
    with pytest.raises(ValidationError, match="batch 999 does not exist"):
        register_files(db, 999, OUTPUTS)
    (empty,) = q(
        pg_conn,
        "INSERT INTO ecod_schema.batch (batch_name, base_path, type, ref_version, total_items)"
        " VALUES ('empty', %s, 'generic', 'x', 0) RETURNING id",
        str(tmp_path),
    )[0]
    assert register_files(db, empty, OUTPUTS) == dict.fromkeys(
        ("items", "files", "present", "missing", "written", "inserted", "updated", "unchanged"), 0
    )
