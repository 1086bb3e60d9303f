"""The SLA stage: read every stage's tables, compute the SLA metrics, judge them against the
thresholds of `romirecon.yaml` (`sla:`) and the run history, and return one `Report`.

Metrics computed here (source_name / entity NULL = the aggregate over that dimension):

| name | scope | definition |
|---|---|---|
| `duplicate_rate` | source+entity, entity | (rows - distinct golden ids) / rows, within each source; the entity figure sums the sources (a CRM contact and its billing customer are a link, not a duplicate) |
| `duplicate_groups` | same | golden ids with more than one row in a source |
| `duplicate_rows` | same | rows in those groups (survivors included) |
| `duplicate_rate_cross_source` | entity | (rows - distinct golden ids across all sources) / rows: counts a CRM contact and its billing customer as one entity; no default threshold |
| `rows_read`, `rows_staged`, `rows_quarantined` | source, run | from `ingest_stats` |
| `quarantine_rate` | source, run | distinct quarantined records / rows read |
| `quarantine_rate_by_reason` | source (label = reason) | distinct records quarantined for that reason / rows read |
| `fx_gaps`, `amount_mismatches`, `lost_records` | run | count of `fx-rate-missing`, `amount-mismatch` and lost-record findings, only when no stage wrote the metric itself (fx and reconcile do, with their scope and denominator) |
| `lost_record_rate` | as written by the reconcile stage | |
| `sync_latency_p50_seconds`, `sync_latency_p95_seconds` | target source+entity | per golden entity with a CRM record and an ERP/billing record: the target's first `created_at` minus the latest CRM `updated_at`/`created_at` not after it; denominator = entities measured |
| `freshness_seconds` | source+entity | run time minus the newest `created_at`/`updated_at` (or `date`) |
| `stage_*` | label = stage | written by `romirecon.obs.stage`: duration, rows in/out, rows/s, peak RSS, CPU |

Every other row of the `metric` table is carried into the report and can be given thresholds.

The run is `inconclusive` (exit 4) when the `finding` table holds an error-severity finding coded
`input-missing`, `input-empty` or `input-stale`, or when `ingest_stats` reads zero rows in total.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from romirecon import __version__
from romirecon.exitcodes import ConfigError
from romirecon.report.model import (
    FAIL_ON,
    Check,
    Cluster,
    ClusterMember,
    Finding,
    InputFile,
    Metric,
    QuarantineReason,
    Report,
    overall_status,
)
from romirecon.report.thresholds import (
    DEFAULT_ANOMALY,
    apply_rules,
    check_id,
    fmt_value,
    rules_from_config,
)
from romirecon.sqlutil import ident, literal

if TYPE_CHECKING:
    from romirecon.config import Project

INCONCLUSIVE_CODES = ("input-missing", "input-empty", "input-stale")
SAMPLE_IDS = 10
FINDINGS_PER_CODE = 5
TOP_CLUSTERS = 10
CLUSTER_MEMBERS = 20
HISTORY_RUNS = 30
CHART_METRICS = [
    "duplicate_rate",
    "quarantine_rate",
    "lost_record_rate",
    "fx_gaps",
    "amount_mismatches",
    "sync_latency_p95_seconds",
    "rows_read",
]
# finding codes behind a metric: (metric, scope source or None) -> codes. The reconcile stage
# scopes lost_record_rate by system pair ('billing->crm', ...) and writes one code per pair.
LOST_CODES = {
    "billing->crm": ("lost-crm-record",),
    "crm->billing": ("deal-without-invoice",),
    "erp->billing": ("erp-invoice-without-billing",),
    "billing->erp": ("billing-invoice-without-erp",),
}
FINDING_CODES: dict[str, tuple[str, ...]] = {
    "fx_gaps": ("fx-rate-missing",),
    "amount_mismatches": ("amount-mismatch",),
    "lost_records": tuple(c for cs in LOST_CODES.values() for c in cs),
    "lost_record_rate": tuple(c for cs in LOST_CODES.values() for c in cs),
}
EXPLANATION_COLUMNS = ("explanation", "explain", "evidence")


# ---------------------------------------------------------------- catalog helpers


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    }


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = ? AND table_schema = current_schema() ORDER BY ordinal_position",
            [table],
        ).fetchall()
    ]


def _run_filter(cols: list[str], alias: str = "") -> str:
    """` AND run_id = ?` when the table keeps several runs (its rows carry a run id)."""
    return f" AND {alias}run_id = ?" if "run_id" in cols else ""


def _params(cols: list[str], run_id: str) -> list[Any]:
    return [run_id] if "run_id" in cols else []


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- SQL builders (pure)


def stage_metrics_sql() -> str:
    return """
    SELECT stage, name, source_name, entity, value, numerator, denominator, unit
    FROM metric WHERE run_id = ?
    ORDER BY name, source_name NULLS FIRST, entity NULLS FIRST, stage
    """


def ingest_stats_sql(has_sha: bool) -> str:
    sha = "file_sha256" if has_sha else "NULL"
    return f"""
    SELECT source_name, file, {sha} AS sha256, rows_read, rows_staged, rows_quarantined
    FROM ingest_stats ORDER BY source_name, file
    """


def _quarantine_rows_sql(cols: list[str], run_filter: str) -> str:
    """One row per (quarantined record, reason). A record is (source, file, row, line): rows the
    reader rejected have no row number but a line. With a `reasons` list (every failed check as
    `reason` or `reason:column`) each reason counts; otherwise the single `reason` column."""
    line = "source_line" if "source_line" in cols else "NULL::BIGINT"
    if "reasons" in cols:
        reason = "split_part(unnest(coalesce(nullif(reasons, []), [reason])), ':', 1)"
    else:
        reason = "reason"
    col = "column_name" if "column_name" in cols else "NULL::VARCHAR"
    return f"""
        SELECT DISTINCT source_name, source_file, source_row, {line} AS source_line,
               {reason} AS reason, {col} AS column_name
        FROM quarantine WHERE TRUE{run_filter}
    """


def quarantine_counts_sql(cols: list[str], run_filter: str) -> str:
    """Distinct quarantined records per source and per (source, reason): a record failing two
    checks counts once in the source's rate and once under each reason."""
    return f"""
    WITH q AS ({_quarantine_rows_sql(cols, run_filter)})
    SELECT source_name, reason, grouping(reason) AS all_reasons,
           count(DISTINCT (source_file, source_row, source_line)) AS n
    FROM q
    GROUP BY GROUPING SETS ((source_name, reason), (source_name))
    ORDER BY source_name, all_reasons DESC, reason NULLS FIRST
    """


def quarantine_reasons_sql(cols: list[str], run_filter: str) -> str:
    return f"""
    WITH q AS ({_quarantine_rows_sql(cols, run_filter)})
    SELECT source_name, reason, min(column_name) AS col,
           count(DISTINCT (source_file, source_row, source_line)) AS n
    FROM q
    GROUP BY source_name, reason
    ORDER BY n DESC, source_name, reason
    """


def _golden(alias: str = "") -> str:
    """The golden id as text; a record without one is its own entity."""
    a = f"{alias}." if alias else ""
    return f"coalesce({a}golden_id::VARCHAR, {a}source_name || ':' || {a}source_id::VARCHAR)"


def per_sql(xref: str, run_filter: str) -> str:
    """Rows per (entity, source, golden id): the one aggregate over the whole xref that the
    duplicate metrics, samples and top clusters all start from."""
    return f"""
        SELECT entity, source_name, {_golden()} AS g, count(*) AS n
        FROM {ident(xref)} WHERE TRUE{run_filter}
        GROUP BY entity, source_name, g"""


def _per(xref: str, run_filter: str, per: str | None) -> str:
    """`per` (a table holding `per_sql`'s rows) when given, else the aggregate itself."""
    return f"SELECT * FROM {ident(per)}" if per else per_sql(xref, run_filter)


def duplicate_stats_sql(xref: str, run_filter: str, per: str | None = None) -> str:
    """Per (entity, source) and per entity: rows, distinct golden ids, groups, rows involved."""
    return f"""
    WITH per AS ({_per(xref, run_filter, per)})
    SELECT entity, source_name, sum(n)::BIGINT AS rows, count(*)::BIGINT AS goldens,
           count(*) FILTER (WHERE n > 1)::BIGINT AS groups,
           coalesce(sum(n) FILTER (WHERE n > 1), 0)::BIGINT AS rows_involved
    FROM per
    GROUP BY GROUPING SETS ((entity, source_name), (entity))
    ORDER BY entity, source_name NULLS FIRST, GROUPING(source_name) DESC
    """


def duplicate_samples_sql(
    xref: str, run_filter: str, has_survivor: bool, per: str | None = None
) -> str:
    """Up to N ids of non-surviving duplicate rows per (entity, source), in one pass: the
    duplicate groups are found by aggregation, and only their (few) rows are windowed.
    Parameters: run id (if filtered), N."""
    # the record kept in a within-source group: the cluster's survivor if it is in the group,
    # else the first id (the survivor may live in another source)
    order = "x.is_survivor DESC NULLS LAST, x.source_id" if has_survivor else "x.source_id"
    keep = f"row_number() OVER (PARTITION BY x.entity, x.source_name, x.g ORDER BY {order}) = 1"
    grp = (
        f"SELECT entity, source_name, g FROM {ident(per)} WHERE n > 1"
        if per
        else "SELECT entity, source_name, g FROM x GROUP BY ALL HAVING count(*) > 1"
    )
    return f"""
    WITH x AS (
        SELECT entity, source_name, source_id::VARCHAR AS source_id, {_golden()} AS g
               {", is_survivor" if has_survivor else ""}
        FROM {ident(xref)} WHERE TRUE{run_filter}
    ),
    grp AS ({grp}),
    d AS (
        SELECT x.entity, x.source_name, x.source_id, {keep} AS keep
        FROM x JOIN grp ON x.entity = grp.entity AND x.source_name = grp.source_name
                       AND x.g = grp.g
    )
    SELECT entity, source_name, source_name || ':' || source_id AS id FROM d
    WHERE NOT keep
    QUALIFY row_number() OVER (PARTITION BY entity, source_name ORDER BY source_id) <= ?
    ORDER BY entity, source_name, source_id
    """


def top_clusters_sql(
    xref: str,
    run_filter: str,
    expl: str | None,
    survivor: bool,
    expl_table: str | None = None,
    per: str | None = None,
) -> str:
    """The golden entities with the most within-source duplicates, up to N members each. The explanation
    comes from the xref's own column `expl`, else from `expl_table` (the dedup stage's
    `duplicates`: one row per non-surviving record) joined on (entity, source, id) for the
    members shown only.

    Sizes come from per-(entity, golden id, source) counts, and only for golden ids where some
    source holds two records (or a record has no source): the others have no surplus. That
    replaces a count(DISTINCT source_name) over every row of the run."""
    own = f"left({ident(expl)}::VARCHAR, 400)" if expl else "NULL::VARCHAR"
    per_x = "SELECT entity, g, source_name, count(*) AS n FROM x GROUP BY ALL"
    s = "is_survivor" if survivor else "NULL"
    join, e = "", "m.expl"
    if expl_table and not expl:
        join = f"""
    LEFT JOIN (
        SELECT d.entity, d.source_name, d.source_id::VARCHAR AS source_id,
               left(min(d.explanation::VARCHAR), 400) AS expl
        FROM {ident(expl_table)} d
        SEMI JOIN top ON top.entity = d.entity AND top.source_name = d.source_name
                     AND top.source_id = d.source_id::VARCHAR
        GROUP BY ALL
    ) d ON d.entity = m.entity AND d.source_name = m.source_name AND d.source_id = m.source_id"""
        e = "d.expl"
    return f"""
    WITH x AS (
        SELECT entity, {_golden()} AS g, source_name, source_id::VARCHAR AS source_id,
               rule::VARCHAR AS rule, match_probability::DOUBLE AS p, {s} AS survivor,
               {own} AS expl
        FROM {ident(xref)} WHERE TRUE{run_filter}
    ),
    per AS ({f"SELECT * FROM {ident(per)}" if per else per_x}),
    sizes AS (
        -- a cluster is a duplicate cluster when some source holds two of its records; rank by
        -- those surplus records (a CRM contact plus its billing customer is a link, not a dup)
        SELECT entity, g, sum(n) AS size,
               sum(n) - count(*) FILTER (WHERE source_name IS NOT NULL) AS surplus
        FROM per
        WHERE (entity, g) IN (SELECT (entity, g) FROM per WHERE n > 1 OR source_name IS NULL)
        GROUP BY entity, g
        HAVING surplus > 0
        ORDER BY surplus DESC, size DESC, entity, g LIMIT ?
    ),
    top AS (
        SELECT * FROM (
            -- rule, p and expl break the tie of two records with one source and id (a re-import):
            -- rows equal in every shown column may swap places, which does not show
            SELECT x.*, sizes.size, sizes.surplus,
                   row_number() OVER (PARTITION BY x.entity, x.g
                                      ORDER BY x.survivor DESC NULLS LAST, x.source_name, x.source_id,
                                               x.rule, x.p, x.expl) AS k
            FROM x JOIN sizes USING (entity, g)
        ) WHERE k <= ?
    )
    SELECT m.entity, m.g, m.size, m.source_name, m.source_id, m.rule, m.p, m.survivor, {e}
    FROM top m{join}
    ORDER BY m.surplus DESC, m.size DESC, m.entity, m.g, m.k
    """


def cross_source_sql(xref: str, run_filter: str, per: str | None = None) -> str:
    """Per entity: rows and distinct golden ids across all sources."""
    return f"""
    SELECT entity, sum(n)::BIGINT AS rows, count(DISTINCT g) AS goldens
    FROM ({_per(xref, run_filter, per)})
    GROUP BY entity ORDER BY entity
    """


def finding_counts_sql() -> str:
    return """
    SELECT code, count(*) FROM finding WHERE run_id = ? GROUP BY code ORDER BY code
    """


def finding_sample_sql() -> str:
    return """
    SELECT stage, code, severity, source_name, entity, record_id, other_id, message
    FROM (
        SELECT *, row_number() OVER (
            PARTITION BY code
            ORDER BY CASE severity WHEN 'error' THEN 0 WHEN 'warn' THEN 1 ELSE 2 END,
                     source_name NULLS FIRST, record_id NULLS FIRST, other_id NULLS FIRST,
                     message NULLS FIRST, stage
        ) AS k
        FROM finding WHERE run_id = ?
    ) WHERE k <= ?
    ORDER BY code, k
    """


def finding_ids_sql(n_codes: int) -> str:
    """Ids of findings with one of `n_codes` codes (record id, plus `/other id` when the finding
    names two records, e.g. an ERP invoice and its billing invoice, or a currency and a day).
    Parameters: run id, the codes, the limit."""
    marks = ", ".join("?" for _ in range(n_codes))
    return f"""
    SELECT DISTINCT record_id || coalesce('/' || other_id, '') AS id FROM finding
    WHERE run_id = ? AND code IN ({marks}) AND record_id IS NOT NULL
    ORDER BY id LIMIT ?
    """


def sync_latency_sql(xref: str, stg: str, run_filter: str) -> str:
    """Per ERP/billing target source: p50/p95 seconds from the latest CRM change (updated_at,
    else created_at) not after the target record's creation, over golden entities present in
    both. Parameter: the entity (then the run id if filtered)."""
    return f"""
    WITH x AS (
        SELECT {_golden("x")} AS g, s.source_system, s.source_name,
               s.created_at AS c, s.updated_at AS u
        FROM {ident(xref)} x
        JOIN {ident(stg)} s
          ON s.source_name = x.source_name AND s.source_id::VARCHAR = x.source_id::VARCHAR
        WHERE x.entity = ?{run_filter}
    ),
    crm AS (SELECT g, c, u FROM x WHERE source_system = 'crm'),
    tgt AS (
        SELECT g, source_name, min(c) AS t1 FROM x
        WHERE source_system IN ('erp', 'billing') AND c IS NOT NULL
        GROUP BY g, source_name
    ),
    pair AS (
        SELECT tgt.source_name, tgt.g, tgt.t1,
               max(CASE WHEN crm.u <= tgt.t1 THEN crm.u WHEN crm.c <= tgt.t1 THEN crm.c END) AS t0
        FROM tgt JOIN crm USING (g)
        GROUP BY tgt.source_name, tgt.g, tgt.t1
    )
    SELECT source_name, count(t0) AS n,
           quantile_cont(epoch(t1) - epoch(t0), 0.5) AS p50,
           quantile_cont(epoch(t1) - epoch(t0), 0.95) AS p95
    FROM pair
    GROUP BY source_name
    ORDER BY source_name
    """


def freshness_sql(stg: str, ts_cols: list[str]) -> str:
    newest = ", ".join(f"max({ident(c)})::TIMESTAMP" for c in ts_cols)
    expr = f"greatest({newest})" if len(ts_cols) > 1 else newest
    return f"""
    SELECT source_name, {expr} AS newest FROM {ident(stg)}
    GROUP BY source_name ORDER BY source_name
    """


def source_entities_sql(stg_tables: list[str]) -> str:
    parts = [
        f"SELECT DISTINCT source_name, {literal(t[4:])} AS entity FROM {ident(t)}"
        for t in stg_tables
    ]
    return " UNION ALL ".join(parts) + " ORDER BY source_name, entity"


# ---------------------------------------------------------------- collectors


def _entity_tables(tables: set[str]) -> dict[str, str]:
    from romirecon.model import ENTITIES

    return {e: f"stg_{e}" for e in ENTITIES if f"stg_{e}" in tables}


XREF_VIEW = "_sla_xref"
# per_sql over the view, materialized once: four reports read it instead of four scans of the xref
PER_TABLE = "_sla_per"


def _per_table(table: str) -> str | None:
    return PER_TABLE if table == XREF_VIEW else None


def xref_view_sql(table: str, cols: list[str], run_id: str) -> str:
    """One normalized view over the dedup output, whatever its optional columns: text ids, a
    record key that is never NULL when the row has a file position, a golden id for every row
    (a record without one is its own entity), NULL for absent columns, this run's rows only."""
    key = "source_id::VARCHAR"
    if {"source_file", "source_row"} <= set(cols):
        key = f"coalesce({key}, source_file || ':' || source_row::VARCHAR)"
    expl = next((c for c in EXPLANATION_COLUMNS if c in cols), None)

    def opt(name: str, cast: str) -> str:
        return f"{ident(name)}::{cast}" if name in cols else f"NULL::{cast}"

    where = f"run_id = {literal(run_id)}" if "run_id" in cols else "TRUE"
    return f"""
    CREATE OR REPLACE TEMP VIEW {ident(XREF_VIEW)} AS
    SELECT entity::VARCHAR AS entity, source_name::VARCHAR AS source_name, {key} AS source_id,
           coalesce(golden_id::VARCHAR, source_name || ':' || {key}) AS golden_id,
           {opt("rule", "VARCHAR")} AS rule,
           {opt("match_probability", "DOUBLE")} AS match_probability,
           {opt("is_survivor", "BOOLEAN")} AS is_survivor,
           {f"{ident(expl)}::VARCHAR" if expl else "NULL::VARCHAR"} AS explanation
    FROM {ident(table)} WHERE {where}
    """


def _xref_table(
    con: duckdb.DuckDBPyConnection, tables: set[str], run_id: str
) -> tuple[str, list[str]] | None:
    """The normalized xref view and the optional columns the source table really has."""
    for t in ("entity_xref", "duplicates"):
        if t in tables:
            cols = _columns(con, t)
            if {"entity", "source_name", "source_id", "golden_id"} <= set(cols):
                con.execute(xref_view_sql(t, cols, run_id))
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE {ident(PER_TABLE)} AS {per_sql(XREF_VIEW, '')}"
                )
                present = ["entity", "source_name", "source_id", "golden_id", "rule",
                           "match_probability"]  # fmt: skip
                if "is_survivor" in cols:
                    present.append("is_survivor")
                if any(c in cols for c in EXPLANATION_COLUMNS):
                    present.append("explanation")
                return XREF_VIEW, present
    return None


def _source_entities(
    con: duckdb.DuckDBPyConnection, tables: set[str], given: dict[str, str] | None
) -> dict[str, str]:
    if given is not None:
        return dict(given)
    if "ingest_stats" in tables and "entity" in _columns(con, "ingest_stats"):
        rows = con.execute(
            "SELECT DISTINCT source_name, entity FROM ingest_stats ORDER BY source_name, entity"
        ).fetchall()
        return {src: ent for src, ent in reversed(rows)}
    stg = [t for t in _entity_tables(tables).values() if "source_name" in _columns(con, t)]
    if not stg:
        return {}
    out: dict[str, str] = {}
    for src, ent in con.execute(source_entities_sql(stg)).fetchall():
        out.setdefault(src, ent)
    return out


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def collect_inputs(con: duckdb.DuckDBPyConnection, tables: set[str]) -> list[InputFile]:
    if "ingest_stats" not in tables:
        return []
    has_sha = "file_sha256" in _columns(con, "ingest_stats")
    return [
        InputFile(r[0], r[1], r[2], r[3], r[4], r[5])
        for r in con.execute(ingest_stats_sql(has_sha)).fetchall()
    ]


def collect_ingest_metrics(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    tables: set[str],
    inputs: list[InputFile],
    entities: dict[str, str],
) -> list[Metric]:
    if "ingest_stats" not in tables:
        return []
    read: dict[str, int] = {}
    staged: dict[str, int] = {}
    quarantined: dict[str, int] = {}
    for f in inputs:
        read[f.source_name] = read.get(f.source_name, 0) + (f.rows_read or 0)
        staged[f.source_name] = staged.get(f.source_name, 0) + (f.rows_staged or 0)
        quarantined[f.source_name] = quarantined.get(f.source_name, 0) + (f.rows_quarantined or 0)
    # distinct quarantined records per source / per reason from the quarantine table, if present
    by_reason: dict[tuple[str, str], int] = {}
    if "quarantine" in tables:
        cols = _columns(con, "quarantine")
        for src, reason, all_reasons, n in con.execute(
            quarantine_counts_sql(cols, _run_filter(cols)), _params(cols, run_id)
        ).fetchall():
            if all_reasons:
                quarantined[src] = int(n)
            else:
                by_reason[(src, reason)] = int(n)
    out: list[Metric] = []
    for src in sorted(read):
        ent = entities.get(src)
        out += [
            Metric("rows_read", read[src], source_name=src, entity=ent, unit="rows"),
            Metric("rows_staged", staged[src], source_name=src, entity=ent, unit="rows"),
            Metric(
                "rows_quarantined",
                quarantined.get(src, 0),
                source_name=src,
                entity=ent,
                unit="rows",
            ),
            Metric(
                "quarantine_rate",
                _ratio(quarantined.get(src, 0), read[src]),
                source_name=src,
                entity=ent,
                numerator=quarantined.get(src, 0),
                denominator=read[src],
                unit="ratio",
            ),
        ]
    for (src, reason), n in sorted(by_reason.items()):
        den = read.get(src, 0)
        out.append(
            Metric(
                "quarantine_rate_by_reason",
                _ratio(n, den),
                source_name=src,
                entity=entities.get(src),
                label=reason,
                numerator=n,
                denominator=den,
                unit="ratio",
            )
        )
    total_read = sum(read.values())
    total_q = sum(quarantined.get(s, 0) for s in read)
    out += [
        Metric("rows_read", total_read, unit="rows"),
        Metric(
            "quarantine_rate",
            _ratio(total_q, total_read),
            numerator=total_q,
            denominator=total_read,
            unit="ratio",
        ),
    ]
    return out


def collect_duplicate_metrics(
    con: duckdb.DuckDBPyConnection, run_id: str, xref: tuple[str, list[str]] | None
) -> list[Metric]:
    if xref is None:
        return []
    table, cols = xref
    out: list[Metric] = []
    for ent, src, rows, goldens, groups, involved in con.execute(
        duplicate_stats_sql(table, _run_filter(cols), _per_table(table)), _params(cols, run_id)
    ).fetchall():
        dups = rows - goldens
        out += [
            Metric(
                "duplicate_rate",
                _ratio(dups, rows),
                stage="dedup",
                source_name=src,
                entity=ent,
                numerator=dups,
                denominator=rows,
                unit="ratio",
            ),
            Metric(
                "duplicate_groups",
                groups,
                stage="dedup",
                source_name=src,
                entity=ent,
                unit="groups",
            ),
            Metric(
                "duplicate_rows",
                involved,
                stage="dedup",
                source_name=src,
                entity=ent,
                numerator=involved,
                denominator=rows,
                unit="rows",
            ),
        ]
    for ent, rows, goldens in con.execute(
        cross_source_sql(table, _run_filter(cols), _per_table(table)), _params(cols, run_id)
    ).fetchall():
        out.append(
            Metric(
                "duplicate_rate_cross_source",
                _ratio(rows - goldens, rows),
                stage="dedup",
                entity=ent,
                numerator=rows - goldens,
                denominator=rows,
                unit="ratio",
            )
        )
    return out


def collect_finding_metrics(
    con: duckdb.DuckDBPyConnection, run_id: str, tables: set[str], written: set[str]
) -> list[Metric]:
    """Counts of findings for metrics no stage wrote itself (names in `written` are skipped:
    a stage's own figure carries its scope and denominator)."""
    if "finding" not in tables:
        return []
    counts = dict(con.execute(finding_counts_sql(), [run_id]).fetchall())
    out = []
    for name in ("fx_gaps", "amount_mismatches", "lost_records"):
        if name in written or (name == "lost_records" and "lost_record_rate" in written):
            continue
        out.append(Metric(name, sum(counts.get(c, 0) for c in FINDING_CODES[name]), unit="count"))
    return out


def collect_sync_latency(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    tables: set[str],
    xref: tuple[str, list[str]] | None,
) -> list[Metric]:
    if xref is None:
        return []
    table, cols = xref
    out: list[Metric] = []
    for ent, stg in _entity_tables(tables).items():
        need = {"source_name", "source_id", "source_system", "created_at", "updated_at"}
        if not need <= set(_columns(con, stg)):
            continue
        # a latency needs CRM records and ERP/billing records of the entity; without both
        # the query finds no pair, after joining every record to the xref (invoices at 1M
        # customers: 3.9 s for no rows, this check 0.04 s)
        crm, target = con.execute(
            "SELECT coalesce(bool_or(source_system = 'crm'), false), "
            "coalesce(bool_or(source_system IN ('erp', 'billing')), false) "
            f"FROM {ident(stg)}"
        ).fetchone()
        if not (crm and target):
            continue
        rows = con.execute(
            sync_latency_sql(table, stg, _run_filter(cols, "x.")), [ent, *_params(cols, run_id)]
        ).fetchall()
        for src, n, p50, p95 in rows:
            for name, v in (("sync_latency_p50_seconds", p50), ("sync_latency_p95_seconds", p95)):
                out.append(
                    Metric(
                        name,
                        v,
                        stage="sla",
                        source_name=src,
                        entity=ent,
                        denominator=n,
                        unit="seconds",
                    )
                )
    return out


def collect_freshness(
    con: duckdb.DuckDBPyConnection, tables: set[str], now: datetime
) -> list[Metric]:
    out: list[Metric] = []
    naive_now = now.astimezone(UTC).replace(tzinfo=None)
    for ent, stg in _entity_tables(tables).items():
        cols = set(_columns(con, stg))
        ts = [c for c in ("created_at", "updated_at") if c in cols] or (
            ["date"] if "date" in cols else []
        )
        if not ts or "source_name" not in cols:
            continue
        for src, newest in con.execute(freshness_sql(stg, ts)).fetchall():
            if newest is None or src is None:
                continue
            age = (naive_now - newest).total_seconds()
            out.append(
                Metric("freshness_seconds", age, source_name=src, entity=ent, unit="seconds")
            )
    return out


def collect_stage_metrics(
    con: duckdb.DuckDBPyConnection, run_id: str, tables: set[str]
) -> list[Metric]:
    if "metric" not in tables:
        return []
    out = []
    for stage, name, src, ent, value, num, den, unit in con.execute(
        stage_metrics_sql(), [run_id]
    ).fetchall():
        out.append(
            Metric(
                name,
                value,
                stage=stage or "",
                source_name=src,
                entity=ent,
                label=stage if name.startswith("stage_") else None,
                numerator=num,
                denominator=den,
                unit=unit or "",
            )
        )
    return out


def collect_findings(
    con: duckdb.DuckDBPyConnection, run_id: str, tables: set[str]
) -> tuple[list[Finding], dict[str, int]]:
    if "finding" not in tables:
        return [], {}
    totals = {c: int(n) for c, n in con.execute(finding_counts_sql(), [run_id]).fetchall()}
    sample = [
        Finding(*r)
        for r in con.execute(finding_sample_sql(), [run_id, FINDINGS_PER_CODE]).fetchall()
    ]
    return sample, totals


def collect_clusters(
    con: duckdb.DuckDBPyConnection, run_id: str, xref: tuple[str, list[str]] | None
) -> list[Cluster]:
    if xref is None:
        return []
    table, cols = xref
    expl = "explanation" if "explanation" in cols else None
    expl_table = None
    if not expl:
        dcols = set(_columns(con, "duplicates"))
        if {"entity", "source_name", "source_id", "explanation"} <= dcols:
            expl_table = "duplicates"
    sql = top_clusters_sql(
        table, _run_filter(cols), expl, "is_survivor" in cols, expl_table, _per_table(table)
    )
    rows = con.execute(sql, [*_params(cols, run_id), TOP_CLUSTERS, CLUSTER_MEMBERS]).fetchall()
    out: list[Cluster] = []
    for ent, g, size, src, sid, rule, p, surv, ex in rows:
        if not out or (out[-1].entity, out[-1].golden_id) != (ent, g):
            out.append(Cluster(ent, g, int(size), []))
        out[-1].members.append(ClusterMember(src, sid, rule, p, surv, ex))
    return out


def collect_quarantine_reasons(
    con: duckdb.DuckDBPyConnection, run_id: str, tables: set[str]
) -> list[QuarantineReason]:
    if "quarantine" not in tables:
        return []
    cols = _columns(con, "quarantine")
    return [
        QuarantineReason(src, reason, col, int(n))
        for src, reason, col, n in con.execute(
            quarantine_reasons_sql(cols, _run_filter(cols)), _params(cols, run_id)
        ).fetchall()
    ]


# ---------------------------------------------------------------- samples, anomalies


def sample_ids(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    tables: set[str],
    xref: tuple[str, list[str]] | None,
    check: Check,
    cache: dict[tuple[str, ...], Any] | None = None,
) -> list[str]:
    """Ids of records behind a breached check (at most SAMPLE_IDS, sorted). `cache` shares one
    duplicate scan between the checks of a run."""
    cache = {} if cache is None else cache
    src, ent = check.source_name, check.entity
    if check.metric.startswith("duplicate_") and xref is not None:
        key = ("duplicates",)
        if key not in cache:
            table, cols = xref
            sql = duplicate_samples_sql(
                table, _run_filter(cols), "is_survivor" in cols, _per_table(table)
            )
            cache[key] = con.execute(sql, [*_params(cols, run_id), SAMPLE_IDS]).fetchall()
        rows = [
            (s_, i)
            for e_, s_, i in cache[key]
            if (ent is None or e_ == ent) and (src is None or s_ == src)
        ]
        return [i for _, i in sorted(r for r in rows if r[1] is not None)[:SAMPLE_IDS]]
    if check.metric.startswith("quarantine_rate") and "quarantine" in tables:
        cols = _columns(con, "quarantine")
        sql = f"""
            WITH q AS ({_quarantine_rows_sql(cols, _run_filter(cols))})
            SELECT DISTINCT source_name || ':' || source_file || ':'
                   || coalesce(source_row::VARCHAR, 'line ' || source_line::VARCHAR),
                   source_name, source_file, source_row, source_line
            FROM q
            WHERE (? IS NULL OR source_name = ?) AND (? IS NULL OR reason = ?)
            ORDER BY source_name, source_file, source_row NULLS LAST, source_line NULLS LAST
            LIMIT ?
        """
        label = check.label
        params = [*_params(cols, run_id), src, src, label, label, SAMPLE_IDS]
        return [r[0] for r in con.execute(sql, params).fetchall() if r[0] is not None]
    codes = FINDING_CODES.get(check.metric)
    if check.metric == "lost_record_rate" and src in LOST_CODES:
        codes = LOST_CODES[src]
    if codes and "finding" in tables:
        params = [run_id, *codes, SAMPLE_IDS]
        rows = con.execute(finding_ids_sql(len(codes)), params).fetchall()
        return [r[0] for r in rows if r[0] is not None]
    return []


def anomaly_checks(metrics: list[Metric], baselines: list[Any], cfg: dict[str, Any]) -> list[Check]:
    """A warning for each watched metric far from the median of its recent history:
    |x - median| > max(threshold * 1.4826 * MAD, floor, relative_floor * |median|)."""
    opts = {**DEFAULT_ANOMALY, **cfg}
    if not opts["enabled"]:
        return []
    floors = {**DEFAULT_ANOMALY["floors"], **(cfg.get("floors") or {})}
    watched = set(opts["metrics"])
    base = {(b.name, b.source_name, b.entity, b.label): b for b in baselines}
    out: list[Check] = []
    for m in metrics:
        b = base.get(m.key)
        if m.name not in watched or b is None or m.value is None or not math.isfinite(m.value):
            continue
        if b.runs < int(opts["min_runs"]):
            continue
        scale = 1.4826 * b.mad
        limit = max(
            float(opts["threshold"]) * scale,
            float(floors.get(m.name, opts["floor"])),
            float(opts["relative_floor"]) * abs(b.median),
        )
        dev = abs(m.value - b.median)
        if dev <= limit:
            continue
        z = dev / scale if scale else math.inf
        zs = f"robust z {z:.1f}" if math.isfinite(z) else "history constant"
        out.append(
            Check(
                id="anomaly:" + check_id(m.name, m.source_name, m.entity, m.label),
                metric=m.name,
                status="warn",
                observed=m.value,
                kind="anomaly",
                source_name=m.source_name,
                entity=m.entity,
                label=m.label,
                numerator=m.numerator,
                denominator=m.denominator,
                unit=m.unit,
                message=(
                    f"{fmt_value(m.value, m.unit)} is far from the median "
                    f"{fmt_value(b.median, m.unit)} of the last {b.runs} runs ({zs}; "
                    f"allowed deviation {fmt_value(limit, m.unit)})"
                ),
            )
        )
    return out


# ---------------------------------------------------------------- entry point


def _merge(*groups: list[Metric]) -> list[Metric]:
    """Later groups override earlier ones on the same (name, source, entity, label)."""
    merged: dict[tuple[Any, ...], Metric] = {}
    for g in groups:
        for m in g:
            merged[m.key] = m
    return sorted(
        merged.values(),
        key=lambda m: (m.name, m.source_name or "", m.entity or "", m.label or ""),
    )


def default_now() -> datetime:
    """The clock, or `SOURCE_DATE_EPOCH` when set (reproducible reports: same inputs and the same
    epoch give byte-identical files, stage timings aside)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return datetime.fromtimestamp(int(epoch), UTC)
        except (ValueError, OverflowError, OSError):
            raise ConfigError(f"SOURCE_DATE_EPOCH: '{epoch}' is not a Unix time") from None
    return datetime.now(UTC)


def _inconclusive(
    con: duckdb.DuckDBPyConnection, run_id: str, tables: set[str], inputs: list[InputFile]
) -> bool:
    """An input missing, empty or stale (reported by ingest as an error finding), or nothing read."""
    if inputs and sum(f.rows_read or 0 for f in inputs) == 0:
        return True
    if "finding" not in tables:
        return False
    marks = ", ".join("?" for _ in INCONCLUSIVE_CODES)
    row = con.execute(
        f"SELECT count(*) FROM finding WHERE run_id = ? AND severity = 'error' AND code IN ({marks})",
        [run_id, *INCONCLUSIVE_CODES],
    ).fetchone()
    return bool(row and row[0])


def _status_order(c: Check) -> tuple[int, str]:
    return ({"fail": 0, "warn": 1, "skipped": 3}.get(c.status, 2), c.id)


def evaluate(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    sla_config: dict[str, Any] | None,
    fail_on: str = "fail",
    *,
    project: str = "",
    started_at: datetime | None = None,
    now: datetime | None = None,
    sources: dict[str, str] | None = None,
    record_history: bool = True,
) -> Report:
    """Judge run `run_id`: compute metrics, apply thresholds and the anomaly check, append the
    run to the history tables (`sla_run`, `sla_history`) and return the report.

    `sources` maps source name -> entity (default: read from the `stg_<entity>` relations);
    `now` is the run's finish time (default: the clock), `started_at` its start."""
    if fail_on not in FAIL_ON:
        raise ConfigError(f"--fail-on: '{fail_on}' is not one of: {', '.join(FAIL_ON)}")
    from romirecon import history

    rules = rules_from_config(sla_config)
    anomaly_cfg = dict((sla_config or {}).get("anomaly") or {})
    now = now or default_now()
    tables = _tables(con)
    xref = _xref_table(con, tables, run_id)
    entities = _source_entities(con, tables, sources)
    inputs = collect_inputs(con, tables)
    stage_metrics = collect_stage_metrics(con, run_id, tables)
    metrics = _merge(
        stage_metrics,
        collect_finding_metrics(con, run_id, tables, {m.name for m in stage_metrics}),
        collect_ingest_metrics(con, run_id, tables, inputs, entities),
        collect_duplicate_metrics(con, run_id, xref),
        collect_sync_latency(con, run_id, tables, xref),
        collect_freshness(con, tables, now),
    )
    checks = apply_rules(rules, metrics)
    window = int(anomaly_cfg.get("window", DEFAULT_ANOMALY["window"]))
    checks += anomaly_checks(metrics, history.baselines(con, run_id, window), anomaly_cfg)
    previous = history.previous_values(con, run_id)
    for c in checks:
        prev = previous.get((c.metric, c.source_name, c.entity, c.label))
        if prev is not None:
            c.previous = prev[1] if c.measure == "numerator" else prev[0]
    cache: dict[tuple[str, ...], Any] = {}
    for c in checks:
        if c.status in ("warn", "fail"):
            c.sample_record_ids = sample_ids(con, run_id, tables, xref, c, cache)
    checks.sort(key=_status_order)
    findings, totals = collect_findings(con, run_id, tables)

    status = overall_status(checks)
    if _inconclusive(con, run_id, tables, inputs):
        status = "inconclusive"

    report = Report(
        run_id=run_id,
        status=status,
        project=project,
        started_at=_iso(started_at) if started_at else None,
        finished_at=_iso(now),
        fail_on=fail_on,
        tool_version=__version__,
        inputs=inputs,
        checks=checks,
        metrics=metrics,
        findings=findings,
        findings_total=totals,
        top_clusters=collect_clusters(con, run_id, xref),
        quarantine_by_reason=collect_quarantine_reasons(con, run_id, tables),
    )
    con.execute(f"DROP TABLE IF EXISTS {ident(PER_TABLE)}")
    if record_history:
        history.record_run(
            con,
            run_id=run_id,
            project=project,
            started_at=report.started_at,
            finished_at=report.finished_at,
            status=status,
            metrics=metrics,
        )
        report.history = history.series(con, CHART_METRICS, limit=HISTORY_RUNS, include_run=run_id)
    return report


def run_and_write(
    con: duckdb.DuckDBPyConnection,
    project: Project,
    run_id: str,
    fail_on: str = "fail",
    *,
    started_at: datetime | None = None,
    now: datetime | None = None,
    out_dir: Path | None = None,
) -> tuple[Report, list[Path]]:
    """The pipeline's last step: evaluate with the project's `sla:` section and write the five
    report files into the output folder. Exit with `report.exit_code(fail_on)`."""
    from romirecon.report import write_all

    report = evaluate(
        con,
        run_id,
        project.section("sla"),
        fail_on,
        project=str(project.raw.get("name") or project.root.name),
        started_at=started_at,
        now=now,
        sources={s.name: s.entity for s in project.sources},
    )
    return report, write_all(report, out_dir or project.output_dir)
