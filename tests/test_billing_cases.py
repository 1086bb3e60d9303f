"""Known-answer billing cases: one YAML file per case under tests/cases/billing/.

Each case gives input rows per canonical table (`invoice`, `invoice_line`, `credit_note`,
`refund`, `subscription`, `billing_event`, `fx_rate`, optionally `entity_xref`), the reporting
currency and `billing:` settings, and the expected results worked out by hand in the file's
comments:

- `revenue`: every row of the monthly contract table (only the listed columns are compared; the
  number of rows must match exactly);
- `findings`: every billing finding as (code, record_id, other_id);
- optional `daily` (customer × day sums), `events` (per-line values), `adjustments`,
  `duplicates`, `conversion`, `metrics`;
- optional `source_exponents`: the mapping `exponents:` overrides per source name.

Provenance columns default to `src_<table>` / `case.csv` / the row's 1-based position.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from romirecon.stages import billing
from romirecon.stages.common import entity_table_ddl
from tests.conftest import BILLING_TABLES, insert_staged

CASES = sorted((Path(__file__).parent / "cases" / "billing").glob("*.yml"))
TABLES = BILLING_TABLES


def load_case(con: duckdb.DuckDBPyConnection, case: dict[str, Any]) -> None:
    """Create every stg_<entity> table and insert the case's rows (test data, a plain loop)."""
    vendor = case.get("vendor", "stripe")
    for entity in TABLES:
        con.execute(entity_table_ddl(entity))
        insert_staged(
            con, entity, case.get("input", {}).get(entity) or [],
            source_name=f"src_{entity}",
            source_system="fx" if entity == "fx_rate" else "billing",
            source_vendor="ecb" if entity == "fx_rate" else vendor,
            source_file="case.csv", file_sha256="0" * 64, run_id="case",
        )  # fmt: skip
    xref = case.get("input", {}).get("entity_xref")
    if xref is not None:
        con.execute(
            "CREATE TABLE entity_xref (entity VARCHAR, source_name VARCHAR, source_id VARCHAR, "
            "golden_id VARCHAR, rule VARCHAR, score DOUBLE)"
        )
        for r in xref:
            con.execute(
                "INSERT INTO entity_xref VALUES (?, ?, ?, ?, NULL, NULL)",
                [r.get("entity", "contact"), r["source_name"], r["source_id"], r["golden_id"]],
            )


def _norm(v: Any) -> Any:
    """Compare like with like: dates as ISO text, decimals as canonical strings."""
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [{n: _norm(v) for n, v in zip(names, r, strict=True)} for r in cur.fetchall()]


def _expect(rows: list[dict[str, Any]], expected: list[dict[str, Any]], what: str) -> None:
    """Same number of rows, in order; each row compared on the columns its expectation lists."""
    want = [{k: _norm(v) for k, v in e.items()} for e in expected]
    got = [{k: r.get(k, "<missing column>") for k in w} for r, w in zip(rows, want, strict=False)]
    assert len(rows) == len(want), f"{what}: {len(rows)} rows, expected {len(want)}:\n{rows}"
    assert got == want, f"{what}:\n got  {got}\n want {want}"


@pytest.fixture(params=CASES, ids=[p.stem for p in CASES])
def case(request: pytest.FixtureRequest) -> dict[str, Any]:
    return yaml.safe_load(request.param.read_text("utf-8"))


def test_case(case: dict[str, Any]) -> None:
    con = duckdb.connect()
    load_case(con, case)
    billing.run(
        con,
        "t1",
        case.get("reporting_currency", "USD"),
        case.get("settings") or {},
        source_exponents=case.get("source_exponents"),
    )
    exp = case["expected"]

    _expect(_rows(con, billing.revenue_output_query()), exp["revenue"], "revenue")

    got_f = [
        (r[0], r[1], r[2])
        for r in con.execute(
            "SELECT code, record_id, other_id FROM finding WHERE stage = 'billing' "
            "ORDER BY code, record_id, other_id"
        ).fetchall()
    ]
    want_f = [
        (f["code"], _norm(f.get("record_id")), _norm(f.get("other_id")))
        for f in exp.get("findings") or []
    ]

    def order(f: tuple[Any, ...]) -> tuple[str, ...]:
        return tuple("" if x is None else str(x) for x in f)

    assert sorted(got_f, key=order) == sorted(want_f, key=order), "findings"

    if "daily" in exp:
        days = sorted({str(d["day"]) for d in exp["daily"]})
        rows = _rows(
            con,
            "SELECT customer_id, day, CAST(sum(amount_minor) AS BIGINT) AS amount_minor "
            "FROM revenue_daily GROUP BY ALL ORDER BY customer_id, day",
        )
        rows = [r for r in rows if r["day"] in days]
        _expect(
            rows, sorted(exp["daily"], key=lambda d: (d["customer_id"], str(d["day"]))), "daily"
        )
    if "events" in exp:
        _expect(
            _rows(con, "SELECT * FROM revenue_event ORDER BY line_id, event_id"),
            exp["events"],
            "events",
        )
    if "adjustments" in exp:
        _expect(
            _rows(
                con, "SELECT * FROM revenue_adjustment ORDER BY adjustment_id, event_id NULLS FIRST"
            ),
            exp["adjustments"],
            "adjustments",
        )
    if "duplicates" in exp:
        _expect(
            _rows(
                con,
                "SELECT * FROM billing_duplicate ORDER BY entity, record_id, source_file, source_row",
            ),
            exp["duplicates"],
            "duplicates",
        )
    if "conversion" in exp:
        _expect(
            _rows(con, "SELECT * FROM conversion ORDER BY customer_id"),
            exp["conversion"],
            "conversion",
        )
    for name, value in (exp.get("metrics") or {}).items():
        row = con.execute(
            "SELECT sum(value) FROM metric WHERE stage = 'billing' AND name = ?", [name]
        ).fetchone()
        assert row is not None and row[0] == value, f"metric {name}: got {row}"


def test_cases_exist() -> None:
    # the brief's list of known-answer cases: a missing file would silently shrink coverage
    names = {p.stem for p in CASES}
    assert len(names) >= 10, names
