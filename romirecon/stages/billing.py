"""Billing rules: invoices, lines, credit notes, refunds and subscriptions -> recognised revenue.

Reads the staged tables `stg_invoice`, `stg_invoice_line`, `stg_credit_note`, `stg_refund`,
`stg_subscription`, `stg_billing_event`, `stg_fx_rate` (and `entity_xref` when dedup ran) and writes

| table | grain |
|---|---|
| `billing_duplicate` | one surplus copy of a record: its provenance, the kept copy, the reason |
| `revenue_event` | one invoice line of a live open/paid/uncollectible invoice |
| `revenue_adjustment` | one credit note / refund / write-off, allocated to the lines it adjusts |
| `revenue_daily` | one line (or adjustment part) × service day: native minor units + reporting |
| `revenue` | month × billing customer × currency: the published contract table |
| `conversion` | one billing customer: first paid invoice, trial end, trial-to-paid date, coupon |

plus `metric` and `finding` rows. Everything is set-based SQL; the rules are in DESIGN.md
("Billing rules") and in the docstrings of the SQL builders below.

Sign convention: amounts are minor units of the row's currency; revenue positive, credits,
refunds and write-offs negative.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

from romirecon.exitcodes import ConfigError
from romirecon.sqlutil import ident
from romirecon.stages import fx

STAGE = "billing"

UNCOLLECTIBLE_MODES = ("write-off", "revenue", "exclude")
ADJUSTMENT_TIMINGS = ("line-period", "document-date")

# invoice status -> rank: the copy with the latest state wins when a re-export disagrees
_INVOICE_STATUS_RANK = "CASE lower(status) WHEN 'void' THEN 5 WHEN 'paid' THEN 4 WHEN 'uncollectible' THEN 3 WHEN 'open' THEN 2 WHEN 'draft' THEN 1 ELSE 0 END"
_CREDIT_NOTE_STATUS_RANK = "CASE lower(status) WHEN 'void' THEN 2 ELSE 1 END"
_REFUND_STATUS_RANK = "CASE lower(status) WHEN 'failed' THEN 4 WHEN 'canceled' THEN 4 WHEN 'succeeded' THEN 3 WHEN 'pending' THEN 2 ELSE 1 END"


@dataclass(frozen=True)
class BillingSettings:
    """The `billing:` section of the project file."""

    fx_max_fallback_days: int = fx.DEFAULT_MAX_FALLBACK_DAYS
    # uncollectible invoices: recognise then write off the unpaid part (default), count in full,
    # or drop like a void
    uncollectible: str = "write-off"
    # credit notes/refunds against a line: spread over the line's service period (default), or
    # booked whole on the document's date
    adjustment_timing: str = "line-period"
    livemode_only: bool = True
    # per source name: currency exponent overrides, e.g. {stripe_lines: {ISK: 2}}
    exponents: dict[str, dict[str, int]] = field(default_factory=dict)


def parse_settings(settings: Mapping[str, Any] | None) -> BillingSettings:
    """Validate the `billing:` section; raise ConfigError listing every problem at once."""
    s = dict(settings or {})
    known = {f for f in BillingSettings.__dataclass_fields__}
    problems: list[str] = []
    for key in sorted(set(s) - known):
        from romirecon.config import did_you_mean

        problems.append(f"billing.{key}: unknown key{did_you_mean(key, known)}")
    days = s.get("fx_max_fallback_days", fx.DEFAULT_MAX_FALLBACK_DAYS)
    if not isinstance(days, int) or isinstance(days, bool) or days < 0:
        problems.append(
            f"billing.fx_max_fallback_days: {days!r} is not a whole number of days >= 0"
        )
    for key, options in (
        ("uncollectible", UNCOLLECTIBLE_MODES),
        ("adjustment_timing", ADJUSTMENT_TIMINGS),
    ):
        if key in s and s[key] not in options:
            problems.append(f"billing.{key}: {s[key]!r} is not one of: {', '.join(options)}")
    if "livemode_only" in s and not isinstance(s["livemode_only"], bool):
        problems.append(f"billing.livemode_only: {s['livemode_only']!r} is not true or false")
    exps = s.get("exponents") or {}
    if not isinstance(exps, dict) or not all(
        isinstance(m, dict) and all(isinstance(e, int) and 0 <= e <= 4 for e in m.values())
        for m in exps.values()
    ):
        problems.append("billing.exponents: expected {source_name: {CURRENCY: 0..4}}")
    if problems:
        raise ConfigError(f"billing settings: {len(problems)} problem(s) found", details=problems)
    return BillingSettings(
        fx_max_fallback_days=int(days),
        uncollectible=s.get("uncollectible", "write-off"),
        adjustment_timing=s.get("adjustment_timing", "line-period"),
        livemode_only=s.get("livemode_only", True),
        exponents={str(k): {str(c).upper(): int(e) for c, e in m.items()} for k, m in exps.items()},
    )


# ---------------------------------------------------------------------------------------------
# SQL builders (pure: names in, SQL text out)


def largest_remainder_sql(
    src: str, group: Sequence[str], total: str, weight: str, order: Sequence[str]
) -> str:
    """SELECT src.*, alloc: split the integer `total` (the same on every row of a group) over the
    rows of each `group` in proportion to `weight` so that the parts add up exactly to the total.

    Each row gets floor(|total| * w / W); the units left over go one each to the rows with the
    largest remainders (ties: `order`). Negative totals are split as their absolute value and the
    sign put back, so a credit splits exactly like the matching debit. Negative weights count as 0;
    a group whose weights are all 0 splits evenly."""
    g = ", ".join(group)
    o = ", ".join(order)
    return f"""
SELECT * EXCLUDE (_t, _w0, _s0, _w, _ws, _fl, _rem, _left, _rk),
       CAST(sign(_t) * (_fl + CASE WHEN _rk <= _left THEN 1 ELSE 0 END) AS BIGINT) AS alloc
FROM (
    SELECT *, abs(_t) - sum(_fl) OVER (PARTITION BY {g}) AS _left,
           row_number() OVER (PARTITION BY {g} ORDER BY _rem DESC, {o}) AS _rk
    FROM (
        SELECT *, (abs(_t) * _w) // _ws AS _fl, (abs(_t) * _w) % _ws AS _rem
        FROM (
            SELECT *, CASE WHEN _s0 > 0 THEN _w0 ELSE 1 END AS _w,
                   CASE WHEN _s0 > 0 THEN _s0 ELSE count(*) OVER (PARTITION BY {g}) END AS _ws
            FROM (
                SELECT *, CAST(coalesce({total}, 0) AS HUGEINT) AS _t,
                       greatest(CAST(coalesce({weight}, 0) AS HUGEINT), 0) AS _w0,
                       sum(greatest(CAST(coalesce({weight}, 0) AS HUGEINT), 0))
                           OVER (PARTITION BY {g}) AS _s0
                FROM {src}
            )
        )
    )
)"""


def dedup_sql(table: str, key: str, order: str) -> str:
    """SELECT *, _key, _copy, kept_*: every row of `table` numbered within its `key` by `order`
    (copy 1 is kept), with the kept copy's provenance on each row."""
    return f"""
SELECT *,
       first_value(source_name) OVER w AS kept_source_name,
       first_value(source_file) OVER w AS kept_source_file,
       first_value(source_row) OVER w AS kept_source_row
FROM (
    SELECT *, {key} AS _key, row_number() OVER (PARTITION BY {key} ORDER BY {order}) AS _copy
    FROM {ident(table)}
)
WINDOW w AS (PARTITION BY _key ORDER BY _copy ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"""


def live_filter(livemode_only: bool) -> str:
    return "livemode IS DISTINCT FROM false" if livemode_only else "true"


def days_sql(src: str) -> str:
    """One row per item of `src` and day of [start_day, end_day) (end exclusive)."""
    return f"""
SELECT * EXCLUDE (_d), CAST(_d AS DATE) AS day
FROM (SELECT *, unnest(range(start_day, end_day, INTERVAL 1 DAY)) AS _d FROM {src})"""


# ---------------------------------------------------------------------------------------------
# steps


def _exec(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> None:
    con.execute(sql, params) if params is not None else con.execute(sql)


def _table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchone()
    return bool(row and row[0])


_DUP_COLS = """entity VARCHAR, record_id VARCHAR, source_name VARCHAR, source_file VARCHAR,
    source_row BIGINT, file_sha256 VARCHAR, kept_id VARCHAR, kept_source_name VARCHAR,
    kept_source_file VARCHAR, kept_source_row BIGINT, reason VARCHAR, run_id VARCHAR"""


def _redelivered_objects_sql() -> str:
    """Object ids carried by an event delivered more than once (same event id)."""
    return """
SELECT DISTINCT object_id FROM stg_billing_event
WHERE object_id IS NOT NULL AND source_id IN (
    SELECT source_id FROM stg_billing_event WHERE source_id IS NOT NULL
    GROUP BY source_id HAVING count(*) > 1)"""


def _dedup_entity(
    con: duckdb.DuckDBPyConnection,
    entity: str,
    table: str,
    out: str,
    key: str,
    order: str,
    id_expr: str,
    run_id: str,
    carrier_expr: str | None = None,
) -> None:
    """Keep copy 1 of each key in `out`; record the others in billing_duplicate (reason
    `event-redelivery` when the record, or its carrier such as the line's invoice, is the object
    of an event delivered twice; else `reexport`)."""
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _b_ranked AS {dedup_sql(table, key, order)}")
    _exec(
        con,
        f"""INSERT INTO billing_duplicate
SELECT ?, {id_expr}, source_name, source_file, source_row, file_sha256, {id_expr},
       kept_source_name, kept_source_file, kept_source_row,
       CASE WHEN {id_expr} IN (SELECT object_id FROM _b_redelivered)
                 OR {carrier_expr or "NULL"} IN (SELECT object_id FROM _b_redelivered)
            THEN 'event-redelivery'
            ELSE 'reexport' END, ?
FROM _b_ranked WHERE _copy > 1""",
        [entity, run_id],
    )
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE {ident(out)} AS "
        "SELECT * EXCLUDE (_copy, kept_source_name, kept_source_file, kept_source_row) "
        "FROM _b_ranked WHERE _copy = 1",
    )


def _idempotency_sql(ids_table: str, id_col: str) -> str:
    """Rows of `ids_table` created by a request whose idempotency key already created an earlier
    object of the same type: (id, kept_id). The first object (by event time, then id) is kept."""
    return f"""
SELECT id, kept_id FROM (
    SELECT o.{id_col} AS id,
           first_value(o.{id_col}) OVER (
               PARTITION BY e.idempotency_key, e.event_type ORDER BY e.created_at, o.{id_col}
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS kept_id
    FROM {ids_table} o
    JOIN (SELECT DISTINCT object_id, idempotency_key, event_type, min(created_at) AS created_at
          FROM stg_billing_event WHERE idempotency_key IS NOT NULL AND object_id IS NOT NULL
          GROUP BY ALL) e
      ON e.object_id = o.{id_col}
) WHERE id <> kept_id"""


def _deduplicate(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    _exec(con, f"CREATE OR REPLACE TABLE billing_duplicate ({_DUP_COLS})")
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _b_redelivered AS {_redelivered_objects_sql()}")
    # webhook redelivery: the same event id twice
    _exec(
        con,
        f"""CREATE OR REPLACE TEMP TABLE _b_ranked AS
{dedup_sql("stg_billing_event", "source_id", "source_file, source_row, source_name")}""",
    )
    _exec(
        con,
        """INSERT INTO billing_duplicate
SELECT 'billing_event', source_id, source_name, source_file, source_row, file_sha256, source_id,
       kept_source_name, kept_source_file, kept_source_row, 'event-redelivery', ?
FROM _b_ranked WHERE _copy > 1 AND source_id IS NOT NULL""",
        [run_id],
    )
    _dedup_entity(
        con,
        "invoice",
        "stg_invoice",
        "_b_invoice0",
        "coalesce(source_vendor, '') || '|' || source_id",
        f"updated_at DESC NULLS LAST, {_INVOICE_STATUS_RANK} DESC, source_file DESC, source_row DESC, source_name",
        "source_id",
        run_id,
    )
    _dedup_entity(
        con,
        "invoice_line",
        "stg_invoice_line",
        "_b_line0",
        "coalesce(source_vendor, '') || '|' || coalesce(invoice_id, '') || '|' || coalesce(unique_id, source_id)",
        "source_file, source_row, source_name",
        "coalesce(unique_id, source_id)",
        run_id,
        carrier_expr="invoice_id",
    )
    _dedup_entity(
        con,
        "credit_note",
        "stg_credit_note",
        "_b_cn",
        "coalesce(source_vendor, '') || '|' || source_id",
        f"{_CREDIT_NOTE_STATUS_RANK} DESC, source_file DESC, source_row DESC, source_name",
        "source_id",
        run_id,
    )
    _dedup_entity(
        con,
        "refund",
        "stg_refund",
        "_b_refund",
        "coalesce(source_vendor, '') || '|' || source_id",
        f"{_REFUND_STATUS_RANK} DESC, source_file DESC, source_row DESC, source_name",
        "source_id",
        run_id,
    )
    # API retries: a second object created under an idempotency key already used
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE _b_idem_inv AS {_idempotency_sql('_b_invoice0', 'source_id')}",
    )
    _exec(
        con,
        "CREATE OR REPLACE TEMP TABLE _b_line_ids AS "
        "SELECT DISTINCT coalesce(unique_id, source_id) AS line_key FROM _b_line0",
    )
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE _b_idem_line AS {_idempotency_sql('_b_line_ids', 'line_key')}",
    )
    _exec(
        con,
        """INSERT INTO billing_duplicate
SELECT 'invoice', i.source_id, i.source_name, i.source_file, i.source_row, i.file_sha256, d.kept_id,
       k.source_name, k.source_file, k.source_row, 'idempotency-key', ?
FROM _b_invoice0 i JOIN _b_idem_inv d ON d.id = i.source_id
LEFT JOIN _b_invoice0 k ON k.source_id = d.kept_id""",
        [run_id],
    )
    _exec(
        con,
        """INSERT INTO billing_duplicate
SELECT 'invoice_line', coalesce(l.unique_id, l.source_id), l.source_name, l.source_file,
       l.source_row, l.file_sha256, coalesce(dl.kept_id, di.kept_id),
       NULL, NULL, NULL, 'idempotency-key', ?
FROM _b_line0 l
LEFT JOIN _b_idem_line dl ON dl.id = coalesce(l.unique_id, l.source_id)
LEFT JOIN _b_idem_inv di ON di.id = l.invoice_id
WHERE dl.id IS NOT NULL OR di.id IS NOT NULL""",
        [run_id],
    )
    _exec(
        con,
        "CREATE OR REPLACE TEMP TABLE _b_invoice AS SELECT * FROM _b_invoice0 "
        "WHERE source_id NOT IN (SELECT id FROM _b_idem_inv)",
    )
    _exec(
        con,
        """CREATE OR REPLACE TEMP TABLE _b_line AS SELECT * FROM _b_line0
WHERE coalesce(unique_id, source_id) NOT IN (SELECT id FROM _b_idem_line)
  AND (invoice_id IS NULL OR invoice_id NOT IN (SELECT id FROM _b_idem_inv))""",
    )


def _exponent_sql(alias: str) -> str:
    """The exponent of row `alias`: per-source override, then vendor, then ISO 4217, then 2."""
    a = alias
    return f"""coalesce(
        (SELECT exponent FROM currency_exponent WHERE scope = 'source' AND key = {a}.source_name AND currency = upper({a}.currency)),
        (SELECT exponent FROM currency_exponent WHERE scope = 'vendor' AND key = lower({a}.source_vendor) AND currency = upper({a}.currency)),
        (SELECT exponent FROM currency_exponent WHERE scope = 'iso' AND currency = upper({a}.currency)),
        2)"""


def lines_sql(st: BillingSettings) -> str:
    """Every staged line (plus one synthetic line per line-less invoice, e.g. NetSuite) joined to
    its invoice, with the invoice-level status decision and service days."""
    counted = ["'open'", "'paid'"] + (["'uncollectible'"] if st.uncollectible != "exclude" else [])
    return f"""
WITH l AS (
    SELECT source_id, unique_id, invoice_id, customer_id, subscription_id, subscription_item_id,
           price_id, plan_id, description, line_type, currency, amount, discount, tax, quantity,
           proration, discountable, period_start, period_end, coupon, created_at,
           source_name, source_system, source_vendor, source_file, source_row, file_sha256,
           coalesce(unique_id, source_id) AS line_key, false AS synthetic
    FROM _b_line
    UNION ALL
    SELECT i.source_id, NULL, i.source_id, i.customer_id, i.subscription_id, NULL, NULL, NULL,
           'invoice ' || coalesce(i.number, i.source_id), 'invoice', i.currency, i.subtotal, 0,
           i.tax, NULL, false, true, i.period_start, i.period_end, NULL, i.created_at,
           i.source_name, i.source_system, i.source_vendor, i.source_file, i.source_row,
           i.file_sha256, 'invoice:' || i.source_id, true
    FROM _b_invoice i
    WHERE NOT EXISTS (SELECT 1 FROM _b_line x WHERE x.invoice_id = i.source_id
                      AND x.source_vendor IS NOT DISTINCT FROM i.source_vendor)
), j AS (
    SELECT l.*,
           concat_ws('/', l.source_name, l.invoice_id, l.line_key) AS event_id,
           i.source_id IS NOT NULL AS has_invoice,
           i.number AS invoice_number, lower(i.status) AS invoice_status, i.billing_reason,
           i.discount AS invoice_discount_total, i.total AS invoice_total,
           i.amount_paid AS invoice_amount_paid, i.created_at AS invoice_created_at,
           coalesce(l.customer_id, i.customer_id) AS customer,
           coalesce(l.subscription_id, i.subscription_id) AS subscription,
           upper(coalesce(l.currency, i.currency)) AS cur,
           coalesce(l.coupon, i.coupon) AS line_coupon,
           ({live_filter(st.livemode_only)}) AS live_ok
    FROM l LEFT JOIN _b_invoice i
      ON i.source_id = l.invoice_id AND i.source_vendor IS NOT DISTINCT FROM l.source_vendor
), s AS (  -- the line's subscription (latest copy) for trial windows and its coupon
    SELECT * FROM (
        SELECT source_id, source_vendor, trial_start, trial_end, coupon AS sub_coupon,
               row_number() OVER (PARTITION BY source_vendor, source_id
                                  ORDER BY created_at DESC NULLS LAST, source_file DESC, source_row DESC) AS rn
        FROM stg_subscription
    ) WHERE rn = 1
)
SELECT j.* EXCLUDE (customer_id, subscription_id, currency, coupon, live_ok, customer, subscription, cur, line_coupon),
       j.customer AS customer_id, j.subscription AS subscription_id, j.cur AS currency,
       coalesce(j.line_coupon, s.sub_coupon) AS coupon,
       s.trial_start, s.trial_end,
       CASE WHEN NOT j.has_invoice THEN 'invoice-missing'
            WHEN NOT j.live_ok THEN 'test-mode'
            WHEN j.invoice_status IN ({", ".join(counted)}) THEN 'counted'
            ELSE 'status:' || coalesce(j.invoice_status, 'null') END AS decision,
       CAST(coalesce(j.period_start, j.invoice_created_at, j.created_at) AS DATE) AS start_day
FROM j
LEFT JOIN s ON s.source_id = j.subscription AND s.source_vendor IS NOT DISTINCT FROM j.source_vendor"""


def _build_events(con: duckdb.DuckDBPyConnection, st: BillingSettings, run_id: str) -> None:
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _b_lines_all AS {lines_sql(st)}")
    # invoice-level discounts spread over the invoice's counted discountable lines
    parts = """(SELECT event_id, invoice_id, source_vendor, line_key,
        CASE WHEN discountable IS DISTINCT FROM false THEN coalesce(invoice_discount_total, 0) ELSE 0 END AS inv_disc,
        CASE WHEN discountable IS DISTINCT FROM false
             THEN coalesce(amount, 0) - coalesce(discount, 0) ELSE 0 END AS w
    FROM _b_lines_all WHERE decision = 'counted' AND discountable IS DISTINCT FROM false
      AND coalesce(invoice_discount_total, 0) <> 0)"""
    _exec(
        con,
        "CREATE OR REPLACE TEMP TABLE _b_inv_disc AS SELECT event_id, alloc AS invoice_discount FROM ("
        + largest_remainder_sql(
            parts, ["invoice_id", "source_vendor"], "inv_disc", "w", ["line_key"]
        )
        + ")",
    )
    _exec(
        con,
        f"""CREATE OR REPLACE TABLE revenue_event AS
SELECT l.event_id, l.source_name, l.source_system, l.source_vendor, l.source_file, l.source_row,
       l.file_sha256, CAST(? AS VARCHAR) AS run_id,
       l.invoice_id, l.invoice_number, l.line_key AS line_id, l.synthetic, l.customer_id,
       CAST(NULL AS VARCHAR) AS entity_id, l.subscription_id, l.subscription_item_id, l.plan_id,
       l.price_id, l.description, l.invoice_status, l.billing_reason,
       CASE WHEN coalesce(l.amount, 0) = 0
                 AND (l.description ILIKE '%trial%'
                      OR (l.trial_end IS NOT NULL AND l.start_day < CAST(l.trial_end AS DATE)))
                 THEN 'trial'
            WHEN coalesce(l.amount, 0) = 0 THEN 'zero'
            WHEN l.proration AND l.amount < 0 THEN 'proration-credit'
            WHEN l.proration THEN 'proration-debit'
            ELSE coalesce(l.line_type, 'line') END AS event_type,
       coalesce(l.proration, false) AS proration,
       coalesce(l.amount, 0) <> 0 AS billable,
       l.currency, {_exponent_sql("l")} AS exponent,
       coalesce(l.amount, 0) AS amount,
       coalesce(l.discount, 0) AS line_discount,
       coalesce(d.invoice_discount, 0) AS invoice_discount,
       coalesce(l.discount, 0) + coalesce(d.invoice_discount, 0) AS discount,
       coalesce(l.tax, 0) AS tax,
       coalesce(l.amount, 0) - coalesce(l.discount, 0) - coalesce(d.invoice_discount, 0) AS net,
       l.start_day AS service_start,
       CASE WHEN CAST(l.period_end AS DATE) > l.start_day THEN CAST(l.period_end AS DATE)
            ELSE l.start_day + 1 END AS service_end,
       l.coupon, CAST(l.invoice_created_at AS DATE) AS invoice_date,
       l.invoice_total, l.invoice_amount_paid
FROM _b_lines_all l LEFT JOIN _b_inv_disc d USING (event_id)
WHERE l.decision = 'counted'
ORDER BY l.event_id""",
        [run_id],
    )
    _exec(
        con,
        """ALTER TABLE revenue_event ADD COLUMN service_days BIGINT;
UPDATE revenue_event SET service_days = service_end - service_start""",
    )
    # proration groups: the unused-time credit and remaining-time debit of one change net out
    _exec(
        con,
        """ALTER TABLE revenue_event ADD COLUMN proration_group VARCHAR;
ALTER TABLE revenue_event ADD COLUMN proration_net BIGINT;
UPDATE revenue_event SET proration_group = g.grp, proration_net = g.net
FROM (SELECT event_id,
             concat_ws('/', source_name, customer_id, coalesce(subscription_id, ''),
                       strftime(service_start, '%Y-%m-%d'), strftime(service_end, '%Y-%m-%d')) AS grp,
             sum(net) OVER (PARTITION BY source_name, customer_id, subscription_id,
                            service_start, service_end) AS net
      FROM revenue_event WHERE proration) g
WHERE g.event_id = revenue_event.event_id""",
    )
    # findings for lines that cannot be counted for a reason the user should see
    _exec(
        con,
        """INSERT INTO finding
SELECT ?, 'billing', 'invoice-missing', 'warn', source_name, 'invoice_line', line_key, invoice_id,
       'invoice line ' || line_key || ' names invoice ' || coalesce(invoice_id, '(none)')
           || ' which is not in any invoice export: not counted',
       json_object('source_file', source_file, 'source_row', source_row)
FROM _b_lines_all WHERE decision = 'invoice-missing' ORDER BY source_name, source_file, source_row""",
        [run_id],
    )
    _exec(
        con,
        """INSERT INTO finding
SELECT ?, 'billing', 'invoice-status-unknown', 'warn', any_value(source_name), 'invoice', invoice_id, NULL,
       'invoice ' || invoice_id || ' has status ' || any_value(invoice_status)
           || ' (expected draft, open, paid, uncollectible or void): not counted', NULL
FROM _b_lines_all
WHERE decision LIKE 'status:%' AND invoice_status NOT IN ('draft', 'void', 'uncollectible')
GROUP BY invoice_id ORDER BY invoice_id""",
        [run_id],
    )


def adjustments_docs_sql(st: BillingSettings) -> str:
    """One row per credit note, refund and write-off: amount (negative), target line/invoice,
    whether it counts and why not."""
    return f"""
WITH cn AS (
    SELECT 'credit-note' AS kind, source_id AS document_id, source_name, source_vendor,
           source_file, source_row, invoice_id, invoice_line_id, customer_id,
           upper(currency) AS currency, -abs(coalesce(amount, 0)) AS amount,
           CAST(created_at AS DATE) AS document_date,
           CASE WHEN lower(status) = 'void' THEN 'void' END AS skip_reason, reason
    FROM _b_cn
), rf AS (
    SELECT 'refund' AS kind, r.source_id, r.source_name, r.source_vendor, r.source_file,
           r.source_row, r.invoice_id, NULL, r.customer_id, upper(r.currency),
           -abs(coalesce(r.amount, 0)), CAST(r.created_at AS DATE),
           CASE WHEN lower(coalesce(r.status, 'succeeded')) <> 'succeeded'
                     THEN 'status:' || lower(r.status)
                WHEN EXISTS (SELECT 1 FROM cn WHERE cn.skip_reason IS NULL
                             AND cn.source_vendor IS NOT DISTINCT FROM r.source_vendor
                             AND (cn.document_id = r.credit_note_id OR
                                  cn.document_id IN (SELECT c2.source_id FROM _b_cn c2
                                                     WHERE c2.refund_id = r.source_id)))
                     THEN 'counted-via-credit-note' END,
           r.reason
    FROM _b_refund r
), wo AS (  -- uncollectible: the unpaid share of the invoice's net, half-to-even
    SELECT 'write-off', 'write-off:' || invoice_id, any_value(source_name), source_vendor,
           any_value(source_file), min(source_row), invoice_id, NULL, any_value(customer_id),
           any_value(currency),
           -CAST(CASE WHEN coalesce(any_value(invoice_total), 0) <= 0 THEN sum(net)
                 ELSE round_even(CAST(sum(net) AS DECIMAL(38,0))
                      * CAST(greatest(any_value(invoice_total) - coalesce(any_value(invoice_amount_paid), 0), 0) AS DECIMAL(38,0))
                      / CAST(any_value(invoice_total) AS DECIMAL(38,0)), 0) END AS BIGINT),
           max(invoice_date), NULL, 'uncollectible'
    FROM revenue_event
    WHERE invoice_status = 'uncollectible' AND billable AND {"true" if st.uncollectible == "write-off" else "false"}
    GROUP BY invoice_id, source_vendor
)
SELECT * FROM cn UNION ALL SELECT * FROM rf UNION ALL SELECT * FROM wo"""


def _build_adjustments(con: duckdb.DuckDBPyConnection, st: BillingSettings, run_id: str) -> None:
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _b_adj_doc AS {adjustments_docs_sql(st)}")
    # targets: the named line, else the invoice's billable lines (weighted by net)
    _exec(
        con,
        """CREATE OR REPLACE TEMP TABLE _b_adj_target AS
SELECT a.kind, a.document_id, a.source_vendor, e.event_id, e.line_id, e.net, e.currency AS line_currency
FROM _b_adj_doc a JOIN revenue_event e
  ON e.billable AND e.source_vendor IS NOT DISTINCT FROM a.source_vendor
 AND ((a.invoice_line_id IS NOT NULL AND e.line_id = a.invoice_line_id)
      OR (a.invoice_line_id IS NULL AND e.invoice_id = a.invoice_id)
      OR (a.invoice_line_id IS NOT NULL AND e.invoice_id = a.invoice_id
          AND NOT EXISTS (SELECT 1 FROM revenue_event e2 WHERE e2.line_id = a.invoice_line_id)))""",
    )
    _exec(
        con,
        """CREATE OR REPLACE TEMP TABLE _b_adj_doc2 AS
SELECT a.*,
       CASE WHEN a.skip_reason IS NOT NULL THEN a.skip_reason
            WHEN EXISTS (SELECT 1 FROM _b_adj_target t WHERE t.kind = a.kind AND t.document_id = a.document_id
                         AND t.source_vendor IS NOT DISTINCT FROM a.source_vendor AND t.line_currency <> a.currency)
                 THEN 'currency-mismatch'
            WHEN a.invoice_id IS NOT NULL AND NOT EXISTS (
                     SELECT 1 FROM _b_adj_target t WHERE t.kind = a.kind AND t.document_id = a.document_id
                     AND t.source_vendor IS NOT DISTINCT FROM a.source_vendor)
                 AND EXISTS (SELECT 1 FROM _b_invoice i WHERE i.source_id = a.invoice_id
                             AND i.source_vendor IS NOT DISTINCT FROM a.source_vendor)
                 THEN 'invoice-not-counted'
       END AS why_not,
       EXISTS (SELECT 1 FROM _b_adj_target t WHERE t.kind = a.kind AND t.document_id = a.document_id
               AND t.source_vendor IS NOT DISTINCT FROM a.source_vendor) AS linked
FROM _b_adj_doc a""",
    )
    parts = """(SELECT a.kind, a.document_id, a.source_vendor, a.amount, t.event_id, t.net
        FROM _b_adj_doc2 a JOIN _b_adj_target t
          ON t.kind = a.kind AND t.document_id = a.document_id
         AND t.source_vendor IS NOT DISTINCT FROM a.source_vendor
        WHERE a.why_not IS NULL)"""
    _exec(
        con,
        "CREATE OR REPLACE TEMP TABLE _b_adj_alloc AS "
        + largest_remainder_sql(
            parts, ["kind", "document_id", "source_vendor"], "amount", "net", ["event_id"]
        ),
    )
    line_period = st.adjustment_timing == "line-period"
    _exec(
        con,
        f"""CREATE OR REPLACE TABLE revenue_adjustment AS
SELECT concat_ws('/', a.kind, a.source_name, a.document_id) AS adjustment_id, a.kind,
       a.document_id, a.source_name, a.source_vendor, a.source_file, a.source_row,
       CAST(? AS VARCHAR) AS run_id, a.invoice_id, a.invoice_line_id,
       x.event_id, coalesce(e.customer_id, a.customer_id) AS customer_id,
       a.currency, coalesce(e.exponent, {_exponent_sql("a")}) AS exponent,
       a.amount AS document_amount, coalesce(x.alloc, a.amount) AS amount,
       a.document_date,
       a.why_not IS NULL AS counted, a.why_not AS not_counted_reason, a.reason,
       CASE WHEN {"true" if line_period else "false"} AND e.event_id IS NOT NULL
            THEN e.service_start ELSE a.document_date END AS service_start,
       CASE WHEN {"true" if line_period else "false"} AND e.event_id IS NOT NULL
            THEN e.service_end ELSE a.document_date + 1 END AS service_end
FROM _b_adj_doc2 a
LEFT JOIN _b_adj_alloc x ON x.kind = a.kind AND x.document_id = a.document_id
     AND x.source_vendor IS NOT DISTINCT FROM a.source_vendor AND x.alloc <> 0
LEFT JOIN revenue_event e ON e.event_id = x.event_id
ORDER BY adjustment_id, x.event_id NULLS FIRST""",
        [run_id],
    )
    _exec(
        con,
        """INSERT INTO finding
SELECT ?, 'billing', 'adjustment-unlinked', 'warn', source_name, kind, document_id, invoice_id,
       kind || ' ' || document_id || ' names no counted line or invoice: booked on '
           || strftime(document_date, '%Y-%m-%d') || ' for customer ' || coalesce(customer_id, '(none)'),
       json_object('source_file', source_file, 'source_row', source_row, 'amount', amount)
FROM revenue_adjustment WHERE counted AND event_id IS NULL ORDER BY adjustment_id""",
        [run_id],
    )
    _exec(
        con,
        """INSERT INTO finding
SELECT ?, 'billing', 'adjustment-' || not_counted_reason, 'warn', source_name, kind, document_id,
       invoice_id, kind || ' ' || document_id || ' not counted: ' || not_counted_reason, NULL
FROM revenue_adjustment WHERE not_counted_reason IN ('currency-mismatch', 'invoice-not-counted')
ORDER BY adjustment_id""",
        [run_id],
    )
    _exec(
        con,
        """INSERT INTO finding
SELECT ?, 'billing', 'adjustment-exceeds-line', 'warn', e.source_name, 'invoice_line', e.line_id,
       NULL, 'adjustments of ' || CAST(-sum(a.amount) AS VARCHAR) || ' exceed the net '
           || CAST(any_value(e.net) AS VARCHAR) || ' of line ' || e.line_id, NULL
FROM revenue_adjustment a JOIN revenue_event e USING (event_id)
WHERE a.counted GROUP BY e.event_id, e.source_name, e.line_id
HAVING -sum(a.amount) > greatest(any_value(e.net), 0) ORDER BY e.event_id""",
        [run_id],
    )


def _build_entities(con: duckdb.DuckDBPyConnection) -> None:
    """entity_id of each billing customer from dedup's entity_xref (contact), when it exists."""
    if not _table_exists(con, "entity_xref"):
        return
    vendors = (
        "SELECT DISTINCT source_name, source_vendor FROM stg_contact"
        if _table_exists(con, "stg_contact")
        else "SELECT CAST(NULL AS VARCHAR) AS source_name, CAST(NULL AS VARCHAR) AS source_vendor"
    )
    _exec(
        con,
        f"""CREATE OR REPLACE TEMP TABLE _b_entity AS
SELECT c.source_vendor, c.customer_id, min(CAST(x.golden_id AS VARCHAR)) AS entity_id
FROM (SELECT DISTINCT source_vendor, source_name, customer_id FROM revenue_event
      UNION SELECT DISTINCT source_vendor, source_name, customer_id FROM revenue_adjustment) c
JOIN entity_xref x ON x.entity = 'contact' AND CAST(x.source_id AS VARCHAR) = c.customer_id
LEFT JOIN ({vendors}) v ON v.source_name = x.source_name
WHERE x.source_name = c.source_name OR v.source_vendor IS NOT DISTINCT FROM c.source_vendor
GROUP BY c.source_vendor, c.customer_id""",
    )
    for t in ("revenue_event", "revenue_adjustment"):
        _exec(
            con,
            f"""UPDATE {t} SET entity_id = m.entity_id FROM _b_entity m
WHERE m.customer_id = {t}.customer_id AND m.source_vendor IS NOT DISTINCT FROM {t}.source_vendor""",
        )


def items_sql() -> str:
    """Everything that is spread over days: billable lines (their net) and counted adjustment
    parts."""
    return """(
SELECT event_id AS item_id, 'line' AS kind, event_id, CAST(NULL AS VARCHAR) AS adjustment_id,
       source_name, source_vendor, customer_id, entity_id, currency, exponent, net AS total,
       service_start AS start_day, service_end AS end_day
FROM revenue_event WHERE billable
UNION ALL
SELECT adjustment_id || coalesce('|' || event_id, ''), kind, event_id, adjustment_id,
       source_name, source_vendor, customer_id, entity_id, currency, exponent, amount,
       service_start, service_end
FROM revenue_adjustment WHERE counted)"""


def _build_daily(
    con: duckdb.DuckDBPyConnection, st: BillingSettings, rep: str, run_id: str
) -> None:
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _b_item_days AS {days_sql(items_sql())}")
    _exec(
        con,
        "CREATE OR REPLACE TEMP TABLE _b_daily_native AS SELECT * EXCLUDE (total, alloc), "
        "alloc AS amount_minor FROM ("
        + largest_remainder_sql("_b_item_days", ["item_id"], "total", "1", ["day"])
        + ")",
    )
    fx.convert(
        con,
        "_b_daily_native",
        "amount_minor",
        "currency",
        "day",
        rep,
        run_id,
        out="_b_daily_conv",
        exponent_col="exponent",
        max_fallback_days=st.fx_max_fallback_days,
        stage=STAGE,
    )
    _exec(
        con,
        """CREATE OR REPLACE TABLE revenue_daily AS
SELECT item_id, kind, event_id, adjustment_id, source_name, source_vendor, customer_id, entity_id,
       currency, exponent, day, start_day AS service_start, end_day AS service_end, amount_minor,
       fx_rate, fx_rate_date, fx_method, amount_reporting
FROM _b_daily_conv ORDER BY item_id, day""",
    )


def revenue_sql(reporting_currency: str) -> str:
    """The monthly contract table from revenue_daily. The reporting amount is summed exactly
    (native minor units × daily rate) and rounded half-to-even once, to the reporting currency's
    minor unit; it is NULL when any day of the group lacks a rate."""
    from romirecon.money import exponent

    rexp = exponent(reporting_currency)
    exact = fx.exact_reporting_sql("amount_minor", "fx_rate", "exponent")
    native_major = f"(CAST(amount_minor AS DECIMAL(38,0)) * {fx.minor_factor_sql('exponent')})"
    return f"""
SELECT month, customer_id, entity_id, currency, source_vendor, currency_exponent, amount_minor,
       CASE WHEN fx_missing_days = 0 THEN CAST(round_even(reporting_exact, {rexp}) AS DECIMAL(38,{rexp})) END
           AS amount_reporting,
       CAST($rep AS VARCHAR) AS reporting_currency,
       CASE WHEN fx_missing_days = 0 AND native_major <> 0
            THEN sign(reporting_exact) * sign(native_major)
                 * {fx.div_half_even_sql("abs(reporting_exact)", "abs(native_major)")} END AS fx_rate,
       fx_rate_min, fx_rate_max, fx_missing_days, fx_fallback_days, lines, adjustments
FROM (
    SELECT CAST(date_trunc('month', day) AS DATE) AS month, customer_id, entity_id, currency,
           source_vendor, exponent AS currency_exponent,
           CAST(sum(amount_minor) AS BIGINT) AS amount_minor,
           sum({exact}) AS reporting_exact, sum({native_major}) AS native_major,
           min(fx_rate) AS fx_rate_min, max(fx_rate) AS fx_rate_max,
           count(*) FILTER (WHERE fx_rate IS NULL) AS fx_missing_days,
           count(*) FILTER (WHERE fx_method LIKE '%+fallback') AS fx_fallback_days,
           count(DISTINCT event_id) FILTER (WHERE kind = 'line') AS lines,
           count(DISTINCT adjustment_id) FILTER (WHERE kind <> 'line') AS adjustments
    FROM revenue_daily
    GROUP BY ALL
)
ORDER BY month, customer_id, currency, source_vendor NULLS FIRST, entity_id NULLS FIRST,
         currency_exponent"""


def revenue_output_query() -> str:
    """The SELECT the publisher writes to revenue.parquet / revenue.csv."""
    return (
        "SELECT * FROM revenue "
        "ORDER BY month, customer_id, currency, source_vendor NULLS FIRST, entity_id NULLS FIRST, "
        "currency_exponent"
    )


def conversion_sql() -> str:
    """Per billing customer: trial window, first paid invoice (net > 0), the first paid invoice on
    or after the trial end, the coupon behind it. $0 (trial) invoices are not conversions."""
    return """
WITH paid AS (  -- paid invoices with positive billable net
    SELECT source_vendor, customer_id, invoice_id, min(invoice_date) AS invoice_date,
           min(coupon) AS coupon, any_value(entity_id) AS entity_id
    FROM revenue_event
    WHERE invoice_status = 'paid' AND billable
    GROUP BY source_vendor, customer_id, invoice_id HAVING sum(net) > 0
), trials AS (
    SELECT source_vendor, customer_id, min(CAST(trial_start AS DATE)) AS trial_start,
           min(CAST(trial_end AS DATE)) AS trial_end,
           bool_or(lower(status) = 'trialing') AS trialing, min(coupon) AS sub_coupon
    FROM (SELECT * FROM stg_subscription WHERE trial_end IS NOT NULL)
    GROUP BY source_vendor, customer_id
    UNION ALL  -- a $0 trial line without subscription data still tells us the trial window
    SELECT source_vendor, customer_id, min(service_start), min(service_end), false, NULL
    FROM revenue_event e WHERE event_type = 'trial' AND NOT EXISTS (
        SELECT 1 FROM stg_subscription s WHERE s.trial_end IS NOT NULL
        AND s.customer_id = e.customer_id AND s.source_vendor IS NOT DISTINCT FROM e.source_vendor)
    GROUP BY source_vendor, customer_id
), customers AS (
    SELECT source_vendor, customer_id FROM paid UNION SELECT source_vendor, customer_id FROM trials
), firsts AS (
    SELECT c.source_vendor, c.customer_id,
           arg_min(p.invoice_id, (p.invoice_date, p.invoice_id)) AS first_paid_invoice_id,
           min(p.invoice_date) AS first_paid_date,
           arg_min(p.coupon, (p.invoice_date, p.invoice_id)) AS first_coupon,
           min(p.entity_id) AS entity_id
    FROM customers c LEFT JOIN paid p
      ON p.customer_id = c.customer_id AND p.source_vendor IS NOT DISTINCT FROM c.source_vendor
    GROUP BY ALL
)
SELECT * EXCLUDE (trialing), CASE WHEN trial_end IS NULL THEN 'direct'
                 WHEN trial_to_paid_date IS NOT NULL THEN 'converted'
                 WHEN trialing THEN 'trialing'
                 ELSE 'lapsed' END AS outcome
FROM (
    SELECT f.source_vendor, f.customer_id, f.entity_id, t.trial_start, t.trial_end,
           f.first_paid_invoice_id, f.first_paid_date,
           (SELECT min(p.invoice_date) FROM paid p WHERE p.customer_id = f.customer_id
            AND p.source_vendor IS NOT DISTINCT FROM f.source_vendor
            AND p.invoice_date >= t.trial_end) AS trial_to_paid_date,
           coalesce(f.first_coupon, t.sub_coupon) AS coupon, coalesce(t.trialing, false) AS trialing
    FROM firsts f LEFT JOIN trials t
      ON t.customer_id = f.customer_id AND t.source_vendor IS NOT DISTINCT FROM f.source_vendor
)
ORDER BY customer_id, source_vendor NULLS FIRST"""


def _metrics(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    _exec(
        con,
        """INSERT INTO metric
SELECT ?, 'billing', NULL, 'invoice_line', name, value, NULL, NULL, unit FROM (
    SELECT 'revenue_lines' AS name, CAST(count(*) FILTER (WHERE billable) AS DOUBLE) AS value, 'lines' AS unit FROM revenue_event
    UNION ALL SELECT 'revenue_daily_rows', count(*), 'rows' FROM revenue_daily
    UNION ALL SELECT 'revenue_adjustments', count(DISTINCT adjustment_id) FILTER (WHERE counted), 'documents' FROM revenue_adjustment
    UNION ALL SELECT 'write_offs', count(DISTINCT adjustment_id) FILTER (WHERE kind = 'write-off'), 'invoices' FROM revenue_adjustment
    UNION ALL SELECT 'lines_not_counted', count(*) FILTER (WHERE decision <> 'counted'), 'lines' FROM _b_lines_all
)""",
        [run_id],
    )
    # duplicate rate per entity: surplus copies / staged rows
    _exec(
        con,
        """INSERT INTO metric
SELECT ?, 'billing', NULL, t.entity, 'billing_duplicates',
       CAST(coalesce(d.n, 0) AS DOUBLE), CAST(coalesce(d.n, 0) AS DOUBLE), CAST(t.rows AS DOUBLE), 'rows'
FROM (SELECT 'invoice' AS entity, count(*) AS rows FROM stg_invoice
      UNION ALL SELECT 'invoice_line', count(*) FROM stg_invoice_line
      UNION ALL SELECT 'credit_note', count(*) FROM stg_credit_note
      UNION ALL SELECT 'refund', count(*) FROM stg_refund
      UNION ALL SELECT 'billing_event', count(*) FROM stg_billing_event) t
LEFT JOIN (SELECT entity, count(*) AS n FROM billing_duplicate GROUP BY entity) d USING (entity)
ORDER BY t.entity""",
        [run_id],
    )


def run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    reporting_currency: str,
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Run the billing stage: read the staged billing tables, write revenue_event, revenue_daily,
    revenue_adjustment, revenue, billing_duplicate, conversion, and metric/finding rows."""
    from romirecon.stages.common import ensure_common_tables, ensure_entity_views

    st = parse_settings(settings)
    rep = reporting_currency.upper()
    ensure_common_tables(con)
    ensure_entity_views(con)
    _exec(con, "DELETE FROM metric WHERE run_id = ? AND stage = ?", [run_id, STAGE])
    _exec(con, "DELETE FROM finding WHERE run_id = ? AND stage = ?", [run_id, STAGE])
    fx.ensure_exponent_table(con, st.exponents)
    _deduplicate(con, run_id)
    _build_events(con, st, run_id)
    _build_adjustments(con, st, run_id)
    _exec(con, "ALTER TABLE revenue_adjustment ADD COLUMN IF NOT EXISTS entity_id VARCHAR")
    _build_entities(con)
    _build_daily(con, st, rep, run_id)
    _exec(con, f"CREATE OR REPLACE TABLE revenue AS {revenue_sql(rep)}", {"rep": rep})
    _exec(con, f"CREATE OR REPLACE TABLE conversion AS {conversion_sql()}")
    _metrics(con, run_id)
    for t in (
        "_b_ranked", "_b_redelivered", "_b_invoice0", "_b_line0", "_b_cn", "_b_refund",
        "_b_idem_inv", "_b_line_ids", "_b_idem_line", "_b_invoice", "_b_line",
        "_b_lines_all", "_b_inv_disc", "_b_adj_doc", "_b_adj_target", "_b_adj_doc2",
        "_b_adj_alloc", "_b_entity", "_b_item_days", "_b_daily_native", "_b_daily_conv",
    ):  # fmt: skip
        _exec(con, f"DROP TABLE IF EXISTS {ident(t)}")
