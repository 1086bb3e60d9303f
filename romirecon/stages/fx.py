"""FX: daily conversion rates into the reporting currency, and a reusable `convert`.

Rates come from `stg_fx_rate` (`date, base, quote, rate`: 1 base = rate quote; ECB reference rates
have base EUR). For every (currency, day) a caller needs we pick, in this order of preference,

1. identity when the currency is the reporting currency (rate exactly 1, always available);
2. a **direct** rate (base = currency, quote = reporting);
3. an **inverse** rate (base = reporting, quote = currency): 1 / rate;
4. a **cross** rate through EUR (both legs published the same day): (R per EUR) / (C per EUR);

taking the latest publication on or before the day (weekends and holidays fall back to the last
published rate) but at most `max_fallback_days` back (default 7). Days after the run's as-of date
(future service days of a period billed in advance) take the latest rate as of that date, when the
rate file is fresh (method `...+forward`). A pair with no usable rate is
*missing*: its converted amount stays NULL (never a silent 1.0), one `finding` row
(`fx-rate-missing`, currency and date in the message and detail) is written per pair and the
`metric` `fx_gaps` counts the pairs.

Rates are `DECIMAL(38,10)`. Inverse and cross rates are computed exactly in integer arithmetic and
rounded half-to-even at the 10th decimal (DuckDB's DECIMAL / DECIMAL would go through DOUBLE).
Converted amounts are exact products, DECIMAL(38,14), never rounded here: the caller rounds once,
at output (`round_even`). Rounding 6M daily rows at 10 decimals also cost ~10x the product itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import duckdb

from romirecon.money import exponent_map_sql
from romirecon.sqlutil import ident

RATE_TYPE = "DECIMAL(38,10)"
DEFAULT_MAX_FALLBACK_DAYS = 7
_SCALE = 10_000_000_000  # 10**10: the rate's scale


def div_half_even_sql(num: str, den: str) -> str:
    """SQL for num / den of two positive DECIMAL(38,10) expressions, exact, half-to-even at the
    10th decimal, as DECIMAL(38,10)."""
    n, d = div_terms_sql(num, den)
    return quotient_half_even_sql(f"({n}) // ({d})", f"({n}) % ({d})", d)


def div_terms_sql(num: str, den: str) -> tuple[str, str]:
    """The two HUGEINT terms `div_half_even_sql` divides: num x 10**20 and den x 10**10 (each
    first cast to DECIMAL(38,10)). A query that divides many rows can compute them once as
    columns, then their quotient and remainder, and pass those to `quotient_half_even_sql`."""
    n = f"CAST(CAST({num} AS {RATE_TYPE}) * {_SCALE} AS HUGEINT) * {_SCALE}"
    d = f"CAST(CAST({den} AS {RATE_TYPE}) * {_SCALE} AS HUGEINT)"
    return n, d


def quotient_half_even_sql(q: str, r: str, d: str) -> str:
    """DECIMAL(38,10) from the integer quotient `q` and remainder `r` of the terms of
    `div_terms_sql` (denominator `d`): q x 10**-10, the last digit rounded half-to-even."""
    up = f"(2 * ({r}) > ({d}) OR (2 * ({r}) = ({d}) AND ({q}) % 2 = 1))"
    return (
        f"CAST(CAST(({q}) + CASE WHEN {up} THEN 1 ELSE 0 END AS DECIMAL(38,0))"
        f" * CAST(0.0000000001 AS DECIMAL(11,10)) AS {RATE_TYPE})"
    )


def quotes_sql(rates_table: str = "stg_fx_rate") -> str:
    """SELECT date, currency, rate, method, prio: every rate into the reporting currency (the
    parameter `$rep`) that can be derived from one publication date, best method first."""
    t = ident(rates_table)
    one = div_half_even_sql("1", "rate")
    return f"""
WITH r AS (
    SELECT date, upper(trim(base)) AS base, upper(trim(quote)) AS quote,
           CAST(rate AS {RATE_TYPE}) AS rate,
           row_number() OVER (
               PARTITION BY date, upper(trim(base)), upper(trim(quote))
               ORDER BY rate_type NULLS LAST, source_name, source_file, source_row, rate
           ) AS rn
    FROM {t}
    WHERE date IS NOT NULL AND base IS NOT NULL AND quote IS NOT NULL AND rate > 0
), r1 AS (SELECT date, base, quote, rate FROM r WHERE rn = 1 AND base <> quote),
eur_leg AS (  -- 1 EUR = per_eur units of currency
    SELECT date, currency, per_eur FROM (
        SELECT date, currency, per_eur,
               row_number() OVER (PARTITION BY date, currency ORDER BY prio) AS rn
        FROM (
            SELECT date, quote AS currency, rate AS per_eur, 1 AS prio FROM r1 WHERE base = 'EUR'
            UNION ALL
            SELECT date, base AS currency, {one} AS per_eur, 2 AS prio FROM r1 WHERE quote = 'EUR'
        )
    ) WHERE rn = 1
), cand AS (
    SELECT date, base AS currency, rate, 'direct' AS method, 1 AS prio
    FROM r1 WHERE quote = $rep
    UNION ALL
    SELECT date, quote AS currency, {one} AS rate, 'inverse' AS method, 2 AS prio
    FROM r1 WHERE base = $rep
    UNION ALL
    SELECT c.date, c.currency, {div_half_even_sql("rep.per_eur", "c.per_eur")} AS rate,
           'cross-eur' AS method, 3 AS prio
    FROM eur_leg c JOIN eur_leg rep ON rep.date = c.date AND rep.currency = $rep
)
SELECT date, currency, rate, method FROM (
    SELECT *, row_number() OVER (PARTITION BY date, currency ORDER BY prio) AS rn
    FROM cand WHERE currency <> $rep
) WHERE rn = 1"""


def daily_rates_sql(pairs: str, quotes: str) -> str:
    """SELECT currency, day, fx_rate, fx_rate_date, fx_method, last_published for every pair of
    `pairs` (a relation with columns currency, day), with last-published fallback up to
    `$max_days` (`last_published`: the latest usable publication on or before the day, however
    old: it explains a gap)."""
    # days after the run's as-of date ($forward_from, future service days) take the latest rate
    # as of that date, provided the rate file is fresh (published within $max_days of it)
    forward = (
        "($forward_from IS NOT NULL AND n.day > $forward_from AND q.date <= $forward_from "
        "AND $forward_from - q.date <= $max_days)"
    )
    ok = f"(q.date IS NOT NULL AND (n.day - q.date <= $max_days OR {forward}))"
    return f"""
SELECT n.currency, n.day,
       CASE WHEN n.currency = $rep THEN CAST(1 AS {RATE_TYPE}) WHEN {ok} THEN q.rate END AS fx_rate,
       CASE WHEN n.currency = $rep THEN n.day WHEN {ok} THEN q.date END AS fx_rate_date,
       CASE WHEN n.currency = $rep THEN 'identity'
            WHEN {ok} AND q.date = n.day THEN q.method
            WHEN {ok} AND n.day - q.date > $max_days THEN q.method || '+forward'
            WHEN {ok} THEN q.method || '+fallback' END AS fx_method,
       q.date AS last_published
FROM {pairs} n ASOF LEFT JOIN {quotes} q ON n.currency = q.currency AND n.day >= q.date"""


def build_daily_rates(
    con: duckdb.DuckDBPyConnection,
    pairs: str,
    reporting_currency: str,
    out: str,
    *,
    max_fallback_days: int = DEFAULT_MAX_FALLBACK_DAYS,
    rates_table: str = "stg_fx_rate",
    forward_from: date | None = None,
) -> None:
    """Create table `out` (currency, day, fx_rate, fx_rate_date, fx_method) for the DISTINCT
    (currency, day) rows of the query/relation text `pairs`, as a temp table (it lives for the
    run only)."""
    rep = reporting_currency.upper()
    q = f"{out}__quotes"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {ident(q)} AS {quotes_sql(rates_table)}", {"rep": rep}
    )
    pairs_rel = f"(SELECT DISTINCT upper(currency) AS currency, day FROM ({pairs}) WHERE day IS NOT NULL AND currency IS NOT NULL)"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {ident(out)} AS "
        f"{daily_rates_sql(pairs_rel, ident(q))} ORDER BY currency, day",
        {"rep": rep, "max_days": int(max_fallback_days), "forward_from": forward_from},
    )
    con.execute(f"DROP TABLE {ident(q)}")


def record_gaps(
    con: duckdb.DuckDBPyConnection,
    rates: str,
    reporting_currency: str,
    run_id: str,
    stage: str,
    *,
    max_fallback_days: int = DEFAULT_MAX_FALLBACK_DAYS,
) -> int:
    """Write one `fx-rate-missing` finding per (currency, day) of `rates` without a rate, and the
    `fx_gaps` metric. Returns the number of gaps."""
    from romirecon.stages.common import add_metric, ensure_common_tables

    ensure_common_tables(con)
    rep = reporting_currency.upper()
    con.execute(
        f"""
INSERT INTO finding
SELECT $run_id, $stage, 'fx-rate-missing', 'error', NULL, 'fx_rate', g.currency,
       strftime(g.day, '%Y-%m-%d'),
       'no ' || g.currency || '->' || $rep || ' rate on or up to ' || $max_days
           || ' days before ' || strftime(g.day, '%Y-%m-%d')
           || coalesce(' (last published ' || strftime(g.last_published, '%Y-%m-%d') || ')', ' (never published)'),
       json_object('currency', g.currency, 'date', strftime(g.day, '%Y-%m-%d'),
                   'reporting_currency', $rep, 'max_fallback_days', $max_days,
                   'last_published', strftime(g.last_published, '%Y-%m-%d'))
FROM {ident(rates)} g WHERE g.fx_rate IS NULL
ORDER BY g.currency, g.day""",
        {"run_id": run_id, "stage": stage, "rep": rep, "max_days": int(max_fallback_days)},
    )
    row = con.execute(f"SELECT count(*) FROM {ident(rates)} WHERE fx_rate IS NULL").fetchone()
    gaps = int(row[0]) if row else 0
    add_metric(con, run_id, stage, "fx_gaps", gaps, entity="fx_rate", unit="currency-days")
    return gaps


def convert(
    con: duckdb.DuckDBPyConnection,
    table: str,
    amount_col: str,
    currency_col: str,
    date_col: str,
    reporting_currency: str,
    run_id: str,
    *,
    out: str | None = None,
    exponent_col: str | None = None,
    max_fallback_days: int = DEFAULT_MAX_FALLBACK_DAYS,
    stage: str = "fx",
    rates_table: str = "stg_fx_rate",
    keep_cols: Sequence[str] | None = None,
    forward_from: date | None = None,
    amount_as: str = "amount_reporting",
) -> str:
    """Create table `out` (a temp table, default `<table>_reporting`): every row of
    `table` plus `fx_rate`, `fx_rate_date`, `fx_method` and `amount_as` (default
    `amount_reporting`) DECIMAL(38,14): the amount in the
    reporting currency, exact (minor units x rate x 10**-exponent needs scale 10 + exponent, so
    nothing is rounded here: sum it and round once at output); NULL where the rate is missing.

    `amount_col` holds minor units of `currency_col`; their exponent is `exponent_col` when given,
    else the ISO 4217 exponent. Missing rates are recorded as findings and the `fx_gaps` metric.
    Returns the name of the table written."""
    out = out or f"{table}_reporting"
    rates = f"{out}__rates"
    t, cur, day = ident(table), ident(currency_col), ident(date_col)
    build_daily_rates(
        con,
        f"SELECT {cur} AS currency, CAST({day} AS DATE) AS day FROM {t}",
        reporting_currency,
        rates,
        max_fallback_days=max_fallback_days,
        rates_table=rates_table,
        forward_from=forward_from,
    )
    record_gaps(
        con,
        rates,
        reporting_currency,
        run_id,
        stage,
        max_fallback_days=max_fallback_days,
    )
    if exponent_col:
        exp = f"x.{ident(exponent_col)}"
        join = ""
    else:
        # the ISO 4217 exponent from a constant MAP: recreating `currency_exponent` here (as
        # this did) dropped the per-source overrides billing had put there for later readers
        exp = f"coalesce(map_extract_value({exponent_map_sql()}, upper(x.{cur})), 2)"
        join = ""
    cols = "x.*" if keep_cols is None else ", ".join(f"x.{ident(c)}" for c in keep_cols)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {ident(out)} AS
SELECT {cols}, r.fx_rate, r.fx_rate_date, r.fx_method,
       {exact_reporting_sql(f"x.{ident(amount_col)}", "r.fx_rate", exp)} AS {ident(amount_as)}
FROM {t} x {join}
LEFT JOIN {ident(rates)} r ON r.currency = upper(x.{cur}) AND r.day = CAST(x.{day} AS DATE)"""
    )
    con.execute(f"DROP TABLE {ident(rates)}")
    return out


def minor_factor_sql(exponent: str) -> str:
    """DECIMAL(38,3) 10**-exponent for exponents 0..4 (exact: no DOUBLE on the way)."""
    return (
        f"CAST(CASE {exponent} WHEN 0 THEN 1 WHEN 1 THEN 0.1 WHEN 2 THEN 0.01 WHEN 3 THEN 0.001 "
        f"WHEN 4 THEN 0.0001 END AS DECIMAL(10,4))"
    )


def exact_reporting_sql(amount_minor: str, rate: str, exponent: str) -> str:
    """amount_minor * rate * 10**-exponent, exact: DECIMAL(38,14) (rate scale 10 + exponent <= 4),
    no rounding at all. Sums of these stay exact; round once, at output, with round_even."""
    return f"(CAST({amount_minor} AS DECIMAL(38,0)) * {rate} * {minor_factor_sql(exponent)})"


def ensure_exponent_table(
    con: duckdb.DuckDBPyConnection,
    source_overrides: dict[str, dict[str, int]] | None = None,
) -> None:
    """Create `currency_exponent(scope, key, currency, exponent)`: scope 'iso' (key '') and
    'source' (key = source name, from the mapping's `exponents`, as the contract stage applied
    them). Resolve a row's exponent as source override, then ISO."""
    from romirecon.money import exponent_table

    rows = [("iso", "", c, e) for c, e in exponent_table()]
    rows += [
        ("source", s, c.upper(), int(e))
        for s, m in sorted((source_overrides or {}).items())
        for c, e in sorted(m.items())
    ]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE currency_exponent "
        "(scope VARCHAR, key VARCHAR, currency VARCHAR, exponent INTEGER)"
    )
    con.executemany("INSERT INTO currency_exponent VALUES (?, ?, ?, ?)", rows)
