"""Why two records matched or did not: per-field values, levels, Bayes-factor weights, the
term-frequency adjustment, the prior, and the final probability, plus whether blocking ever put
the pair together and whether they share a cluster."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from romirecon.dedup import fs
from romirecon.dedup.comparisons import LEVELS, FieldData
from romirecon.exitcodes import InputError


@dataclass
class FieldExplanation:
    column: str
    kind: str
    left: str | None
    right: str | None
    level: int
    label: str
    m: float | None
    u: float | None
    weight: float  # log2(m/u), 0 for NULL
    tf_adjustment: float


@dataclass
class Explanation:
    left_id: str
    right_id: str
    fields: list[FieldExplanation]
    prior_weight: float
    match_weight: float
    match_probability: float
    threshold: float
    candidate_rule: str | None = None  # blocking rule that proposed the pair, None if none did
    same_cluster: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def is_match(self) -> bool:
        return self.match_probability >= self.threshold

    def render(self) -> str:
        lines = [f"{self.left_id} vs {self.right_id}"]
        head = f"{'field':<18} {'kind':<8} {'left':<24} {'right':<24} {'level':<24} {'m':>8} {'u':>10} {'weight':>8}"
        lines.append(head)
        for f in self.fields:
            w = f"{f.weight + f.tf_adjustment:+8.2f}"
            m = "" if f.m is None else f"{f.m:8.4f}"
            u = "" if f.u is None else f"{f.u:10.6f}"
            lines.append(
                f"{f.column[:18]:<18} {f.kind:<8} {_show(f.left):<24} {_show(f.right):<24} "
                f"{f.label + f' ({f.level})':<24} {m:>8} {u:>10} {w}"
                + (f"  (tf {f.tf_adjustment:+.2f})" if f.tf_adjustment else "")
            )
        lines.append(f"prior weight          {self.prior_weight:+.2f} bits")
        lines.append(f"total match weight    {self.match_weight:+.2f} bits")
        verdict = "MATCH" if self.is_match else "no match"
        lines.append(
            f"match probability     {self.match_probability:.6f} (threshold {self.threshold}: {verdict})"
        )
        if self.candidate_rule is None:
            lines.append("blocking: no blocking rule proposed this pair, so it was never scored")
        else:
            lines.append(f"blocking: proposed by rule {self.candidate_rule}")
        if self.same_cluster is not None:
            lines.append(
                "cluster: " + ("same cluster" if self.same_cluster else "different clusters")
            )
        lines += self.notes
        return "\n".join(lines)


def _show(v: str | None) -> str:
    if v is None:
        return "∅"
    return v if len(v) <= 24 else v[:23] + "…"


def explain_records(
    data: list[FieldData],
    model: fs.FSModel,
    i: int,
    j: int,
    threshold: float,
    left_id: str,
    right_id: str,
) -> Explanation:
    """Explanation for records i and j (record indices into `data`)."""
    from romirecon.dedup.comparisons import compare_all

    left = np.array([i], dtype=np.int32)
    right = np.array([j], dtype=np.int32)
    lev = compare_all(data, left, right)
    bfs = model.bayes_factors()
    tf = fs.tf_adjustment(data, model, left, right, lev)  # one pair: sum over tf fields
    rows: list[FieldExplanation] = []
    total = model.prior_weight
    for k, fd in enumerate(data):
        g = int(lev[k, 0])
        cl, cr = fd.codes[i], fd.codes[j]
        lv = None if cl < 0 else str(fd.values[cl])
        rv = None if cr < 0 else str(fd.values[cr])
        adj = 0.0
        if fd.spec.tf and g == fd.n_levels - 1:
            adj = float(np.log2(model.u[k][g] / max(fd.freq[cl], 1e-9)))
        if g < 0:
            rows.append(
                FieldExplanation(
                    fd.spec.column, fd.spec.kind, lv, rv, g, "null", None, None, 0.0, 0.0
                )
            )
            continue
        w = float(bfs[k][g])
        total += w + adj
        rows.append(
            FieldExplanation(
                fd.spec.column,
                fd.spec.kind,
                lv,
                rv,
                g,
                LEVELS[fd.spec.kind][g],
                float(model.m[k][g]),
                float(model.u[k][g]),
                w,
                adj,
            )
        )
    assert abs(total - (model.prior_weight + sum(r.weight for r in rows) + float(tf[0]))) < 1e-6
    prob = float(fs.probability(np.array([total]))[0])
    return Explanation(left_id, right_id, rows, model.prior_weight, total, prob, threshold)


def explain_from_output(
    out_dir: Path, meta: dict[str, Any], left_id: str, right_id: str, input_path: Path | None
) -> Explanation:
    """Re-read the input of a `dedupe` run and explain one pair with its saved model."""
    from romirecon.dedup import api, engine
    from romirecon.sqlutil import ident

    model = fs.FSModel.from_json(meta["model"])
    src = input_path or Path(meta["input"])
    con = api.connect()
    api.load_file(con, src)
    engine.prepare(con, api.INPUT, meta["id_column"], model.fields, None)
    found = dict(
        con.execute(
            f"SELECT CAST(id AS VARCHAR), rid FROM {ident(engine.REC)} "
            "WHERE CAST(id AS VARCHAR) IN (?, ?)",
            [left_id, right_id],
        ).fetchall()
    )
    missing = [x for x in (left_id, right_id) if x not in found]
    if missing:
        raise InputError(f"{src}: no record with id {', '.join(map(repr, missing))}")
    data = engine.load_fields(con, model.fields)
    ex = explain_records(
        data, model, found[left_id], found[right_id], float(meta["threshold"]), left_id, right_id
    )
    pairs = out_dir / "pairs.parquet"
    clusters = out_dir / "clusters.parquet"
    from romirecon.sqlutil import literal

    if pairs.exists():
        row = con.execute(
            f"SELECT blocking_rule FROM read_parquet({literal(str(pairs))}) WHERE "
            "(CAST(left_id AS VARCHAR) = ? AND CAST(right_id AS VARCHAR) = ?) OR "
            "(CAST(left_id AS VARCHAR) = ? AND CAST(right_id AS VARCHAR) = ?)",
            [left_id, right_id, right_id, left_id],
        ).fetchall()
        row = row[0] if row else None
        if row:
            ex.candidate_rule = str(row[0])
        else:
            # pairs.parquet keeps only pairs above a probability floor: re-run the rules
            ex.candidate_rule = _rule_for(con, meta, found[left_id], found[right_id], model)
    if clusters.exists():
        cl = dict(
            con.execute(
                f"SELECT CAST(id AS VARCHAR), CAST(cluster_id AS VARCHAR) FROM "
                f"read_parquet({literal(str(clusters))}) WHERE CAST(id AS VARCHAR) IN (?, ?)",
                [left_id, right_id],
            ).fetchall()
        )
        if len(cl) == 2:
            ex.same_cluster = cl[left_id] == cl[right_id]
            if ex.same_cluster and not ex.is_match:
                ex.notes.append("note: linked through other records of the cluster (transitively)")
    con.close()
    return ex


def _rule_for(con: Any, meta: dict[str, Any], i: int, j: int, model: fs.FSModel) -> str | None:
    """The first blocking rule under which records i and j share a block, if any."""
    from romirecon.dedup import blocking, engine
    from romirecon.dedup.spec import parse_block

    column_of = {f.column: f"f{k}" for k, f in enumerate(model.fields)}
    for r in meta.get("blocking_rules", []):
        rule = parse_block(r["rule"].replace("+", ","))
        if not rule.columns() <= set(column_of):
            continue
        exprs = blocking.key_exprs(rule, column_of)
        eq = " AND ".join(f"a_{k} IS NOT NULL AND a_{k} = b_{k}" for k in range(len(exprs)))
        sel_a = ", ".join(f"{e} AS a_{k}" for k, e in enumerate(exprs))
        sel_b = ", ".join(f"{e} AS b_{k}" for k, e in enumerate(exprs))
        row = con.execute(
            f"SELECT count(*) FROM (SELECT {sel_a} FROM {engine.REC} WHERE rid = ?), "
            f"(SELECT {sel_b} FROM {engine.REC} WHERE rid = ?) WHERE {eq}",
            [i, j],
        ).fetchall()[0]
        if row and row[0]:
            return str(r["rule"])
    return None
