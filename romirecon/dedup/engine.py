"""The whole linkage on any DuckDB relation with an id column and typed fields.

prepare (SQL) -> blocking (SQL) -> comparisons (rapidfuzz over pair arrays) -> u from random
pairs -> EM over distinct patterns -> scores -> connected components. Data crosses from DuckDB
to numpy once per step, as Arrow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import duckdb
import numpy as np

from romirecon.dedup import blocking, fs
from romirecon.dedup.cluster import GuardReport, cluster
from romirecon.dedup.comparisons import FieldData, compare_all, field_data
from romirecon.dedup.prepare import id_check_sql, record_table_sql
from romirecon.dedup.spec import BlockingRule, FieldSpec, Settings
from romirecon.exitcodes import ConfigError, InputError
from romirecon.sqlutil import ident

REC = "_dd_rec"


@dataclass
class LinkResult:
    n: int
    fields: list[FieldSpec]
    rules: list[BlockingRule]
    rule_stats: list[blocking.RuleStats]
    left: np.ndarray  # int32 rid
    right: np.ndarray
    rule: np.ndarray  # int8 index into rules
    levels: np.ndarray  # int8 fields × pairs
    weight: np.ndarray  # float64 match weight (bits)
    probability: np.ndarray
    labels: np.ndarray  # int64 cluster label (smallest member rid) per record
    model: fs.FSModel
    guard: GuardReport
    timings: dict[str, float] = field(default_factory=dict)
    rule_estimates: list[tuple[str, float]] = field(default_factory=list)
    sessions: list[fs.Session] = field(default_factory=list)


# id column types whose values can be the record numbers themselves (see prepare)
INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER")


def columns_of(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    rows = con.execute(f"DESCRIBE SELECT * FROM {ident(relation)}").fetchall()
    return {r[0]: str(r[1]) for r in rows}


def prepare(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    id_column: str,
    fields: list[FieldSpec],
    rules: list[BlockingRule] | None,
) -> tuple[int, dict[str, str]]:
    """Build the record table; returns (record count, column name -> record-table column)."""
    cols = columns_of(con, relation)
    if id_column not in cols:
        raise ConfigError(
            f"id column {id_column!r} not found", details=[f"available columns: {', '.join(cols)}"]
        )
    wanted = {c for r in rules or [] for c in r.columns()}
    unknown = sorted(wanted - set(cols))
    if unknown:
        raise ConfigError(
            f"blocking rule names unknown column(s) {', '.join(map(repr, unknown))}",
            details=[f"available columns: {', '.join(cols)}"],
        )
    nulls, dups, lo, hi, n = con.execute(id_check_sql(relation, id_column)).fetchall()[0]
    if nulls:
        raise InputError(f"id column {id_column!r} is empty in {nulls} record(s)")
    if dups:
        raise InputError(f"id column {id_column!r} repeats ids ({dups} surplus record(s))")
    field_cols = [f.column for f in fields]
    extra = sorted(wanted - set(field_cols))
    dense = cols[id_column] in INTEGER_TYPES and n > 0 and lo == 0 and hi == n - 1
    con.execute(record_table_sql(relation, id_column, fields, extra, REC, dense_ids=dense))
    column_of = {c: f"f{i}" for i, c in enumerate(field_cols)}
    column_of.update({c: f"b{i}" for i, c in enumerate(extra)})
    row = con.execute(f"SELECT count(*) FROM {ident(REC)}").fetchall()[0]
    return int(row[0] if row else 0), column_of


def load_fields(con: duckdb.DuckDBPyConnection, fields: list[FieldSpec]) -> list[FieldData]:
    cols = ", ".join(f"f{i}" for i in range(len(fields)))
    # the record table was written in rid order and scans keep insertion order; check, and sort
    # only if a scan ever came back in another order
    table = con.sql(f"SELECT rid, {cols} FROM {ident(REC)}").to_arrow_table()
    rid = table.column(0).to_numpy()
    if not np.array_equal(rid, np.arange(rid.size, dtype=rid.dtype)):
        table = table.take(np.argsort(rid, kind="stable"))
    table = table.drop_columns(["rid"])
    return [field_data(f, table.column(i)) for i, f in enumerate(fields)]


def link(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    id_column: str,
    fields: list[FieldSpec],
    rules: list[BlockingRule] | None = None,
    settings: Settings | None = None,
) -> LinkResult:
    """Dedupe `relation`: every record pair the blocking rules propose is scored; clusters are
    the connected components of pairs at or above `settings.threshold`."""
    s = settings or Settings()
    if not fields:
        raise ConfigError("no fields to compare: give at least one --field")
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    n, column_of = prepare(con, relation, id_column, fields, rules)
    t["prepare"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    estimates: list[tuple[str, float]] = []
    if not rules:
        rules, estimates = blocking.choose_rules(
            con, REC, n, [f.column for f in fields], column_of, s.max_block_size, s.rule_pair_budget
        )
        if not rules and n > 1:
            raise ConfigError(
                "could not choose blocking rules: every field is too common to block on; "
                "give --block COL1,COL2"
            )
    t["choose_rules"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    left, right, rule, stats, members = blocking.candidate_pairs(
        con, REC, n, rules, column_of, s.max_block_size
    )
    t["blocking"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    data = load_fields(con, fields)
    t["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    levels = compare_all(data, left, right)
    t["compare"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    u, u_pairs = fs.estimate_u(data, n, s.u_sample_pairs, s.seed)
    t["estimate_u"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pats, _counts, inverse = fs.patterns(levels)
    n_levels = [fd.n_levels for fd in data]
    field_index = {f.column: i for i, f in enumerate(fields)}
    blocked = [{field_index[c] for c in r.columns() if c in field_index} for r in rules]
    m, matches, sessions = fs.train_m(
        levels,
        members,
        rule,
        [r.label for r in rules],
        blocked,
        n_levels,
        u,
        s.em_max_iterations,
        s.em_tolerance,
    )
    total_pairs = n * (n - 1) / 2
    prior = min(0.5, matches / total_pairs) if total_pairs and matches > 0 else 1e-6
    lam = matches / left.size if left.size else 0.0
    iters = max((x.iterations for x in sessions), default=0)
    conv = all(x.converged for x in sessions if x.matches == x.matches)
    model = fs.FSModel(list(fields), m, u, prior, lam, iters, conv, u_pairs)
    t["em"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    weight = fs.pattern_weights(model, pats)[inverse] if pats.shape[0] else np.empty(0)
    weight = weight + fs.tf_adjustment(data, model, left, right, levels)
    prob = fs.probability(weight)
    t["score"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    labels, guard = cluster(
        n, left, right, weight, threshold_weight(s.threshold), s.max_cluster_size
    )
    t["cluster"] = time.perf_counter() - t0
    return LinkResult(
        n,
        list(fields),
        list(rules),
        stats,
        left,
        right,
        rule,
        levels,
        weight,
        prob,
        labels,
        model,
        guard,
        t,
        estimates,
        sessions,
    )


def threshold_weight(p: float) -> float:
    """The match weight whose probability is `p` (clustering compares weights, not floats
    rounded near 1)."""
    p = min(max(p, 1e-15), 1 - 1e-15)
    return float(np.log2(p / (1 - p)))
