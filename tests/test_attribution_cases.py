"""Known-answer attribution and ROMI cases: one YAML file per case under tests/cases/attribution/.

A case gives input rows per canonical table (`contact`, `campaign_member`, `deal`, `invoice`,
`invoice_line`, `subscription`, `ad_spend`, `fx_rate`; optionally `entity_xref`), the reporting
currency and the `attribution:` settings; the billing stage turns the invoices into recognised
revenue, then attribution and ROMI run. Expected results are worked out by hand in the file's
comments:

- `credits`: every attribution credit (customer = the conversion's first billing customer, model,
  touch = the source id of the record behind the touch, or null when unattributed, credit);
- `romi`: every row of the ROMI table for the models listed (compared on the columns given);
- `touchpoints` (optional): eligibility of touches by source id.

Provenance columns default to `src_<table>` / `<table>.csv` / the row's 1-based position.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from romirecon.stages import attribution, billing, romi
from romirecon.stages.common import entity_table_ddl
from tests.conftest import insert_staged

CASES = sorted((Path(__file__).parent / "cases" / "attribution").glob("*.yml"))
TABLES = (
    "contact",
    "campaign_member",
    "deal",
    "invoice",
    "invoice_line",
    "credit_note",
    "refund",
    "subscription",
    "billing_event",
    "ad_spend",
    "fx_rate",
    "account",
)
SYSTEM = {
    "contact": "crm",
    "account": "crm",
    "campaign_member": "crm",
    "deal": "crm",
    "ad_spend": "ads",
    "fx_rate": "fx",
}
VENDOR = {"crm": "salesforce", "billing": "stripe", "ads": "ads", "fx": "ecb"}


def load_case(con: duckdb.DuckDBPyConnection, case: dict[str, Any]) -> None:
    """Create every stg_<entity> table and insert the case's rows (test data, a plain loop)."""
    for entity in TABLES:
        con.execute(entity_table_ddl(entity))
        system = SYSTEM.get(entity, "billing")
        insert_staged(
            con, entity, case.get("input", {}).get(entity) or [],
            source_name=f"src_{entity}", source_system=system, source_vendor=VENDOR[system],
            source_file=f"{entity}.csv", file_sha256="0" * 64, run_id="case",
        )  # fmt: skip
    xref = case.get("input", {}).get("entity_xref")
    if xref is not None:
        con.execute(
            "CREATE TABLE entity_xref (entity VARCHAR, source_name VARCHAR, source_system VARCHAR, "
            "source_id VARCHAR, source_file VARCHAR, source_row BIGINT, golden_id VARCHAR, "
            "rule VARCHAR, match_probability DOUBLE, is_survivor BOOLEAN)"
        )
        for r in xref:
            con.execute(
                "INSERT INTO entity_xref VALUES (?, ?, 'crm', ?, NULL, NULL, ?, 'case', 1.0, NULL)",
                [r.get("entity", "contact"), r.get("source_name", "src_contact"), r["source_id"],
                 r["golden_id"]],
            )  # fmt: skip


def _norm(v: Any) -> Any:
    """Compare like with like: dates as ISO text, decimals as canonical strings."""
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, bool) or v is None:
        return v
    try:
        d = Decimal(str(v))
    except ArithmeticError:
        return v
    return f"{d.normalize():f}" if d.is_finite() else v


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


def run_case(case: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    load_case(con, case)
    rep = case.get("reporting_currency", "USD")
    billing.run(con, "t1", rep, {})
    attribution.run(con, "t1", case.get("settings") or {})
    romi.run(con, "t1", rep, case.get("settings") or {})
    return con


@pytest.fixture(params=CASES, ids=[p.stem for p in CASES])
def case(request: pytest.FixtureRequest) -> dict[str, Any]:
    return yaml.safe_load(request.param.read_text("utf-8"))


CREDITS_SQL = """
SELECT c.first_customer_id AS customer, k.model, t.source_id AS touch, k.credit, k.position
FROM attribution_credit k JOIN attribution_conversion c USING (conversion_id)
LEFT JOIN touchpoint t USING (touchpoint_id)
ORDER BY customer, k.model_order, k.position, touch NULLS FIRST"""


def test_case(case: dict[str, Any]) -> None:
    con = run_case(case)
    exp = case["expected"]
    models = list((case.get("settings") or {}).get("models") or attribution.MODELS)
    order = {m: i for i, m in enumerate(m for m in attribution.MODELS if m in models)}
    want_credits = sorted(
        exp["credits"],
        key=lambda c: (c["customer"], order[c["model"]], c.get("position", 0)),
    )
    got = _rows(con, CREDITS_SQL)
    _expect(got, want_credits, "credits")
    if "romi" in exp:
        listed = {r["model"] for r in exp["romi"]}
        rows = [r for r in _rows(con, romi.romi_output_query()) if r["model"] in listed]
        want = sorted(
            exp["romi"],
            key=lambda r: (
                str(r["period"]),
                order[r["model"]],
                r["channel"],
                r.get("platform") is None,
                r.get("platform") or "",
                r.get("campaign_id") is None,
                r.get("campaign_id") or "",
                r.get("campaign_name") is None,
                r.get("campaign_name") or "",
            ),
        )
        _expect(rows, want, "romi")
    for sid, eligible in (exp.get("touchpoints") or {}).items():
        row = con.execute(
            "SELECT bool_and(eligible) FROM touchpoint WHERE source_id = ?", [sid]
        ).fetchone()
        assert row is not None and row[0] is eligible, f"touch {sid}: eligible {row}"


def test_credits_sum_to_one_exactly(case: dict[str, Any]) -> None:
    con = run_case(case)
    bad = con.execute(
        "SELECT conversion_id, model, sum(credit) FROM attribution_credit GROUP BY ALL "
        "HAVING sum(credit) <> 1"
    ).fetchall()
    assert bad == []


# the romi numbers recomputed from the lineage alone, written out here (not the stage's SQL):
# revenue = each revenue row x each credit row of the same entity, amount x credit at 20
# decimals, per (revenue row's period, credit's model and campaign); spend = spend rows per
# (period, campaign), the same for every model; new customers = credit rows per (their period,
# model, campaign)
TRACE_SQL = """
WITH cells AS (
    SELECT v.period, k.model, k.channel, k.platform, k.campaign_id, k.campaign_name,
           CAST(v.amount * k.credit AS DECIMAL(38,20)) AS rev, NULL AS spend, NULL AS nc
    FROM romi_lineage v JOIN romi_lineage k
      ON k.kind = 'credit' AND k.entity_id IS NOT DISTINCT FROM v.entity_id
    WHERE v.kind = 'revenue'
    UNION ALL
    SELECT s.period, m.model, s.channel, s.platform, s.campaign_id, s.campaign_name, NULL,
           s.amount, NULL
    FROM romi_lineage s, (SELECT DISTINCT model FROM romi_lineage WHERE kind = 'credit') m
    WHERE s.kind = 'spend'
    UNION ALL
    SELECT period, model, channel, platform, campaign_id, campaign_name, NULL, NULL, credit
    FROM romi_lineage WHERE kind = 'credit' AND period IS NOT NULL
)
SELECT period, model, channel, platform, campaign_id, campaign_name,
       round_even(coalesce(sum(rev), 0), 2) AS rev, round_even(coalesce(sum(spend), 0), 2) AS spend,
       round_even(coalesce(sum(nc), 0), 4) AS nc
FROM cells GROUP BY ALL"""


def test_romi_rows_trace_to_lineage(case: dict[str, Any]) -> None:
    """Every ROMI row's revenue, spend and new customers are the rounded sums of its lineage,
    and every lineage contribution lands in a ROMI row."""
    con = run_case(case)
    key = "period, model, channel, platform, campaign_id, campaign_name"
    on = " AND ".join(f"r.{c} IS NOT DISTINCT FROM l.{c}" for c in key.split(", "))
    bad = con.execute(
        f"""
SELECT r.romi_key, l.period, l.model, l.channel FROM romi r FULL JOIN ({TRACE_SQL}) l ON {on}
WHERE r.romi_key IS NULL OR l.model IS NULL OR r.revenue <> l.rev OR r.spend <> l.spend
   OR r.new_customers <> l.nc"""
    ).fetchall()
    assert bad == []
    assert con.execute("SELECT count(*) FROM romi").fetchone()[0] > 0
    total = con.execute(
        "SELECT model, sum(revenue) FROM romi GROUP BY model ORDER BY model"
    ).fetchall()
    # every model distributes the same revenue (within the per-row rounding)
    vals = [v for _, v in total]
    assert max(vals) - min(vals) <= len(vals) * 0.01 if vals else True


def test_credits_are_stored_in_their_published_order(case: dict[str, Any]) -> None:
    """The publisher scans attribution_credit without sorting: the stage stores it sorted."""
    con = run_case(case)
    stored = con.execute(attribution.attribution_credit_output_query()).fetchall()
    assert len(stored) > 0
    want = "SELECT * EXCLUDE (model_order) FROM attribution_credit ORDER BY "
    assert stored == con.execute(want + attribution.CREDIT_ORDER).fetchall()


def test_lineage_grows_with_lines_and_credits_not_their_product(case: dict[str, Any]) -> None:
    """A revenue line is in the lineage once per period (not once per model x touch), a credit
    once, a spend row once (not once per model)."""
    con = run_case(case)

    def one(sql: str) -> int:
        return con.execute(sql).fetchone()[0]

    assert one("SELECT count(*) FROM romi_lineage WHERE kind = 'revenue'") == one(
        "SELECT count(*) FROM (SELECT DISTINCT item_id, date_trunc('month', day) "
        "FROM revenue_daily WHERE amount_reporting IS NOT NULL)"
    )
    # every credit of attribution_credit, plus one unattributed credit per model for each entity
    # whose revenue no conversion owns (none in these cases)
    assert one("SELECT count(*) FROM romi_lineage WHERE kind = 'credit'") == one(
        "SELECT count(*) FROM attribution_credit"
    )
    assert one("SELECT count(*) FROM romi_lineage WHERE kind = 'spend'") == one(
        "SELECT count(*) FROM ad_spend_daily"
    )


def test_cases_exist() -> None:
    names = {p.stem for p in CASES}
    assert {"six_models_four_touches", "eur_spend_usd_jpy_revenue"} <= names, names
