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
`metric` rows (`duplicate_rate`, `duplicate_groups`, `duplicate_rows` per source and entity).

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

XREF_DDL = """CREATE OR REPLACE TABLE entity_xref (
    entity VARCHAR, source_name VARCHAR, source_system VARCHAR, source_id VARCHAR,
    source_file VARCHAR, source_row BIGINT, golden_id VARCHAR, rule VARCHAR,
    match_probability DOUBLE, is_survivor BOOLEAN, record_key VARCHAR)"""

DUPLICATES_DDL = """CREATE OR REPLACE TABLE duplicates (
    entity VARCHAR, source_name VARCHAR, source_system VARCHAR, source_id VARCHAR,
    source_file VARCHAR, source_row BIGINT, golden_id VARCHAR, rule VARCHAR,
    match_probability DOUBLE, matched_source_name VARCHAR, matched_source_id VARCHAR,
    survivor_source_name VARCHAR, survivor_source_id VARCHAR, explanation VARCHAR)"""

MAP_DDL = """CREATE TABLE IF NOT EXISTS golden_id_map (
    entity VARCHAR, record_key VARCHAR, golden_id VARCHAR, first_run_id VARCHAR,
    last_run_id VARCHAR, PRIMARY KEY (entity, record_key))"""


def _settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    s = dict(settings or {})
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
    con.execute(MAP_DDL)
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


def dedupe_entity(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    entity: str,
    cfg: dict[str, Any],
    keys_by_source: dict[str, list[list[str]]],
) -> None:
    from romirecon.model import ENTITIES
    from romirecon.stages import normalize

    columns = list(ENTITIES[entity])
    party = entity in PARTY
    if party and f"norm_{entity}" not in _tables(con):
        normalize.normalize_entity(con, entity)
    con.execute(q.record_table_sql(entity, columns, party))
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
    fuzzy_levels: list[str] = []
    if party and cfg["fuzzy"] and n >= 3:
        fuzzy_levels = _fuzzy_edges(con, entity, n, cfg)

    # 3. clusters over all evidence
    labels = _cluster(con, n, cfg)
    import pyarrow as pa

    con.register(
        "_dd_labels",
        pa.table({"rid": np.arange(n, dtype=np.int32), "label": labels.astype(np.int32)}),
    )
    _assign(con, run_id, entity, cfg, columns)
    if party:
        _golden_table(con, entity, cfg, columns)
    _metrics(con, run_id, entity)
    con.unregister("_dd_labels")
    del fuzzy_levels


def _fuzzy_edges(
    con: duckdb.DuckDBPyConnection, entity: str, n: int, cfg: dict[str, Any]
) -> list[str]:
    from romirecon.dedup import engine
    from romirecon.dedup.comparisons import LEVELS
    from romirecon.dedup.spec import TF_DEFAULT, FieldSpec, Settings

    present = []
    for col, kind in FUZZY_FIELDS[entity]:
        row = con.execute(f"SELECT count({ident(col)}) FROM {q.R}").fetchall()[0]
        if row and row[0] >= 2:
            present.append(FieldSpec(col, kind, TF_DEFAULT[kind]))
    if len(present) < 2:
        return []
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
        u_sample_pairs=min(500_000, max(10_000, n * 20)),
    )
    try:
        res = engine.link(con, "_dd_fz", "_rid", present, None, s)
    except ConfigError:
        return []  # no usable blocking rule on these data: exact evidence only
    keep = res.weight >= engine.threshold_weight(cfg["threshold"])
    import pyarrow as pa

    cols: dict[str, Any] = {
        "a": res.left[keep],
        "b": res.right[keep],
        "prob": res.probability[keep],
        "w": res.weight[keep],
    }
    for i in range(len(present)):
        cols[f"lv{i}"] = res.levels[i][keep].astype(np.int32)
    con.register("_dd_fuzzy", pa.table(cols))
    parts = ["'match_weight', round(w, 4)"]
    for i, f in enumerate(present):
        labels = ["null", *LEVELS[f.kind]]
        parts.append(
            f"{literal(f.column)}, json_object('level', lv{i}, 'label', "
            f"list_extract([{', '.join(literal(x) for x in labels)}], lv{i} + 2))"
        )
    con.execute(
        f"INSERT INTO {q.EDGES} SELECT a, b, 'fuzzy', {q.RULE_PRIORITY['fuzzy']}, prob, "
        f"CAST(json_object({', '.join(parts)}) AS VARCHAR) FROM _dd_fuzzy"
    )
    con.unregister("_dd_fuzzy")
    # the engine's record table is keyed like _dd_r (rid order = _rid order)
    return [f.column for f in present]


def _cluster(con: duckdb.DuckDBPyConnection, n: int, cfg: dict[str, Any]) -> np.ndarray:
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
    labels, _guard = cluster(
        n, a, b, w, threshold_weight(cfg["threshold"]), cfg["max_cluster_size"]
    )
    return labels


def _assign(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    entity: str,
    cfg: dict[str, Any],
    columns: list[str],
) -> None:
    """Survivors, golden ids (stable through golden_id_map), entity_xref and duplicates."""
    order = q.survivor_order(q.priority_case(cfg["priority"]), cfg["survivorship"], columns)
    ent = literal(entity)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _dd_m AS SELECT r.*, l.label, "
        f"row_number() OVER (PARTITION BY l.label ORDER BY {order}) = 1 AS is_survivor "
        f"FROM {q.R} r JOIN _dd_labels l USING (rid)"
    )
    # best evidence per record: its strongest link inside its own cluster
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _dd_best AS "
        "WITH e AS (SELECT a AS rid, b AS other, rule, priority, prob, explanation FROM _dd_edges "
        "UNION ALL SELECT b, a, rule, priority, prob, explanation FROM _dd_edges), "
        "s AS (SELECT e.* FROM e JOIN _dd_labels x ON x.rid = e.rid "
        "JOIN _dd_labels y ON y.rid = e.other WHERE x.label = y.label) "
        "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY rid ORDER BY priority, "
        "prob DESC, other) AS k FROM s) WHERE k = 1"
    )
    # golden ids: each previous id goes to the cluster holding most of its records; each cluster
    # keeps its best-claimed previous id; clusters with none get a new id from their first key
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _dd_gid AS "
        "WITH votes AS (SELECT m.label, g.golden_id, count(*) AS n FROM _dd_m m "
        f"JOIN golden_id_map g ON g.entity = {ent} AND g.record_key = m.record_key GROUP BY ALL), "
        "claim AS (SELECT *, row_number() OVER (PARTITION BY golden_id ORDER BY n DESC, label) "
        "AS rg FROM votes), "
        "pick AS (SELECT label, golden_id FROM (SELECT *, row_number() OVER (PARTITION BY label "
        "ORDER BY n DESC, golden_id) AS rl FROM claim WHERE rg = 1) WHERE rl = 1), "
        "firsts AS (SELECT label, min(record_key) AS k FROM _dd_m GROUP BY label), "
        f"fresh AS (SELECT f.label, {ent} || '_' || substr(md5({ent} || ':' || f.k), 1, 16) AS cand "
        "FROM firsts f ANTI JOIN pick p USING (label)) "
        "SELECT label, golden_id FROM pick UNION ALL "
        "SELECT label, CASE WHEN cand IN (SELECT golden_id FROM golden_id_map "
        f"WHERE entity = {ent}) OR cand IN (SELECT golden_id FROM pick) "
        f"THEN {ent} || '_' || substr(md5(cand || ':' || ?), 1, 16) ELSE cand END FROM fresh",
        [run_id],
    )
    con.execute(
        "INSERT INTO entity_xref SELECT "
        f"{ent}, m.source_name, m.source_system, CAST(m.source_id AS VARCHAR), m.source_file, "
        "m.source_row, g.golden_id, "
        "CASE WHEN m.is_survivor THEN 'original' ELSE coalesce(b.rule, 'fuzzy') END, "
        "CASE WHEN m.is_survivor THEN NULL ELSE b.prob END, m.is_survivor, m.record_key "
        "FROM _dd_m m JOIN _dd_gid g USING (label) LEFT JOIN _dd_best b USING (rid) "
        "ORDER BY m.source_name, m.source_file, m.source_row"
    )
    con.execute(
        "INSERT INTO duplicates SELECT "
        f"{ent}, m.source_name, m.source_system, CAST(m.source_id AS VARCHAR), m.source_file, "
        "m.source_row, g.golden_id, b.rule, b.prob, o.source_name, CAST(o.source_id AS VARCHAR), "
        "s.source_name, CAST(s.source_id AS VARCHAR), b.explanation "
        "FROM _dd_m m JOIN _dd_gid g USING (label) LEFT JOIN _dd_best b USING (rid) "
        f"LEFT JOIN {q.R} o ON o.rid = b.other "
        "JOIN _dd_m s ON s.label = m.label AND s.is_survivor "
        "WHERE NOT m.is_survivor ORDER BY m.source_name, m.source_file, m.source_row"
    )
    con.execute(
        "INSERT OR REPLACE INTO golden_id_map SELECT "
        f"{ent}, m.record_key, any_value(g.golden_id ORDER BY m.rid), "
        "coalesce(any_value(old.first_run_id), ?), ? "
        "FROM _dd_m m JOIN _dd_gid g USING (label) LEFT JOIN golden_id_map old "
        f"ON old.entity = {ent} AND old.record_key = m.record_key GROUP BY m.record_key",
        [run_id, run_id],
    )


def _golden_table(
    con: duckdb.DuckDBPyConnection, entity: str, cfg: dict[str, Any], columns: list[str]
) -> None:
    """golden_<entity>: per column the first non-NULL value in survivorship order."""
    order = q.survivor_order(q.priority_case(cfg["priority"]), cfg["survivorship"], columns)
    skip = {"merged_into", "merged_ids", "is_deleted", "converted_to"}
    norm = [
        c
        for c in (
            "email_norm",
            "phone_e164",
            "company_norm",
            "domain",
            "first_name_norm",
            "last_name_norm",
            "full_name_norm",
        )
    ]
    vals = [
        f"first({ident(c)} ORDER BY {order}) FILTER (WHERE {ident(c)} IS NOT NULL) AS {ident(c)}"
        for c in [*columns, *norm]
        if c not in skip and c != "source_id"
    ]
    con.execute(
        f"CREATE OR REPLACE TABLE {ident('golden_' + entity)} AS SELECT g.golden_id, "
        "first(source_name ORDER BY NOT is_survivor, source_name) AS survivor_source_name, "
        "first(CAST(source_id AS VARCHAR) ORDER BY NOT is_survivor, source_name) AS survivor_source_id, "
        "count(*) AS n_records, "
        "list_sort(list_distinct(list(source_name))) AS source_names, "
        f"{', '.join(vals)} FROM _dd_m m JOIN _dd_gid g USING (label) "
        "GROUP BY g.golden_id ORDER BY g.golden_id"
    )


def metrics_sql() -> str:
    """Per source and per entity (source_name NULL): rows, distinct golden ids, groups of size
    > 1 and rows in them."""
    return (
        "WITH x AS (SELECT source_name, golden_id FROM entity_xref WHERE entity = ?), "
        "per AS (SELECT source_name, golden_id, count(*) AS n, grouping(source_name) AS whole "
        "FROM x GROUP BY GROUPING SETS ((source_name, golden_id), (golden_id))) "
        "SELECT CASE WHEN whole = 1 THEN NULL ELSE source_name END, sum(n), count(*), "
        "count(*) FILTER (WHERE n > 1), coalesce(sum(n) FILTER (WHERE n > 1), 0) "
        "FROM per GROUP BY whole, source_name ORDER BY whole DESC, source_name"
    )


def _metrics(con: duckdb.DuckDBPyConnection, run_id: str, entity: str) -> None:
    from romirecon.stages.common import add_metric

    for source, rows, golden, groups, dup_rows in con.execute(metrics_sql(), [entity]).fetchall():
        rows, golden = int(rows), int(golden)
        add_metric(
            con,
            run_id,
            STAGE,
            "duplicate_rate",
            (rows - golden) / rows if rows else 0.0,
            source_name=source,
            entity=entity,
            numerator=rows - golden,
            denominator=rows,
            unit="ratio",
        )
        add_metric(
            con,
            run_id,
            STAGE,
            "duplicate_groups",
            float(groups),
            source_name=source,
            entity=entity,
            unit="groups",
        )
        add_metric(
            con,
            run_id,
            STAGE,
            "duplicate_rows",
            float(dup_rows),
            source_name=source,
            entity=entity,
            unit="rows",
        )
