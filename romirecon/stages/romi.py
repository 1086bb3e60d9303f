"""The ROMI table: period x channel x platform x campaign x attribution model, with its lineage.

Reads `attribution_credit` and `attribution_conversion` (attribution stage), `revenue_daily`
(billing stage; revenue recognized per service day in the reporting currency) or, with
`revenue_basis: closed_won`, `stg_deal`; `stg_ad_spend`, `ad_campaign`, `entity_link` and
`stg_fx_rate`. Writes

| table | grain |
|---|---|
| `ad_spend_daily` | one ad-platform row per (platform, account, campaign, day) after removing re-exported copies: native and reporting spend |
| `romi` | period x channel x platform x campaign x model (the contract table) |
| `romi_lineage` | one row per contribution to a romi row: a revenue line's attributed share (entity, conversion, touchpoint, credit, billing line), a new customer's credit, or a spend row |

Money: spend is converted with the billing stage's FX rules (`fx.convert`: the spend day's rate,
last-published fallback, missing -> NULL and an `fx-rate-missing` finding, never 1.0). Revenue and
spend are summed exactly (DECIMAL, revenue x credit at scale 20) and rounded half-to-even to the
reporting currency's minor unit once, at output. ROAS = revenue / spend and ROMI =
(revenue x margin - spend) / spend are computed from the exact sums in integer arithmetic and
rounded half-to-even to 6 decimals; CAC = spend / new customers to the minor unit. A ratio whose
denominator is 0 is NULL.

`new_customers` is the credit-weighted count of conversions that became paying customers in the
period (exact integers for single-touch models, fractions for linear/time-decay/position-based).
`platform_conversions` is what the ad platform itself reported for that campaign and period; it
is per platform by construction (every row has one platform) and never summed across platforms.

Every row sums with its lineage: `revenue` = round(sum(attributed) of its revenue lineage rows),
`spend` = round(sum(amount) of its spend lineage rows), `new_customers` = round(sum(credit) of its
new-customer rows).

Settings: the `attribution:` section (`period`, `revenue_basis`, `contribution_margin`,
`fx_max_fallback_days`, `models`; see `romirecon.stages.attribution`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb

from romirecon.money import exponent
from romirecon.sqlutil import ident, literal
from romirecon.stages import fx
from romirecon.stages.attribution import (
    AttributionSettings,
    parse_settings,
    platform_channel_sql,
)
from romirecon.stages.common import exec_sql as _exec

STAGE = "romi"
RATIO_SCALE = 6
NEW_CUSTOMER_SCALE = 4
_UNIT = 10**10


def period_sql(day: str, grain: str) -> str:
    """The first day of the period containing `day` (week: ISO week, Monday)."""
    if grain == "day":
        return f"CAST({day} AS DATE)"
    return f"CAST(date_trunc({literal(grain)}, CAST({day} AS DATE)) AS DATE)"


def units_sql(expr: str) -> str:
    """A DECIMAL expression as HUGEINT units of 10^-10 (half-to-even at the 10th decimal)."""
    return (
        f"CAST(CAST(round_even({expr}, 10) AS DECIMAL(38,10)) * CAST({_UNIT} AS DECIMAL(38,0)) "
        "AS HUGEINT)"
    )


def ratio_sql(num: str, den: str, scale: int) -> str:
    """num / den of two DECIMAL expressions, exact, half-to-even at `scale` decimals, as
    DECIMAL(38, scale); NULL when den is 0 or NULL."""
    n, d = units_sql(num), units_sql(den)
    a = f"(abs({n}) * {10**scale})"
    b = f"abs({d})"
    q = f"({a} // {b})"
    r = f"({a} % {b})"
    up = f"(2 * {r} > {b} OR (2 * {r} = {b} AND {q} % 2 = 1))"
    signed = f"(sign({n}) * sign({d}) * ({q} + CASE WHEN {up} THEN 1 ELSE 0 END))"
    return (
        f"CASE WHEN {d} <> 0 THEN CAST(CAST({signed} AS DECIMAL(38,0)) * "
        f"CAST({literal('1e-' + str(scale))} AS DECIMAL(38,{scale})) AS DECIMAL(38,{scale})) END"
    )


def round_money_sql(expr: str, exp: int) -> str:
    return f"CAST(round_even({expr}, {exp}) AS DECIMAL(38,{exp}))"


def key_sql(alias: str = "") -> str:
    """A stable id of a romi row from its key columns (unambiguous: a JSON array hashed)."""
    p = f"{alias}." if alias else ""
    cols = ", ".join(
        f"CAST({p}{c} AS VARCHAR)"
        for c in ("period", "model", "channel", "platform", "campaign_id", "campaign_name")
    )
    return f"'K:' || substr(sha256(CAST(to_json([{cols}]) AS VARCHAR)), 1, 16)"


def spend_rows_sql() -> str:
    """Ad spend rows without re-exported copies: per (platform, account, campaign, day) the row
    from the latest file (a later export restates the day), with the copy count."""
    return """
SELECT * EXCLUDE (rn), CAST(NULL AS VARCHAR) AS _x FROM (
    SELECT lower(trim(platform)) AS platform, account_id, CAST(campaign_id AS VARCHAR) AS campaign_id,
           campaign_name, date, upper(currency) AS currency, spend, conversions,
           source_name, source_file, source_row,
           count(*) OVER (PARTITION BY lower(trim(platform)), account_id, campaign_id, date) AS copies,
           row_number() OVER (PARTITION BY lower(trim(platform)), account_id, campaign_id, date
                              ORDER BY source_file DESC, source_row DESC, source_name DESC) AS rn
    FROM stg_ad_spend WHERE date IS NOT NULL AND platform IS NOT NULL
) WHERE rn = 1"""


def revenue_items_sql(basis: str, grain: str) -> str:
    """Revenue per (entity, period, line): the rows the ROMI revenue is attributed from."""
    from romirecon.stages.attribution import _entity_sql
    from romirecon.stages.reconcile import vendor_sql

    if basis == "closed_won":
        vd = vendor_sql("d")
        return f"""
SELECT {_entity_sql("'contact'", vd, "d.contact_id")} AS entity_id,
       {period_sql("d.close_date", grain)} AS period, 'deal:' || d.source_id AS item_id,
       d.source_id AS event_id, d.contact_id AS customer_id, d.source_name, d.source_file,
       d.source_row, d.amount_reporting AS amount
FROM _rm_deals d WHERE d.amount_reporting IS NOT NULL"""
    rv = vendor_sql("r")
    return f"""
SELECT {_entity_sql("'contact'", rv, "r.customer_id")} AS entity_id,
       {period_sql("r.day", grain)} AS period, r.item_id, r.event_id, r.customer_id,
       r.source_name, CAST(NULL AS VARCHAR) AS source_file, CAST(NULL AS BIGINT) AS source_row,
       sum(r.amount_reporting) AS amount
FROM revenue_daily r WHERE r.amount_reporting IS NOT NULL
GROUP BY ALL"""


def lineage_sql(grain: str, models: tuple[str, ...]) -> str:
    """Every contribution to a romi row (before rounding)."""
    model_rows = " UNION ALL ".join(
        f"SELECT {literal(m)} AS model, {i} AS model_order" for i, m in enumerate(models)
    )
    return f"""
SELECT r.period, k.model, k.channel, k.platform, k.campaign_id, k.campaign_name,
       'revenue' AS kind, r.entity_id, k.conversion_id, k.touchpoint_id, k.credit,
       r.item_id, r.event_id, r.customer_id, r.source_name, r.source_file, r.source_row,
       r.amount AS amount, CAST(r.amount * k.credit AS DECIMAL(38,20)) AS attributed
FROM _rm_rev r JOIN attribution_credit k ON k.entity_id = r.entity_id
UNION ALL
-- revenue of no converting entity (e.g. a refund billing could not tie to a customer): kept,
-- unattributed, so that every model still distributes all the revenue
SELECT r.period, m.model, 'unattributed', NULL, NULL, NULL, 'revenue', r.entity_id, NULL, NULL,
       CAST(1 AS DECIMAL(38,10)), r.item_id, r.event_id, r.customer_id, r.source_name,
       r.source_file, r.source_row, r.amount, CAST(r.amount AS DECIMAL(38,20))
FROM _rm_rev r CROSS JOIN ({model_rows}) m
WHERE NOT EXISTS (SELECT 1 FROM attribution_credit k WHERE k.entity_id = r.entity_id)
UNION ALL
SELECT {period_sql("k.converted_on", grain)}, k.model, k.channel, k.platform, k.campaign_id,
       k.campaign_name, 'new_customer', k.entity_id, k.conversion_id, k.touchpoint_id, k.credit,
       NULL, NULL, c.first_customer_id, NULL, NULL, NULL, NULL, NULL
FROM attribution_credit k JOIN attribution_conversion c USING (conversion_id)
WHERE c.is_paying
UNION ALL
SELECT {period_sql("s.date", grain)}, m.model, {platform_channel_sql("s.platform")}, s.platform,
       s.campaign_id, coalesce(a.campaign_name, s.campaign_name), 'spend', NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, s.source_name, s.source_file, s.source_row,
       s.amount_reporting, CAST(s.amount_reporting AS DECIMAL(38,20))
FROM ad_spend_daily s CROSS JOIN ({model_rows}) m
LEFT JOIN ad_campaign a ON a.platform = s.platform AND a.campaign_id = s.campaign_id"""


def romi_sql(st: AttributionSettings, reporting_currency: str) -> str:
    rexp = exponent(reporting_currency)
    margin = f"CAST({literal(str(st.contribution_margin))} AS DECIMAL(38,10))"
    label = "revenue_romi" if st.contribution_margin == 1 else "contribution_romi"
    order = (
        "CASE model "
        + " ".join(f"WHEN {literal(m)} THEN {i}" for i, m in enumerate(st.models))
        + " END"
    )
    return f"""
WITH agg AS (
    SELECT period, model, channel, platform, campaign_id, campaign_name,
           coalesce(sum(attributed) FILTER (WHERE kind = 'spend'), 0) AS spend_x,
           coalesce(sum(attributed) FILTER (WHERE kind = 'revenue'), 0) AS revenue_x,
           coalesce(sum(credit) FILTER (WHERE kind = 'new_customer'), 0) AS new_x,
           count(*) FILTER (WHERE kind = 'spend') AS spend_rows,
           bool_or(kind = 'spend' AND attributed IS NULL) AS spend_fx_missing
    FROM romi_lineage GROUP BY ALL
), conv AS (
    SELECT {period_sql("date", st.period)} AS period, platform, campaign_id,
           sum(conversions) AS platform_conversions
    FROM ad_spend_daily GROUP BY ALL
)
SELECT a.period, a.channel, a.platform, a.campaign_id, a.campaign_name, a.model,
       CASE WHEN a.spend_fx_missing THEN NULL ELSE {round_money_sql("a.spend_x", rexp)} END AS spend,
       {round_money_sql("a.revenue_x", rexp)} AS revenue,
       CAST(round_even(a.new_x, {NEW_CUSTOMER_SCALE}) AS DECIMAL(38,{NEW_CUSTOMER_SCALE})) AS new_customers,
       {ratio_sql("a.revenue_x", "a.spend_x", RATIO_SCALE)} AS roas,
       {ratio_sql(f"(a.revenue_x * {margin} - a.spend_x)", "a.spend_x", RATIO_SCALE)} AS romi,
       {ratio_sql("a.spend_x", "a.new_x", rexp)} AS cac,
       CAST({literal(reporting_currency)} AS VARCHAR) AS currency,
       {margin} AS contribution_margin, {literal(label)} AS romi_label,
       {literal(st.revenue_basis)} AS revenue_basis,
       CASE WHEN a.spend_rows > 0 THEN c.platform_conversions END AS platform_conversions,
       {key_sql("a")} AS romi_key, {order} AS model_order
FROM agg a LEFT JOIN conv c ON c.period = a.period AND c.platform = a.platform
     AND c.campaign_id IS NOT DISTINCT FROM a.campaign_id"""


ROMI_ORDER = (
    "period, model_order, channel, platform NULLS LAST, campaign_id NULLS LAST, "
    "campaign_name NULLS LAST"
)


def romi_output_query() -> str:
    """The SELECT the publisher writes to romi.parquet / romi.csv."""
    return f"SELECT * EXCLUDE (model_order) FROM romi ORDER BY {ROMI_ORDER}"


def canonical_names_sql(lineage: str) -> str:
    """One name per ad campaign: spend rows take the platform's name (none at all in LinkedIn's
    analytics API) and revenue rows the touchpoint's (e.g. from the mapping table); left apart
    they split one campaign's month into a spend-only and a revenue-only ROMI row."""
    return f"""
SELECT l.* REPLACE (CASE WHEN l.campaign_id IS NULL THEN l.campaign_name
                         ELSE coalesce(n.name, l.campaign_name) END AS campaign_name)
FROM ({lineage}) l
LEFT JOIN (
    SELECT platform, campaign_id, min(campaign_name) AS name FROM ({lineage})
    WHERE campaign_id IS NOT NULL AND campaign_name IS NOT NULL GROUP BY ALL
) n ON n.platform IS NOT DISTINCT FROM l.platform AND n.campaign_id = l.campaign_id"""


def romi_lineage_output_query() -> str:
    return (
        "SELECT * FROM romi_lineage ORDER BY romi_key, kind, entity_id NULLS FIRST, "
        "item_id NULLS FIRST, touchpoint_id NULLS FIRST, source_name NULLS FIRST, "
        "source_file NULLS FIRST, source_row NULLS FIRST"
    )


def run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    reporting_currency: str,
    settings: Mapping[str, Any] | None = None,
    *,
    base_dir: Path | None = None,
) -> None:
    """Write `ad_spend_daily`, `romi_lineage` and `romi` (plus metric/finding rows of stage
    'romi'). Run after `attribution.run` with the same settings."""
    from romirecon.stages.attribution import ensure_billing_tables
    from romirecon.stages.common import ensure_common_tables, ensure_entity_views

    st = parse_settings(settings, base_dir)
    rep = reporting_currency.upper()
    ensure_common_tables(con)
    ensure_entity_views(con)
    ensure_billing_tables(con)
    _exec(con, "DELETE FROM metric WHERE run_id = ? AND stage = ?", [run_id, STAGE])
    _exec(con, "DELETE FROM finding WHERE run_id = ? AND stage = ?", [run_id, STAGE])
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _rm_spend0 AS {spend_rows_sql()}")
    fx.convert(
        con,
        "_rm_spend0",
        "spend",
        "currency",
        "date",
        rep,
        run_id,
        out="_rm_spend1",
        max_fallback_days=st.fx_max_fallback_days,
        stage=STAGE,
    )
    _exec(
        con,
        "CREATE OR REPLACE TABLE ad_spend_daily AS SELECT * EXCLUDE (_x) FROM _rm_spend1 "
        "ORDER BY platform, account_id, campaign_id, date",
    )
    if st.revenue_basis == "closed_won":
        _exec(
            con,
            "CREATE OR REPLACE TEMP TABLE _rm_deals0 AS SELECT * FROM stg_deal WHERE is_won IS true "
            "AND is_deleted IS DISTINCT FROM true AND close_date IS NOT NULL AND amount IS NOT NULL",
        )
        fx.convert(
            con,
            "_rm_deals0",
            "amount",
            "currency",
            "close_date",
            rep,
            run_id,
            out="_rm_deals",
            max_fallback_days=st.fx_max_fallback_days,
            stage=STAGE,
        )
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE _rm_rev AS {revenue_items_sql(st.revenue_basis, st.period)}",
    )
    _exec(
        con,
        f"CREATE OR REPLACE TABLE romi_lineage AS SELECT {key_sql()} AS romi_key, * FROM "
        f"({canonical_names_sql(lineage_sql(st.period, st.models))})",
    )
    _exec(
        con,
        f"CREATE OR REPLACE TABLE romi AS {romi_sql(st, rep)} ORDER BY {ROMI_ORDER}",
    )
    _exec(
        con,
        f"""INSERT INTO finding
SELECT ?, '{STAGE}', 'revenue-unattributable', 'warn', any_value(source_name), 'revenue',
       NULL, NULL, count(DISTINCT item_id) || ' revenue lines (' || CAST(sum(attributed) AS VARCHAR)
           || ' in the reporting currency) belong to no converting customer: reported as unattributed',
       NULL
FROM romi_lineage WHERE kind = 'revenue' AND conversion_id IS NULL AND model = ?
HAVING count(*) > 0""",
        [run_id, st.models[0]],
    )
    _exec(
        con,
        f"""INSERT INTO metric
SELECT ?, '{STAGE}', NULL, 'ad_spend', 'ad_spend_duplicate_rows', CAST(n AS DOUBLE),
       CAST(n AS DOUBLE), CAST(total AS DOUBLE), 'rows'
FROM (SELECT coalesce(sum(copies - 1), 0) AS n, coalesce(sum(copies), 0) AS total FROM ad_spend_daily)""",
        [run_id],
    )
    for t in ("_rm_spend0", "_rm_spend1", "_rm_deals0", "_rm_deals", "_rm_rev"):
        _exec(con, f"DROP TABLE IF EXISTS {ident(t)}")
