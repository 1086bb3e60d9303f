"""Billing rules: invoices, lines, credit notes, refunds and subscriptions -> recognised revenue.

Reads the staged tables `stg_invoice`, `stg_invoice_line`, `stg_credit_note`, `stg_refund`,
`stg_subscription`, `stg_billing_event`, `stg_fx_rate` (and `entity_xref` when dedup ran) and writes

| table | grain |
|---|---|
| `billing_duplicate` | one surplus copy of a record: its provenance, the kept copy, the reason |
| `revenue_event` | one invoice line of a live open/paid/uncollectible invoice |
| `revenue_adjustment` | one credit note / refund / write-off / carried downgrade credit, per line it adjusts |
| `revenue_item` | one thing spread over days: a billable line's net, or a counted adjustment part |
| `revenue_fx_day` | currency x service day: the day's rate into the reporting currency (`fx`) |
| `revenue_daily` | view: revenue_item spread over its days, with the day's rate and exact reporting amount (line x service day with its context; not materialised, see `item_periods_sql`) |
| `revenue` | month x billing customer x currency: the published contract table |
| `conversion` | one billing customer: first paid invoice, trial end, trial-to-paid date, coupon |

plus `metric` and `finding` rows. Everything is set-based SQL.

The rules as implemented (DESIGN.md "Billing rules"; the YAML cases in tests/cases/billing/ show
each with hand-worked numbers):

- Duplicates, first: the same record in overlapping exports keeps one copy (`reexport`; an
  invoice keeps its latest state: updated_at, then void > paid > uncollectible > open > draft; a
  credit note keeps void over issued); an event id delivered twice and the objects it carries are
  `event-redelivery`; a second *equivalent* object (same amount, currency, price, period) created
  under an idempotency key already used is `idempotency-key`; an ERP invoice whose external_ref
  names a billing-system invoice is a `cross-system-mirror`. Records without an id never collapse.
- Status (of the line's invoice): open and paid count; draft, void and test mode do not;
  uncollectible is recognised and its unpaid share, net x (total - paid) / total half-to-even,
  written off (`uncollectible: write-off`; or `revenue`, `exclude`).
- Net = amount - line discount - the line's share of the invoice-level discount (largest
  remainder over discountable lines by their amount after line discount). Tax is never revenue.
  $0 lines are not billable (trial invoices); a 100% coupon line is billable with net 0.
- Service days: [date(period_start), date(period_end)), at least one day; no period -> the
  invoice date; longer than `max_service_days` -> its start day, with a finding.
- Every item is spread over its days by largest remainder (leftover units to the earliest days,
  the same rule for negative totals), so the days add up exactly to the item.
- Upgrades/downgrades: proration lines (unused-time credit, remaining-time debit) cover the same
  days and net there; `proration_group`/`proration_net` show the net. A net downgrade credit larger
  than what the subscription earns in those days is carried as customer credit (a positive
  `customer-credit` adjustment), never negative revenue.
- Credit notes and refunds: negative adjustments against the named line, else the invoice's
  billable lines by positive net (largest remainder), spread over the line's service period
  (`adjustment_timing: line-period`) or booked on the document date (`document-date`). Void
  credit notes, refunds that are not succeeded, and refunds paid out through a counted credit note
  do not count (kept with `counted = false` and the reason).
- FX: each day at that day's rate into the reporting currency (see `fx`), exact; the monthly
  amount is rounded half-to-even once; a missing rate leaves the month's amount NULL.
- Money: minor units with the exponent the contract stage used (mapping override, else ISO).

Sign convention: amounts are minor units of the row's currency; revenue positive, credits,
refunds and write-offs negative.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import duckdb

from romirecon.exitcodes import ConfigError
from romirecon.sqlutil import ident
from romirecon.stages import fx
from romirecon.stages.common import drop_relation
from romirecon.stages.common import exec_sql as _exec
from romirecon.stages.common import table_exists as _table_exists

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
    # the run's business date: later service days are converted at the rate as of this date
    as_of: date | None = None
    # uncollectible invoices: recognise then write off the unpaid part (default), count in full,
    # or drop like a void
    uncollectible: str = "write-off"
    # credit notes/refunds against a line: spread over the line's service period (default), or
    # booked whole on the document's date
    adjustment_timing: str = "line-period"
    livemode_only: bool = True
    # a service period longer than this (a bad export: period_end 9999-12-31) is booked on its
    # start day with a finding instead of being spread over millions of days
    max_service_days: int = 3700


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
    msd = s.get("max_service_days", 3700)
    if not isinstance(msd, int) or isinstance(msd, bool) or msd < 1:
        problems.append(f"billing.max_service_days: {msd!r} is not a whole number of days >= 1")
    if "livemode_only" in s and not isinstance(s["livemode_only"], bool):
        problems.append(f"billing.livemode_only: {s['livemode_only']!r} is not true or false")
    if problems:
        raise ConfigError(f"billing settings: {len(problems)} problem(s) found", details=problems)
    as_of = s.get("as_of")
    if as_of is not None and not isinstance(as_of, date):
        try:
            as_of = date.fromisoformat(str(as_of))
        except ValueError:
            problems.append(f"billing.as_of: {as_of!r} is not a date (YYYY-MM-DD)")
    if problems:
        raise ConfigError(f"billing settings: {len(problems)} problem(s) found", details=problems)
    return BillingSettings(
        as_of=as_of,
        fx_max_fallback_days=int(days),
        uncollectible=s.get("uncollectible", "write-off"),
        adjustment_timing=s.get("adjustment_timing", "line-period"),
        livemode_only=s.get("livemode_only", True),
        max_service_days=int(msd),
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


def _key_parts(key: str | Sequence[str]) -> list[tuple[str, str]]:
    """(expression, column name) of each part of a dedup key: one expression is `_key`, several
    are `_key1`, `_key2`, ... A key with a NULL part is NULL (never a duplicate)."""
    if isinstance(key, str):
        return [(key, "_key")]
    return [(k, f"_key{i}") for i, k in enumerate(key, 1)]


def _key_match(parts: list[tuple[str, str]], alias: str) -> str:
    return " AND ".join(f"{alias}.{n} = {e}" for e, n in parts)


def dup_keys_sql(table: str, key: str | Sequence[str]) -> str:
    """SELECT _key (or _key1, _key2, ... for a key of several expressions): the values of `key`
    that more than one row of `table` carries (NULL never: a record without an id is never a
    duplicate of anything). A hash aggregate over narrow columns; in a clean estate it is empty,
    and only its rows need ranking (`dedup_sql`). Several columns rather than one concatenated
    string: no string is built per row, and 'a|b' + 'c' is not 'a' + 'b|c'."""
    parts = _key_parts(key)
    cols = ", ".join(f"{e} AS {n}" for e, n in parts)
    nn = " AND ".join(f"{e} IS NOT NULL" for e, _ in parts)
    return f"""
SELECT {cols} FROM {ident(table)} WHERE {nn} GROUP BY ALL HAVING count(*) > 1"""


def dedup_sql(table: str, key: str | Sequence[str], order: str, keys: str) -> str:
    """SELECT *, _key (or _key1, ...), _copy, kept_*: the rows of `table` whose `key` is in the
    relation `keys` (`dup_keys_sql`), numbered within their key by `order` (copy 1 is kept), with
    the kept copy's provenance on each row. Rows with a unique or NULL key are copy 1 by
    definition and are not ranked (`unique_rows_sql` selects them): the window sorts only the
    repeated keys, not every wide row of the table."""
    parts = _key_parts(key)
    cols = ", ".join(f"{e} AS {n}" for e, n in parts)
    names = ", ".join(n for _, n in parts)
    return f"""
SELECT *,
       first_value(source_name) OVER w AS kept_source_name,
       first_value(source_file) OVER w AS kept_source_file,
       first_value(source_row) OVER w AS kept_source_row
FROM (
    SELECT *, {cols}, row_number() OVER (PARTITION BY {", ".join(e for e, _ in parts)} ORDER BY {order}) AS _copy
    FROM (SELECT _t.* FROM {ident(table)} _t SEMI JOIN {keys} _k ON {_key_match(parts, "_k")})
)
WINDOW w AS (PARTITION BY {names} ORDER BY _copy ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"""


def unique_rows_sql(table: str, key: str | Sequence[str], keys: str) -> str:
    """SELECT *: the rows of `table` whose `key` is NULL or not in `keys` (they have no other
    copy, so dedup keeps them as they are)."""
    parts = _key_parts(key)
    return f"""
SELECT _t.* FROM {ident(table)} _t ANTI JOIN {keys} _k ON {_key_match(parts, "_k")}"""


def live_filter(livemode_only: bool) -> str:
    return "livemode IS DISTINCT FROM false" if livemode_only else "true"


def spread_days_sql(src: str) -> str:
    """SELECT src.*, day, amount_minor: each item of `src` (columns total, start_day, end_day)
    spread over its days [start_day, end_day) so that the days add up exactly to `total`.

    This is the largest-remainder split with equal weights in closed form: every day's exact
    share |total| / n has the same remainder, so the |total| mod n leftover units go to the
    earliest days (the tie-break). It equals `largest_remainder_sql(..., weight 1, order day)`
    (a property test checks that) without a window over every item-day."""
    return f"""
SELECT * EXCLUDE (_d, _n, _q, _r, _k), CAST(_d AS DATE) AS day,
       CAST(sign(total) * (_q + CASE WHEN _k < _r THEN 1 ELSE 0 END) AS BIGINT) AS amount_minor
FROM (
    SELECT *, abs(CAST(total AS HUGEINT)) // _n AS _q, abs(CAST(total AS HUGEINT)) % _n AS _r,
           CAST(_d AS DATE) - start_day AS _k
    FROM (
        SELECT *, end_day - start_day AS _n,
               unnest(range(start_day, end_day, INTERVAL 1 DAY)) AS _d
        FROM {src}
    )
)"""


# ---------------------------------------------------------------------------------------------
# steps


_DUP_COLS = """entity VARCHAR, record_id VARCHAR, source_name VARCHAR, source_file VARCHAR,
    source_row BIGINT, file_sha256 VARCHAR, kept_id VARCHAR, kept_source_name VARCHAR,
    kept_source_file VARCHAR, kept_source_row BIGINT, reason VARCHAR, run_id VARCHAR"""


def _dedup_entity(
    con: duckdb.DuckDBPyConnection,
    entity: str,
    table: str,
    out: str,
    key: Sequence[str],
    order: str,
    id_expr: str,
    run_id: str,
    carrier_expr: str | None = None,
) -> None:
    """Keep copy 1 of each key in the view `out`; record the others in billing_duplicate (reason
    `event-redelivery` when the record, or its carrier such as the line's invoice, is the object
    of an event delivered twice; else `reexport`).

    `out` is a view (the unique rows of `table` plus the kept copies of the repeated keys), not
    a copy of every wide row: its readers take a few columns each, and a temp table dropped
    inside the stage's transaction would stay in memory until the stage commits."""
    ranked = _rank_copies(con, entity, table, key, order)
    if ranked is not None:
        _exec(
            con,
            f"""INSERT INTO billing_duplicate
SELECT ?, {id_expr}, source_name, source_file, source_row, file_sha256, {id_expr},
       kept_source_name, kept_source_file, kept_source_row,
       CASE WHEN {id_expr} IN (SELECT object_id FROM _b_redelivered)
                 OR {carrier_expr or "NULL"} IN (SELECT object_id FROM _b_redelivered)
            THEN 'event-redelivery'
            ELSE 'reexport' END, ?
FROM {ident(ranked)} WHERE _copy > 1""",
            [entity, run_id],
        )
    names = ", ".join(n for _, n in _key_parts(key))
    drop_relation(con, out)
    if ranked is None:  # no key repeats (a clean estate): the view is the table
        _exec(con, f"CREATE TEMP VIEW {ident(out)} AS SELECT * FROM {ident(table)}")
        return
    _exec(
        con,
        f"CREATE TEMP VIEW {ident(out)} AS "
        f"{unique_rows_sql(table, key, ident('_b_dupkey_' + entity))} "
        f"UNION ALL SELECT * EXCLUDE ({names}, _copy, kept_source_name, kept_source_file, "
        f"kept_source_row) FROM {ident(ranked)} WHERE _copy = 1",
    )


def _is_empty(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return con.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {ident(table)} LIMIT 1)"
    ).fetchone() == (0,)


def _rank_copies(
    con: duckdb.DuckDBPyConnection, entity: str, table: str, key: Sequence[str], order: str
) -> str | None:
    """`_b_dupkey_<entity>` (the repeated keys of `table`) and `_b_ranked_<entity>` (their rows,
    numbered); returns the latter's name, or None when no key repeats (then there is nothing to
    rank). One pair per entity: the entity's view (see `_dedup_entity`) reads them until the
    stage ends."""
    keys, ranked = f"_b_dupkey_{entity}", f"_b_ranked_{entity}"
    _exec(con, f"CREATE OR REPLACE TEMP TABLE {ident(keys)} AS {dup_keys_sql(table, key)}")
    if _is_empty(con, keys):
        return None
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE {ident(ranked)} AS "
        f"{dedup_sql(table, key, order, ident(keys))}",
    )
    return ranked


def _idempotency_sql(ids: str, fingerprint: str) -> str:
    """(id, kept_id) for objects created under an idempotency key that already created an
    equivalent object (same event type and the same `fingerprint`: amount, currency, ...). The
    first object by event time, then id, is kept. `ids` is a relation with columns id and
    fingerprint. Requiring equivalence keeps one request that legitimately creates several
    different objects (a subscription with two invoice items) from being collapsed."""
    return f"""
SELECT id, kept_id FROM (
    SELECT o.id,
           first_value(o.id) OVER (
               PARTITION BY e.idempotency_key, e.event_type, o.fingerprint
               ORDER BY e.created_at, o.id
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS kept_id
    FROM {ids} o
    JOIN (SELECT object_id, idempotency_key, event_type, min(created_at) AS created_at
          FROM stg_billing_event WHERE idempotency_key IS NOT NULL AND object_id IS NOT NULL
          GROUP BY ALL) e
      ON e.object_id = o.id
) WHERE id <> kept_id"""


def mirror_sql(invoices: str) -> str:
    """(id, vendor, kept_id, kept_*, source_name, source_file, source_row, file_sha256) for
    invoices that mirror an invoice of another vendor: linked by `external_ref` in either
    direction. The billing system's copy is kept (then ERP, then any other; ties by vendor name),
    so a NetSuite invoice synced from Stripe is not revenue twice. The last four columns are the
    mirror's own provenance.

    Reads a narrow projection of `invoices` once per side of each link direction; each pair
    carries both invoices' columns from its join (an invoice's (vendor, id) is unique after
    dedup), so no join back to the wide rows is needed."""
    rank = "CASE {a}.source_system WHEN 'billing' THEN 0 WHEN 'erp' THEN 1 ELSE 2 END"
    rm, rk = rank.format(a="m"), rank.format(a="k")
    cols = (
        "m.source_id AS id, m.source_vendor AS vendor, k.source_id AS kept_id, "
        "k.source_name AS kept_source_name, k.source_file AS kept_source_file, "
        "k.source_row AS kept_source_row, m.source_name, m.source_file, m.source_row, "
        "m.file_sha256, k.source_vendor AS kept_vendor, "
        f"{rk} AS kept_rank"
    )
    cond = (
        f"k.source_vendor IS DISTINCT FROM m.source_vendor AND ({rm} > {rk} OR ({rm} = {rk} "
        "AND coalesce(m.source_vendor, '') > coalesce(k.source_vendor, '')))"
    )
    narrow = (
        "(SELECT source_id, source_vendor, external_ref, source_system, source_name, "
        f"source_file, source_row, file_sha256 FROM {invoices} WHERE source_id IS NOT NULL)"
    )
    return f"""
WITH inv AS {narrow}
SELECT id, vendor, kept_id, kept_source_name, kept_source_file, kept_source_row, source_name,
       source_file, source_row, file_sha256
FROM (
    SELECT *, row_number() OVER (PARTITION BY vendor, id
                                 ORDER BY kept_rank, kept_vendor, kept_id) AS rn
    FROM (  -- linked either way; two equi-joins (an OR in the join would be a nested loop)
        SELECT {cols} FROM inv m JOIN inv k ON m.external_ref = k.source_id WHERE {cond}
        UNION ALL  -- a pair linked both ways comes twice, as two equal rows: rn = 1 keeps one
        SELECT {cols} FROM inv m JOIN inv k ON k.external_ref = m.source_id WHERE {cond}
    )
) WHERE rn = 1"""


def _deduplicate(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    _exec(con, f"CREATE OR REPLACE TEMP TABLE billing_duplicate ({_DUP_COLS})")
    # webhook redelivery: the same event id twice; the objects those events carry are
    # `_b_redelivered` (read from the ranked copies: every row of a repeated event id)
    ranked = _rank_copies(
        con, "billing_event", "stg_billing_event", ["source_id"],
        "source_file, source_row, source_name",
    )  # fmt: skip
    _exec(
        con,
        "CREATE OR REPLACE TEMP TABLE _b_redelivered AS SELECT DISTINCT object_id "
        + (
            f"FROM {ident(ranked)} WHERE object_id IS NOT NULL"
            if ranked
            else "FROM stg_billing_event WHERE false"
        ),
    )
    if ranked is not None:
        _exec(
            con,
            f"""INSERT INTO billing_duplicate
SELECT 'billing_event', source_id, source_name, source_file, source_row, file_sha256, source_id,
       kept_source_name, kept_source_file, kept_source_row, 'event-redelivery', ?
FROM {ident(ranked)} WHERE _copy > 1 AND source_id IS NOT NULL""",
            [run_id],
        )
    _dedup_entity(
        con,
        "invoice",
        "stg_invoice",
        "_b_invoice0",
        ["coalesce(source_vendor, '')", "source_id"],
        f"updated_at DESC NULLS LAST, {_INVOICE_STATUS_RANK} DESC, source_file DESC, source_row DESC, source_name",
        "source_id",
        run_id,
    )
    _dedup_entity(
        con,
        "invoice_line",
        "stg_invoice_line",
        "_b_line0",
        [
            "coalesce(source_vendor, '')",
            "coalesce(invoice_id, '')",
            "coalesce(unique_id, source_id)",
        ],
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
        ["coalesce(source_vendor, '')", "source_id"],
        f"{_CREDIT_NOTE_STATUS_RANK} DESC, source_file DESC, source_row DESC, source_name",
        "source_id",
        run_id,
    )
    _dedup_entity(
        con,
        "refund",
        "stg_refund",
        "_b_refund",
        ["coalesce(source_vendor, '')", "source_id"],
        f"{_REFUND_STATUS_RANK} DESC, source_file DESC, source_row DESC, source_name",
        "source_id",
        run_id,
    )
    # API retries: a second object created under an idempotency key already used
    _exec(
        con,
        "CREATE OR REPLACE TEMP TABLE _b_idem_inv AS "
        + _idempotency_sql(
            "(SELECT DISTINCT source_id AS id, concat_ws('|', customer_id, upper(currency), "
            "subtotal, total) AS fingerprint FROM _b_invoice0 WHERE source_id IS NOT NULL)",
            "fingerprint",
        ),
    )
    _exec(
        con,
        "CREATE OR REPLACE TEMP TABLE _b_idem_line AS "
        + _idempotency_sql(
            "(SELECT DISTINCT coalesce(unique_id, source_id) AS id, concat_ws('|', "
            "upper(currency), amount, discount, price_id, plan_id, description, period_start, "
            "period_end) AS fingerprint FROM _b_line0 WHERE coalesce(unique_id, source_id) IS NOT NULL)",
            "fingerprint",
        ),
    )
    idem_inv, idem_line = not _is_empty(con, "_b_idem_inv"), not _is_empty(con, "_b_idem_line")
    if idem_inv:
        _exec(
            con,
            """INSERT INTO billing_duplicate
SELECT 'invoice', i.source_id, i.source_name, i.source_file, i.source_row, i.file_sha256, d.kept_id,
       k.source_name, k.source_file, k.source_row, 'idempotency-key', ?
FROM _b_invoice0 i JOIN _b_idem_inv d ON d.id = i.source_id
LEFT JOIN _b_invoice0 k ON k.source_id = d.kept_id""",
            [run_id],
        )
    if idem_inv or idem_line:
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
    # a view, not a copy of every wide invoice row: the mirror search reads a few narrow columns
    # of it and _b_invoice below is the one copy. Anti joins (hash joins on the narrow id
    # tables), and none at all for an empty table
    idem_inv_anti = "ANTI JOIN _b_idem_inv d ON d.id = i.source_id" if idem_inv else ""
    drop_relation(con, "_b_invoice1")
    _exec(con, f"CREATE TEMP VIEW _b_invoice1 AS SELECT i.* FROM _b_invoice0 i {idem_inv_anti}")
    # the same invoice in two systems (NetSuite mirroring Stripe, linked by external_ref): count
    # the billing system's copy, record the mirror
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _b_mirror AS {mirror_sql('_b_invoice1')}")
    mirror = not _is_empty(con, "_b_mirror")
    if mirror:
        _exec(
            con,
            """INSERT INTO billing_duplicate
SELECT 'invoice', m.id, m.source_name, m.source_file, m.source_row, m.file_sha256, m.kept_id,
       m.kept_source_name, m.kept_source_file, m.kept_source_row, 'cross-system-mirror', ?
FROM _b_mirror m
ORDER BY m.vendor, m.id""",
            [run_id],
        )
        _exec(
            con,
            """INSERT INTO billing_duplicate
SELECT 'invoice_line', coalesce(l.unique_id, l.source_id), l.source_name, l.source_file,
       l.source_row, l.file_sha256, m.kept_id, m.kept_source_name, m.kept_source_file,
       m.kept_source_row, 'cross-system-mirror', ?
FROM _b_line0 l JOIN _b_mirror m
  ON m.id = l.invoice_id AND m.vendor IS NOT DISTINCT FROM l.source_vendor
ORDER BY l.source_name, l.source_file, l.source_row""",
            [run_id],
        )
    mirror_anti = (
        "ANTI JOIN _b_mirror m ON m.id = {a}.{id} AND m.vendor IS NOT DISTINCT FROM {a}.source_vendor"
        if mirror
        else ""
    )
    # views as well: lines_sql reads each twice (once a few narrow columns) and the adjustments
    # a few invoice columns; the anti joins are cheap hash probes, while two more copies of every
    # wide invoice and line row would stay in memory until the stage commits
    drop_relation(con, "_b_invoice")
    _exec(
        con,
        "CREATE TEMP VIEW _b_invoice AS SELECT i.* FROM _b_invoice1 i "
        + mirror_anti.format(a="i", id="source_id"),
    )
    line_anti = [
        "ANTI JOIN _b_idem_line dl ON dl.id = coalesce(l.unique_id, l.source_id)"
        if idem_line
        else "",
        "ANTI JOIN _b_idem_inv di ON di.id = l.invoice_id" if idem_inv else "",
        mirror_anti.format(a="l", id="invoice_id"),
    ]
    drop_relation(con, "_b_line")
    _exec(
        con,
        "CREATE TEMP VIEW _b_line AS SELECT l.* FROM _b_line0 l "
        + " ".join(x for x in line_anti if x),
    )


def _exponent_join(alias: str, p: str = "_xe") -> str:
    """LEFT JOINs binding the exponent candidates of row `alias` (see `_exponent_sql`): hash
    joins instead of two correlated lookups per line."""
    cur = f"upper({alias}.currency)"
    return (
        "LEFT JOIN (SELECT key, currency, min(exponent) AS exponent FROM currency_exponent "
        f"WHERE scope = 'source' GROUP BY key, currency) {p}s ON {p}s.key = {alias}.source_name "
        f"AND {p}s.currency = {cur} "
        "LEFT JOIN (SELECT currency, min(exponent) AS exponent FROM currency_exponent "
        f"WHERE scope = 'iso' GROUP BY currency) {p}i ON {p}i.currency = {cur}"
    )


def _exponent_sql(p: str = "_xe") -> str:
    """The exponent the contract stage used for a row's money (joined by `_exponent_join`): the
    source's mapping override (`exponents:` in the mapping file, e.g. Stripe ISK = 2), else ISO
    4217, else 2."""
    return f"coalesce({p}s.exponent, {p}i.exponent, 2)"


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
           coalesce(unique_id, source_id, 'row:' || source_file || ':' || source_row) AS line_key, false AS synthetic
    FROM _b_line
    UNION ALL
    SELECT i.source_id, NULL, i.source_id, i.customer_id, i.subscription_id, NULL, NULL, NULL,
           'invoice ' || coalesce(i.number, i.source_id), 'invoice', i.currency, i.subtotal, 0,
           i.tax, NULL, false, true, i.period_start, i.period_end, NULL, i.created_at,
           i.source_name, i.source_system, i.source_vendor, i.source_file, i.source_row,
           i.file_sha256,
           coalesce('invoice:' || i.source_id, 'row:' || i.source_file || ':' || i.source_row), true
    FROM _b_invoice i  -- a hash anti join (NOT EXISTS was planned as a delim join that
    -- materialised every wide invoice row first)
    ANTI JOIN _b_line x ON x.invoice_id = i.source_id
        AND x.source_vendor IS NOT DISTINCT FROM i.source_vendor
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
SELECT j.* EXCLUDE (customer_id, subscription_id, currency, coupon, live_ok, customer, subscription, cur, line_coupon,
                   source_id, unique_id, quantity, period_start, created_at, has_invoice),  -- read by no later step
       j.customer AS customer_id, j.subscription AS subscription_id, j.cur AS currency,
       coalesce(j.line_coupon, s.sub_coupon) AS coupon,
       s.trial_end,
       CASE WHEN NOT j.has_invoice THEN 'invoice-missing'
            WHEN NOT j.live_ok THEN 'test-mode'
            WHEN j.invoice_status IS NULL OR j.invoice_status NOT IN ({", ".join(counted)})
                 THEN 'status:' || coalesce(j.invoice_status, 'null')
            WHEN coalesce(j.period_start, j.invoice_created_at, j.created_at) IS NULL
                 THEN 'no-service-date'
            ELSE 'counted' END AS decision,
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
    # in no particular order: every reader groups (by invoice, proration group, customer: taking
    # min/arg_min or values equal across the group), orders its own rows (findings), or sorts
    # (revenue_item by item_id). Sorting it by event_id cost 7.5 s of CPU at 1M customers.
    _exec(
        con,
        f"""CREATE OR REPLACE TEMP TABLE revenue_event AS
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
       l.currency, {_exponent_sql()} AS exponent,
       coalesce(l.amount, 0) AS amount,
       coalesce(l.discount, 0) AS line_discount,
       coalesce(d.invoice_discount, 0) AS invoice_discount,
       coalesce(l.discount, 0) + coalesce(d.invoice_discount, 0) AS discount,
       coalesce(l.tax, 0) AS tax,
       coalesce(l.amount, 0) - coalesce(l.discount, 0) - coalesce(d.invoice_discount, 0) AS net,
       l.start_day AS service_start,
       CASE WHEN CAST(l.period_end AS DATE) > l.start_day
                 AND CAST(l.period_end AS DATE) - l.start_day <= {int(st.max_service_days)}
            THEN CAST(l.period_end AS DATE) ELSE l.start_day + 1 END AS service_end,
       CAST(l.period_end AS DATE) - l.start_day > {int(st.max_service_days)} AS period_too_long,
       l.coupon, CAST(l.invoice_created_at AS DATE) AS invoice_date,
       l.invoice_total, l.invoice_amount_paid
FROM _b_lines_all l LEFT JOIN _b_inv_disc d USING (event_id) {_exponent_join("l")}
WHERE l.decision = 'counted'""",
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
    # findings for lines that cannot be counted (or not as exported) for a reason to see
    _exec(
        con,
        f"""INSERT INTO finding
SELECT ?, 'billing', 'service-period-too-long', 'warn', source_name, 'invoice_line', line_id,
       invoice_id, 'invoice line ' || line_id || ' has a service period of more than '
           || {int(st.max_service_days)} || ' days: booked on its start day '
           || strftime(service_start, '%Y-%m-%d'),
       json_object('source_file', source_file, 'source_row', source_row)
FROM revenue_event WHERE period_too_long ORDER BY event_id""",
        [run_id],
    )
    _exec(
        con,
        """INSERT INTO finding
SELECT ?, 'billing', 'service-date-missing', 'error', source_name, 'invoice_line', line_key,
       invoice_id, 'invoice line ' || line_key || ' has no service period, invoice date or '
           || 'creation date: not counted',
       json_object('source_file', source_file, 'source_row', source_row)
FROM _b_lines_all WHERE decision = 'no-service-date' ORDER BY source_name, source_file, source_row""",
        [run_id],
    )
    _exec(
        con,
        """INSERT INTO finding
SELECT ?, 'billing', 'currency-unknown', 'error', NULL, 'invoice_line',
       coalesce(e.currency, '(none)'), NULL,
       CAST(count(*) AS VARCHAR) || ' billable line(s) in currency ' || coalesce(e.currency, '(none)')
           || ', which is not an ISO 4217 code: no exponent or rate can be trusted',
       json_object('lines', count(*), 'example_line', min(e.line_id))
FROM revenue_event e
WHERE e.billable AND (e.currency IS NULL OR e.currency NOT IN (
    SELECT currency FROM currency_exponent WHERE scope = 'iso'))
GROUP BY e.currency ORDER BY e.currency NULLS FIRST""",
        [run_id],
    )
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
       'invoice ' || invoice_id || ' has status ' || coalesce(any_value(invoice_status), '(none)')
           || ' (expected draft, open, paid, uncollectible or void): not counted', NULL
FROM _b_lines_all
WHERE decision LIKE 'status:%'
  AND (invoice_status IS NULL OR invoice_status NOT IN ('draft', 'void', 'uncollectible'))
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
), via_cn AS (  -- refunds paid out through a counted credit note (linked either way)
    SELECT source_vendor, refund_id FROM _b_cn
    WHERE lower(status) IS DISTINCT FROM 'void' AND refund_id IS NOT NULL
    UNION
    SELECT r.source_vendor, r.source_id FROM _b_refund r JOIN _b_cn c
      ON c.source_id = r.credit_note_id AND c.source_vendor IS NOT DISTINCT FROM r.source_vendor
    WHERE lower(c.status) IS DISTINCT FROM 'void'
), rf AS (
    SELECT 'refund' AS kind, r.source_id, r.source_name, r.source_vendor, r.source_file,
           r.source_row, coalesce(r.invoice_id, ic.source_id), NULL,
           coalesce(r.customer_id, ic.customer_id), upper(r.currency),
           -abs(coalesce(r.amount, 0)), CAST(r.created_at AS DATE),
           CASE WHEN lower(coalesce(r.status, 'succeeded')) <> 'succeeded'
                     THEN 'status:' || lower(r.status)
                WHEN EXISTS (SELECT 1 FROM via_cn v WHERE v.refund_id = r.source_id
                             AND v.source_vendor IS NOT DISTINCT FROM r.source_vendor)
                     THEN 'counted-via-credit-note' END,
           r.reason
    FROM _b_refund r
    LEFT JOIN (  -- a refund that names only its charge: the invoice that charge paid
        SELECT charge_id, source_vendor, min(source_id) AS source_id, min(customer_id) AS customer_id
        FROM _b_invoice WHERE charge_id IS NOT NULL GROUP BY ALL
    ) ic ON r.invoice_id IS NULL AND ic.charge_id = r.charge_id
        AND ic.source_vendor IS NOT DISTINCT FROM r.source_vendor
), wo AS (  -- uncollectible: the unpaid share of the invoice's net, half-to-even
    SELECT 'write-off', 'write-off:' || invoice_id, any_value(source_name), source_vendor,
           -- the file and row of one line (the first), also when the lines span files
           arg_min(source_file, (source_file, source_row)),
           arg_min(source_row, (source_file, source_row)),
           invoice_id, NULL, any_value(customer_id),
           any_value(currency),
           -CAST(CASE WHEN coalesce(any_value(invoice_total), 0) <= 0 THEN sum(net)
                 ELSE round_even(CAST(sum(net) AS DECIMAL(38,0))
                      * CAST(greatest(any_value(invoice_total) - coalesce(any_value(invoice_amount_paid), 0), 0) AS DECIMAL(38,0))
                      / CAST(any_value(invoice_total) AS DECIMAL(38,0)), 0) END AS BIGINT),
           max(invoice_date), NULL, 'uncollectible'
    FROM revenue_event
    WHERE invoice_status = 'uncollectible' AND billable AND {"true" if st.uncollectible == "write-off" else "false"}
    GROUP BY invoice_id, source_vendor
), dg AS (  -- net downgrades: the proration credit of one plan change
    SELECT proration_group, source_vendor, any_value(source_name) AS source_name,
           -- the credit line's own file and row, as its invoice and line id below
           arg_min(source_file, (net, line_id)) AS source_file,
           arg_min(source_row, (net, line_id)) AS source_row,
           arg_min(invoice_id, (net, line_id)) AS invoice_id,
           arg_min(line_id, (net, line_id)) AS credit_line_id,
           any_value(customer_id) AS customer_id, any_value(subscription_id) AS subscription_id,
           any_value(currency) AS currency, any_value(proration_net) AS net,
           any_value(service_start) AS service_start, any_value(service_end) AS service_end
    FROM revenue_event WHERE proration AND billable AND proration_net < 0
    GROUP BY proration_group, source_vendor
), avail AS (  -- what the same subscription earns in the credited days (pro rata, floored)
    SELECT g.proration_group, g.source_vendor,
           coalesce(sum(CAST(greatest(e.net, 0) AS HUGEINT)
                         * (least(e.service_end, g.service_end) - greatest(e.service_start, g.service_start))
                         // e.service_days), 0) AS available
    FROM dg g LEFT JOIN revenue_event e
      ON e.billable AND NOT e.proration AND e.customer_id = g.customer_id
     AND e.source_vendor IS NOT DISTINCT FROM g.source_vendor
     AND e.subscription_id IS NOT DISTINCT FROM g.subscription_id AND e.currency = g.currency
     AND e.service_start < g.service_end AND e.service_end > g.service_start
    GROUP BY g.proration_group, g.source_vendor
), cc AS (  -- the part of a downgrade credit beyond that stays customer credit, not revenue
    SELECT 'customer-credit', 'credit:' || g.proration_group, g.source_name, g.source_vendor,
           g.source_file, g.source_row, g.invoice_id, g.credit_line_id, g.customer_id, g.currency,
           CAST(-g.net - a.available AS BIGINT), g.service_start, NULL, 'downgrade credit carried'
    FROM dg g JOIN avail a USING (proration_group, source_vendor)
    WHERE -g.net > a.available
)
SELECT * FROM cn UNION ALL SELECT * FROM rf UNION ALL SELECT * FROM wo UNION ALL SELECT * FROM cc"""


def _build_adjustments(con: duckdb.DuckDBPyConnection, st: BillingSettings, run_id: str) -> None:
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _b_adj_doc AS {adjustments_docs_sql(st)}")
    # targets: the named line, else the invoice's billable lines (weighted by net)
    _exec(
        con,
        """CREATE OR REPLACE TEMP TABLE _b_adj_target AS
WITH a AS (  -- the line named, when it exists; else the invoice
    SELECT a.*, a.invoice_line_id IS NOT NULL
                AND EXISTS (SELECT 1 FROM revenue_event e2 WHERE e2.line_id = a.invoice_line_id
                            AND e2.source_vendor IS NOT DISTINCT FROM a.source_vendor) AS by_line
    FROM _b_adj_doc a
)
SELECT a.kind, a.document_id, a.source_vendor, e.event_id, e.line_id, e.net, e.currency AS line_currency
FROM a JOIN revenue_event e ON e.line_id = a.invoice_line_id
WHERE a.by_line AND e.billable AND e.source_vendor IS NOT DISTINCT FROM a.source_vendor
UNION ALL
SELECT a.kind, a.document_id, a.source_vendor, e.event_id, e.line_id, e.net, e.currency
FROM a JOIN revenue_event e ON e.invoice_id = a.invoice_id
WHERE NOT a.by_line AND e.billable AND e.source_vendor IS NOT DISTINCT FROM a.source_vendor""",
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
        f"""CREATE OR REPLACE TEMP TABLE revenue_adjustment AS
SELECT concat_ws('/', a.kind, a.source_name, a.document_id) AS adjustment_id, a.kind,
       a.document_id, a.source_name, a.source_vendor, a.source_file, a.source_row,
       CAST(? AS VARCHAR) AS run_id, a.invoice_id, a.invoice_line_id,
       x.event_id, coalesce(e.customer_id, a.customer_id) AS customer_id,
       a.currency, coalesce(e.exponent, {_exponent_sql()}) AS exponent,
       a.amount AS document_amount, coalesce(x.alloc, a.amount) AS amount,
       a.document_date,
       a.why_not IS NULL AS counted, a.why_not AS not_counted_reason, a.reason,
       CASE WHEN ({"true" if line_period else "false"} OR a.kind = 'customer-credit')
                 AND e.event_id IS NOT NULL
            THEN e.service_start ELSE a.document_date END AS service_start,
       CASE WHEN ({"true" if line_period else "false"} OR a.kind = 'customer-credit')
                 AND e.event_id IS NOT NULL
            THEN e.service_end ELSE a.document_date + 1 END AS service_end
FROM _b_adj_doc2 a
LEFT JOIN _b_adj_alloc x ON x.kind = a.kind AND x.document_id = a.document_id
     AND x.source_vendor IS NOT DISTINCT FROM a.source_vendor AND x.alloc <> 0
LEFT JOIN revenue_event e ON e.event_id = x.event_id
{_exponent_join("a")}
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
SELECT ?, 'billing', 'downgrade-credit-carried', 'info', source_name, 'invoice_line',
       invoice_line_id, customer_id,
       'net downgrade credit of ' || CAST(document_amount AS VARCHAR) || ' ' || currency
           || ' exceeds what the subscription earns in the credited days: kept as customer '
           || 'credit, not negative revenue', json_object('adjustment_id', adjustment_id)
FROM revenue_adjustment WHERE kind = 'customer-credit' AND counted ORDER BY adjustment_id""",
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


PERIOD_GRAINS = ("month", "week", "day")


def item_periods_sql(grain: str) -> str:
    """SELECT item_no, period, amount_minor, amount_reporting, fx_rate_min, fx_rate_max,
    fx_missing_days, fx_fallback_days: each revenue item's days in each period of `grain`
    (month, ISO week, day), exactly what summing its day rows (`revenue_daily`) would give, without
    a row per item-day (9.9M of them at 100k customers).

    An item's day amounts take two values only (`spread_days_sql`: q + 1 on its first r days, q
    on the rest, signed), so the period's native amount is sign x (q x days + its days among the
    first r), and its exact reporting amount sign x 10**-exponent x (q x the sum of the day rates
    over the period's days + the sum over those among the first r). The rate sums, minima,
    maxima and missing/fallback day counts come from `_b_range_stats` (see
    `range_stats_sql`), computed once per distinct (currency, first day, end day). Days without
    a rate add nothing to the reporting sum, as NULL day amounts add nothing to a SUM; the sum is
    NULL when no day has one."""
    if grain not in PERIOD_GRAINS:
        raise ValueError(f"grain must be one of {PERIOD_GRAINS}")
    return f"""
SELECT p.item_no, p.period,
       CAST(p._sgn * (p._q * (p.b - p.a) + greatest(p.c - p.a, 0)) AS HUGEINT) AS amount_minor,
       CASE WHEN s.rate_sum IS NOT NULL THEN
           (CAST(p._sgn * p._q AS DECIMAL(38,0)) * s.rate_sum
            + CAST(p._sgn AS DECIMAL(38,0)) * coalesce(s1.rate_sum, CAST(0 AS {fx.RATE_TYPE})))
           * {fx.minor_factor_sql("p.exponent")} END AS amount_reporting,
       s.rate_min AS fx_rate_min, s.rate_max AS fx_rate_max, s.missing AS fx_missing_days,
       s.fallback AS fx_fallback_days
FROM _b_pieces p
JOIN _b_range_stats s ON s.currency IS NOT DISTINCT FROM p.currency AND s.x = p.a AND s.y = p.b
LEFT JOIN _b_range_stats s1 ON p.c > p.a AND s1.currency IS NOT DISTINCT FROM p.currency
     AND s1.x = p.a AND s1.y = p.c"""


def pieces_sql(grain: str) -> str:
    """Each revenue item's service days [start_day, end_day) cut at the `grain` period
    boundaries: [a, b) in period `period`, with c the end of the item's first r days (the days
    that get q + 1 units) within the piece, and the item's q, r and sign."""
    step = f"INTERVAL 1 {grain.upper()}"
    trunc = "start_day" if grain == "day" else f"date_trunc('{grain}', start_day)"
    return f"""
SELECT item_no, currency, exponent, period, a, b, least(b, start_day + CAST(_r AS INTEGER)) AS c,
       _q, _sgn
FROM (
    SELECT *, greatest(start_day, period) AS a, least(end_day, CAST(period + {step} AS DATE)) AS b
    FROM (
        SELECT item_no, currency, exponent, start_day, end_day,
               abs(CAST(total AS HUGEINT)) // (end_day - start_day) AS _q,
               abs(CAST(total AS HUGEINT)) % (end_day - start_day) AS _r,
               sign(CAST(total AS HUGEINT)) AS _sgn,
               CAST(unnest(range(CAST({trunc} AS TIMESTAMP), CAST(end_day AS TIMESTAMP), {step}))
                    AS DATE) AS period
        FROM revenue_item
    )
)"""


def range_stats_sql() -> str:
    """Per distinct (currency, x, y) day range of `_b_pieces` ([a, b) and [a, c)): the sum, min
    and max of the day rates (`revenue_fx_day`), the days without a rate and the fallback days."""
    return """
WITH g AS (
    SELECT currency, a AS x, b AS y FROM _b_pieces
    UNION
    SELECT currency, a, c FROM _b_pieces WHERE c > a
)
SELECT g.currency, g.x, g.y, sum(r.fx_rate) AS rate_sum, min(r.fx_rate) AS rate_min,
       max(r.fx_rate) AS rate_max, count(*) FILTER (WHERE r.fx_rate IS NULL) AS missing,
       count(*) FILTER (WHERE r.fx_rate_date < g.d) AS fallback
FROM (SELECT *, CAST(unnest(range(x, y, INTERVAL 1 DAY)) AS DATE) AS d FROM g) g
LEFT JOIN revenue_fx_day r ON r.currency = upper(g.currency) AND r.day = g.d
GROUP BY g.currency, g.x, g.y"""


def build_item_periods(con: duckdb.DuckDBPyConnection, grain: str, out: str) -> None:
    """Create temp table `out` from `item_periods_sql(grain)` (reads revenue_item and
    revenue_fx_day)."""
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _b_pieces AS {pieces_sql(grain)}")
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _b_range_stats AS {range_stats_sql()}")
    _exec(con, f"CREATE OR REPLACE TEMP TABLE {ident(out)} AS {item_periods_sql(grain)}")
    for t in ("_b_pieces", "_b_range_stats"):
        _exec(con, f"DROP TABLE IF EXISTS {ident(t)}")


def daily_row_count(con: duckdb.DuckDBPyConnection) -> int:
    """Rows of the revenue_daily view (item x service day), counted without expanding it."""
    if not _table_exists(con, "revenue_item"):
        return 0
    row = con.execute("SELECT coalesce(sum(end_day - start_day), 0) FROM revenue_item").fetchone()
    return int(row[0]) if row else 0


def _build_daily(
    con: duckdb.DuckDBPyConnection, st: BillingSettings, rep: str, run_id: str
) -> None:
    """revenue_item (what is spread), revenue_fx_day (the rate of every (currency, service day)
    an item covers) and the revenue_daily view (item x service day with its context, rate and
    exact reporting amount). The day rows are not materialised: there are tens of times more of
    them than items (99M at 1M customers) and every reader sums them per period, which
    `item_periods_sql` does per item and period directly."""
    _exec(
        con,
        f"""CREATE OR REPLACE TEMP TABLE revenue_item AS
SELECT row_number() OVER (ORDER BY item_id) AS item_no, *
FROM {items_sql()} ORDER BY item_no""",
    )
    drop_relation(con, "revenue_fx_day")
    fx.build_daily_rates(
        con,
        """SELECT currency, CAST(unnest(range(start_day, end_day, INTERVAL 1 DAY)) AS DATE) AS day
FROM (SELECT DISTINCT currency, start_day, end_day FROM revenue_item)""",
        rep,
        "revenue_fx_day",
        max_fallback_days=st.fx_max_fallback_days,
        forward_from=st.as_of,
    )
    fx.record_gaps(
        con, "revenue_fx_day", rep, run_id, STAGE, max_fallback_days=st.fx_max_fallback_days
    )
    drop_relation(con, "revenue_daily")
    _exec(con, f"CREATE OR REPLACE TEMP VIEW revenue_daily AS {revenue_daily_sql()}")


def revenue_daily_sql() -> str:
    """Every revenue item x service day: native minor units (`spread_days_sql`), that day's rate
    and the exact reporting amount (`fx.exact_reporting_sql`), with the item's context."""
    spread = spread_days_sql(
        "(SELECT item_no, currency, exponent, total, start_day, end_day FROM revenue_item)"
    )
    return f"""
SELECT i.item_id, i.kind, i.event_id, i.adjustment_id, i.source_name, i.source_vendor,
       i.customer_id, i.entity_id, d.currency, d.exponent, d.day,
       i.start_day AS service_start, i.end_day AS service_end, d.amount_minor, r.fx_rate,
       r.fx_rate_date, r.fx_method,
       {fx.exact_reporting_sql("d.amount_minor", "r.fx_rate", "d.exponent")} AS amount_reporting
FROM (SELECT item_no, currency, exponent, day, amount_minor FROM ({spread})) d
JOIN revenue_item i USING (item_no)
LEFT JOIN revenue_fx_day r ON r.currency = upper(d.currency) AND r.day = d.day"""


def item_keys_sql() -> str:
    """SELECT item_no, g, ev, adj: each revenue item's contract group as one integer `g` (the same
    for every item of a (customer_id, entity_id, currency, source_vendor, exponent), NULLs equal),
    and its event_id (lines) or adjustment_id (adjustments) as integers `ev` / `adj` (equal ids,
    equal numbers; NULL when the id is NULL or the item is of the other kind). `revenue_sql`
    groups and counts distinct values on these narrow integers instead of five strings per
    item-month.

    Each number is the smallest item_no carrying the value: hash aggregates joined back, not a
    window sorting every item by strings (the numbers only have to be equal for equal values)."""
    return """
WITH gk AS (
    SELECT customer_id, entity_id, currency, source_vendor, exponent, min(item_no) AS g
    FROM revenue_item GROUP BY ALL
), ek AS (
    SELECT event_id, min(item_no) AS ev FROM revenue_item
    WHERE kind = 'line' AND event_id IS NOT NULL GROUP BY event_id
), ak AS (
    SELECT adjustment_id, min(item_no) AS adj FROM revenue_item
    WHERE kind <> 'line' AND adjustment_id IS NOT NULL GROUP BY adjustment_id
)
SELECT r.item_no, gk.g, ek.ev, ak.adj
FROM revenue_item r
JOIN gk ON gk.customer_id IS NOT DISTINCT FROM r.customer_id
     AND gk.entity_id IS NOT DISTINCT FROM r.entity_id
     AND gk.currency IS NOT DISTINCT FROM r.currency
     AND gk.source_vendor IS NOT DISTINCT FROM r.source_vendor
     AND gk.exponent IS NOT DISTINCT FROM r.exponent
LEFT JOIN ek ON r.kind = 'line' AND ek.event_id = r.event_id
LEFT JOIN ak ON r.kind <> 'line' AND ak.adjustment_id = r.adjustment_id"""


def revenue_sql(reporting_currency: str) -> str:
    """The monthly contract table from the item-months (`_b_item_month`, see
    `item_periods_sql`) and the items' integer keys (`_b_item_key`, see `item_keys_sql`). The
    reporting amount is the exact sum of the daily exact amounts (native minor units x that day's
    rate), rounded half-to-even once, to the reporting currency's minor unit; it is NULL when any
    day of the group lacks a rate.

    Aggregates on (month, group number) with the distinct line/adjustment counts over integers,
    then names each group (customer, entity, currency, vendor, exponent) once."""
    from romirecon.money import exponent

    rexp = exponent(reporting_currency)
    # the native amount in major units: the exponent is the group's, so the exact sum of
    # minor x 10**-exponent over the group's item-months is the summed minor units x 10**-exponent
    native_major = (
        f"(CAST(g.amount_sum AS DECIMAL(38,0)) * {fx.minor_factor_sql('r.currency_exponent')})"
    )
    # the average rate reporting / native, half-to-even: its terms, quotient and remainder are
    # computed once per row (as columns), not once per use inside the rounding expression
    n, d = fx.div_terms_sql("abs(reporting_exact)", "abs(native_major)")
    return f"""
WITH grp_name AS (  -- one row per group number: the group's columns
    SELECT k.g, any_value(r.customer_id) AS customer_id, any_value(r.entity_id) AS entity_id,
           any_value(r.currency) AS currency, any_value(r.source_vendor) AS source_vendor,
           any_value(r.exponent) AS currency_exponent
    FROM _b_item_key k JOIN revenue_item r USING (item_no)
    GROUP BY k.g
), grp AS (
    SELECT i.period AS month, k.g, sum(i.amount_minor) AS amount_sum,
           sum(i.amount_reporting) AS reporting_exact,
           min(i.fx_rate_min) AS fx_rate_min, max(i.fx_rate_max) AS fx_rate_max,
           sum(i.fx_missing_days) AS fx_missing_days, sum(i.fx_fallback_days) AS fx_fallback_days,
           count(DISTINCT k.ev) AS lines, count(DISTINCT k.adj) AS adjustments
    FROM _b_item_month i JOIN _b_item_key k USING (item_no)
    GROUP BY i.period, k.g
), named AS (
    SELECT g.month, r.customer_id, r.entity_id, r.currency, r.source_vendor, r.currency_exponent,
           g.amount_sum, g.reporting_exact, {native_major} AS native_major, g.fx_rate_min,
           g.fx_rate_max, g.fx_missing_days, g.fx_fallback_days, g.lines, g.adjustments
    FROM grp g JOIN grp_name r USING (g)
), terms AS (
    SELECT *, CASE WHEN _ok THEN {n} END AS _n, CASE WHEN _ok THEN {d} END AS _d
    FROM (SELECT *, fx_missing_days = 0 AND native_major <> 0 AS _ok FROM named)
)
SELECT month, customer_id, entity_id, currency, source_vendor, currency_exponent,
       CAST(amount_sum AS BIGINT) AS amount_minor,
       CASE WHEN fx_missing_days = 0
            THEN CAST(round_even(reporting_exact, {rexp}) AS DECIMAL(38,{rexp})) END AS amount_reporting,
       CAST($rep AS VARCHAR) AS reporting_currency,
       CASE WHEN _ok THEN sign(reporting_exact) * sign(native_major)
                          * {fx.quotient_half_even_sql("_q", "_r", "_d")} END AS fx_rate,
       fx_rate_min, fx_rate_max, CAST(fx_missing_days AS BIGINT) AS fx_missing_days,
       CAST(fx_fallback_days AS BIGINT) AS fx_fallback_days, lines, adjustments
FROM (SELECT *, _n // _d AS _q, _n % _d AS _r FROM terms)
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
    UNION ALL SELECT 'revenue_daily_rows', coalesce(sum(end_day - start_day), 0), 'rows' FROM revenue_item
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
    _exec(
        con,
        """INSERT INTO metric
SELECT ?, 'billing', NULL, entity, 'billing_duplicate_rate',
       CASE WHEN denominator > 0 THEN numerator / denominator END, numerator, denominator, 'ratio'
FROM metric WHERE run_id = ? AND stage = 'billing' AND name = 'billing_duplicates'
ORDER BY entity""",
        [run_id, run_id],
    )


def run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    reporting_currency: str,
    settings: Mapping[str, Any] | None = None,
    source_exponents: Mapping[str, Mapping[str, int]] | None = None,
) -> None:
    """Run the billing stage: read the staged billing tables, write revenue_event, revenue_daily,
    revenue_adjustment, revenue, billing_duplicate, conversion, and metric/finding rows.

    `settings` is the project file's `billing:` section (see `BillingSettings`).
    `source_exponents` must be each source's mapping `exponents` ({source name: {ISK: 2}}), the
    same overrides the contract stage used to turn amounts into minor units: the pipeline passes
    `{s.name: s.mapping.exponents for s in project.sources}`."""
    from romirecon.stages.common import ensure_common_tables, ensure_entity_views

    st = parse_settings(settings)
    rep = reporting_currency.upper()
    ensure_common_tables(con)
    ensure_entity_views(con)
    _exec(con, "DELETE FROM metric WHERE run_id = ? AND stage = ?", [run_id, STAGE])
    _exec(con, "DELETE FROM finding WHERE run_id = ? AND stage = ?", [run_id, STAGE])
    fx.ensure_exponent_table(con, {k: dict(v) for k, v in (source_exponents or {}).items()})
    _deduplicate(con, run_id)
    _build_events(con, st, run_id)
    _build_adjustments(con, st, run_id)
    _exec(con, "ALTER TABLE revenue_adjustment ADD COLUMN IF NOT EXISTS entity_id VARCHAR")
    _build_entities(con)
    _build_daily(con, st, rep, run_id)
    build_item_periods(con, "month", "_b_item_month")
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _b_item_key AS {item_keys_sql()}")
    _exec(con, f"CREATE OR REPLACE TEMP TABLE revenue AS {revenue_sql(rep)}", {"rep": rep})
    _exec(con, f"CREATE OR REPLACE TEMP TABLE conversion AS {conversion_sql()}")
    _metrics(con, run_id)
    for t in (
        "_b_invoice", "_b_line", "_b_invoice1", "_b_invoice0", "_b_line0", "_b_cn", "_b_refund",
        *(f"_b_{k}_{e}" for k in ("ranked", "dupkey")
          for e in ("billing_event", "invoice", "invoice_line", "credit_note", "refund")),
        "_b_redelivered", "_b_idem_inv", "_b_idem_line", "_b_mirror",
        "_b_lines_all", "_b_inv_disc", "_b_adj_doc", "_b_adj_target", "_b_adj_doc2",
        "_b_adj_alloc", "_b_entity", "_b_item_month", "_b_item_key",
    ):  # fmt: skip
        drop_relation(con, t)
