"""Cross-system reconciliation: one person across CRM, ERP and billing, deals to the invoices they
produced, ERP invoices to billing invoices, and the records that got lost on the way.

Reads `stg_contact`, `stg_account`, `stg_deal`, `stg_invoice`, `stg_subscription`, `stg_fx_rate`
and, when dedup ran, `entity_xref` (`entity, source_name, source_id, golden_id`). Writes

| table | grain |
|---|---|
| `entity_link` | one party record (CRM lead/contact/account, ERP customer, billing customer, or a customer id only seen on an invoice/subscription): its `entity_id` across systems and the rule that linked it |
| `recon_link` | one link deal -> billing invoice, ERP invoice <-> billing invoice, or deal -> ERP invoice (through its billing invoice): both ids and the rule (`id:<field>` or `entity+amount+date`) |
| `reconciliation` | one typed finding with both sides' system/source/ids, amounts (native and reporting), dates and a message |

plus `finding` rows (code = `finding_type`) and `metric` rows (`lost_record_rate` per system pair
with numerator/denominator, `erp_duplicate_invoices`, `amount_mismatches`,
`late_arrivals_pending`).

## Linking people (`entity_link`)
Nodes are party records keyed by (entity, vendor, source id). Edges: the dedup golden id
(`entity_xref`), Salesforce `converted_to` (lead -> contact), `merged_into`, and `external_ref`
(an id of the same party in another system, e.g. the Stripe customer id on a CRM contact or the
NetSuite customer's External ID). Connected components are found by min-label propagation (numpy,
pointer jumping: `romirecon.dedup.cluster`);
the entity id is the smallest node key of the component (stable while the records are).

## Finding types
- `lost-crm-record`: a paying billing customer (a paid invoice with total > 0) whose entity has no
  CRM record.
- `deal-trial-not-converted` (info, not a lost record): such a deal whose customer's trial ended
  unpaid (a canceled subscription with a trial end): the deal did not convert.
- `deal-without-invoice`: a closed-won deal with no paid/open billing invoice (total > 0) from
  `deal_invoice_lead_days` before to `deal_invoice_window_days` after its close date.
- `erp-invoice-without-billing` / `billing-invoice-without-erp`: an ERP invoice with no billing
  counterpart and the reverse (billing side: paid/open invoices with total > 0).
- `erp-invoice-duplicate`: an ERP invoice no link reached that repeats a linked ERP invoice
  (same entity and currency, total within the tolerance, within `erp_match_window_days`): a
  connector retry posted it twice. Not counted as lost.
- `amount-mismatch`: a linked ERP/billing invoice pair whose totals differ by more than
  max(`amount_tolerance.absolute`, `amount_tolerance.percent` % of the billing total), compared in
  the reporting currency (each side converted at its own date's rate) when the currencies differ,
  natively (in major units) when they agree.

A record younger than `late_arrival_days` before `as_of` (for deals: whose window ends within it)
is not a finding yet: yesterday's sync lag is not lost data. Those are counted in the metric
`late_arrivals_pending`.

## Settings (`reconcile:` section of romirecon.yaml)
| key | default | meaning |
|---|---|---|
| `as_of` | newest invoice/deal date in the data | the day the run judges from (ISO date) |
| `late_arrival_days` | 2 | records this recent are not findings yet |
| `deal_invoice_window_days` | 45 | days after a deal's close date its first invoice may come |
| `deal_invoice_lead_days` | 7 | days before the close date an invoice still counts for it |
| `erp_match_window_days` | 5 | max days between an ERP invoice and its billing invoice when matched without ids |
| `amount_tolerance.absolute` | 0.01 | in major units of the compared currency (reporting currency after FX) |
| `amount_tolerance.percent` | 0 | percent of the billing invoice total |
| `fx_max_fallback_days` | 7 | last-published-rate fallback for the comparisons |
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb

from romirecon.exitcodes import ConfigError
from romirecon.sqlutil import ident
from romirecon.stages import fx
from romirecon.stages.common import exec_sql as _exec
from romirecon.stages.common import table_exists as _table_exists

STAGE = "reconcile"


@dataclass(frozen=True)
class ReconcileSettings:
    as_of: dt.date | None = None
    late_arrival_days: int = 2
    deal_invoice_window_days: int = 45
    deal_invoice_lead_days: int = 7
    erp_match_window_days: int = 5
    tolerance_absolute: Decimal = Decimal("0.01")
    tolerance_percent: Decimal = Decimal("0")
    fx_max_fallback_days: int = fx.DEFAULT_MAX_FALLBACK_DAYS


_INT_KEYS = (
    "late_arrival_days",
    "deal_invoice_window_days",
    "deal_invoice_lead_days",
    "erp_match_window_days",
    "fx_max_fallback_days",
)
_KNOWN = {"as_of", "amount_tolerance", *_INT_KEYS}


def parse_settings(settings: Mapping[str, Any] | None) -> ReconcileSettings:
    """Validate the `reconcile:` section; raise ConfigError listing every problem at once."""
    from romirecon.config import did_you_mean

    s = dict(settings or {})
    problems: list[str] = []
    for key in sorted(set(s) - _KNOWN):
        problems.append(f"reconcile.{key}: unknown key{did_you_mean(key, _KNOWN)}")
    ints: dict[str, int] = {}
    for key in _INT_KEYS:
        if key in s:
            v = s[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                problems.append(f"reconcile.{key}: {v!r} is not a whole number of days >= 0")
            else:
                ints[key] = v
    as_of = s.get("as_of")
    if as_of is not None and not isinstance(as_of, dt.date):
        try:
            as_of = dt.date.fromisoformat(str(as_of))
        except ValueError:
            problems.append(f"reconcile.as_of: {as_of!r} is not a date (YYYY-MM-DD)")
            as_of = None
    if isinstance(as_of, dt.datetime):
        as_of = as_of.date()
    tol = s.get("amount_tolerance") or {}
    tabs, tpct = Decimal("0.01"), Decimal("0")
    if not isinstance(tol, dict) or set(tol) - {"absolute", "percent"}:
        problems.append("reconcile.amount_tolerance: expected {absolute: number, percent: number}")
    else:
        for key in ("absolute", "percent"):
            if key in tol:
                v = tol[key]
                if isinstance(v, bool) or not isinstance(v, int | float | str):
                    problems.append(f"reconcile.amount_tolerance.{key}: {v!r} is not a number")
                    continue
                try:
                    d = Decimal(str(v))
                except ArithmeticError:
                    problems.append(f"reconcile.amount_tolerance.{key}: {v!r} is not a number")
                    continue
                if not d.is_finite() or d < 0:
                    problems.append(f"reconcile.amount_tolerance.{key}: {v!r} must be >= 0")
                elif key == "absolute":
                    tabs = d
                else:
                    tpct = d
    if problems:
        raise ConfigError(f"reconcile settings: {len(problems)} problem(s) found", details=problems)
    return ReconcileSettings(
        as_of=as_of,
        tolerance_absolute=tabs,
        tolerance_percent=tpct,
        **ints,
    )


def vendor_sql(alias: str) -> str:
    """A record's vendor, the namespace its ids live in (the source name when the mapping has no
    vendor)."""
    return f"lower(coalesce(nullif(trim({alias}.source_vendor), ''), {alias}.source_name))"


def node_key_sql(entity: str, vendor: str, source_id: str) -> str:
    """The text key of a party node: entity|vendor|id."""
    return f"concat_ws('|', {entity}, {vendor}, CAST({source_id} AS VARCHAR))"


def exponent_join_sql(alias: str, p: str = "_xe") -> str:
    """LEFT JOINs binding the currency exponent candidates of row `alias` (read them with
    `exponent_sql(p)`): hash joins on currency_exponent instead of three correlated lookups per
    row."""
    cur = f"upper({alias}.currency)"
    scope = "(SELECT key, currency, min(exponent) AS exponent FROM currency_exponent WHERE scope = '{s}' GROUP BY key, currency)"
    return (
        f"LEFT JOIN {scope.format(s='source')} {p}s ON {p}s.key = {alias}.source_name "
        f"AND {p}s.currency = {cur} "
        f"LEFT JOIN {scope.format(s='vendor')} {p}v ON {p}v.key = lower({alias}.source_vendor) "
        f"AND {p}v.currency = {cur} "
        f"LEFT JOIN {scope.format(s='iso')} {p}i ON {p}i.currency = {cur}"
    )


def exponent_sql(p: str = "_xe") -> str:
    """A row's currency exponent: per-source override, vendor, ISO 4217, then 2 (as billing),
    from the joins of `exponent_join_sql(alias, p)`."""
    return f"coalesce({p}s.exponent, {p}v.exponent, {p}i.exponent, 2)"


# ---------------------------------------------------------------------------------------------
# entity_link


def party_records_sql() -> str:
    """Every party record and every customer id seen on a billing/ERP document: entity, system,
    source name, vendor, id, and the references it carries (converted_to, merged_into,
    external_ref)."""
    parts = []
    for ent in ("contact", "account"):
        t = ident(f"stg_{ent}")
        parts.append(
            f"""SELECT '{ent}' AS entity, p.source_system, p.source_name, {vendor_sql("p")} AS vendor,
       CAST(p.source_id AS VARCHAR) AS source_id, p.converted_to, p.merged_into, p.external_ref,
       p.record_type, p.created_at
FROM {t} p WHERE p.source_id IS NOT NULL"""
        )
    for t in ("stg_invoice", "stg_subscription"):
        parts.append(
            f"""SELECT 'contact', d.source_system, d.source_name, {vendor_sql("d")},
       CAST(d.customer_id AS VARCHAR), NULL, NULL, NULL, 'customer', NULL
FROM {t} d WHERE d.customer_id IS NOT NULL"""
        )
    return "\nUNION ALL\n".join(parts)


def _el_components(con: duckdb.DuckDBPyConnection) -> None:
    """`_el_comp(idx, comp)` from `_el_node(node, idx)` and the integer edges `_el_edge_i(a, b)`:
    `comp` numbers the node's connected component (its smallest idx; idx is in no particular
    order, so the component's label, its smallest node key, is taken by `_el_lab`)."""
    import numpy as np
    import pyarrow as pa

    from romirecon.dedup.cluster import connected_components

    n = int(con.execute("SELECT count(*) FROM _el_node").fetchone()[0])
    e = con.execute("SELECT a, b FROM _el_edge_i").fetchnumpy()
    labels = connected_components(
        n, np.asarray(e["a"], dtype=np.int64), np.asarray(e["b"], dtype=np.int64)
    )
    comp = pa.table({"idx": pa.array(np.arange(n, dtype=np.int64)), "comp": labels})
    con.register("_el_comp_arrow", comp)
    try:
        _exec(con, "CREATE OR REPLACE TEMP TABLE _el_comp AS SELECT idx, comp FROM _el_comp_arrow")
    finally:
        con.unregister("_el_comp_arrow")


def entity_link_built(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    """Whether this connection already built `entity_link` for run `run_id` (its inputs, the
    staged party tables and entity_xref, do not change between the reconcile and attribution
    stages of one run; a new connection, e.g. the next night's run, always rebuilds)."""
    if not _table_exists(con, "_el_built") or not _table_exists(con, "entity_link"):
        return False
    row = con.execute("SELECT count(*) FROM _el_built WHERE run_id = ?", [run_id]).fetchone()
    return bool(row and row[0])


# the rules an entity_link edge can carry (see build_entity_link)
LINK_RULES = ("converted_to", "merged_into", "external_ref", "golden_id")


def rules_sql(rule: str) -> str:
    """Aggregate: the distinct LINK_RULES among the `rule` values of a group, sorted and joined
    by ',' (what string_agg(DISTINCT rule, ',' ORDER BY rule) gives, without an ordered DISTINCT
    aggregate per group: one flag per known rule). NULL for a group without rules."""
    flags = ", ".join(
        f"CASE WHEN bool_or({rule} = '{r}') THEN '{r}' END" for r in sorted(LINK_RULES)
    )
    return f"nullif(concat_ws(',', {flags}), '')"


def build_entity_link(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> None:
    """Create `entity_link(entity, source_system, source_name, vendor, source_id, node, entity_id,
    rule)`: one row per party record (deduplicated on entity, vendor, id, source name), and note
    in this connection that it was built for `run_id` (see `entity_link_built`)."""
    from romirecon.stages.common import ensure_entity_views

    ensure_entity_views(con)
    _exec(
        con,
        f"""CREATE OR REPLACE TEMP TABLE _el_rec AS
SELECT DISTINCT entity, source_system, source_name, vendor, source_id,
       {node_key_sql("entity", "vendor", "source_id")} AS node
FROM ({party_records_sql()})""",
    )
    # only the records that carry a reference make edges (a customer id seen on an invoice
    # carries none): a scratch table of those, not of every party record and invoice
    _exec(
        con,
        f"""CREATE OR REPLACE TEMP TABLE _el_refs AS SELECT * FROM ({party_records_sql()})
WHERE converted_to IS NOT NULL OR merged_into IS NOT NULL OR external_ref IS NOT NULL""",
    )
    edges = [
        # lead converted to a contact of the same vendor
        f"""SELECT {node_key_sql("r.entity", "r.vendor", "r.source_id")} AS a,
       {node_key_sql("'contact'", "r.vendor", "r.converted_to")} AS b, 'converted_to' AS rule
FROM _el_refs r WHERE r.converted_to IS NOT NULL AND trim(r.converted_to) <> ''""",
        f"""SELECT {node_key_sql("r.entity", "r.vendor", "r.source_id")},
       {node_key_sql("r.entity", "r.vendor", "r.merged_into")}, 'merged_into'
FROM _el_refs r WHERE r.merged_into IS NOT NULL AND trim(r.merged_into) <> ''""",
        # an id of this party in another system
        """SELECT x.node, y.node, 'external_ref'
FROM _el_refs r JOIN _el_rec x ON x.entity = r.entity AND x.vendor = r.vendor
     AND x.source_id = r.source_id AND x.source_name = r.source_name
JOIN _el_rec y ON y.source_id = trim(r.external_ref) AND y.entity = r.entity
     AND y.source_system <> r.source_system
WHERE r.external_ref IS NOT NULL""",
    ]
    if _table_exists(con, "entity_xref"):
        edges.append(
            """SELECT r.node, 'golden|' || x.entity || '|' || CAST(x.golden_id AS VARCHAR), 'golden_id'
FROM entity_xref x JOIN _el_rec r ON r.source_name = x.source_name
     AND r.source_id = CAST(x.source_id AS VARCHAR) AND r.entity = x.entity
WHERE x.golden_id IS NOT NULL"""
        )
    _exec(
        con,
        "CREATE OR REPLACE TEMP TABLE _el_edge AS SELECT DISTINCT a, b, rule FROM ("
        + " UNION ALL ".join(edges)
        + ") WHERE a <> b",
    )
    # connected components over integer node numbers (numbered in no particular order: a hash
    # DISTINCT, no sort of every node key), numpy label propagation with pointer jumping; each
    # component's label is then its smallest node key (a min per component)
    _exec(
        con,
        """CREATE OR REPLACE TEMP TABLE _el_node AS
SELECT node, CAST(row_number() OVER () - 1 AS BIGINT) AS idx
FROM (SELECT node FROM _el_rec UNION SELECT a FROM _el_edge UNION SELECT b FROM _el_edge)""",
    )
    _exec(
        con,
        """CREATE OR REPLACE TEMP TABLE _el_edge_i AS
SELECT na.idx AS a, nb.idx AS b, e.rule FROM _el_edge e
JOIN _el_node na ON na.node = e.a JOIN _el_node nb ON nb.node = e.b""",
    )
    _el_components(con)
    _exec(
        con,
        """CREATE OR REPLACE TEMP TABLE _el_lab AS  -- one hash per component, not per record
SELECT comp, 'E:' || substr(sha256(label), 1, 16) AS entity_id
FROM (SELECT c.comp, min(n.node) AS label FROM _el_comp c JOIN _el_node n USING (idx)
      GROUP BY c.comp)""",
    )
    _exec(
        con,
        f"""CREATE OR REPLACE TEMP TABLE entity_link AS
SELECT r.entity, r.source_system, r.source_name, r.vendor, r.source_id, r.node,
       lab.entity_id, coalesce(k.rule, 'own-id') AS rule
FROM _el_rec r JOIN _el_node n USING (node) JOIN _el_comp c USING (idx) JOIN _el_lab lab USING (comp)
LEFT JOIN (SELECT idx, {rules_sql("rule")} AS rule
           FROM (SELECT a AS idx, rule FROM _el_edge_i UNION ALL SELECT b, rule FROM _el_edge_i)
           GROUP BY idx) k USING (idx)
ORDER BY r.entity, r.vendor, r.source_id, r.source_name, r.source_system""",
    )
    _exec(
        con,
        "CREATE OR REPLACE TEMP TABLE _el_built AS SELECT CAST(? AS VARCHAR) AS run_id",
        [run_id],
    )
    for t in ("_el_rec", "_el_refs", "_el_edge", "_el_node", "_el_edge_i", "_el_comp", "_el_lab"):
        _exec(con, f"DROP TABLE IF EXISTS {ident(t)}")


def entity_ids_sql() -> str:
    """SELECT entity, vendor, source_id, entity_id: one entity per party id of entity_link (the
    smallest, should a party id sit in two components)."""
    return (
        "SELECT entity, vendor, source_id, min(entity_id) AS entity_id FROM entity_link "
        "GROUP BY entity, vendor, source_id"
    )


def entity_join_sql(
    alias: str, entity: str, vendor: str, source_id: str, ids: str | None = None
) -> str:
    """A LEFT JOIN clause that binds `<alias>.entity_id`: the entity_id of a party id, NULL when
    unknown. A hash join, not a correlated subquery per row (that took 5.7 s on the revenue items
    of 100k customers). `ids` names a table already holding `entity_ids_sql()` (a query joining
    several times builds it once); without it the grouping runs inside the join."""
    a = ident(alias)
    rel = ident(ids) if ids else f"({entity_ids_sql()})"
    return (
        f"LEFT JOIN {rel} {a} ON {a}.entity = {entity} AND {a}.vendor = {vendor} "
        f"AND {a}.source_id = CAST({source_id} AS VARCHAR)"
    )


# ---------------------------------------------------------------------------------------------
# documents


def invoices_sql() -> str:
    """Live, counted invoices (paid/open/uncollectible, total > 0) of the billing and ERP systems,
    one row per (system, vendor, id) (the latest copy when an export repeats one), with the
    customer's entity (from `_rc_entity_id`, see `entity_ids_sql`), the total in major units and
    the document date."""
    return f"""
WITH s AS (  -- only the columns read below
    SELECT s.source_system, s.source_name, s.source_vendor, s.source_id, s.number,
           s.customer_id, s.subscription_id, s.external_ref, s.deal_ref, s.currency, s.total,
           s.created_at, s.period_start, s.status, s.livemode, s.source_file, s.source_row,
           s.updated_at, {vendor_sql("s")} AS vendor
    FROM stg_invoice s
    WHERE s.source_system IN ('billing', 'erp') AND s.source_id IS NOT NULL
), rep AS (  -- the (system, vendor, id) exported more than once: only their copies are ranked.
    -- Grouped by a hash of the three: a colliding key only sends its rows to the ranking too,
    -- where a row alone in its (system, vendor, id) is still copy 1. The string group by cost
    -- twice as much (2.0 s against 1.1 s for 6.6M invoices, and the view is read twice)
    SELECT hash(source_system, vendor, source_id) AS h FROM s GROUP BY ALL HAVING count(*) > 1
), i AS (
    SELECT *, 1 AS rn FROM s
    WHERE NOT EXISTS (SELECT 1 FROM rep r WHERE r.h = hash(s.source_system, s.vendor, s.source_id))
    UNION ALL
    SELECT *, row_number() OVER (PARTITION BY source_system, vendor, source_id
                                 ORDER BY updated_at DESC NULLS LAST, source_file DESC,
                                          source_row DESC) AS rn
    FROM s
    WHERE EXISTS (SELECT 1 FROM rep r WHERE r.h = hash(s.source_system, s.vendor, s.source_id))
)
SELECT *, CAST(total AS DECIMAL(38,0)) * {fx.minor_factor_sql("exponent")} AS total_major
FROM (
    SELECT i.source_system, i.source_name, i.source_vendor, i.vendor, i.source_id, i.number,
           i.customer_id, i.subscription_id, i.external_ref, i.deal_ref,
           upper(i.currency) AS currency, i.total, {exponent_sql()} AS exponent,
           CAST(coalesce(i.created_at, i.period_start) AS DATE) AS doc_date,
           lower(i.status) AS status, i.source_file, i.source_row, el.entity_id
    FROM i {entity_join_sql("el", "'contact'", "i.vendor", "i.customer_id", "_rc_entity_id")}
    {exponent_join_sql("i")}
    WHERE i.rn = 1 AND lower(coalesce(i.status, 'open')) NOT IN ('draft', 'void')
      AND i.livemode IS DISTINCT FROM false AND coalesce(i.total, 0) > 0
)"""


def deals_sql() -> str:
    """Closed-won, not deleted deals, one row per (vendor, id), with their entity (contact first,
    then account; from `_rc_entity_id`, see `entity_ids_sql`)."""
    return f"""
WITH d AS (
    SELECT *, {vendor_sql("s")} AS vendor,
           row_number() OVER (PARTITION BY {vendor_sql("s")}, s.source_id
                              ORDER BY s.updated_at DESC NULLS LAST, s.source_file DESC,
                                       s.source_row DESC) AS rn
    FROM stg_deal s WHERE s.source_id IS NOT NULL
)
SELECT d.source_system, d.source_name, d.source_vendor, d.vendor, d.source_id, d.contact_id,
       d.account_id, d.external_ref, upper(d.currency) AS currency, d.amount,
       CAST(d.amount AS DECIMAL(38,0)) * {fx.minor_factor_sql(exponent_sql())} AS amount_major,
       d.close_date,
       coalesce(ec.entity_id, ea.entity_id) AS entity_id,
       d.source_file, d.source_row
FROM d {entity_join_sql("ec", "'contact'", "d.vendor", "d.contact_id", "_rc_entity_id")}
{entity_join_sql("ea", "'account'", "d.vendor", "d.account_id", "_rc_entity_id")}
{exponent_join_sql("d")}
WHERE d.rn = 1 AND d.is_won IS true AND d.is_deleted IS DISTINCT FROM true
  AND d.close_date IS NOT NULL"""


def deal_links_sql() -> str:
    """deal -> billing invoice links dated within [close - $lead, close + $window] days: by ids
    (deal.external_ref = invoice id / subscription / customer; invoice.deal_ref = deal id), else,
    for deals no id links, by the deal's entity: the one invoice nearest the close date, then
    nearest the deal amount (a deal's amount is often annual while invoices are monthly)."""
    return """
WITH bi AS (SELECT * FROM _rc_invoice WHERE source_system = 'billing'),
id_pairs AS (  -- equi-joins only (an OR join would be a nested loop)
    SELECT d.source_id AS deal_id, d.vendor AS deal_vendor, b.source_id AS invoice_id,
           b.vendor AS invoice_vendor, 'id:deal_ref' AS rule, 1 AS prio, b.doc_date,
           b.total_major, d.close_date
    FROM _rc_deal d JOIN bi b ON b.deal_ref = d.source_id
    UNION ALL
    SELECT d.source_id, d.vendor, b.source_id, b.vendor, 'id:invoice', 2, b.doc_date,
           b.total_major, d.close_date
    FROM _rc_deal d JOIN bi b ON d.external_ref = b.source_id
    UNION ALL
    SELECT d.source_id, d.vendor, b.source_id, b.vendor, 'id:subscription', 3, b.doc_date,
           b.total_major, d.close_date
    FROM _rc_deal d JOIN bi b ON d.external_ref = b.subscription_id
    UNION ALL
    SELECT d.source_id, d.vendor, b.source_id, b.vendor, 'id:customer', 4, b.doc_date,
           b.total_major, d.close_date
    FROM _rc_deal d JOIN bi b ON d.external_ref = b.customer_id
), by_id AS (
    SELECT deal_id, deal_vendor, invoice_id, invoice_vendor, arg_min(rule, prio) AS rule,
           any_value(doc_date) AS doc_date, any_value(total_major) AS total_major
    FROM id_pairs
    WHERE doc_date BETWEEN close_date - CAST($lead AS INTEGER) AND close_date + CAST($window AS INTEGER)
    GROUP BY deal_id, deal_vendor, invoice_id, invoice_vendor
), by_entity AS (
    SELECT d.source_id AS deal_id, d.vendor AS deal_vendor, b.source_id AS invoice_id,
           b.vendor AS invoice_vendor, 'entity+amount+date' AS rule, b.doc_date, b.total_major,
           row_number() OVER (PARTITION BY d.vendor, d.source_id
               ORDER BY abs(b.doc_date - d.close_date), abs(b.total_major - coalesce(d.amount_major, 0)),
                        b.vendor, b.source_id) AS rk
    FROM _rc_deal d JOIN bi b ON b.entity_id = d.entity_id
     AND b.doc_date BETWEEN d.close_date - CAST($lead AS INTEGER) AND d.close_date + CAST($window AS INTEGER)
    WHERE NOT EXISTS (SELECT 1 FROM by_id x WHERE x.deal_id = d.source_id AND x.deal_vendor = d.vendor)
)
SELECT * FROM by_id UNION ALL SELECT * EXCLUDE (rk) FROM by_entity WHERE rk = 1"""


def erp_links_sql() -> str:
    """ERP invoice <-> billing invoice: by ids (either side's external_ref, or the same invoice
    number), else one-to-one on the same entity and currency within $erp_days days and the amount
    tolerance (each ERP invoice takes its nearest billing invoice, each billing invoice its
    nearest ERP invoice; a pair is kept when the choice is mutual)."""
    return """
WITH e AS (SELECT * FROM _rc_invoice WHERE source_system = 'erp'),
b AS (SELECT * FROM _rc_invoice WHERE source_system = 'billing'),
id_pairs AS (  -- equi-joins only (an OR join would be a nested loop)
    SELECT e.source_id AS erp_id, e.vendor AS erp_vendor, b.source_id AS billing_id,
           b.vendor AS billing_vendor, 'id:erp.external_ref' AS rule, 1 AS prio
    FROM e JOIN b ON e.external_ref = b.source_id
    UNION ALL
    SELECT e.source_id, e.vendor, b.source_id, b.vendor, 'id:billing.external_ref', 2
    FROM e JOIN b ON b.external_ref = e.source_id
    UNION ALL
    SELECT e.source_id, e.vendor, b.source_id, b.vendor, 'id:number', 3
    FROM e JOIN b ON e.number = b.number
), by_id AS (
    SELECT erp_id, erp_vendor, billing_id, billing_vendor, arg_min(rule, prio) AS rule
    FROM id_pairs GROUP BY ALL
), cand AS (
    SELECT e.source_id AS erp_id, e.vendor AS erp_vendor, b.source_id AS billing_id,
           b.vendor AS billing_vendor,
           abs(e.doc_date - b.doc_date) AS ddays, abs(e.total_major - b.total_major) AS damt
    FROM e JOIN b ON e.entity_id = b.entity_id AND e.currency = b.currency
     AND abs(e.doc_date - b.doc_date) <= CAST($erp_days AS INTEGER)
     AND abs(e.total_major - b.total_major) <= greatest(CAST($tol_abs AS DECIMAL(38,10)),
             b.total_major * CAST($tol_pct AS DECIMAL(38,10)) / 100)
    WHERE NOT EXISTS (SELECT 1 FROM by_id x WHERE x.erp_id = e.source_id AND x.erp_vendor = e.vendor)
      AND NOT EXISTS (SELECT 1 FROM by_id x WHERE x.billing_id = b.source_id AND x.billing_vendor = b.vendor)
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY erp_vendor, erp_id ORDER BY ddays, damt, billing_vendor, billing_id) AS re,
              row_number() OVER (PARTITION BY billing_vendor, billing_id ORDER BY ddays, damt, erp_vendor, erp_id) AS rb
    FROM cand
)
SELECT erp_id, erp_vendor, billing_id, billing_vendor, rule FROM by_id
UNION ALL
SELECT erp_id, erp_vendor, billing_id, billing_vendor, 'entity+amount+date' FROM ranked WHERE re = 1 AND rb = 1"""


def erp_duplicates_sql() -> str:
    """ERP invoices no link reached that repeat a linked ERP invoice: same entity and currency,
    total within the tolerance, dated within $erp_days days (a connector retry posting the same
    invoice twice). One row per duplicate with the original (lowest id) and its billing invoice."""
    return """
SELECT e.source_id AS erp_id, e.vendor AS erp_vendor,
       min(o.source_id) AS original_id, arg_min(k.billing_id, o.source_id) AS billing_id,
       arg_min(k.billing_vendor, o.source_id) AS billing_vendor
FROM _rc_invoice e
JOIN _rc_invoice o ON o.source_system = 'erp' AND o.entity_id = e.entity_id
 AND o.currency = e.currency AND o.source_id <> e.source_id
 AND abs(o.doc_date - e.doc_date) <= CAST($erp_days AS INTEGER)
 AND abs(o.total_major - e.total_major) <= greatest(CAST($tol_abs AS DECIMAL(38,10)),
         o.total_major * CAST($tol_pct AS DECIMAL(38,10)) / 100)
JOIN _rc_erp_link k ON k.erp_id = o.source_id AND k.erp_vendor = o.vendor
WHERE e.source_system = 'erp'
  AND NOT EXISTS (SELECT 1 FROM _rc_erp_link x WHERE x.erp_id = e.source_id AND x.erp_vendor = e.vendor)
GROUP BY e.source_id, e.vendor"""


RECON_COLUMNS = """finding_type VARCHAR, severity VARCHAR, entity_id VARCHAR,
    left_system VARCHAR, left_source VARCHAR, left_id VARCHAR,
    right_system VARCHAR, right_source VARCHAR, right_id VARCHAR,
    left_amount DECIMAL(38,10), left_currency VARCHAR, right_amount DECIMAL(38,10),
    right_currency VARCHAR, left_amount_reporting DECIMAL(38,10),
    right_amount_reporting DECIMAL(38,10), difference_reporting DECIMAL(38,10),
    reporting_currency VARCHAR, left_date DATE, right_date DATE, message VARCHAR"""


def _findings_sql() -> str:
    """Every reconciliation finding; $as_of, $late, $window, $lead, $rep, $tol_abs, $tol_pct."""
    return """
-- paying billing customers (entities) with no CRM record
SELECT 'lost-crm-record' AS finding_type, 'warn' AS severity, b.entity_id,
       'billing', any_value(b.source_name), min(b.customer_id),
       'crm', NULL, NULL,
       CAST(NULL AS DECIMAL(38,10)), NULL, NULL, NULL, NULL, NULL, NULL, $rep,
       min(b.doc_date), NULL,
       'billing customer ' || min(b.customer_id) || ' paying since '
           || strftime(min(b.doc_date), '%Y-%m-%d') || ' has no CRM record' AS message
FROM _rc_invoice b
WHERE b.source_system = 'billing' AND b.status = 'paid'
  AND NOT EXISTS (SELECT 1 FROM entity_link l WHERE l.entity_id = b.entity_id AND l.source_system = 'crm')
GROUP BY b.entity_id
HAVING min(b.doc_date) <= $as_of - CAST($late AS INTEGER)
UNION ALL
-- closed-won deals without an invoice in the window; when the deal's customer started a trial
-- that ended without a paid invoice, nothing was lost: the deal did not convert (info)
SELECT CASE WHEN t.entity_id IS NULL THEN 'deal-without-invoice' ELSE 'deal-trial-not-converted' END,
       CASE WHEN t.entity_id IS NULL THEN 'warn' ELSE 'info' END,
       d.entity_id, 'crm', d.source_name, d.source_id,
       'billing', NULL, NULL,
       d.amount_major, d.currency, NULL, NULL, NULL, NULL, NULL, $rep, d.close_date, NULL,
       'closed-won deal ' || d.source_id || ' (closed ' || strftime(d.close_date, '%Y-%m-%d')
           || ') has no invoice within ' || $window || ' days'
           || CASE WHEN t.entity_id IS NULL THEN ''
                   ELSE ': its customer''s trial ended unpaid (the CRM stage is optimistic)' END
FROM _rc_deal d
LEFT JOIN (
    SELECT DISTINCT l.entity_id FROM stg_subscription s
    JOIN entity_link l ON l.source_system = 'billing' AND l.source_id = s.customer_id
    WHERE s.trial_end IS NOT NULL AND lower(s.status) IN ('canceled', 'incomplete_expired')
) t ON t.entity_id = d.entity_id
WHERE NOT EXISTS (SELECT 1 FROM _rc_deal_link k WHERE k.deal_id = d.source_id AND k.deal_vendor = d.vendor)
  AND d.close_date + CAST($window AS INTEGER) <= $as_of - CAST($late AS INTEGER)
UNION ALL
SELECT 'erp-invoice-without-billing', 'warn', e.entity_id, 'erp', e.source_name, e.source_id,
       'billing', NULL, NULL, e.total_major, e.currency, NULL, NULL, e.total_reporting, NULL, NULL,
       $rep, e.doc_date, NULL,
       'ERP invoice ' || e.source_id || coalesce(' (' || e.number || ')', '') || ' of '
           || strftime(e.doc_date, '%Y-%m-%d') || ' has no billing counterpart'
FROM _rc_invoice e
WHERE e.source_system = 'erp' AND e.doc_date <= $as_of - CAST($late AS INTEGER)
  AND NOT EXISTS (SELECT 1 FROM _rc_erp_link k WHERE k.erp_id = e.source_id AND k.erp_vendor = e.vendor)
  AND NOT EXISTS (SELECT 1 FROM _rc_erp_dup k WHERE k.erp_id = e.source_id AND k.erp_vendor = e.vendor)
UNION ALL
SELECT 'erp-invoice-duplicate', 'warn', e.entity_id, 'erp', e.source_name, e.source_id,
       'billing', b.source_name, b.source_id, e.total_major, e.currency, b.total_major, b.currency,
       e.total_reporting, b.total_reporting, NULL, $rep, e.doc_date, b.doc_date,
       'ERP invoice ' || e.source_id || coalesce(' (' || e.number || ')', '') || ' repeats ERP invoice '
           || d.original_id || ' (same customer, amount and date) for billing invoice ' || b.source_id
FROM _rc_erp_dup d
JOIN _rc_invoice e ON e.source_system = 'erp' AND e.source_id = d.erp_id AND e.vendor = d.erp_vendor
JOIN _rc_invoice b ON b.source_system = 'billing' AND b.source_id = d.billing_id AND b.vendor = d.billing_vendor
UNION ALL
SELECT 'billing-invoice-without-erp', 'warn', b.entity_id, 'billing', b.source_name, b.source_id,
       'erp', NULL, NULL, b.total_major, b.currency, NULL, NULL, b.total_reporting, NULL, NULL,
       $rep, b.doc_date, NULL,
       'billing invoice ' || b.source_id || ' of ' || strftime(b.doc_date, '%Y-%m-%d')
           || ' has no ERP counterpart'
FROM _rc_invoice b
WHERE b.source_system = 'billing' AND b.doc_date <= $as_of - CAST($late AS INTEGER)
  AND EXISTS (SELECT 1 FROM _rc_invoice e WHERE e.source_system = 'erp')
  AND NOT EXISTS (SELECT 1 FROM _rc_erp_link k WHERE k.billing_id = b.source_id AND k.billing_vendor = b.vendor)
UNION ALL
SELECT 'amount-mismatch', 'warn', b.entity_id, 'erp', e.source_name, e.source_id,
       'billing', b.source_name, b.source_id, e.total_major, e.currency, b.total_major, b.currency,
       e.total_reporting, b.total_reporting, m.diff, $rep, e.doc_date, b.doc_date,
       'ERP invoice ' || e.source_id || ' ' || CAST(e.total_major AS VARCHAR) || ' ' || e.currency
           || ' vs billing invoice ' || b.source_id || ' ' || CAST(b.total_major AS VARCHAR) || ' '
           || b.currency || ': differ by ' || CAST(m.diff AS VARCHAR) || ' ' || m.unit
FROM _rc_erp_link k
JOIN _rc_invoice e ON e.source_system = 'erp' AND e.source_id = k.erp_id AND e.vendor = k.erp_vendor
JOIN _rc_invoice b ON b.source_system = 'billing' AND b.source_id = k.billing_id AND b.vendor = k.billing_vendor
CROSS JOIN LATERAL (
    SELECT CASE WHEN e.currency = b.currency THEN abs(e.total_major - b.total_major)
                ELSE abs(e.total_reporting - b.total_reporting) END AS diff,
           CASE WHEN e.currency = b.currency THEN b.total_major ELSE b.total_reporting END AS base,
           CASE WHEN e.currency = b.currency THEN b.currency ELSE $rep END AS unit
) m
WHERE m.diff > greatest(CAST($tol_abs AS DECIMAL(38,10)), abs(m.base) * CAST($tol_pct AS DECIMAL(38,10)) / 100)"""


def reconciliation_output_query() -> str:
    """The SELECT the publisher writes to reconciliation.parquet / reconciliation.csv."""
    return (
        "SELECT * FROM reconciliation ORDER BY finding_type, left_system, left_source NULLS FIRST, "
        "left_id NULLS FIRST, right_id NULLS FIRST, entity_id NULLS FIRST"
    )


def run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    reporting_currency: str,
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Link entities and documents across CRM, ERP and billing; write `entity_link`,
    `recon_link`, `reconciliation`, and `finding`/`metric` rows of stage 'reconcile'."""
    from romirecon.stages.common import ensure_common_tables, ensure_entity_views

    st = parse_settings(settings)
    rep = reporting_currency.upper()
    ensure_common_tables(con)
    ensure_entity_views(con)
    _exec(con, "DELETE FROM metric WHERE run_id = ? AND stage = ?", [run_id, STAGE])
    _exec(con, "DELETE FROM finding WHERE run_id = ? AND stage = ?", [run_id, STAGE])
    if not _table_exists(con, "currency_exponent"):
        fx.ensure_exponent_table(con)
    build_entity_link(con, run_id)
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _rc_entity_id AS {entity_ids_sql()}")
    # a view: fx.convert reads it twice (its currency-days, then every row once into
    # _rc_invoice); a table would be one more copy of every invoice kept until the stage commits
    _exec(con, f"CREATE OR REPLACE TEMP VIEW _rc_inv0 AS {invoices_sql()}")
    fx.convert(
        con,
        "_rc_inv0",
        "total",
        "currency",
        "doc_date",
        rep,
        run_id,
        out="_rc_invoice",
        exponent_col="exponent",
        max_fallback_days=st.fx_max_fallback_days,
        stage=STAGE,
        amount_as="total_reporting",
    )
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _rc_deal AS {deals_sql()}")
    as_of = st.as_of
    if as_of is None:
        row = con.execute(
            "SELECT greatest((SELECT max(doc_date) FROM _rc_invoice), "
            "(SELECT max(close_date) FROM _rc_deal))"
        ).fetchone()
        as_of = row[0] if row and row[0] is not None else dt.date(1970, 1, 1)
    params = {
        "lead": st.deal_invoice_lead_days,
        "window": st.deal_invoice_window_days,
        "erp_days": st.erp_match_window_days,
        "tol_abs": str(st.tolerance_absolute),
        "tol_pct": str(st.tolerance_percent),
    }
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE _rc_deal_link AS {deal_links_sql()}",
        {k: params[k] for k in ("lead", "window")},
    )
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE _rc_erp_link AS {erp_links_sql()}",
        {k: params[k] for k in ("erp_days", "tol_abs", "tol_pct")},
    )
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE _rc_erp_dup AS {erp_duplicates_sql()}",
        {k: params[k] for k in ("erp_days", "tol_abs", "tol_pct")},
    )
    _exec(
        con,
        """CREATE OR REPLACE TEMP TABLE recon_link AS
SELECT 'deal-invoice' AS link_type, 'crm' AS left_system, deal_vendor AS left_vendor,
       deal_id AS left_id, 'billing' AS right_system, invoice_vendor AS right_vendor,
       invoice_id AS right_id, rule
FROM _rc_deal_link
UNION ALL
SELECT 'erp-billing-invoice', 'erp', erp_vendor, erp_id, 'billing', billing_vendor, billing_id, rule
FROM _rc_erp_link
UNION ALL  -- the ERP invoice a deal produced: through its billing invoice
SELECT 'deal-erp-invoice', 'crm', d.deal_vendor, d.deal_id, 'erp', e.erp_vendor, e.erp_id,
       d.rule || '+' || e.rule
FROM _rc_deal_link d JOIN _rc_erp_link e
  ON e.billing_id = d.invoice_id AND e.billing_vendor = d.invoice_vendor
ORDER BY link_type, left_vendor, left_id, right_vendor, right_id""",
    )
    _exec(con, f"CREATE OR REPLACE TEMP TABLE reconciliation ({RECON_COLUMNS})")
    _exec(
        con,
        f"INSERT INTO reconciliation {_findings_sql()}",
        {
            "as_of": as_of,
            "late": st.late_arrival_days,
            "window": params["window"],
            "rep": rep,
            "tol_abs": params["tol_abs"],
            "tol_pct": params["tol_pct"],
        },
    )
    _exec(
        con,
        f"""INSERT INTO finding
SELECT ?, '{STAGE}', finding_type, severity, coalesce(left_source, right_source),
       CASE WHEN finding_type = 'lost-crm-record' THEN 'contact'
            WHEN finding_type IN ('deal-without-invoice', 'deal-trial-not-converted') THEN 'deal'
            ELSE 'invoice' END,
       left_id, right_id, message,
       json_object('entity_id', entity_id, 'left_system', left_system, 'right_system', right_system,
                   'left_amount', CAST(left_amount AS VARCHAR), 'right_amount', CAST(right_amount AS VARCHAR),
                   'difference_reporting', CAST(difference_reporting AS VARCHAR))
FROM ({reconciliation_output_query()})""",
        [run_id],
    )
    _metrics(con, run_id, as_of, st)
    for t in (
        "_rc_entity_id", "_rc_invoice", "_rc_deal", "_rc_deal_link", "_rc_erp_link",
        "_rc_erp_dup",
    ):  # fmt: skip
        _exec(con, f"DROP TABLE IF EXISTS {ident(t)}")
    _exec(con, "DROP VIEW IF EXISTS _rc_inv0")


def _metrics(
    con: duckdb.DuckDBPyConnection, run_id: str, as_of: dt.date, st: ReconcileSettings
) -> None:
    """lost_record_rate per system pair (source_name = 'left->right'), amount_mismatches,
    late_arrivals_pending. Denominators count only records old enough to be judged."""
    _exec(
        con,
        f"""INSERT INTO metric
SELECT $run_id, '{STAGE}', pair, entity, name,
       CASE WHEN den = 0 THEN 0 ELSE num / den END, num, den, unit
FROM (
    SELECT 'billing->crm' AS pair, 'contact' AS entity, 'lost_record_rate' AS name,
           CAST((SELECT count(*) FROM reconciliation WHERE finding_type = 'lost-crm-record') AS DOUBLE) AS num,
           CAST((SELECT count(*) FROM (SELECT entity_id FROM _rc_invoice WHERE source_system = 'billing'
                 AND status = 'paid' GROUP BY entity_id
                 HAVING min(doc_date) <= $as_of - CAST($late AS INTEGER))) AS DOUBLE) AS den,
           'ratio' AS unit, 1 AS o
    UNION ALL
    SELECT 'crm->billing', 'deal',
           'lost_record_rate',
           (SELECT count(*) FROM reconciliation WHERE finding_type = 'deal-without-invoice'),
           (SELECT count(*) FROM _rc_deal d WHERE d.close_date + CAST($window AS INTEGER) <= $as_of - CAST($late AS INTEGER)
                 OR EXISTS (SELECT 1 FROM _rc_deal_link k WHERE k.deal_id = d.source_id AND k.deal_vendor = d.vendor)),
           'ratio', 2
    UNION ALL
    SELECT 'erp->billing', 'invoice', 'lost_record_rate',
           (SELECT count(*) FROM reconciliation WHERE finding_type = 'erp-invoice-without-billing'),
           (SELECT count(*) FROM _rc_invoice WHERE source_system = 'erp' AND doc_date <= $as_of - CAST($late AS INTEGER)),
           'ratio', 3
    UNION ALL
    SELECT 'billing->erp', 'invoice', 'lost_record_rate',
           (SELECT count(*) FROM reconciliation WHERE finding_type = 'billing-invoice-without-erp'),
           CASE WHEN EXISTS (SELECT 1 FROM _rc_invoice WHERE source_system = 'erp')
                THEN (SELECT count(*) FROM _rc_invoice WHERE source_system = 'billing' AND doc_date <= $as_of - CAST($late AS INTEGER))
                ELSE 0 END,
           'ratio', 4
    UNION ALL
    SELECT 'erp', 'invoice', 'erp_duplicate_invoices',
           (SELECT count(*) FROM reconciliation WHERE finding_type = 'erp-invoice-duplicate'),
           (SELECT count(*) FROM _rc_invoice WHERE source_system = 'erp'), 'ratio', 6
    UNION ALL
    SELECT 'erp<->billing', 'invoice', 'amount_mismatches',
           (SELECT count(*) FROM reconciliation WHERE finding_type = 'amount-mismatch'),
           (SELECT count(*) FROM _rc_erp_link), 'invoices', 5
) ORDER BY o""",
        {
            "run_id": run_id,
            "as_of": as_of,
            "late": st.late_arrival_days,
            "window": st.deal_invoice_window_days,
        },
    )
    # amount_mismatches: value is the count (not a rate); keep numerator/denominator
    _exec(
        con,
        f"UPDATE metric SET value = numerator WHERE run_id = ? AND stage = '{STAGE}' "
        "AND name = 'amount_mismatches'",
        [run_id],
    )
    _exec(
        con,
        f"""INSERT INTO metric
SELECT $run_id, '{STAGE}', NULL, NULL, 'late_arrivals_pending', CAST(n AS DOUBLE), NULL, NULL, 'records'
FROM (SELECT
    (SELECT count(*) FROM _rc_invoice WHERE doc_date > $as_of - CAST($late AS INTEGER))
  + (SELECT count(*) FROM _rc_deal d WHERE d.close_date + CAST($window AS INTEGER) > $as_of - CAST($late AS INTEGER)
       AND NOT EXISTS (SELECT 1 FROM _rc_deal_link k WHERE k.deal_id = d.source_id AND k.deal_vendor = d.vendor)) AS n)""",
        {
            "run_id": run_id,
            "as_of": as_of,
            "late": st.late_arrival_days,
            "window": st.deal_invoice_window_days,
        },
    )
