"""Row conservation: every input row ends up staged or quarantined, exactly once."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from romirecon.testing import stage_sample
from tests.conftest import write_project

MAPPING = {
    "entity": "invoice",
    "columns": {
        "source_id": {"from": "id", "required": True, "pattern": "in_[0-9a-z]+"},
        "status": {"from": "status", "enum": ["draft", "open", "paid", "void", "uncollectible"]},
        "currency": {"from": "currency"},
        "total": {"from": "total", "unit": "minor", "min": -1000000, "max": 1000000},
        "created_at": {"from": "created", "formats": ["epoch"]},
        "livemode": {"from": "livemode"},
    },
    "unique": [["source_id"]],
}

cell = st.one_of(
    st.sampled_from(["", "paid", "open", "void", "USD", "usd", "JPY", "XXX", "in_1", "in_2", "true",
                     "false", "0", "12", "-5", "1e400", "NaN", "abc", "1704067200", "=SUM(A1)",
                     '"quoted, comma"', "é", " spaced "]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n"),
            max_size=8),
)  # fmt: skip
row = st.fixed_dictionaries(
    {k: cell for k in ("id", "status", "currency", "total", "created", "livemode")}
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row, min_size=1, max_size=25))
def test_every_row_staged_or_quarantined_once(rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with tempfile.TemporaryDirectory() as d:
        import yaml

        mp = Path(d) / "m.yaml"
        mp.write_text(yaml.safe_dump(MAPPING))
        sp = Path(d) / "x.csv"
        sp.write_text(buf.getvalue(), encoding="utf-8")
        con, t, q = stage_sample(mp, sp, "billing", "invoice", {"delimiter": ",", "quote": '"'})
    staged = [r[0] for r in con.execute(f"SELECT source_row FROM {t}").fetchall()]
    quarantined = [r["source_row"] for r in q if r["source_row"] is not None]
    malformed = [r for r in q if r["reason"] == "malformed-row"]
    # conservation: every written row is counted once
    assert len(staged) + len(q) == len(rows)
    assert len(set(staged) | set(quarantined)) == len(staged) + len(quarantined)
    assert not (set(staged) & set(quarantined))
    # each quarantined row has a reason and its original record
    assert all(r["reason"] and r["record"] for r in q)
    # an independent check of the staging predicate on the rows we can judge by hand:
    # a row whose id is empty can never be staged
    if not malformed:
        ids = {i + 1: r["id"].strip() for i, r in enumerate(rows)}
        assert all(ids[s] != "" for s in staged)


def test_conservation_reported_per_file(tmp_path: Path) -> None:
    proj = write_project(
        tmp_path / "p",
        [{"name": "inv", "system": "billing", "entity": "invoice", "mapping": "mappings/i.yaml",
          "path": "data/*.csv"}],
        {"i": MAPPING},
        {"data/a.csv": "id,status,currency,total,created,livemode\nin_1,paid,USD,1,,true\n,paid,USD,1,,\n",
         "data/b.csv": "id,status,currency,total,created,livemode\nin_2,paid,USD,1,,true\nin_1,open,USD,2,,\n"},
    )  # fmt: skip
    from romirecon import api

    result = api.run(proj, quiet=True)
    import duckdb

    con = duckdb.connect(str(proj / ".romirecon" / "romirecon.duckdb"), read_only=True)
    stats = con.execute(
        "SELECT file, rows_read, rows_staged, rows_quarantined FROM ingest_stats ORDER BY file"
    ).fetchall()
    # a.csv: in_1 staged, empty id quarantined; b.csv: in_2 staged, in_1 repeats a.csv's key
    assert stats == [("data/a.csv", 2, 1, 1), ("data/b.csv", 2, 1, 1)]
    assert result.sources[0].rows_read == 4
