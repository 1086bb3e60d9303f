"""The ROMI table: period x channel x platform x campaign x attribution model, with its lineage.

Reads `attribution_credit` and `attribution_conversion` (attribution stage), `revenue_item` and
`revenue_fx_day` (billing stage; revenue recognized per service day in the reporting currency,
summed per item and period by `billing.item_periods_sql`) or, with
`revenue_basis: closed_won`, `stg_deal`; `stg_ad_spend`, `ad_campaign`, `entity_link` and
`stg_fx_rate`. Writes

| table | grain |
|---|---|
| `ad_spend_daily` | one ad-platform row per (platform, account, campaign, day) after removing re-exported copies: native and reporting spend |
| `romi` | period x channel x platform x campaign x model (the contract table) |
| `romi_lineage` | the contributions, factored (`kind`): a revenue line's revenue in a period (`revenue`), an attribution credit in its ROMI campaign (`credit`), or a spend row (`spend`) |

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

Every row sums with its lineage (`romi_from_lineage_sql`): `revenue` = round(sum over the revenue
rows of its period x the credit rows of its model and campaign with the same entity_id of
amount x credit), `spend` = round(sum(amount) of the spend rows of its period and campaign),
`new_customers` = round(sum(credit) of the credit rows of its model and campaign whose period is
its period). The lineage is factored this way (rather than a row per revenue line x model x
touch, 5.8M rows at 100k customers) so that it grows with lines + credits + spend rows, not with
their product.

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
from romirecon.stages import billing, fx
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
    """Revenue per (entity, period, line): the rows the ROMI revenue is attributed from. Reads
    `_rm_item_period` (billing's `item_periods_sql` at the ROMI period grain: the exact sum of
    each item's day amounts that have a rate, per period) and joins the entity once per item."""
    from romirecon.stages.attribution import _entity_expr, _entity_join
    from romirecon.stages.reconcile import vendor_sql

    if basis == "closed_won":
        vd = vendor_sql("d")
        return f"""
SELECT {_entity_expr("el", vd, "d.contact_id")} AS entity_id,
       {period_sql("d.close_date", grain)} AS period, 'deal:' || d.source_id AS item_id,
       d.source_id AS event_id, d.contact_id AS customer_id, d.source_name, d.source_file,
       d.source_row, d.amount_reporting AS amount
FROM _rm_deals d {_entity_join("el", vd, "d.contact_id")}
WHERE d.amount_reporting IS NOT NULL"""
    vi = vendor_sql("i")
    return f"""
SELECT {_entity_expr("el", "r.vendor", "r.customer_id")} AS entity_id,
       r.period, r.item_id, r.event_id, r.customer_id,
       r.source_name, CAST(NULL AS VARCHAR) AS source_file, CAST(NULL AS BIGINT) AS source_row,
       sum(r.amount) AS amount
FROM (
    SELECT {vi} AS vendor, p.period, i.item_id, i.event_id, i.customer_id, i.source_name,
           sum(p.amount_reporting) AS amount
    FROM _rm_item_period p JOIN revenue_item i USING (item_no)
    WHERE p.amount_reporting IS NOT NULL
    GROUP BY ALL
) r {_entity_join("el", "r.vendor", "r.customer_id")}
GROUP BY ALL"""


LINEAGE_COLUMNS = (
    "kind", "period", "model", "channel", "platform", "campaign_id", "campaign_name",
    "entity_id", "conversion_id", "touchpoint_id", "credit", "item_id", "event_id", "customer_id",
    "source_name", "source_file", "source_row", "amount",
)  # fmt: skip


def name_sources_sql() -> str:
    """(platform, campaign_id, campaign_name) of every contribution that names a campaign:
    credits of entities with revenue, credits of paying conversions, spend rows."""
    return """
SELECT k.platform, k.campaign_id, k.campaign_name FROM attribution_credit k
WHERE k.entity_id IN (SELECT entity_id FROM _rm_rev)
UNION ALL
SELECT k.platform, k.campaign_id, k.campaign_name
FROM attribution_credit k JOIN attribution_conversion c USING (conversion_id)
WHERE c.is_paying
UNION ALL
SELECT s.platform, s.campaign_id, coalesce(a.campaign_name, s.campaign_name)
FROM ad_spend_daily s
LEFT JOIN ad_campaign a ON a.platform = s.platform AND a.campaign_id = s.campaign_id"""


def campaign_names_sql(sources: str) -> str:
    """(platform, campaign_id, name): one name per ad campaign, the smallest name its
    contributions (`sources`, see `name_sources_sql`) give it. Spend rows take the platform's
    name (none at all in LinkedIn's analytics API) and credits the touchpoint's (e.g. from the
    mapping table); left apart they would split one campaign's month into a spend-only and a
    revenue-only ROMI row."""
    return f"""
SELECT platform, campaign_id, min(campaign_name) AS name FROM ({sources})
WHERE campaign_id IS NOT NULL AND campaign_name IS NOT NULL
GROUP BY ALL"""


def canonical_name_sql(alias: str, name: str) -> str:
    """The campaign name of a contribution `alias` whose own name is `name`: its campaign's one
    name from the names table joined by `names_join_sql(alias)`."""
    return f"CASE WHEN {alias}.campaign_id IS NULL THEN {name} ELSE coalesce(n.name, {name}) END"


def names_join_sql(alias: str, names: str = "_rm_names") -> str:
    return (
        f"LEFT JOIN {ident(names)} n ON n.platform IS NOT DISTINCT FROM {alias}.platform "
        f"AND n.campaign_id = {alias}.campaign_id"
    )


def lineage_sql(grain: str, models: tuple[str, ...]) -> str:
    """Every contribution to the romi rows, factored so that it grows with lines + credits +
    spend rows, not with their product (see `romi_from_lineage_sql` for how they combine):

    - `revenue`: one per (period, entity, revenue line): the line's exact revenue in the period;
    - `credit`: one per attribution credit (model, campaign, entity, touchpoint, credit) and one
      `unattributed` credit of 1 per model for an entity with revenue but no conversion; `period`
      is the period the conversion became a paying customer (NULL when it did not);
    - `spend`: one per ad-platform spend row (after removing re-exported copies), every model's.
    """
    model_rows = " UNION ALL ".join(
        f"SELECT {literal(m)} AS model, {i} AS model_order" for i, m in enumerate(models)
    )
    return f"""
SELECT 'revenue' AS kind, r.period, CAST(NULL AS VARCHAR) AS model,
       CAST(NULL AS VARCHAR) AS channel, CAST(NULL AS VARCHAR) AS platform,
       CAST(NULL AS VARCHAR) AS campaign_id, CAST(NULL AS VARCHAR) AS campaign_name, r.entity_id,
       c.conversion_id, CAST(NULL AS VARCHAR) AS touchpoint_id,
       CAST(NULL AS DECIMAL(38,10)) AS credit, r.item_id, r.event_id, r.customer_id,
       r.source_name, r.source_file, r.source_row, r.amount
FROM _rm_rev r
LEFT JOIN (SELECT DISTINCT entity_id, conversion_id FROM attribution_credit) c
       ON c.entity_id = r.entity_id
UNION ALL
SELECT 'credit', CASE WHEN c.is_paying THEN {period_sql("c.converted_on", grain)} END, k.model,
       k.channel, k.platform, k.campaign_id, {canonical_name_sql("k", "k.campaign_name")}, k.entity_id,
       k.conversion_id, k.touchpoint_id, k.credit, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM attribution_credit k LEFT JOIN attribution_conversion c USING (conversion_id)
{names_join_sql("k")}
UNION ALL
-- revenue of no converting entity (e.g. a refund billing could not tie to a customer): kept,
-- unattributed, so that every model still distributes all the revenue
SELECT 'credit', NULL, m.model, 'unattributed', NULL, NULL, NULL, e.entity_id, NULL, NULL,
       CAST(1 AS DECIMAL(38,10)), NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM (SELECT DISTINCT entity_id FROM _rm_rev r
      WHERE NOT EXISTS (SELECT 1 FROM attribution_credit k WHERE k.entity_id = r.entity_id)) e
CROSS JOIN ({model_rows}) m
UNION ALL
SELECT 'spend', {period_sql("s.date", grain)}, NULL, {platform_channel_sql("s.platform")},
       s.platform, s.campaign_id, {canonical_name_sql("s", "coalesce(a.campaign_name, s.campaign_name)")},
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, s.source_name, s.source_file, s.source_row,
       s.amount_reporting
FROM ad_spend_daily s
LEFT JOIN ad_campaign a ON a.platform = s.platform AND a.campaign_id = s.campaign_id
{names_join_sql("s")}"""


def attributed_revenue_sql(lineage: str) -> str:
    """SELECT period, model, channel, platform, campaign_id, campaign_name, revenue_x: per
    (revenue row's period, credit row's model and campaign) the sum over every revenue row x
    credit row of the same entity (NULL matching NULL: revenue of no customer at all) of
    CAST(amount x credit AS DECIMAL(38,20)), without computing that product per pair.

    amount has 14 decimals and credit 10, so each product has 24 and the cast rounds it (half
    away from zero) to 20: a hugeint multiplication and division per pair, 5.3M pairs at 100k
    customers. Split amount = h + l x 10^-14, h truncated toward zero at 10 decimals (so h and l
    have the same sign) and credit = cu x 10^-10. Then amount x credit = h x credit + l x cu x
    10^-24, where h x credit has exactly 20 decimals and l x cu x 10^-24 has the sign of h x
    credit: rounding the sum to 20 decimals rounds only the second term, i.e. the pair
    contributes h x credit + round_half_away(l x cu / 10^4) x 10^-20, exactly the cast. The h
    parts are linear, so they are summed per (entity, period) before the join; l x cu is a
    BIGINT (|l| < 10^4, cu <= 10^10 per unit of credit) and only the revenue rows with l <> 0
    (digits beyond the 10th decimal) take that join."""
    cell = "channel, platform, campaign_id, campaign_name"
    on = "k.entity_id IS NOT DISTINCT FROM r.entity_id"  # NULL: revenue of no customer at all
    return f"""
WITH r AS (
    SELECT entity_id, period, trunc(amount, 10) AS h,
           CAST((amount - trunc(amount, 10)) * 100000000000000 AS BIGINT) AS l
    FROM {lineage} WHERE kind = 'revenue'
), k AS (
    SELECT model, {cell}, entity_id, credit, CAST(credit * 10000000000 AS BIGINT) AS cu
    FROM {lineage} WHERE kind = 'credit'
)
SELECT period, model, {cell}, sum(x) AS revenue_x FROM (
    SELECT r.period, k.model, k.channel, k.platform, k.campaign_id, k.campaign_name,
           sum(r.h * k.credit) AS x
    FROM (SELECT entity_id, period, sum(h) AS h FROM r GROUP BY ALL) r JOIN k ON {on}
    GROUP BY ALL
    UNION ALL
    SELECT r.period, k.model, k.channel, k.platform, k.campaign_id, k.campaign_name,
           CAST(sum(sign(r.l * k.cu) * ((abs(r.l * k.cu) + 5000) // 10000)) AS DECIMAL(38,0))
               * CAST('1e-20' AS DECIMAL(38,20))
    FROM (SELECT * FROM r WHERE l <> 0) r JOIN k ON {on}
    GROUP BY ALL
)
GROUP BY ALL"""


def romi_from_lineage_sql(lineage: str, models: tuple[str, ...]) -> str:
    """SELECT period, model, channel, platform, campaign_id, campaign_name, revenue_x, spend_x,
    new_x, spend_rows, spend_fx_missing: the exact (unrounded) sums of every romi row, from a
    lineage relation (the table, or its published Parquet file):

    - revenue: each revenue row x each credit row of its entity (NULL matching NULL: revenue of
      no customer at all), amount x credit exact at 20 decimals, summed per (revenue row's
      period, credit row's model and campaign) (`attributed_revenue_sql`);
    - new customers: credit rows summed per (their period, model, campaign);
    - spend: spend rows summed per (period, campaign), the same in every model.
    The romi table rounds these once; the lineage tests recompute them from the file."""
    model_rows = " UNION ALL ".join(f"SELECT {literal(m)} AS model" for m in models)
    cell = "channel, platform, campaign_id, campaign_name"
    return f"""
SELECT period, model, {cell},
       coalesce(sum(revenue_x), 0) AS revenue_x, coalesce(sum(spend_x), 0) AS spend_x,
       coalesce(sum(new_x), 0) AS new_x, coalesce(sum(spend_rows), 0) AS spend_rows,
       coalesce(bool_or(spend_fx_missing), false) AS spend_fx_missing
FROM (
    SELECT period, model, {cell}, revenue_x,
           CAST(NULL AS DECIMAL(38,20)) AS spend_x, CAST(NULL AS DECIMAL(38,10)) AS new_x,
           CAST(NULL AS BIGINT) AS spend_rows, CAST(NULL AS BOOLEAN) AS spend_fx_missing
    FROM ({attributed_revenue_sql(lineage)})
    UNION ALL
    SELECT period, model, {cell}, NULL, NULL, sum(credit), NULL, NULL
    FROM {lineage} WHERE kind = 'credit' AND period IS NOT NULL
    GROUP BY ALL
    UNION ALL
    SELECT s.period, m.model, s.channel, s.platform, s.campaign_id, s.campaign_name, NULL,
           s.spend_x, NULL, s.spend_rows, s.spend_fx_missing
    FROM (SELECT period, {cell}, sum(CAST(amount AS DECIMAL(38,20))) AS spend_x,
                 count(*) AS spend_rows, bool_or(amount IS NULL) AS spend_fx_missing
          FROM {lineage} WHERE kind = 'spend' GROUP BY ALL) s
    CROSS JOIN ({model_rows}) m
)
GROUP BY ALL"""


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
    {romi_from_lineage_sql("romi_lineage", st.models)}
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


LINEAGE_ORDER = (
    "kind, period NULLS FIRST, model NULLS FIRST, channel NULLS FIRST, platform NULLS FIRST, "
    "campaign_id NULLS FIRST, campaign_name NULLS FIRST, entity_id NULLS FIRST, "
    "item_id NULLS FIRST, touchpoint_id NULLS FIRST, source_name NULLS FIRST, "
    "source_file NULLS FIRST, source_row NULLS FIRST"
)


def romi_lineage_output_query() -> str:
    return f"SELECT * FROM romi_lineage ORDER BY {LINEAGE_ORDER}"


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
        "CREATE OR REPLACE TEMP TABLE ad_spend_daily AS SELECT * EXCLUDE (_x) FROM _rm_spend1 "
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
    if st.revenue_basis != "closed_won":
        billing.build_item_periods(con, st.period, "_rm_item_period")
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE _rm_rev AS {revenue_items_sql(st.revenue_basis, st.period)}",
    )
    _exec(
        con, f"CREATE OR REPLACE TEMP TABLE _rm_names AS {campaign_names_sql(name_sources_sql())}"
    )
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE romi_lineage AS {lineage_sql(st.period, st.models)}",
    )
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE romi AS {romi_sql(st, rep)} ORDER BY {ROMI_ORDER}",
    )
    _exec(
        con,
        f"""INSERT INTO finding
SELECT ?, '{STAGE}', 'revenue-unattributable', 'warn', min(source_name), 'revenue',
       NULL, NULL, count(DISTINCT item_id) || ' revenue lines ('
           || CAST(sum(CAST(amount AS DECIMAL(38,20))) AS VARCHAR)
           || ' in the reporting currency) belong to no converting customer: reported as unattributed',
       NULL
FROM romi_lineage WHERE kind = 'revenue' AND conversion_id IS NULL
HAVING count(*) > 0""",
        [run_id],
    )
    _exec(
        con,
        f"""INSERT INTO metric
SELECT ?, '{STAGE}', NULL, 'ad_spend', 'ad_spend_duplicate_rows', CAST(n AS DOUBLE),
       CAST(n AS DOUBLE), CAST(total AS DOUBLE), 'rows'
FROM (SELECT coalesce(sum(copies - 1), 0) AS n, coalesce(sum(copies), 0) AS total FROM ad_spend_daily)""",
        [run_id],
    )
    for t in (
        "_rm_spend0", "_rm_spend1", "_rm_deals0", "_rm_deals", "_rm_rev", "_rm_names",
        "_rm_item_period",
    ):  # fmt: skip
        _exec(con, f"DROP TABLE IF EXISTS {ident(t)}")
