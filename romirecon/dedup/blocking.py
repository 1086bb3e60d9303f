"""Blocking: candidate pairs from rules evaluated in DuckDB SQL.

A rule is a conjunction of equalities on normalized keys. Each rule's pairs come from one
self-join of the record table on the rule's keys (NULL keys never match). Blocks larger than
`max_block_size` records are skipped and reported (one giant block of "john smith" would otherwise
cost n²/2 comparisons). Pairs of all rules are unioned with each pair kept once, tagged with the
first rule that produced it, so no pair is scored twice.
"""

from __future__ import annotations

import itertools
from concurrent.futures import Future, ThreadPoolExecutor
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
    largest_block: int = 0  # records in the rule's largest block (before the cap)
    largest_kept_block: int = 0  # records in its largest block within the cap (scored)


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


def rule_keys_sql(rec: str, exprs: list[str]) -> str:
    """rid and a 64-bit hash of the rule's keys for every record whose keys are all non-NULL.
    Records with equal keys share the hash; a collision (about n²/2^65) only adds a candidate
    pair, which scoring then judges on the real values."""
    ks = ", ".join(f"k{i}" for i in range(len(exprs)))
    return f"SELECT rid, hash({ks}) AS h FROM ({keyed_sql(rec, exprs)})"


def pairs_within_groups(
    rid: np.ndarray, h: np.ndarray, cap: int
) -> tuple[np.ndarray, int, int, int, int]:
    """Every pair (smaller rid first, as a 2 × pairs array) of records that share a hash, from
    groups of 2..cap records, vectorized; plus (groups above the cap, records in them, size of
    the largest group, size of the largest group within the cap)."""
    order = np.lexsort((rid, h))
    hs, rs = h[order], rid[order].astype(np.int64)
    if hs.size == 0:
        return np.empty((2, 0), np.int64), 0, 0, 0, 0
    starts = np.concatenate([[0], np.flatnonzero(hs[1:] != hs[:-1]) + 1])
    sizes = np.diff(np.concatenate([starts, [hs.size]]))
    big = sizes > cap
    keep = (sizes >= 2) & ~big
    largest = int(sizes.max())
    largest_kept = int(sizes[~big].max()) if (~big).any() else 0
    s, k = starts[keep], sizes[keep]
    total = int(k.sum())
    first_of = np.repeat(np.cumsum(k) - k, k)
    offs = np.arange(total) - first_of  # offset of each element inside its group
    pos = np.repeat(s, k) + offs  # its position in the sorted arrays
    after = np.repeat(k, k) - 1 - offs  # partners after it in its group
    li = np.repeat(pos, after)
    step = np.arange(int(after.sum())) - np.repeat(np.cumsum(after) - after, after) + 1
    ri = li + step
    return np.vstack([rs[li], rs[ri]]), int(big.sum()), int(sizes[big].sum()), largest, largest_kept


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """`np.unique(a)` for a 1-d array, by sort and neighbour comparison. numpy 2.4's unique
    hashes first: on pair codes it took 20x longer (2M int64: 3.5 s against 0.17 s), the
    largest part of blocking at 1M customers."""
    s = np.sort(a)
    if s.size < 2:
        return s
    return s[np.concatenate([[True], s[1:] != s[:-1]])]


def block_sizes_sql(rec: str, exprs: list[str], where: str = "") -> str:
    ks = ", ".join(f"k{i}" for i in range(len(exprs)))
    return f"SELECT count(*) AS n FROM ({keyed_sql(rec, exprs, where)}) GROUP BY {ks}"


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[RuleStats], list[np.ndarray]]:
    """Candidate pairs (left rid, right rid, first rule index), sorted by (left, right), each
    once; plus, per rule, the positions of all the pairs it produced.

    DuckDB evaluates each rule's keys (one scan, hashed); numpy groups equal keys and expands
    the groups into pairs."""

    def expand(rid: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        lr, sb, sr, largest, kept = pairs_within_groups(rid, h, max_block_size)
        return sorted_unique(lr[0] * n_records + lr[1]), (sb, sr, largest, kept)

    # numpy works on one core and releases the GIL in its sorts and array arithmetic: a rule's
    # pairs are expanded on a helper thread while DuckDB evaluates the next rule's keys, instead
    # of DuckDB and numpy taking turns with one core idle (the rules are independent; results
    # are collected in rule order). At most two rules' keys wait for numpy at a time, so the
    # fetched key arrays do not pile up in memory when numpy is the slower side.
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures: list[Future[tuple[np.ndarray, tuple[int, int, int, int]]]] = []
        for i, rule in enumerate(rules):
            if i >= 2:
                futures[i - 2].result()
            got = con.execute(rule_keys_sql(rec, key_exprs(rule, column_of))).fetchnumpy()
            rid = np.asarray(got["rid"], dtype=np.int64)
            futures.append(pool.submit(expand, rid, np.asarray(got["h"])))
        results = [f.result() for f in futures]
    per_rule: list[np.ndarray] = [r[0] for r in results]
    skipped: list[tuple[int, int, int, int]] = [r[1] for r in results]
    if per_rule:
        allc = np.concatenate(per_rule)
        tags = np.concatenate([np.full(c.size, i, dtype=np.int8) for i, c in enumerate(per_rule)])
        order = np.argsort(allc, kind="stable")  # stable: a pair's first rule comes first
        allc, tags = allc[order], tags[order]
        first = np.concatenate([[True], allc[1:] != allc[:-1]]) if allc.size else allc.astype(bool)
        allc, allt = allc[first], tags[first]
    else:
        allc, allt = np.empty(0, np.int64), np.empty(0, np.int8)
    new = np.bincount(allt.astype(np.int64), minlength=len(rules))
    stats = [
        RuleStats(r.label, int(c.size), int(new[i]), *skipped[i])
        for i, (r, c) in enumerate(zip(rules, per_rule, strict=True))
    ]
    left = (allc // n_records).astype(np.int32)
    right = (allc % n_records).astype(np.int32)
    # every pair each rule produced, as positions in the final arrays: training must see a
    # rule's whole output, not only the pairs earlier rules missed (those are biased to
    # disagree on the earlier rules' keys)
    members = [np.searchsorted(allc, c).astype(np.int64) for c in per_rule]
    return left, right, allt, stats, members


def choose_rules(
    con: duckdb.DuckDBPyConnection,
    rec: str,
    n_records: int,
    candidates: list[str],
    column_of: dict[str, str],
    max_block_size: int,
    pairs_per_record: float,
    max_rules: int = 8,
    sample_size: int = 100_000,
    max_uses: int = 3,
) -> tuple[list[BlockingRule], list[tuple[str, float]]]:
    """Pick blocking rules without labels.

    Candidates are every single field and every pair of fields. Their pair counts are estimated
    on a systematic sample (scaled by (n/sample)²). Single fields come first, then pairs from the
    most selective up, each accepted when it costs at most `pairs_per_record * n` pairs and is not
    a superset of an accepted rule (its pairs would be a subset) and none of its fields is in
    `max_uses` accepted pair rules already. Several independent rules give
    recall: a duplicate is missed only when every rule has a typo in one of its keys.
    """
    step = max(1, n_records // sample_size)
    scale = float(step * step)
    budget = max(pairs_per_record * n_records, 10_000.0)
    # a systematic sample, materialized once: every estimate scans it instead of the records
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _dd_sample AS SELECT * FROM {ident(rec)} "
        f"WHERE rid % {int(step)} = 0"
    )
    cand_rules = [BlockingRule((c,)) for c in candidates]
    cand_rules += [BlockingRule((a, b)) for a, b in itertools.combinations(candidates, 2)]
    estimates: list[tuple[str, float]] = []
    est: dict[BlockingRule, float] = {}
    for rule in cand_rules:
        exprs = key_exprs(rule, column_of)
        row = con.execute(
            estimate_pairs_sql("_dd_sample", exprs, "true"), [max(2, max_block_size // step)]
        ).fetchall()[0]
        est[rule] = float(row[0] if row else 0) * scale
        estimates.append((rule.label, est[rule]))
    con.execute("DROP TABLE _dd_sample")
    chosen: list[BlockingRule] = []
    uses: dict[str, int] = {}
    ordered = sorted(cand_rules, key=lambda r: (len(r.keys), est[r], r.keys))
    for rule in ordered:
        if len(chosen) >= max_rules:
            break
        if est[rule] <= 0 or est[rule] > budget:
            continue
        if any(set(c.keys) <= set(rule.keys) for c in chosen):
            continue
        if len(rule.keys) > 1 and any(uses.get(k, 0) >= max_uses for k in rule.keys):
            continue  # spread rules over fields: one field's typo must not defeat most rules
        chosen.append(rule)
        for k in rule.keys:
            uses[k] = uses.get(k, 0) + 1
    return chosen, estimates
