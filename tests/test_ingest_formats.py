"""Every supported file format reads into the same staged rows."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pytest
import yaml

from romirecon.testing import stage_sample

MAPPING = {
    "entity": "invoice_line",
    "columns": {
        "source_id": {"from": "id", "required": True},
        "currency": {"from": "currency"},
        "amount": {"from": "amount", "unit": "minor"},
        "description": {"from": "description"},
    },
}
ROWS = [
    {"id": "il_1", "currency": "usd", "amount": 1999, "description": "Pro plan, monthly"},
    {"id": "il_2", "currency": "jpy", "amount": 500, "description": 'quote " and\nnewline'},
]
EXPECTED = [
    ("il_1", "USD", 1999, "Pro plan, monthly"),
    ("il_2", "JPY", 500, 'quote " and\nnewline'),
]


def _csv(sep: str = ",") -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(ROWS[0]), delimiter=sep, lineterminator="\n")
    w.writeheader()
    w.writerows(ROWS)
    return buf.getvalue()


def _write(tmp_path: Path, kind: str) -> tuple[Path, dict | None]:
    if kind == "csv":
        p = tmp_path / "x.csv"
        p.write_text(_csv())
        return p, None
    if kind == "semicolon":
        p = tmp_path / "x.csv"
        p.write_text(_csv(";"))
        return p, {"delimiter": ";"}
    if kind == "tsv":
        p = tmp_path / "x.tsv"
        p.write_text(_csv("\t"))
        return p, None
    if kind == "csv.gz":
        p = tmp_path / "x.csv.gz"
        p.write_bytes(gzip.compress(_csv().encode()))
        return p, None
    if kind == "ndjson":
        p = tmp_path / "x.ndjson"
        p.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
        return p, None
    if kind == "json-array":
        p = tmp_path / "x.json"
        p.write_text(json.dumps(ROWS))
        return p, None
    if kind == "jsonl-of-list-mapping":
        # a mapping written for the API list (type json, json_path data) reads a bulk extract's
        # .jsonl of the same records: the file's extension says one record per line
        p = tmp_path / "x.jsonl"
        p.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
        return p, {"type": "json", "json_path": "data"}
    if kind == "json-list":
        p = tmp_path / "x.json"
        p.write_text(json.dumps({"object": "list", "data": ROWS, "has_more": False}))
        return p, {"json_path": "data"}
    if kind == "parquet":
        p = tmp_path / "x.parquet"
        con = duckdb.connect()
        con.execute(
            "CREATE TABLE t (id VARCHAR, currency VARCHAR, amount BIGINT, description VARCHAR)"
        )
        con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [list(r.values()) for r in ROWS])
        con.execute(f"COPY t TO '{p}' (FORMAT parquet)")
        return p, None
    if kind == "xlsx":
        pytest.importorskip("xlsxwriter", reason="xlsxwriter writes the sample workbook")
        raise AssertionError("unreachable")
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "csv",
        "semicolon",
        "tsv",
        "csv.gz",
        "ndjson",
        "jsonl-of-list-mapping",
        "json-array",
        "json-list",
        "parquet",
    ],
)
def test_format(tmp_path: Path, kind: str) -> None:
    sample, fmt = _write(tmp_path, kind)
    mp = tmp_path / "m.yaml"
    mp.write_text(yaml.safe_dump(MAPPING))
    con, t, q = stage_sample(mp, sample, "billing", "invoice_line", fmt)
    assert q == []
    got = con.execute(
        f"SELECT source_id, currency, amount, description FROM {t} ORDER BY source_row"
    ).fetchall()
    assert got == EXPECTED
    rows = [r[0] for r in con.execute(f"SELECT source_row FROM {t} ORDER BY source_row").fetchall()]
    assert len(rows) == 2 and rows[0] < rows[1]


def test_json_keys_come_from_every_record_and_nested_values_stay_json_text(tmp_path: Path) -> None:
    """Every top-level key becomes a column, also one only the 3rd record has (no sampling);
    nested objects and arrays arrive as JSON text that dotted `from` paths read into; keys with
    dots and quotes work; a key missing from a record is NULL, not the text 'null'."""
    records = [
        {"id": "il_1", "currency": "usd", "amount": 100, "meta": {"plan": {"id": "pro"}}},
        {"id": "il_2", "currency": "eur", "amount": 200, "meta": None, "tags": ["a", "b"]},
        {"id": "il_3", "currency": "gbp", "amount": 300, 'odd.key "q"': "x", "late": "L"},
    ]
    p = tmp_path / "x.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    mapping = {
        "entity": "invoice_line",
        "columns": {
            "source_id": {"from": "id", "required": True},
            "currency": {"from": "currency"},
            "amount": {"from": "amount", "unit": "minor"},
            "price_id": {"from": "meta.plan.id"},
            "description": {"from": "late"},
            "coupon": {"from": 'odd.key "q"'},
            "plan_id": {"from": "meta"},
            "subscription_id": {"from": "tags"},
        },
    }
    mp = tmp_path / "m.yaml"
    mp.write_text(yaml.safe_dump(mapping))
    con, t, q = stage_sample(mp, p, "billing", "invoice_line")
    assert q == []
    got = con.execute(
        f"SELECT source_id, amount, price_id, description, coupon FROM {t} ORDER BY source_row"
    ).fetchall()
    assert got == [
        ("il_1", 100, "pro", None, None),
        ("il_2", 200, None, None, None),
        ("il_3", 300, None, "L", "x"),
    ]
    raw = con.execute(f"SELECT plan_id, subscription_id FROM {t} ORDER BY source_row").fetchall()
    assert raw == [('{"plan":{"id":"pro"}}', None), (None, '["a","b"]'), (None, None)]
