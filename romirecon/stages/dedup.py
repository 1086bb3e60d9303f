"""Dedup stage: golden entities across sources and systems.

For every party entity (`stg_contact`, `stg_account`: CRM leads/contacts, ERP customers,
billing customers together) and every other `stg_<entity>` whose sources declare match keys:

1. exact evidence (SQL): whole-row repeats within a source, one source id twice in a source,
   merge pointers (MasterRecordId, ConvertedContactId, hs_merged_object_ids), declared keys on
   normalized values, a record carrying another system's id (`external_ref`);
2. fuzzy evidence (party entities): the `romirecon.dedup` engine over the normalized keys;
3. connected components over all evidence (giant-cluster guard on fuzzy links);
4. survivorship: live records before deleted/merged-away ones, then the configured rules
   (`source_priority`, `most_recent`, `most_complete`), then provenance;
5. golden ids kept stable across runs through `golden_id_map` (state database, never dropped).

Writes `entity_xref`, `duplicates`, `golden_contact`, `golden_account`, `golden_id_map` and
`metric` rows: `duplicate_rate`, `duplicate_groups`, `duplicate_rows` per source and per entity
(the entity line sums the sources, as the SLA stage defines it: a cross-system link is not a
duplicate), `cross_source_merge_rate` per entity ((rows - golden ids) / rows over all sources),
`oversized_clusters`, `guard_unclustered_records`, `blocking_skipped_records`; where fuzzy
matching ran, the block-size cap and what it did: `blocking_max_block_size`,
`blocking_largest_block`, `blocking_largest_scored_block`, `blocking_skipped_blocks`,
`blocking_candidate_pairs`.

Settings (the project file's `dedup:` section): `threshold` (0.9), `max_cluster_size` (1000),
`max_block_size` (5000), `source_priority` (list of source names, first wins, or a mapping name ->
rank), `survivorship` (list, default [source_priority, most_recent, most_complete]), `fuzzy`
(true), `seed`.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np

from romirecon.dedup import pipeline_sql as q
from romirecon.exitcodes import ConfigError
from romirecon.sqlutil import ident, literal

STAGE = "dedup"
PARTY = ("contact", "account")

# fuzzy comparison fields over the normalized keys of norm_<entity>
FUZZY_FIELDS: dict[str, list[tuple[str, str]]] = {
    "contact": [
        ("first_name_norm", "name"),
        ("last_name_norm", "name"),
        ("email_norm", "email"),
        ("phone_e164", "phone"),
        ("company_norm", "text"),
        ("street_norm", "address"),
        ("city_norm", "name"),
        ("postal_norm", "exact"),
    ],
    "account": [
        ("company_norm", "text"),
        ("domain", "exact"),
        ("phone_e164", "phone"),
        ("street_norm", "address"),
        ("city_norm", "name"),
        ("postal_norm", "exact"),
        ("country_norm", "exact"),
    ],
}

XREF_DDL = """CREATE OR REPLACE TEMP TABLE entity_xref (
    entity VARCHAR, source_name VARCHAR, source_system VARCHAR, source_id VARCHAR,
    source_file VARCHAR, source_row BIGINT, golden_id VARCHAR, rule VARCHAR,
    match_probability DOUBLE, is_survivor BOOLEAN, record_key VARCHAR)"""

DUPLICATES_DDL = """CREATE OR REPLACE TEMP TABLE duplicates (
    entity VARCHAR, source_name VARCHAR, source_system VARCHAR, source_id VARCHAR,
    source_file VARCHAR, source_row BIGINT, golden_id VARCHAR, rule VARCHAR,
    match_probability DOUBLE, matched_source_name VARCHAR, matched_source_id VARCHAR,
    survivor_source_name VARCHAR, survivor_source_id VARCHAR, explanation VARCHAR)"""

# One row per (entity, record_key): the stage writes each key once per run (GROUP BY, then the
# old rows of those keys deleted and the new ones appended). No PRIMARY KEY: its index made
# every insert several times slower (3M keys: 18 s with it, 4 s without) and keys are unique
# by construction.
MAP_DDL = """CREATE TABLE IF NOT EXISTS golden_id_map (
    entity VARCHAR, record_key VARCHAR, golden_id VARCHAR, first_run_id VARCHAR,
    last_run_id VARCHAR)"""


def ensure_map(con: duckdb.DuckDBPyConnection) -> None:
    """Create golden_id_map; a state database from before has it with a PRIMARY KEY: rebuilt
    once without it (same rows)."""
    con.execute(MAP_DDL)
    pk = con.execute(
        "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'golden_id_map' "
        "AND constraint_type = 'PRIMARY KEY'"
    ).fetchall()[0][0]
    if pk:
        con.execute("CREATE OR REPLACE TABLE golden_id_map AS SELECT * FROM golden_id_map")


# default_region and gmail_canonical belong to the normalize stage, configured in the same section
SETTING_KEYS = (
    "default_region",
    "gmail_canonical",
    "threshold",
    "max_cluster_size",
    "max_block_size",
    "survivorship",
    "source_priority",
    "fuzzy",
    "seed",
)


def _settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    s = dict(settings or {})
    unknown = sorted(k for k in s if k not in SETTING_KEYS)
    if unknown:
        import difflib

        details = []
        for k in unknown:
            hint = difflib.get_close_matches(k, SETTING_KEYS, n=1)
            details.append(f"dedup.{k}" + (f": did you mean {hint[0]!r}?" if hint else ""))
        raise ConfigError(
            f"unknown dedup setting(s) {', '.join(map(repr, unknown))}; valid: "
            f"{', '.join(SETTING_KEYS)}",
            details=details,
        )
    thr = float(s.get("threshold", 0.9))
    if not 0 < thr < 1:
        raise ConfigError(f"dedup.threshold {thr} must be between 0 and 1 (exclusive)")
    order = list(s.get("survivorship", ["source_priority", "most_recent", "most_complete"]))
    bad = [x for x in order if x not in ("source_priority", "most_recent", "most_complete")]
    if bad:
        raise ConfigError(
            f"dedup.survivorship: unknown rule(s) {', '.join(map(repr, bad))}; "
            "valid: source_priority, most_recent, most_complete"
        )
    prio = s.get("source_priority") or {}
    if isinstance(prio, list):
        prio = {name: i for i, name in enumerate(prio)}
    return {
        "threshold": thr,
        "max_cluster_size": int(s.get("max_cluster_size", 1000)),
        "max_block_size": int(s.get("max_block_size", 5000)),
        "survivorship": order,
        "priority": {str(k): int(v) for k, v in dict(prio).items()},
        "fuzzy": bool(s.get("fuzzy", True)),
        "seed": int(s.get("seed", 42)),
    }


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }


def run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    settings: dict[str, Any],
    match_keys: dict[str, list[list[str]]],
) -> None:
    """Dedupe every party entity and every entity whose sources declare match keys."""
    from romirecon.model import ENTITIES
    from romirecon.stages.common import ensure_common_tables, ensure_entity_views

    cfg = _settings(settings)
    ensure_common_tables(con)
    ensure_entity_views(con)
    ensure_map(con)
    con.execute(XREF_DDL)
    con.execute(DUPLICATES_DDL)
    for entity in ENTITIES:
        sources = [
            r[0]
            for r in con.execute(
                f"SELECT DISTINCT source_name FROM {ident('stg_' + entity)} "
                "WHERE source_name IS NOT NULL ORDER BY 1"
            ).fetchall()
        ]
        keyed = {s: match_keys.get(s) or [] for s in sources}
        if entity in PARTY or any(keyed.values()):
            dedupe_entity(con, run_id, entity, cfg, keyed)
    # the normalized keys (temp tables, about 400 MB at 1M customers) are read by dedup only:
    # dropped here, they are freed when the stage commits instead of staying to the run's end
    for entity in PARTY:
        con.execute(f"DROP TABLE IF EXISTS temp.main.{ident('norm_' + entity)}")


def dedupe_entity(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    entity: str,
    cfg: dict[str, Any],
    keys_by_source: dict[str, list[list[str]]],
) -> None:
    from romirecon.model import ENTITIES
    from romirecon.stages import normalize
    from romirecon.stages.common import record_view

    columns = list(ENTITIES[entity])
    party = entity in PARTY
    if party and f"norm_{entity}" not in _tables(con):
        normalize.normalize_entity(con, entity)
    # the record numbers of this run's staged rows, when contract could give them (their rows
    # are then one per (source, file, row) by construction)
    records = record_view(con, entity)
    if records:
        unique_rows = True
    else:
        stg = ident("stg_" + entity)
        rows, keys = con.execute(
            f"SELECT count(*), count(DISTINCT (source_name, source_file, source_row)) FROM {stg}"
        ).fetchone()
        unique_rows = rows == keys
    # only the columns evidence and survivorship read (materializing every staged column cost
    # more than all the rest of the record table); the golden table reads the staged rows itself.
    # The golden table's presence bits ride along where the staged row is read anyway.
    masks = golden_masks(columns) if party and unique_rows else None
    con.execute(
        q.record_table_sql(
            entity,
            columns,
            party,
            record_columns(columns, keys_by_source),
            unique_rows,
            masks,
            records,
        )
    )
    n = int((con.execute(f"SELECT count(*) FROM {q.R}").fetchall()[0] or (0,))[0])

    # 1. exact evidence
    con.execute(q.edges_ddl())
    con.execute(q.whole_row_sql())
    con.execute(q.same_id_sql())
    for sql in q.merge_pointer_sql(columns):
        con.execute(sql)
    if "external_ref" in columns:
        con.execute(q.external_ref_sql())
    by_key: dict[tuple[str, ...], list[str]] = {}
    for source, keys in sorted(keys_by_source.items()):
        for key in keys:
            unknown = [c for c in key if c not in columns]
            if unknown:
                raise ConfigError(
                    f"match key {'+'.join(key)} of source {source!r} names column(s) "
                    f"{', '.join(unknown)} that entity {entity!r} does not have"
                )
            by_key.setdefault(tuple(key), []).append(source)
    for key, srcs in sorted(by_key.items()):
        if key == ("source_id",):
            continue  # always applied above
        con.execute(q.declared_key_sql(list(key), srcs, party))

    # 2. fuzzy evidence
    blocks: list[Any] = []  # blocking.RuleStats of each rule, when fuzzy matching ran
    explain: str | None = None  # the explanation of a fuzzy edge, over `_dd_fuzzy f`
    if party and cfg["fuzzy"] and n >= 3:
        blocks, explain = _fuzzy_edges(con, entity, n, cfg)
    skipped = sum(st.skipped_records for st in blocks)

    # 3. clusters over all evidence
    labels, guard = _cluster(con, n, cfg)
    import pyarrow as pa

    # only records of multi-record clusters are registered: a record absent from `_dd_labels`
    # is a cluster of its own whose label is its rid (most records of most entities)
    rid = np.arange(n, dtype=np.int64)
    listed = (np.bincount(labels, minlength=n)[labels] > 1) | (labels != rid)
    con.register(
        "_dd_labels",
        pa.table({"rid": rid[listed].astype(np.int32), "label": labels[listed].astype(np.int32)}),
    )
    _assign(con, run_id, entity, cfg, columns, explain)
    if explain is not None:
        con.unregister("_dd_fuzzy")
    # each cluster label has a golden id of its own: by construction (a label's first key is
    # its own) unless two new ids collide; the golden table and the metrics then work per label
    row = con.execute("SELECT count(*) = count(DISTINCT golden_id) FROM _dd_gid").fetchall()[0]
    one_id_per_label = bool(row[0])
    if party:
        _golden_table(con, entity, cfg, columns, unique_rows and one_id_per_label, records)
    rows = _metric_rows(con, run_id, entity, one_id_per_label)
    # the giant-cluster guard acted: clusters re-split, and records it had to leave alone
    rows += [
        (run_id, STAGE, None, entity, "oversized_clusters", float(guard.oversized), None, None,
         "clusters"),
        (run_id, STAGE, None, entity, "guard_unclustered_records", float(guard.left_single),
         None, None, "rows"),
        (run_id, STAGE, None, entity, "blocking_skipped_records", float(skipped), None, None,
         "rows"),
    ]  # fmt: skip
    rows += blocking_metric_rows(run_id, entity, cfg["max_block_size"], blocks)
    _insert_metrics(con, rows)
    con.unregister("_dd_labels")
    # this entity's working tables: freed now, not when the next entity replaces them (the
    # last entity's would otherwise hold memory through every later stage)
    con.execute("DROP VIEW IF EXISTS _dd_fz")
    for t in WORK_TABLES:
        con.execute(f"DROP TABLE IF EXISTS {t}")


WORK_TABLES = (
    q.R, q.EDGES, "_dd_k", "_dd_m", "_dd_best", "_dd_gid", "_dd_newmap", "_dd_maprows", "_dd_per",
)  # fmt: skip


# columns a lean record table carries besides provenance: evidence, survivorship, record key
LEAN_COLUMNS = (
    "source_id",
    "merged_into",
    "converted_to",
    "merged_ids",
    "external_ref",
    "is_deleted",
    "updated_at",
    "created_at",
)


def record_columns(columns: list[str], keys_by_source: dict[str, list[list[str]]]) -> list[str]:
    """Entity columns the record table of a non-party entity needs: those the exact evidence
    (merge pointers, external refs, declared keys) and the survivorship order read."""
    need = set(LEAN_COLUMNS) | {c for keys in keys_by_source.values() for k in keys for c in k}
    return [c for c in columns if c in need]


def blocking_metric_rows(run_id: str, entity: str, cap: int, blocks: list[Any]) -> list[MetricRow]:
    """What blocking cost and what the block cap left out (issue #8: no quadratic candidate-pair
    blow-ups): the cap, the largest block of any rule before the cap, the largest block that
    was scored (its pairs grow as k(k-1)/2), the blocks skipped, and the candidate pairs each
    rule produced. Nothing when fuzzy matching did not run."""
    if not blocks:
        return []
    out: list[MetricRow] = [
        (run_id, STAGE, None, entity, "blocking_max_block_size", float(cap), None, None,
         "records"),
        (run_id, STAGE, None, entity, "blocking_largest_block",
         float(max(b.largest_block for b in blocks)), None, None, "records"),
        (run_id, STAGE, None, entity, "blocking_largest_scored_block",
         float(max(b.largest_kept_block for b in blocks)), None, None, "records"),
        (run_id, STAGE, None, entity, "blocking_skipped_blocks",
         float(sum(b.skipped_blocks for b in blocks)), None, None, "blocks"),
        (run_id, STAGE, None, entity, "blocking_candidate_pairs",
         float(sum(b.new_pairs for b in blocks)), None, None, "pairs"),
    ]  # fmt: skip
    return out


def _fuzzy_edges(
    con: duckdb.DuckDBPyConnection, entity: str, n: int, cfg: dict[str, Any]
) -> tuple[list[Any], str | None]:
    """Fuzzy links at or above the threshold into the edge table. Returns the blocking
    statistics of each rule (`romirecon.dedup.blocking.RuleStats`: block sizes, blocks and
    records skipped for exceeding `max_block_size`) and, when links were scored, the SQL
    expression of an edge's explanation over the row `f` of `_dd_fuzzy` (registered until the
    caller unregisters it) that the edge's `fz` numbers."""
    from romirecon.dedup import engine
    from romirecon.dedup.comparisons import LEVELS
    from romirecon.dedup.spec import TF_DEFAULT, FieldSpec, Settings

    present = []
    for col, kind in FUZZY_FIELDS[entity]:
        row = con.execute(f"SELECT count({ident(col)}) FROM {q.R}").fetchall()[0]
        if row and row[0] >= 2:
            present.append(FieldSpec(col, kind, TF_DEFAULT[kind]))
    if len(present) < 2:
        return [], None
    con.execute(
        "CREATE OR REPLACE TEMP VIEW _dd_fz AS SELECT rid AS _rid, "
        + ", ".join(ident(f.column) for f in present)
        + f" FROM {q.R}"
    )
    s = Settings(
        threshold=cfg["threshold"],
        max_cluster_size=cfg["max_cluster_size"],
        max_block_size=cfg["max_block_size"],
        seed=cfg["seed"],
    )
    try:
        res = engine.link(con, "_dd_fz", "_rid", present, None, s)
    except ConfigError:
        return [], None  # no usable blocking rule on these data: exact evidence only
    finally:
        # the engine's record table (every record's normalized fields) is not read again:
        # freed before survivorship instead of held to the end of the run
        con.execute(f"DROP TABLE IF EXISTS {engine.REC}")
    keep = res.weight >= engine.threshold_weight(cfg["threshold"])
    import pyarrow as pa

    cols: dict[str, Any] = {
        "fid": np.arange(int(keep.sum()), dtype=np.int32),
        "a": res.left[keep],
        "b": res.right[keep],
        "prob": res.probability[keep],
        "w": res.weight[keep],
    }
    for i in range(len(present)):
        cols[f"lv{i}"] = res.levels[i][keep].astype(np.int32)
    con.register("_dd_fuzzy", pa.table(cols))
    # the explanation JSON is built later for the edges `duplicates` shows only (one per
    # non-survivor at most): building it for every link cost seconds and kept a JSON string
    # per link in memory through survivorship
    parts = ["'match_weight', round(f.w, 4)"]
    for i, f in enumerate(present):
        labels = ["null", *LEVELS[f.kind]]
        parts.append(
            f"{literal(f.column)}, json_object('level', f.lv{i}, 'label', "
            f"list_extract([{', '.join(literal(x) for x in labels)}], f.lv{i} + 2))"
        )
    con.execute(
        f"INSERT INTO {q.EDGES} SELECT a, b, 'fuzzy', {q.RULE_PRIORITY['fuzzy']}, prob, fid "
        "FROM _dd_fuzzy"
    )
    # the engine's record table is keyed like _dd_r (rid order = _rid order)
    return list(res.rule_stats), f"CAST(json_object({', '.join(parts)}) AS VARCHAR)"


def _cluster(con: duckdb.DuckDBPyConnection, n: int, cfg: dict[str, Any]) -> tuple[np.ndarray, Any]:
    from romirecon.dedup.cluster import cluster
    from romirecon.dedup.engine import threshold_weight

    e = con.execute(
        f"SELECT a, b, CASE WHEN rule = 'fuzzy' THEN prob ELSE NULL END AS p FROM {q.EDGES}"
    ).fetchnumpy()
    a = np.asarray(e["a"], dtype=np.int32)
    b = np.asarray(e["b"], dtype=np.int32)
    p = np.ma.filled(np.ma.asarray(e["p"], dtype=np.float64), np.nan)
    # exact evidence never yields to the guard; fuzzy links compete on their weight
    with np.errstate(divide="ignore"):
        w = np.where(
            np.isnan(p),
            np.inf,
            np.log2(np.clip(p, 1e-300, None)) - np.log2(np.clip(1 - p, 1e-300, None)),
        )
    labels, guard = cluster(n, a, b, w, threshold_weight(cfg["threshold"]), cfg["max_cluster_size"])
    return labels, guard


def _assign(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    entity: str,
    cfg: dict[str, Any],
    columns: list[str],
    explain: str | None = None,
) -> None:
    """Survivors, golden ids (stable through golden_id_map), entity_xref and duplicates.

    Works on narrow tables keyed by rid: `_dd_k` ranks the members of multi-record clusters
    (`_dd_labels`) in survivorship order; `_dd_m` gives every record its label (its own rid when
    alone) and survivor flag; `_dd_gid` maps labels to golden ids."""
    order = q.survivor_order(q.priority_case(cfg["priority"]), cfg["survivorship"], columns)
    for sql in assign_sql(entity, order, explain):
        con.execute(sql, [run_id] if "?" in sql else [])
    _write_map(con, entity, run_id)


def assign_sql(entity: str, order: str, explain: str | None = None) -> list[str]:
    """The statements of `_assign` (the golden-id statement takes the run id as parameter).
    `explain`: a fuzzy edge's explanation over its row `f` of `_dd_fuzzy` (None: no fuzzy
    edges)."""
    ent = literal(entity)
    if explain is None:
        expl, fjoin = "NULL::VARCHAR", ""
    else:
        expl = f"CASE WHEN d.fz IS NULL THEN NULL ELSE {explain} END"
        fjoin = " LEFT JOIN _dd_fuzzy f ON f.fid = d.fz"
    return [
        # survivorship ranks inside multi-record clusters; a record alone survives alone
        f"CREATE OR REPLACE TEMP TABLE _dd_k AS SELECT l.rid, l.label, "
        f"row_number() OVER (PARTITION BY l.label ORDER BY {order}) AS k "
        f"FROM _dd_labels l JOIN {q.R} USING (rid)",
        # k: the survivorship rank inside the cluster (1 for a record alone); the golden table
        # reads it instead of ranking every record again; m_source: the record's source, for
        # the duplicate metrics per (source, label)
        f"CREATE OR REPLACE TEMP TABLE _dd_m AS SELECT r.rid, coalesce(k.label, r.rid) AS label, "
        "coalesce(k.k = 1, true) AS is_survivor, k.rid IS NULL AS single, r.record_key, "
        f"coalesce(k.k, 1) AS k, r.source_name AS m_source FROM {q.R} r LEFT JOIN _dd_k k "
        "USING (rid)",
        # best evidence per non-survivor (the only records whose rule, probability and
        # explanation are written): its strongest link inside its own cluster (both ends in
        # one multi-record cluster, so both are in _dd_labels); ties go to the rule name
        # The aggregate keeps only an edge number (its rowid, times 2, plus 1 when read from b
        # to a) and fetches the winner's rule and explanation afterwards: an arg_min state
        # holding the explanation JSON of every fuzzy edge cost most of this statement. Edges
        # that tie on the whole key are equal in every written field (each fuzzy pair is
        # scored once; exact edges carry no explanation), so which one wins does not show.
        # A fuzzy winner's explanation is built here from its comparison levels.
        "CREATE OR REPLACE TEMP TABLE _dd_best AS "
        "WITH e AS (SELECT rowid * 2 AS eid, a AS rid, b AS other, rule, priority, prob "
        "FROM _dd_edges UNION ALL SELECT rowid * 2 + 1, b, a, rule, priority, prob FROM _dd_edges), "
        "s AS (SELECT e.* FROM e JOIN _dd_k x ON x.rid = e.rid AND x.k > 1 "
        "JOIN _dd_labels y ON y.rid = e.other AND y.label = x.label), "
        "w AS (SELECT rid, arg_min(eid, (priority, coalesce(-prob, 'inf'::DOUBLE), other, rule)) "
        "AS eid FROM s GROUP BY rid) "
        "SELECT w.rid, CASE WHEN w.eid % 2 = 0 THEN d.b ELSE d.a END AS other, d.rule, "
        f"d.priority, d.prob, {expl} AS explanation FROM w JOIN _dd_edges d "
        f"ON d.rowid = w.eid // 2{fjoin}",
        # golden ids: each previous id goes to the cluster holding most of its records (ties: the
        # smaller label); each cluster keeps its best-claimed previous id (ties: the smaller id);
        # clusters with none get a new id from their first key
        "CREATE OR REPLACE TEMP TABLE _dd_gid AS "
        "WITH votes AS (SELECT m.label, g.golden_id, count(*) AS n FROM _dd_m m "
        f"JOIN golden_id_map g ON g.entity = {ent} AND g.record_key = m.record_key GROUP BY ALL), "
        "claim AS (SELECT golden_id, max(n) AS n, arg_min(label, (-n, label)) AS label "
        "FROM votes GROUP BY golden_id), "
        "pick AS (SELECT label, arg_min(golden_id, (-n, golden_id)) AS golden_id FROM claim "
        "GROUP BY label), "
        # the clusters no previous id went to, and their first key: only those are grouped
        # (on a second night almost none; grouping every cluster's keys first took 1.7 s for
        # 6.6M invoices)
        "todo AS (SELECT m.label, m.record_key, m.single FROM _dd_m m ANTI JOIN pick p "
        "USING (label)), "
        "firsts AS (SELECT label, min(record_key) AS k FROM todo WHERE NOT single "
        "GROUP BY label UNION ALL SELECT label, record_key FROM todo WHERE single), "
        f"fresh AS (SELECT f.label, {ent} || '_' || substr(md5({ent} || ':' || f.k), 1, 16) AS cand "
        "FROM firsts f) "
        "SELECT label, golden_id FROM pick UNION ALL "
        "SELECT label, CASE WHEN cand IN (SELECT golden_id FROM golden_id_map "
        f"WHERE entity = {ent}) OR cand IN (SELECT golden_id FROM pick) "
        f"THEN {ent} || '_' || substr(md5(cand || ':' || ?), 1, 16) ELSE cand END FROM fresh",
        "INSERT INTO entity_xref SELECT "
        f"{ent}, r.source_name, r.source_system, CAST(r.source_id AS VARCHAR), r.source_file, "
        "r.source_row, g.golden_id, "
        "CASE WHEN m.is_survivor THEN 'original' ELSE coalesce(b.rule, 'fuzzy') END, "
        "CASE WHEN m.is_survivor THEN NULL ELSE b.prob END, m.is_survivor, m.record_key "
        f"FROM {q.R} r JOIN _dd_m m USING (rid) JOIN _dd_gid g USING (label) "
        "LEFT JOIN _dd_best b USING (rid)",
        # non-survivors are ranked members of multi-record clusters (k > 1)
        "INSERT INTO duplicates SELECT "
        f"{ent}, r.source_name, r.source_system, CAST(r.source_id AS VARCHAR), r.source_file, "
        "r.source_row, g.golden_id, b.rule, b.prob, o.source_name, CAST(o.source_id AS VARCHAR), "
        "s.source_name, CAST(s.source_id AS VARCHAR), b.explanation "
        f"FROM _dd_k m JOIN {q.R} r USING (rid) JOIN _dd_gid g USING (label) "
        "LEFT JOIN _dd_best b USING (rid) "
        f"LEFT JOIN {q.R} o ON o.rid = b.other "
        f"JOIN _dd_k sk ON sk.label = m.label AND sk.k = 1 JOIN {q.R} s ON s.rid = sk.rid "
        "WHERE m.k > 1",
        # what golden_id_map remembers: per record key the golden id of its first record
        "CREATE OR REPLACE TEMP TABLE _dd_newmap AS SELECT m.record_key, "
        "arg_min(g.golden_id, m.rid) AS golden_id FROM _dd_m m JOIN _dd_gid g USING (label) "
        "GROUP BY m.record_key",
    ]


def _write_map(con: duckdb.DuckDBPyConnection, entity: str, run_id: str) -> None:
    """Write `_dd_newmap` into golden_id_map: each key seen in this run gets its golden id, its
    first run (kept from the old row) and this run as last run. The keys' old rows are
    deleted and the new ones appended: an UPDATE of millions of rows took minutes (DuckDB
    versions every updated value), INSERT OR REPLACE needs the index that made inserts slow."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _dd_maprows AS SELECT ? AS entity, n.record_key, "
        "n.golden_id, coalesce(o.first_run_id, ?) AS first_run_id, ? AS last_run_id "
        "FROM _dd_newmap n LEFT JOIN golden_id_map o ON o.entity = ? "
        "AND o.record_key = n.record_key",
        [entity, run_id, run_id, entity],
    )
    con.execute(
        "DELETE FROM golden_id_map WHERE entity = ? AND record_key IN "
        "(SELECT record_key FROM _dd_newmap)",
        [entity],
    )
    con.execute("INSERT INTO golden_id_map SELECT * FROM _dd_maprows")


def _golden_table(
    con: duckdb.DuckDBPyConnection,
    entity: str,
    cfg: dict[str, Any],
    columns: list[str],
    by_label: bool,
    records: str | None,
) -> None:
    """golden_<entity>: per column the first non-NULL value in survivorship order.

    The cheap way (`golden_table_sql`) reads the ranks `_assign` gave each cluster's records and
    groups by cluster label; it needs (`by_label`) each staged row to be one record and each
    label its own golden id. Otherwise (an unpivoted export repeating provenance; two clusters
    handed the same new id) the general statement ranks and groups by golden id itself."""
    if by_label:
        for sql in golden_table_sql(entity, columns, records):
            con.execute(sql)
        con.execute("DROP TABLE IF EXISTS _dd_gw")
        return
    order = q.survivor_order(q.priority_case(cfg["priority"]), cfg["survivorship"], columns)
    con.execute(golden_by_id_sql(entity, order, columns))


GOLDEN_SKIP = ("merged_into", "merged_ids", "is_deleted", "converted_to", "source_id")
GOLDEN_NORM = (
    "email_norm",
    "phone_e164",
    "company_norm",
    "domain",
    "first_name_norm",
    "last_name_norm",
    "full_name_norm",
)


def provenance_on(record: str = "x") -> str:
    """The join of a record (alias `record`: a `_dd_r` row or a relation carrying its
    provenance) to its staged row `s`."""
    return " AND ".join(
        f"s.{c} IS NOT DISTINCT FROM {record}.{c}"
        for c in ("source_name", "source_file", "source_row")
    )


def golden_columns(columns: list[str]) -> list[str]:
    """The value columns of golden_<entity>, in table order."""
    return [c for c in [*columns, *GOLDEN_NORM] if c not in GOLDEN_SKIP]


def _mask_chunks(columns: list[str]) -> list[list[str]]:
    """The golden columns in groups of 62, one BIGINT presence mask each (bit 63 stays clear,
    the masks stay non-negative)."""
    cols = golden_columns(columns)
    return [cols[i : i + 62] for i in range(0, len(cols), 62)] or [[]]


def golden_masks(columns: list[str]) -> list[str]:
    """Per mask chunk, the expression of a record's presence bits (bit i: golden column i of the
    chunk is not NULL) over the staged row `s` and the normalized row `n` of the record table
    statement (`pipeline_sql.record_table_sql(masks=...)` stores them as `_m0`, `_m1`, ...)."""
    return [
        " | ".join(
            f"(({'n' if c in GOLDEN_NORM else 's'}.{ident(c)} IS NOT NULL)::BIGINT << {i})"
            for i, c in enumerate(ch)
        )
        or "0::BIGINT"
        for ch in _mask_chunks(columns)
    ]


def golden_table_sql(entity: str, columns: list[str], records: str | None = None) -> list[str]:
    """golden_<entity> from the survivorship rank `_dd_m.k` (1 = survivor), grouped by cluster.

    Per column, the record that supplies the value is the best-ranked one where it is not NULL.
    A narrow first pass finds, per record, the columns it supplies: its non-NULL bits (`_m<j>`
    of `_dd_r`, see `golden_masks`) minus every bit of the records ranked before it in its
    cluster (one window over integers). Only records supplying something (and the survivor)
    read their staged row, and each golden column is the value of the one record holding its
    bit. This replaces one `arg_min` state per column over every record, keyed by golden id
    after a second ranking window: at 4M contacts that aggregate was the slowest statement of
    the run and spilled.

    The staged row is found by its record number in `records` (the record-number view, see
    `common.record_view`), else by provenance, with the wide staged rows streaming through the
    join (its build side holds only integers, and provenance without the view); the
    normalized values come from the record table in a second, narrow aggregate. No ORDER BY:
    every reader of the golden table orders by golden id itself, and sorting the wide rows
    cost seconds at 1M."""
    chunks = _mask_chunks(columns)
    cols = golden_columns(columns)
    wins = [
        f"_m{j} & ~coalesce(bit_or(_m{j}) OVER (PARTITION BY label ORDER BY _rank "
        f"ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS _w{j}"
        for j in range(len(chunks))
    ]
    pos = {c: (j, i) for j, ch in enumerate(chunks) for i, c in enumerate(ch)}

    def bit(c: str) -> str:
        j, i = pos[c]
        return f"(_w{j} >> {i}) & 1 = 1"

    def pick(c: str, alias: str = "") -> str:
        # any_value skips NULLs: only the supplying record yields a value. A CASE per column
        # instead of a FILTER per aggregate: the FILTERs cost about a third more (100k
        # customers: 2.1-4.0 s against 1.6-2.0 s for this aggregate)
        return f"any_value(CASE WHEN {bit(c)} THEN {alias}{ident(c)} END) AS {ident(c)}"

    def bits_of(names: list[str]) -> str:
        """A record's `_w` bits at any of `names` (it supplies one of them)."""
        masks: dict[int, int] = {}
        for c in names:
            j, i = pos[c]
            masks[j] = masks.get(j, 0) | (1 << i)
        return " OR ".join(f"_w{j} & {b} <> 0" for j, b in sorted(masks.items()))

    staged_cols = [c for c in cols if c not in GOLDEN_NORM]
    normed = [pick(c, "x.") for c in cols if c in GOLDEN_NORM]
    stg = ident("stg_" + entity)
    ws = ", ".join(f"w._w{j}" for j in range(len(chunks)))

    def supplier_rows(where: str) -> str:
        """The staged rows (with label, rank and `_w` bits) of the records `where` picks, found
        by record number or provenance: the wide staged rows stream through the join."""
        if records:
            return (
                f"SELECT s.* EXCLUDE (rid), w.label, w._rank, {ws} FROM "
                f"(SELECT * FROM _dd_gw WHERE {where}) w JOIN {ident(records)} s "
                "ON s.rid = w.rid"
            )
        return (
            f"SELECT s.* EXCLUDE (source_name), w.source_name, w.label, w._rank, {ws} FROM "
            f"(SELECT w.label, w._rank, {ws}, x.source_name, x.source_file, x.source_row "
            f"FROM (SELECT * FROM _dd_gw WHERE {where}) w JOIN {q.R} x USING (rid)) w "
            f"JOIN {stg} s ON {provenance_on('w')}"
        )

    norm_cte = (
        f"n AS (SELECT label, {', '.join(normed)} FROM _dd_gw JOIN {q.R} x USING (rid) "
        f"WHERE {bits_of([c for c in cols if c in GOLDEN_NORM])} GROUP BY label), "
        if normed
        else ""
    )
    # The survivor (rank 1) supplies most values: its row is one per cluster and needs no
    # aggregate. Only the later-ranked records that supply a staged value are grouped by
    # label, and their values fill the survivor's gaps. Exact: a column's bit is set for one
    # record of the cluster at most. At 1M customers the single aggregate over every supplier
    # (3.1M rows, 33 any_value states per cluster) was most of the statement: 11.5 s against
    # 9.0 s split.
    survivor = (
        "sv AS (SELECT label, source_name AS survivor_source_name, "
        "CAST(source_id AS VARCHAR) AS survivor_source_id"
        + "".join(f", CASE WHEN {bit(c)} THEN {ident(c)} END AS {ident(c)}" for c in staged_cols)
        + f" FROM ({supplier_rows('_rank = 1')})), "
    )
    rest = (
        f"rs AS (SELECT label, {', '.join(pick(c) for c in staged_cols)} FROM "
        f"({supplier_rows(f'_rank > 1 AND ({bits_of(staged_cols)})')}) GROUP BY label), "
    )
    merged = (
        "a AS (SELECT sv.label, sv.survivor_source_name, sv.survivor_source_id"
        + "".join(f", coalesce(sv.{ident(c)}, rs.{ident(c)}) AS {ident(c)}" for c in staged_cols)
        + " FROM sv LEFT JOIN rs USING (label)), "
    )
    return [
        "CREATE OR REPLACE TEMP TABLE _dd_gw AS SELECT rid, label, _rank, "
        f"{', '.join(wins)} FROM (SELECT x.rid, m.label, m.k AS _rank, "
        f"{', '.join(f'x._m{j}' for j in range(len(chunks)))} "
        f"FROM {q.R} x JOIN _dd_m m ON m.rid = x.rid)",
        f"CREATE OR REPLACE TEMP TABLE {ident('golden_' + entity)} AS WITH "
        f"{survivor}{rest}{merged}{norm_cte}"
        "c AS (SELECT m.label, count(*) AS n_records, "
        "list_sort(list_distinct(list(r.source_name))) AS source_names "
        f"FROM _dd_m m JOIN {q.R} r USING (rid) GROUP BY m.label) "
        "SELECT g.golden_id, a.survivor_source_name, a.survivor_source_id, c.n_records, "
        "c.source_names, "
        + ", ".join(("n." if c in GOLDEN_NORM else "a.") + ident(c) for c in cols)
        + " FROM a JOIN c USING (label) JOIN _dd_gid g USING (label)"
        + (" LEFT JOIN n USING (label)" if normed else ""),
    ]


def golden_by_id_sql(entity: str, order: str, columns: list[str]) -> str:
    """The general golden_<entity>: one window ranks each golden entity's records in
    survivorship order; each column is the value of the best-ranked record where it is not
    NULL (`arg_min` per column over `stg_<entity>` joined on provenance)."""
    # first non-NULL value in rank order: a NULL ranks after every value (2^32 > any rank), so
    # arg_min returns NULL only when every record's value is NULL; as `FILTER (WHERE c IS NOT
    # NULL)` would, at half its cost
    vals = [
        f"arg_min({ident(c)}, _rank + ({ident(c)} IS NULL)::BIGINT * 4294967296) AS {ident(c)}"
        for c in golden_columns(columns)
    ]
    return (
        f"CREATE OR REPLACE TEMP TABLE {ident('golden_' + entity)} AS "
        "WITH x AS (SELECT r.source_name, r.source_file, r.source_row, "
        f"{', '.join('r.' + ident(c) for c in GOLDEN_NORM)}, m.is_survivor, g.golden_id, "
        f"row_number() OVER (PARTITION BY g.golden_id ORDER BY {order}) AS _rank "
        f"FROM {q.R} r JOIN _dd_m m USING (rid) JOIN _dd_gid g USING (label)), "
        "y AS (SELECT s.* EXCLUDE (source_name), x.* EXCLUDE (source_file, source_row) "
        f"FROM {ident('stg_' + entity)} s JOIN x ON {provenance_on()}) "
        # the survivor's source and id (one survivor per cluster; ties broken by the rank)
        "SELECT golden_id, arg_min(source_name, (NOT is_survivor, source_name, _rank)) "
        "AS survivor_source_name, "
        "arg_min(CAST(source_id AS VARCHAR), (NOT is_survivor, source_name, _rank)) "
        "AS survivor_source_id, count(*) AS n_records, "
        "list_sort(list_distinct(list(source_name))) AS source_names, "
        f"{', '.join(vals)} FROM y GROUP BY golden_id ORDER BY golden_id"
    )


def per_golden_sql(by_label: bool) -> str:
    """CREATE `_dd_per`: rows per (source, golden entity) of the entity just deduped. By cluster
    label (`_dd_m`, integers) when each label has a golden id of its own, the same groups as
    by golden id (`entity_xref`, strings; parameter: the entity) otherwise."""
    if by_label:
        per = "SELECT m_source AS source_name, label AS g, count(*) AS n FROM _dd_m GROUP BY ALL"
    else:
        per = (
            "SELECT source_name, golden_id AS g, count(*) AS n FROM entity_xref "
            "WHERE entity = ? GROUP BY ALL"
        )
    return f"CREATE OR REPLACE TEMP TABLE _dd_per AS {per}"


def metrics_sql() -> str:
    """Per source: rows, distinct golden ids, golden ids with more than one row in that source,
    rows in those groups; then the entity line (source_name NULL) summing the sources, as the
    SLA stage defines it: a CRM contact and its billing customer are a link, not a duplicate.
    Over `_dd_per` (`per_golden_sql`)."""
    return (
        "WITH per AS (SELECT * FROM _dd_per), "
        "src AS (SELECT source_name, sum(n) AS rows, count(*) AS golden, "
        "count(*) FILTER (WHERE n > 1) AS groups, "
        "coalesce(sum(n) FILTER (WHERE n > 1), 0) AS dup_rows FROM per GROUP BY source_name) "
        "SELECT * FROM (SELECT source_name, rows, golden, groups, dup_rows FROM src "
        "UNION ALL SELECT NULL, sum(rows), sum(golden), sum(groups), sum(dup_rows) FROM src "
        "HAVING count(*) > 0) ORDER BY source_name NULLS FIRST"
    )


MetricRow = tuple[Any, ...]


def _insert_metrics(con: duckdb.DuckDBPyConnection, rows: list[MetricRow]) -> None:
    """All of an entity's metric rows in one INSERT (one statement per row cost 5 ms each)."""
    if not rows:
        return
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows))
    con.execute(f"INSERT INTO metric VALUES {values}", [v for r in rows for v in r])


def _metric_rows(
    con: duckdb.DuckDBPyConnection, run_id: str, entity: str, by_label: bool
) -> list[MetricRow]:
    """The duplicate metrics of the entity just deduped, counted per cluster label (integers)
    when each label has its own golden id (`by_label`), else per golden id (strings)."""
    con.execute(per_golden_sql(by_label), [] if by_label else [entity])
    rows_all, golden_all = con.execute(
        "SELECT coalesce(sum(n), 0), count(DISTINCT g) FROM _dd_per"
    ).fetchall()[0]
    rows_all = int(rows_all)
    # duplicates and cross-system links together: how much the golden table condensed
    out: list[MetricRow] = [
        (run_id, STAGE, None, entity, "cross_source_merge_rate",
         (rows_all - golden_all) / rows_all if rows_all else 0.0,
         float(rows_all - golden_all), float(rows_all), "ratio"),
    ]  # fmt: skip
    for source, rows, golden, groups, dup_rows in con.execute(metrics_sql()).fetchall():
        rows, golden = int(rows), int(golden)
        out += [
            (run_id, STAGE, source, entity, "duplicate_rate",
             (rows - golden) / rows if rows else 0.0, float(rows - golden), float(rows), "ratio"),
            (run_id, STAGE, source, entity, "duplicate_groups", float(groups), None, None,
             "groups"),
            (run_id, STAGE, source, entity, "duplicate_rows", float(dup_rows), None, None,
             "rows"),
        ]  # fmt: skip
    return out
