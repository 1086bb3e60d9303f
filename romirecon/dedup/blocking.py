"""Blocking: candidate pairs from rules evaluated in DuckDB SQL.

A rule is a conjunction of equalities on normalized keys. Each rule's pairs come from one
self-join of the record table on the rule's keys (NULL keys never match). Blocks larger than
`max_block_size` records are skipped and reported (one giant block of "john smith" would otherwise
cost n²/2 comparisons). Pairs of all rules are unioned with each pair kept once, tagged with the
first rule that produced it, so no pair is scored twice.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import duckdb
import numpy as np

from romirecon.dedup.spec import BlockingRule, parse_key
from romirecon.sqlutil import ident


@dataclass
class RuleStats:
    rule: str
    pairs: int  # pairs this rule produced (before removing pairs earlier rules produced)
    new_pairs: int  # pairs first produced by this rule
    skipped_blocks: int  # blocks above the size cap
    skipped_records: int  # records in those blocks


def key_exprs(rule: BlockingRule, column_of: dict[str, str]) -> list[str]:
    """SQL expressions over the record table for the rule's keys (`col` or `left(col, n)`)."""
    out = []
    for key in rule.keys:
        col, n = parse_key(key)
        c = ident(column_of[col])
        out.append(f"left({c}, {int(n)})" if n else c)
    return out


def keyed_sql(rec: str, exprs: list[str], where: str = "") -> str:
    """rid plus the keys k0..kn of every record whose keys are all non-NULL."""
    ks = ", ".join(f"{e} AS k{i}" for i, e in enumerate(exprs))
    nn = " AND ".join(f"{e} IS NOT NULL" for e in exprs)
    extra = f" AND ({where})" if where else ""
    return f"SELECT rid, {ks} FROM {ident(rec)} WHERE {nn}{extra}"


def rule_pairs_sql(rec: str, exprs: list[str]) -> str:
    """(l, r) rid pairs with l < r equal on every key, from blocks of at most `?` records."""
    ks = ", ".join(f"k{i}" for i in range(len(exprs)))
    on = " AND ".join(f"a.k{i} = b.k{i}" for i in range(len(exprs)))
    return (
        f"WITH k AS ({keyed_sql(rec, exprs)}), "
        f"s AS (SELECT *, count(*) OVER (PARTITION BY {ks}) AS n FROM k), "
        f"f AS (SELECT * FROM s WHERE n BETWEEN 2 AND ?) "
        f"SELECT a.rid AS l, b.rid AS r FROM f a JOIN f b ON {on} AND a.rid < b.rid"
    )


def block_sizes_sql(rec: str, exprs: list[str], where: str = "") -> str:
    ks = ", ".join(f"k{i}" for i in range(len(exprs)))
    return f"SELECT count(*) AS n FROM ({keyed_sql(rec, exprs, where)}) GROUP BY {ks}"


def skipped_sql(rec: str, exprs: list[str]) -> str:
    """(blocks above the cap `?`, records in them)."""
    return f"SELECT count(*), coalesce(sum(n), 0) FROM ({block_sizes_sql(rec, exprs)}) WHERE n > ?"


def estimate_pairs_sql(rec: str, exprs: list[str], where: str) -> str:
    """Pairs a rule would produce on the records matching `where`, blocks capped at `?`."""
    return (
        f"SELECT coalesce(sum(n * (n - 1) / 2), 0) FROM ({block_sizes_sql(rec, exprs, where)}) "
        f"WHERE n <= ?"
    )


def candidate_pairs(
    con: duckdb.DuckDBPyConnection,
    rec: str,
    n_records: int,
    rules: list[BlockingRule],
    column_of: dict[str, str],
    max_block_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[RuleStats]]:
    """Candidate pairs (left rid, right rid, rule index), sorted by (left, right), each once."""
    codes: list[np.ndarray] = []
    tags: list[np.ndarray] = []
    stats: list[RuleStats] = []
    seen = np.empty(0, dtype=np.int64)
    for i, rule in enumerate(rules):
        exprs = key_exprs(rule, column_of)
        got = con.execute(rule_pairs_sql(rec, exprs), [max_block_size]).fetchnumpy()
        code = got["l"].astype(np.int64) * n_records + got["r"].astype(np.int64)
        code = np.unique(code)
        fresh = code[~np.isin(code, seen, assume_unique=True)] if seen.size else code
        sb, sr = con.execute(skipped_sql(rec, exprs), [max_block_size]).fetchall()[0] or (0, 0)
        stats.append(RuleStats(rule.label, int(code.size), int(fresh.size), int(sb), int(sr)))
        codes.append(fresh)
        tags.append(np.full(fresh.size, i, dtype=np.int8))
        seen = np.union1d(seen, fresh) if seen.size else fresh
    if codes:
        allc = np.concatenate(codes)
        allt = np.concatenate(tags)
        order = np.argsort(allc, kind="stable")
        allc, allt = allc[order], allt[order]
    else:
        allc, allt = np.empty(0, np.int64), np.empty(0, np.int8)
    left = (allc // n_records).astype(np.int32)
    right = (allc % n_records).astype(np.int32)
    return left, right, allt, stats


def choose_rules(
    con: duckdb.DuckDBPyConnection,
    rec: str,
    n_records: int,
    candidates: list[str],
    column_of: dict[str, str],
    max_block_size: int,
    pairs_per_record: float,
    max_rules: int = 8,
    sample_size: int = 200_000,
) -> tuple[list[BlockingRule], list[tuple[str, float]]]:
    """Pick blocking rules without labels.

    Candidates are every single field and every pair of fields. Their pair counts are estimated
    on a systematic sample (scaled by (n/sample)²). Single fields come first, then pairs from the
    most selective up, each accepted when it costs at most `pairs_per_record * n` pairs and is not
    a superset of an accepted rule (its pairs would be a subset). Several independent rules give
    recall: a duplicate is missed only when every rule has a typo in one of its keys.
    """
    step = max(1, n_records // sample_size)
    where = f"rid % {int(step)} = 0"
    scale = float(step * step)
    budget = max(pairs_per_record * n_records, 10_000.0)
    cand_rules = [BlockingRule((c,)) for c in candidates]
    cand_rules += [BlockingRule((a, b)) for a, b in itertools.combinations(candidates, 2)]
    estimates: list[tuple[str, float]] = []
    est: dict[BlockingRule, float] = {}
    for rule in cand_rules:
        exprs = key_exprs(rule, column_of)
        row = con.execute(
            estimate_pairs_sql(rec, exprs, where), [max(2, max_block_size // step)]
        ).fetchall()[0]
        est[rule] = float(row[0] if row else 0) * scale
        estimates.append((rule.label, est[rule]))
    chosen: list[BlockingRule] = []
    ordered = sorted(cand_rules, key=lambda r: (len(r.keys), est[r], r.keys))
    for rule in ordered:
        if len(chosen) >= max_rules:
            break
        if est[rule] <= 0 or est[rule] > budget:
            continue
        if any(set(c.keys) <= set(rule.keys) for c in chosen):
            continue
        chosen.append(rule)
    return chosen, estimates
