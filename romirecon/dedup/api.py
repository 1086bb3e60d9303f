"""Library entry points of the standalone dedupe: `dedupe_file` and `explain_pair`.

`dedupe_file` writes into OUT_DIR:
- `pairs.parquet`: left_id, right_id, match_probability, match_weight, blocking_rule and one
  `level_<column>` per field (-1 NULL, 0 disagree ... top = exact) for every scored pair with
  probability >= `pairs_min_probability`;
- `clusters.parquet`: id, cluster_id (the smallest id in the cluster), one row per input record;
- `model.json`: fields, blocking rules and their pair counts, trained m/u/weights, timings (what
  `explain` reads back).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from romirecon.dedup.spec import (
    BlockingRule,
    FieldSpec,
    Settings,
    make_fields,
    parse_block,
    parse_field,
)
from romirecon.exitcodes import ConfigError, InputError, MissingInputError
from romirecon.publish import PARQUET_OPTIONS
from romirecon.sqlutil import ident, literal

INPUT = "_dd_input"


@dataclass
class DedupeResult:
    records: int
    clusters: int
    duplicate_records: int  # records - clusters
    candidate_pairs: int
    matched_pairs: int  # pairs at or above the threshold
    threshold: float
    fields: list[FieldSpec]
    rules: list[str]
    out_dir: Path
    skipped_blocks: int = 0  # blocks above --max-block-size, left out of blocking
    skipped_records: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)


def _reader_sql(path: Path) -> str:
    name = path.name.lower()
    for ext in (".gz", ".zst"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    lit = literal(str(path))
    if name.endswith(".parquet") or name.endswith(".pq"):
        return f"read_parquet({lit})"
    if name.endswith(".json") or name.endswith(".ndjson") or name.endswith(".jsonl"):
        return f"read_json_auto({lit})"
    if name.endswith(".tsv") or name.endswith(".tab"):
        return f"read_csv({lit}, header = true, all_varchar = true, delim = '\\t')"
    # CSV and anything else delimited: every column as text so ids keep their leading zeros
    return f"read_csv({lit}, header = true, all_varchar = true)"


def connect(threads: int | None = None) -> Any:
    import duckdb

    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.execute("SET preserve_insertion_order = true")
    return con


def load_file(con: Any, path: Path) -> dict[str, str]:
    """Load an export into the temp table `_dd_input`; returns its column types."""
    import duckdb

    if not path.exists():
        raise MissingInputError(f"{path}: no such file")
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {ident(INPUT)} AS SELECT * FROM {_reader_sql(path)}"
        )
    except duckdb.Error as e:
        raise InputError(f"{path}: cannot read: {str(e).splitlines()[0]}") from e
    rows = con.execute(f"DESCRIBE SELECT * FROM {ident(INPUT)}").fetchall()
    return {r[0]: str(r[1]) for r in rows}


def resolve_fields(field_args: list[str], types: dict[str, str], id_column: str) -> list[FieldSpec]:
    specs = (
        [parse_field(f) for f in field_args]
        if field_args
        else [(c, None) for c in types if c != id_column]
    )
    return make_fields(specs, types)


def _atomic_copy(
    con: Any, select_sql: str, dest: Path, fmt: str, params: list[Any] | None = None
) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    opts = PARQUET_OPTIONS if fmt == "parquet" else "FORMAT csv, HEADER true"
    con.execute(f"COPY ({select_sql}) TO {literal(str(tmp))} ({opts})", params or [])
    os.replace(tmp, dest)


def _atomic_text(dest: Path, text: str) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, dest)


def dedupe_file(
    path: str | Path,
    id_column: str,
    fields: list[str] | None,
    blocks: list[str] | None,
    out_dir: str | Path,
    threshold: float = 0.9,
    *,
    max_cluster_size: int = 1000,
    max_block_size: int = 5000,
    threads: int | None = None,
    seed: int = 42,
) -> DedupeResult:
    """Dedupe one file (CSV/TSV/Parquet/JSON): blocking rules chosen when none are given,
    Fellegi–Sunter trained without labels, clusters at `threshold`."""
    import numpy as np
    import pyarrow as pa

    from romirecon.dedup import engine

    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"--threshold {threshold} must be between 0 and 1 (exclusive)")
    t_start = time.perf_counter()
    path = Path(path)
    out = Path(out_dir)
    con = connect(threads)
    types = load_file(con, path)
    rows = con.execute(f"SELECT count(*) FROM {ident(INPUT)}").fetchall()[0][0]
    if rows == 0:
        raise MissingInputError(f"{path}: no records to dedupe")
    specs = resolve_fields(list(fields or []), types, id_column)
    rules: list[BlockingRule] = [parse_block(b) for b in blocks or []]
    settings = Settings(
        threshold=threshold,
        max_cluster_size=max_cluster_size,
        max_block_size=max_block_size,
        seed=seed,
    )
    res = engine.link(con, INPUT, id_column, specs, rules or None, settings)

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    keep = res.probability >= settings.pairs_min_probability
    cols: dict[str, Any] = {
        "l": res.left[keep],
        "r": res.right[keep],
        "match_probability": res.probability[keep],
        "match_weight": res.weight[keep],
        "rule_idx": res.rule[keep].astype(np.int32),
    }
    for i, f in enumerate(specs):
        cols[f"level_{f.column}"] = res.levels[i][keep]
    pairs_tbl = pa.table(cols)
    rule_tbl = pa.table(
        {
            "rule_idx": np.arange(len(res.rules), dtype=np.int32),
            "blocking_rule": [r.label for r in res.rules],
        }
    )
    con.register("_dd_pairs", pairs_tbl)
    con.register("_dd_rules", rule_tbl)
    level_cols = ", ".join(f"p.{ident('level_' + f.column)}" for f in specs)
    _atomic_copy(
        con,
        "SELECT a.id AS left_id, b.id AS right_id, p.match_probability, p.match_weight, "
        f"q.blocking_rule, {level_cols} FROM _dd_pairs p "
        f"JOIN {engine.REC} a ON a.rid = p.l JOIN {engine.REC} b ON b.rid = p.r "
        "JOIN _dd_rules q USING (rule_idx) ORDER BY p.l, p.r",
        out / "pairs.parquet",
        "parquet",
    )
    con.register(
        "_dd_labels",
        pa.table({"rid": np.arange(res.n, dtype=np.int32), "label": res.labels.astype(np.int32)}),
    )
    _atomic_copy(
        con,
        f"SELECT a.id AS id, c.id AS cluster_id FROM _dd_labels l "
        f"JOIN {engine.REC} a ON a.rid = l.rid JOIN {engine.REC} c ON c.rid = l.label "
        "ORDER BY l.rid",
        out / "clusters.parquet",
        "parquet",
    )
    n_clusters = int(np.unique(res.labels).size)
    matched = int((res.weight >= engine.threshold_weight(threshold)).sum())
    res.timings["write"] = time.perf_counter() - t0
    res.timings["total"] = time.perf_counter() - t_start
    model = res.model.to_json()
    meta = {
        "version": 1,
        "input": str(path.resolve()),
        "id_column": id_column,
        "threshold": threshold,
        "max_cluster_size": max_cluster_size,
        "max_block_size": max_block_size,
        "seed": seed,
        "records": res.n,
        "clusters": n_clusters,
        "candidate_pairs": int(res.left.size),
        "matched_pairs": matched,
        "blocking_rules": [
            {
                "rule": s.rule,
                "pairs": s.pairs,
                "new_pairs": s.new_pairs,
                "skipped_blocks": s.skipped_blocks,
                "skipped_records": s.skipped_records,
                "largest_block": s.largest_block,
                "largest_scored_block": s.largest_kept_block,
            }
            for s in res.rule_stats
        ],
        "rule_estimates": [{"rule": r, "estimated_pairs": e} for r, e in res.rule_estimates],
        "cluster_guard": {
            "oversized": res.guard.oversized,
            "rounds": res.guard.split_rounds,
            "left_single": res.guard.left_single,
        },
        "model": model,
        "em_sessions": [
            {
                "rule": x.rule,
                "pairs": x.pairs,
                "blocked_fields": [specs[int(i)].column for i in x.blocked],
                "expected_matches": None if x.matches != x.matches else round(x.matches, 3),
                "iterations": x.iterations,
                "converged": x.converged,
            }
            for x in res.sessions
        ],
        "timings_s": {k: round(v, 3) for k, v in res.timings.items()},
    }
    _atomic_text(out / "model.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    con.close()
    return DedupeResult(
        res.n,
        n_clusters,
        res.n - n_clusters,
        int(res.left.size),
        matched,
        threshold,
        specs,
        [r.label for r in res.rules],
        out,
        sum(st.skipped_blocks for st in res.rule_stats),
        sum(st.skipped_records for st in res.rule_stats),
        res.timings,
        meta,
    )


def read_model(out_dir: str | Path) -> dict[str, Any]:
    p = Path(out_dir) / "model.json"
    if not p.exists():
        raise MissingInputError(
            f"{p}: not found (is {out_dir} a `romirecon dedupe` output folder?)"
        )
    try:
        meta: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: not valid JSON ({e.msg}, line {e.lineno})") from e
    return meta


def explain_pair(
    out_dir: str | Path, left_id: str, right_id: str, input_path: str | Path | None = None
) -> Any:
    """Why two records of a dedupe output matched or did not (see `explain.Explanation`)."""
    from romirecon.dedup import explain

    meta = read_model(out_dir)
    return explain.explain_from_output(
        Path(out_dir), meta, left_id, right_id, Path(input_path) if input_path else None
    )
