"""SQL builders for the dedup stage (pure functions: names in, SQL text out).

Record table `_dd_r`: `rid` (0..n-1 in provenance order), the staged columns, the normalized
keys (party entities), `record_key` (what golden ids are remembered by: source name + source id,
or a hash of the row when the export has no id), `completeness`, `is_evidence` (deleted or
merged-away records: they join their master's cluster and never survive).

Edges `_dd_edges(a, b, rule, priority, prob, fz)`: every reason two records are one
entity; `fz` numbers a fuzzy edge's row of comparison levels (NULL for exact evidence), from
which the explanation of the few edges that `duplicates` shows is built. Exact reasons link each record to the smallest record of its group (a star, not a clique).
"""

from __future__ import annotations

from romirecon.sqlutil import ident, literal

R = "_dd_r"
EDGES = "_dd_edges"
RULE_PRIORITY = {"whole_row": 0, "merge_pointer": 1, "exact": 2, "fuzzy": 3}

# canonical column -> normalized column of norm_<entity> used for exact keys
NORMALIZED_KEY = {
    "email": "email_norm",
    "phone": "phone_e164",
    "company": "company_norm",
    "website": "domain",
    "first_name": "first_name_norm",
    "last_name": "last_name_norm",
    "full_name": "full_name_norm",
    "street": "street_norm",
    "city": "city_norm",
    "postal_code": "postal_norm",
    "country": "country_norm",
}


def row_json(columns: list[str]) -> str:
    return "to_json({" + ", ".join(f"{literal(c)}: {ident(c)}" for c in columns) + "})"


# provenance columns every record table carries (the rest of `s.*` only for party entities)
RECORD_PROVENANCE = ("source_name", "source_system", "source_file", "source_row")


def record_table_sql(
    entity: str,
    columns: list[str],
    with_norm: bool,
    keep: list[str] | None = None,
    unique_rows: bool = True,
    masks: list[str] | None = None,
    records: str | None = None,
) -> str:
    """CREATE `_dd_r` from `stg_<entity>` (joined to `norm_<entity>` for party entities).

    `records`: the entity's record-number view (`common.record_view`), whose `rid` the record
    table takes as is (and joins the normalized keys on, which carry it too); without one, the
    rows are numbered by a window over provenance and joined back on it.

    `keep`: the entity columns to carry (None: every staged column, `s.*`); a lean record table
    for entities that only need exact keys. The row hash (md5 of the whole row as JSON, the most
    expensive expression here) is computed only where it can matter: rows without a source id
    (their record key is the hash) and rows whose (source, id) repeats. Two rows of one source
    are whole-row equal only if their ids are equal, so every other row is alone in its
    whole-row group and needs no hash.

    `masks`: BIGINT expressions over the staged row `s` and the normalized row `n`, carried as
    `_m0`, `_m1`, ... (the golden table's which-columns-are-present bits, computed here where
    the staged row is read anyway instead of by a second provenance join)."""
    stg = ident("stg_" + entity)
    has_del = "is_deleted" in columns
    has_merge = "merged_into" in columns
    evidence = (
        " OR ".join(
            x
            for x in (
                "coalesce(s.is_deleted, false)" if has_del else "",
                "s.merged_into IS NOT NULL" if has_merge else "",
            )
            if x
        )
        or "false"
    )
    complete = " + ".join(f"(s.{ident(c)} IS NOT NULL)::INTEGER" for c in columns) or "0"
    if not with_norm:
        norm, norm_cols = "", ""
    elif records:
        norm = f" LEFT JOIN {ident('norm_' + entity)} n ON n.rid = s.rid"
        norm_cols = ", n.* EXCLUDE (source_name, source_file, source_row, source_id, rid)"
    else:
        norm = (
            f" LEFT JOIN {ident('norm_' + entity)} n ON n.source_name = s.source_name "
            "AND n.source_file = s.source_file AND n.source_row = s.source_row"
        )
        norm_cols = ", n.* EXCLUDE (source_name, source_file, source_row, source_id)"
    if keep is None:
        carry = "s.* EXCLUDE (rid)" if records else "s.*"
    else:
        names = [*RECORD_PROVENANCE, *(c for c in keep if c not in RECORD_PROVENANCE)]
        carry = ", ".join(f"s.{ident(c)}" for c in names)
    hashed = (
        f"CASE WHEN s.source_id IS NULL OR d.source_id IS NOT NULL THEN "
        f"{_prefixed_hash(columns)} END"
    )
    repeated = (
        f"(SELECT source_name, source_id FROM {stg} WHERE source_id IS NOT NULL "
        "GROUP BY ALL HAVING count(*) > 1) d"
    )
    # record numbers from a narrow window over the three key columns only, joined back, and no
    # ORDER BY rid on the wide result: at 4M contacts a window or a sort over the whole row ran
    # out of a 4 GB memory limit. Every later step orders by rid explicitly; the fuzzy engine
    # checks the order it loads and sorts when needed.
    # (`unique_rows`: each staged row has its own (source_name, source_file, source_row); an
    # unpivoted export repeats them, and then the window numbers whole rows as before)
    order = "ORDER BY s.source_name, s.source_file, s.source_row"
    src = stg
    if records:
        rid, ids, src = "s.rid", "", ident(records)
    elif unique_rows:
        rid = "i.rid"
        ids = (
            " JOIN (SELECT source_name, source_file, source_row, (row_number() OVER (ORDER BY "
            f"source_name, source_file, source_row) - 1)::INTEGER AS rid FROM {stg}) i "
            "ON i.source_name IS NOT DISTINCT FROM s.source_name "
            "AND i.source_file IS NOT DISTINCT FROM s.source_file "
            "AND i.source_row IS NOT DISTINCT FROM s.source_row"
        )
    else:
        rid, ids = f"(row_number() OVER ({order}) - 1)::INTEGER", ""
    mask_cols = "".join(f", {m} AS _m{j}" for j, m in enumerate(masks or []))
    inner = (
        f"SELECT {rid} AS rid, {carry}{norm_cols}{mask_cols}, {hashed} AS row_hash, "
        f"{complete} AS completeness, ({evidence}) AS is_evidence "
        f"FROM {src} s{ids} LEFT JOIN {repeated} ON d.source_name IS NOT DISTINCT FROM "
        f"s.source_name AND d.source_id = s.source_id{norm}"
    )
    return (
        f"CREATE OR REPLACE TEMP TABLE {R} AS SELECT * EXCLUDE (row_hash, completeness, "
        "is_evidence), source_name || ':' || coalesce(CAST(source_id AS VARCHAR), '#' || row_hash) "
        f"AS record_key, row_hash, completeness, is_evidence FROM ({inner})"
    )


def _prefixed_hash(columns: list[str]) -> str:
    return "md5(to_json({" + ", ".join(f"{literal(c)}: s.{ident(c)}" for c in columns) + "}))"


def edges_ddl() -> str:
    return (
        f"CREATE OR REPLACE TEMP TABLE {EDGES} (a INTEGER, b INTEGER, rule VARCHAR, "
        "priority INTEGER, prob DOUBLE, fz INTEGER)"
    )


def star_edges_sql(partition: list[str], where: str, rule: str) -> str:
    """Each record of a group (equal on `partition` expressions) linked to the group's first."""
    part = ", ".join(partition)
    pr = RULE_PRIORITY[rule.split(":")[0]]
    return (
        f"INSERT INTO {EDGES} SELECT rid, g, {literal(rule)}, {pr}, 1.0, NULL FROM ("
        f"SELECT rid, min(rid) OVER (PARTITION BY {part}) AS g FROM {R} WHERE {where}) "
        "WHERE rid <> g"
    )


def whole_row_sql() -> str:
    # rows without a hash have a unique (source, id): no whole-row twin (see record_table_sql)
    return star_edges_sql(["source_name", "row_hash"], "row_hash IS NOT NULL", "whole_row")


def same_id_sql() -> str:
    """One id twice in one source (overlapping exports of a record that changed between them)."""
    return star_edges_sql(["source_name", "source_id"], "source_id IS NOT NULL", "exact:source_id")


def key_expr(column: str, normalized: bool) -> str:
    if normalized and column in NORMALIZED_KEY:
        return ident(NORMALIZED_KEY[column])
    return f"nullif(lower(trim(CAST({ident(column)} AS VARCHAR))), '')"


def declared_key_sql(key: list[str], sources: list[str], normalized: bool) -> str:
    exprs = [key_expr(c, normalized) for c in key]
    if "source_id" in key:  # ids are per system: never equal across sources by accident
        exprs.append("source_name")
    where = " AND ".join(f"{e} IS NOT NULL" for e in exprs)
    where += " AND source_name IN (" + ", ".join(literal(s) for s in sources) + ")"
    return star_edges_sql(exprs, where, "exact:" + "+".join(key))


def merge_pointer_sql(columns: list[str]) -> list[str]:
    """Edges from Salesforce MasterRecordId / Lead.ConvertedContactId and HubSpot
    hs_merged_object_ids, resolved within the same source system."""
    out = []
    pr = RULE_PRIORITY["merge_pointer"]
    for col in ("merged_into", "converted_to"):
        if col in columns:
            out.append(
                f"INSERT INTO {EDGES} SELECT c.rid, m.rid, 'merge_pointer', {pr}, 1.0, NULL "
                f"FROM {R} c JOIN {R} m ON CAST(c.{ident(col)} AS VARCHAR) = "
                "CAST(m.source_id AS VARCHAR) AND c.source_system IS NOT DISTINCT FROM "
                "m.source_system AND c.rid <> m.rid"
            )
    if "merged_ids" in columns:
        out.append(
            f"INSERT INTO {EDGES} SELECT c.rid, m.rid, 'merge_pointer', {pr}, 1.0, NULL "
            f"FROM (SELECT rid, source_system, unnest(merged_ids) AS mid FROM {R}) c "
            f"JOIN {R} m ON m.source_id = c.mid AND c.source_system IS NOT DISTINCT FROM "
            "m.source_system AND c.rid <> m.rid"
        )
    return out


def external_ref_sql() -> str:
    """A record carrying another system's id of the same party (a Stripe id on a CRM contact)."""
    pr = RULE_PRIORITY["exact"]
    return (
        f"INSERT INTO {EDGES} SELECT a.rid, b.rid, 'exact:external_ref', {pr}, 1.0, NULL "
        f"FROM {R} a JOIN {R} b ON a.external_ref = b.source_id "
        "AND a.source_name <> b.source_name"
    )


def survivor_order(priority_sql: str, order: list[str], columns: list[str]) -> str:
    """ORDER BY terms choosing a cluster's survivor / a golden value: live records first, then
    the configured rules, then provenance as a total tie-break."""
    terms = ["is_evidence"]
    for rule in order:
        if rule == "source_priority":
            terms.append(priority_sql)
        elif rule == "most_recent":
            terms += [f"{c} DESC NULLS LAST" for c in ("updated_at", "created_at") if c in columns]
        elif rule == "most_complete":
            terms.append("completeness DESC")
    terms += ["source_name", "source_file", "source_row"]
    return ", ".join(terms)


def priority_case(priority: dict[str, int]) -> str:
    if not priority:
        return "0"
    whens = " ".join(f"WHEN {literal(k)} THEN {int(v)}" for k, v in sorted(priority.items()))
    return f"(CASE source_name {whens} ELSE {max(priority.values()) + 1} END)"
