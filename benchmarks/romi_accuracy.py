"""ROMI accuracy on a generated estate: `python -m benchmarks.romi_accuracy [--customers 1000]
[--seed 7] [--dup-rates 0,0.05]`.

For each duplication rate: `romirecon generate` writes an estate with its truth
(`truth/romi.parquet`: period, platform, campaign_id, spend, revenue; last touch, recognized
revenue, reporting currency); the stages run over it in process (ingest + contract, normalize,
dedup, billing, reconcile, attribution, ROMI); the last-touch ROMI rows of the ad campaigns are
compared with the truth per campaign and month. The same estate is also summed the naive way
(every CRM record that shares the paying customer's email credited with its revenue through its
own UTM campaign, every ad-spend row summed as exported), the numbers a join without dedup gives.

Writes benchmarks/romi_results.md and benchmarks/romi_results.json.

The estate runs exactly as generated: its romirecon.yaml and the repository's mappings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import duckdb

HERE = Path(__file__).resolve().parent
TOLERANCE = 0.005  # 0.5 %


def run_stages(estate: Path) -> tuple[duckdb.DuckDBPyConnection, dict[str, float]]:
    """Every stage of `romirecon run`, in process (the pipeline's own wiring and settings)."""
    import io

    from romirecon.config import load_project
    from romirecon.db import configure
    from romirecon.obs import Logger
    from romirecon.pipeline import analyse, ingest_and_stage

    project = load_project(estate)
    con = duckdb.connect()
    configure(con)
    log = Logger("bench", "text", stream=io.StringIO())
    ingest_and_stage(con, project, "bench", log)
    analyse(con, project, "bench", log)
    times = dict(
        con.execute(
            "SELECT stage, value FROM metric WHERE name = 'stage_duration_seconds' ORDER BY stage"
        ).fetchall()
    )
    return con, times


NAIVE_SQL = """
WITH cust AS (  -- billing customers and their email, as exported (no dedup)
    SELECT source_id AS customer_id, lower(trim(email)) AS email FROM stg_contact
    WHERE source_system = 'billing' AND email IS NOT NULL
), leads AS (   -- every CRM record with a campaign, as exported (no dedup)
    SELECT lower(trim(email)) AS email, utm_campaign FROM stg_contact
    WHERE source_system = 'crm' AND utm_campaign IS NOT NULL AND email IS NOT NULL
), rev AS (
    SELECT CAST(date_trunc('month', day) AS DATE) AS period, customer_id,
           sum(amount_reporting) AS revenue
    FROM revenue_daily GROUP BY ALL
)
SELECT r.period, a.platform, a.campaign_id, sum(r.revenue) AS revenue
FROM rev r JOIN cust c USING (customer_id) JOIN leads l USING (email)
JOIN ad_campaign a ON a.norm_name = regexp_replace(lower(trim(l.utm_campaign)), '[^a-z0-9]+', '_', 'g')
GROUP BY ALL"""

NAIVE_SPEND_SQL = """
SELECT CAST(date_trunc('month', s.date) AS DATE) AS period, lower(s.platform) AS platform,
       CAST(s.campaign_id AS VARCHAR) AS campaign_id,
       sum(CAST(s.spend AS DECIMAL(38,0)) * d.fx_rate / 100) AS spend
FROM stg_ad_spend s JOIN (SELECT DISTINCT platform, account_id, campaign_id, date, fx_rate
                          FROM ad_spend_daily) d
  ON d.platform = lower(s.platform) AND d.account_id = s.account_id
 AND d.campaign_id = CAST(s.campaign_id AS VARCHAR) AND d.date = s.date
GROUP BY ALL"""


ATTRIBUTION_ONLY_SQL = """
-- the generator's true revenue per customer and month, attributed through romirecon's last-touch
-- credits (isolates attribution + identity from the billing rules and FX)
WITH cust AS (SELECT DISTINCT source_id AS customer_id, entity_id FROM entity_link
              WHERE vendor = 'stripe' AND entity = 'contact'),
lt AS (SELECT entity_id, platform, campaign_id FROM attribution_credit WHERE model = 'last_touch')
SELECT t.month AS period, lt.platform, lt.campaign_id, sum(t.amount_reporting) AS revenue
FROM truth_revenue t JOIN cust USING (customer_id) JOIN lt USING (entity_id)
WHERE lt.campaign_id IS NOT NULL GROUP BY ALL"""


def compare(con: duckdb.DuckDBPyConnection, truth_dir: Path, as_of: str) -> dict[str, Any]:
    """Ad campaign x month cells of the truth up to as_of's month (later months need FX rates
    not yet published: the pipeline leaves those amounts NULL instead of guessing)."""
    truth = truth_dir / "romi.parquet"
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW truth AS SELECT * FROM read_parquet('{truth}') "
        f"WHERE period <= DATE '{as_of}'"
    )
    con.execute(
        "CREATE OR REPLACE TEMP VIEW truth_revenue AS SELECT * FROM "
        f"read_parquet('{truth_dir / 'revenue.parquet'}')"
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE attr_only AS {ATTRIBUTION_ONLY_SQL}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE naive_rev AS {NAIVE_SQL}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE naive_spend AS {NAIVE_SPEND_SQL}")
    rows = con.execute(
        """
SELECT t.period, t.platform, t.campaign_id, t.spend AS true_spend, t.revenue AS true_revenue,
       r.spend, r.revenue, r.romi, nr.revenue AS naive_revenue, ns.spend AS naive_spend,
       ao.revenue AS attr_only_revenue
FROM truth t
LEFT JOIN romi r ON r.model = 'last_touch' AND r.period = t.period AND r.platform = t.platform
     AND r.campaign_id = t.campaign_id
LEFT JOIN naive_rev nr ON nr.period = t.period AND nr.platform = t.platform AND nr.campaign_id = t.campaign_id
LEFT JOIN naive_spend ns ON ns.period = t.period AND ns.platform = t.platform AND ns.campaign_id = t.campaign_id
LEFT JOIN attr_only ao ON ao.period = t.period AND ao.platform = t.platform AND ao.campaign_id = t.campaign_id
WHERE t.campaign_id IS NOT NULL
ORDER BY t.period, t.platform, t.campaign_id"""
    ).fetchall()

    def rel(a: Any, b: Any) -> float | None:
        if a is None or b is None:
            return None
        a, b = float(a), float(b)
        return abs(a - b) / abs(b) if b else (0.0 if a == 0 else float("inf"))

    out = []
    for p, plat, cid, ts, tr, s, r, romi_v, nr, ns, ao in rows:
        true_romi = (float(tr) - float(ts)) / float(ts) if ts else None
        out.append(
            {
                "period": str(p), "platform": plat, "campaign_id": cid,
                "true_spend": float(ts), "true_revenue": float(tr), "true_romi": true_romi,
                "spend": None if s is None else float(s),
                "revenue": None if r is None else float(r),
                "romi": None if romi_v is None else float(romi_v),
                "naive_spend": None if ns is None else float(ns),
                "naive_revenue": None if nr is None else float(nr or 0),
                "spend_err": rel(s, ts), "revenue_err": rel(r, tr),
                "attr_only_revenue": None if ao is None else float(ao),
                "attr_only_err": rel(ao or 0.0, tr),
            }
        )  # fmt: skip
    cells = [c for c in out if c["true_revenue"] > 0]
    within = [
        c
        for c in cells
        if c["revenue_err"] is not None
        and c["revenue_err"] <= TOLERANCE
        and c["spend_err"] is not None
        and c["spend_err"] <= TOLERANCE
    ]
    attr_within = [c for c in cells if (c["attr_only_err"] or 0.0) <= TOLERANCE]
    tot = {
        k: sum((c[k] or 0.0) for c in out)
        for k in (
            "true_spend",
            "true_revenue",
            "spend",
            "revenue",
            "naive_spend",
            "naive_revenue",
            "attr_only_revenue",
        )
    }
    return {
        "cells": len(out),
        "cells_with_revenue": len(cells),
        "cells_within_0_5pct": len(within),
        "attribution_only_within_0_5pct": len(attr_within),
        "max_revenue_err": max((c["revenue_err"] or 0.0) for c in cells) if cells else None,
        "max_spend_err": max((c["spend_err"] or 0.0) for c in out) if out else None,
        "totals": tot,
        "rows": out,
    }


def main(argv: list[str] | None = None) -> int:
    from romirecon.generate import generate_estate

    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--dup-rates", default="0,0.05")
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args(argv)
    results = []
    for rate in [float(x) for x in args.dup_rates.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            estate = Path(tmp) / "estate"
            generate_estate(estate, args.customers, args.seed, rate)
            con, times = run_stages(estate)
            manifest = json.loads((estate / "truth" / "manifest.json").read_text())
            res = compare(con, estate / "truth", manifest["as_of"])
            res.update(dup_rate=rate, customers=args.customers, seed=args.seed, seconds=times)
            results.append(res)
            print(summary_line(res))
    out = Path(args.out)
    (out / "romi_results.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    (out / "romi_results.md").write_text(render(results))
    return 0


def summary_line(res: dict[str, Any]) -> str:
    t = res["totals"]
    return (
        f"dup_rate {res['dup_rate']}: {res['cells_within_0_5pct']}/{res['cells_with_revenue']} "
        f"campaign-months within 0.5% end to end (max revenue error {res['max_revenue_err']:.2%}, "
        f"max spend error {res['max_spend_err']:.4%}); attribution alone "
        f"{res['attribution_only_within_0_5pct']}/{res['cells_with_revenue']}; revenue "
        f"{t['revenue']:,.2f} vs true {t['true_revenue']:,.2f} vs naive {t['naive_revenue']:,.2f}; "
        f"spend {t['spend']:,.2f} vs true {t['true_spend']:,.2f} vs naive {t['naive_spend']:,.2f}"
    )


def per_campaign(res: dict[str, Any]) -> list[str]:
    """ROMI per campaign over the whole window: true, romirecon, naive."""
    agg: dict[tuple[str, str], dict[str, float]] = {}
    for c in res["rows"]:
        a = agg.setdefault((c["platform"], c["campaign_id"]), {})
        for k in ("true_spend", "true_revenue", "spend", "revenue", "naive_spend", "naive_revenue"):
            a[k] = a.get(k, 0.0) + (c[k] or 0.0)

    def romi(rev: float, sp: float) -> str:
        return f"{(rev - sp) / sp:.3f}" if sp else "n/a"

    out = [
        "| platform | campaign | true ROMI | romirecon ROMI | naive ROMI |",
        "|---|---|---|---|---|",
    ]
    for (plat, cid), a in sorted(agg.items()):
        out.append(
            f"| {plat} | {cid} | {romi(a['true_revenue'], a['true_spend'])} | "
            f"{romi(a['revenue'], a['spend'])} | {romi(a['naive_revenue'], a['naive_spend'])} |"
        )
    return out


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "# ROMI accuracy on a generated estate (last touch, recognized revenue, USD)",
        "",
        "`python -m benchmarks.romi_accuracy` — truth from the generator's world model; naive = "
        "revenue joined to every CRM record by email and ad spend summed as exported.",
        "",
        "| dup rate | campaign-months within 0.5% | attribution alone within 0.5% | "
        "max revenue error | max spend error | revenue (romirecon / true / naive) | "
        "spend (romirecon / true / naive) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["totals"]
        lines.append(
            f"| {r['dup_rate']} | {r['cells_within_0_5pct']} / {r['cells_with_revenue']} | "
            f"{r['attribution_only_within_0_5pct']} / {r['cells_with_revenue']} | "
            f"{r['max_revenue_err']:.4%} | {r['max_spend_err']:.4%} | "
            f"{t['revenue']:,.2f} / {t['true_revenue']:,.2f} / {t['naive_revenue']:,.2f} | "
            f"{t['spend']:,.2f} / {t['true_spend']:,.2f} / {t['naive_spend']:,.2f} |"
        )
    for r in results:
        lines += ["", f"## ROMI per campaign, whole window, dup rate {r['dup_rate']}", ""]
        lines += per_campaign(r)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
