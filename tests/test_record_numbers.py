"""Record numbers (`rid`) from the staged tables' storage order (contract.record_numbers_sql)
instead of a window over provenance: the same numbers, and the same run outputs."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import pytest

from romirecon import api
from romirecon.stages import contract
from romirecon.stages.common import record_view
from tests.conftest import ROOT

DEMO = ROOT / "fixtures" / "demo"


def _source(name: str, unpivot: Any = None) -> Any:
    return SimpleNamespace(name=name, entity="contact", mapping=SimpleNamespace(unpivot=unpivot))


def _staged(con: duckdb.DuckDBPyConnection, name: str, rows: list[tuple[str, int]]) -> None:
    """A staged table in strictly increasing (file, row) order, as contract leaves it."""
    t = contract.stg_table(name)
    con.execute(
        f"CREATE TABLE {t} (source_id VARCHAR, source_name VARCHAR, source_file VARCHAR, "
        "source_row BIGINT)"
    )
    for f, r in rows:
        con.execute(f"INSERT INTO {t} VALUES (?, ?, ?, ?)", [f"{name}-{f}-{r}", name, f, r])


def test_numbers_follow_source_name_then_file_then_row() -> None:
    con = duckdb.connect()
    # `zeta` is listed first in the project, `alpha` sorts first: alpha's rows come first
    _staged(con, "zeta", [("a.csv", 2), ("a.csv", 3), ("b.csv", 2)])
    _staged(con, "alpha", [("x.jsonl", 1), ("x.jsonl", 7)])
    sql = contract.record_numbers_sql(con, [_source("zeta"), _source("alpha")])
    assert sql is not None
    got = con.execute(f"SELECT rid, source_id FROM ({sql}) ORDER BY rid").fetchall()
    assert got == [
        (0, "alpha-x.jsonl-1"),
        (1, "alpha-x.jsonl-7"),
        (2, "zeta-a.csv-2"),
        (3, "zeta-a.csv-3"),
        (4, "zeta-b.csv-2"),
    ]
    # the same numbers as the window the record table used before (the independent path)
    window = con.execute(
        "SELECT (row_number() OVER (ORDER BY source_name, source_file, source_row) - 1)::INTEGER, "
        "source_id FROM (SELECT * FROM staged_zeta UNION ALL SELECT * FROM staged_alpha) "
        "ORDER BY 1"
    ).fetchall()
    assert window == got


def test_no_numbers_for_an_unpivoted_source_or_gaps_in_rowids() -> None:
    con = duckdb.connect()
    _staged(con, "a", [("f.csv", 2), ("f.csv", 3), ("f.csv", 4)])
    _staged(con, "b", [("g.csv", 2)])
    assert contract.record_numbers_sql(con, [_source("a"), _source("b", {"id": ["x"]})]) is None
    # a deleted row leaves a gap: rowid + offset would skip a number
    con.execute(f"DELETE FROM {contract.stg_table('a')} WHERE source_row = 3")
    assert contract.record_numbers_sql(con, [_source("a"), _source("b")]) is None


def _data_outputs(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.suffix in (".parquet", ".csv")
    }


def test_run_outputs_equal_with_and_without_record_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole demo night through the record-number view and through the provenance
    windows and joins it replaces: byte-identical data outputs."""
    seen: list[str | None] = []
    real = contract.create_entity_views

    def spy(con: duckdb.DuckDBPyConnection, sources: list[Any]) -> None:
        real(con, sources)
        seen.append(record_view(con, "contact"))

    monkeypatch.setattr(contract, "create_entity_views", spy)
    outs = {}
    for label in ("numbered", "windowed"):
        if label == "windowed":
            monkeypatch.setattr(contract, "record_numbers_sql", lambda con, sources: None)
        project = tmp_path / label
        shutil.copytree(DEMO, project, ignore=shutil.ignore_patterns(".romirecon", "out"))
        res = api.run(project, out_dir=project / "out", quiet=True)
        assert int(res.exit_code) in (0, 1)
        outs[label] = _data_outputs(project / "out")
    assert seen == ["rec_contact", None]  # each path really ran
    assert len(outs["numbered"]) >= 10
    assert outs["numbered"] == outs["windowed"]


@pytest.mark.parametrize(
    ("ids", "dense"),
    [([3, 0, 2, 1], True), ([13, 10, 12, 11], False), ([0, 1, 2, 5], False)],
)
def test_engine_takes_dense_integer_ids_as_record_numbers(ids: list[int], dense: bool) -> None:
    """The fuzzy engine's record table numbers records in id order; ids that are already
    0..n-1 are used as they are, any other ids are ranked. Either way rid = rank of the id."""
    from romirecon.dedup import engine, prepare
    from romirecon.dedup.spec import TF_DEFAULT, FieldSpec

    con = duckdb.connect()
    con.execute("CREATE TABLE recs (i INTEGER, name VARCHAR)")
    con.executemany("INSERT INTO recs VALUES (?, ?)", [[i, f"n{i}"] for i in ids])
    seen = []
    real = prepare.record_table_sql

    def spy(*args: Any, **kw: Any) -> str:
        seen.append(kw.get("dense_ids"))
        return real(*args, **kw)

    field = FieldSpec("name", "name", TF_DEFAULT["name"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "record_table_sql", spy)
        n, _ = engine.prepare(con, "recs", "i", [field], None)
    assert n == 4 and seen == [dense]
    got = con.execute(f"SELECT rid, id FROM {engine.REC} ORDER BY rid").fetchall()
    assert got == [(r, i) for r, i in enumerate(sorted(ids))]
