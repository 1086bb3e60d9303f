"""Connected components, the giant-cluster guard, and SQL blocking."""

from __future__ import annotations

import itertools

import duckdb
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from romirecon.dedup import blocking
from romirecon.dedup.cluster import cluster, connected_components
from romirecon.dedup.spec import BlockingRule


def test_components_label_is_smallest_member() -> None:
    # edges 5-3, 3-1 (a chain), 4-6; 0, 2 and 7 alone
    labels = connected_components(8, np.array([5, 3, 6]), np.array([3, 1, 4]))
    assert labels.tolist() == [0, 1, 2, 1, 4, 1, 4, 7]


def test_components_long_chain() -> None:
    n = 1000
    a = np.arange(n - 1)[::-1]  # edges listed from the far end
    labels = connected_components(n, a, a + 1)
    assert (labels == 0).all()


def test_guard_splits_giant_cluster_on_weak_links() -> None:
    # two 3-record cliques with strong edges (weight 10) joined by one weak edge (weight 1);
    # with max size 4 the joined cluster of 6 is split back at the weak edge
    left = np.array([0, 0, 1, 3, 3, 4, 2])
    right = np.array([1, 2, 2, 4, 5, 5, 3])
    weight = np.array([10, 10, 10, 10, 10, 10, 1.0])
    labels, report = cluster(6, left, right, weight, min_weight=0.0, max_size=4)
    assert labels.tolist() == [0, 0, 0, 3, 3, 3]
    assert report.oversized == 1 and report.split_rounds == 1 and report.left_single == 0
    labels, _ = cluster(6, left, right, weight, min_weight=0.0, max_size=6)
    assert labels.tolist() == [0] * 6


def _records(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "CREATE TABLE rec AS SELECT * FROM (VALUES "
        "(0, 'smith', 'john', 'a'), (1, 'smith', 'john', 'b'), (2, 'smith', 'jon', 'a'), "
        "(3, 'jones', 'mary', 'c'), (4, 'jones', NULL, 'c'), (5, NULL, 'x', 'd')) "
        "t(rid, f0, f1, f2)"
    )


def test_candidate_pairs_union_each_pair_once() -> None:
    con = duckdb.connect()
    _records(con)
    cols = {"last": "f0", "first": "f1", "zip": "f2"}
    rules = [BlockingRule(("last", "first")), BlockingRule(("last",)), BlockingRule(("zip",))]
    left, right, rule, stats, members = blocking.candidate_pairs(con, "rec", 6, rules, cols, 100)
    # last+first: (0,1). last: (0,1) (0,2) (1,2) (3,4). zip: (0,2) (3,4).
    pairs = list(zip(left.tolist(), right.tolist(), strict=True))
    assert pairs == [(0, 1), (0, 2), (1, 2), (3, 4)]
    assert rule.tolist() == [0, 1, 1, 1]  # tagged with the first rule that produced it
    assert [(s.pairs, s.new_pairs) for s in stats] == [(1, 1), (4, 3), (2, 0)]
    # every pair of each rule, as positions in the final list: zip gives (0,2) and (3,4) = 1, 3
    assert [m.tolist() for m in members] == [[0], [0, 1, 2, 3], [1, 3]]


def test_candidate_pairs_of_many_rules_equal_brute_force() -> None:
    """Six rules (their pairs are expanded on a helper thread, at most two rules waiting):
    every pair sharing all keys of some rule, tagged with the first such rule, and each rule's
    stats, as a double loop over the records computes them."""
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE rec AS SELECT range::INTEGER AS rid, (range % 7)::VARCHAR AS f0, "
        "(range % 5)::VARCHAR AS f1, CASE WHEN range % 4 = 0 THEN NULL ELSE (range % 3)::VARCHAR "
        "END AS f2 FROM range(60)"
    )
    vals = con.execute("SELECT f0, f1, f2 FROM rec ORDER BY rid").fetchall()
    cols = {"a": "f0", "b": "f1", "c": "f2"}
    keys = [("a", "b"), ("a",), ("c",), ("b", "c"), ("b",), ("a", "c")]
    rules = [BlockingRule(k) for k in keys]
    left, right, rule, stats, _ = blocking.candidate_pairs(con, "rec", 60, rules, cols, 1000)
    idx = {"a": 0, "b": 1, "c": 2}
    expect: dict[tuple[int, int], int] = {}
    per_rule = [0] * len(keys)
    for i, j in itertools.combinations(range(60), 2):
        for r, k in enumerate(keys):
            ki = [vals[i][idx[c]] for c in k]
            if None not in ki and ki == [vals[j][idx[c]] for c in k]:
                per_rule[r] += 1
                expect.setdefault((i, j), r)
    got = dict(zip(zip(left.tolist(), right.tolist(), strict=True), rule.tolist(), strict=True))
    assert got == expect
    assert [s.pairs for s in stats] == per_rule


def test_block_size_cap_skips_and_reports() -> None:
    con = duckdb.connect()
    _records(con)
    # the 'smith' block has 3 records: above a cap of 2 it is skipped; 'jones' (2) stays
    left, right, _, stats, _ = blocking.candidate_pairs(
        con, "rec", 6, [BlockingRule(("last",))], {"last": "f0"}, 2
    )
    assert list(zip(left.tolist(), right.tolist(), strict=True)) == [(3, 4)]
    assert (stats[0].skipped_blocks, stats[0].skipped_records) == (1, 3)
    # block sizes: smith 3 (the largest, skipped), jones 2 (the largest one scored)
    assert (stats[0].largest_block, stats[0].largest_kept_block) == (3, 2)


def test_prefix_key() -> None:
    con = duckdb.connect()
    _records(con)
    left, right, _, _, _ = blocking.candidate_pairs(
        con, "rec", 6, [BlockingRule(("first[:2]",))], {"first": "f1"}, 100
    )
    # 'jo' prefixes: records 0, 1 (john) and 2 (jon)
    assert list(zip(left.tolist(), right.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2)]


def test_choose_rules_skips_costly_and_superset_rules() -> None:
    con = duckdb.connect()
    # 'grp' puts all 200 records in one block (19,900 pairs); 'email' is unique but for 10 pairs
    con.execute(
        "CREATE TABLE rec AS SELECT range::INTEGER AS rid, 'g' AS f0, "
        "'e' || (range // 2 * (range < 20)::INTEGER + range * (range >= 20)::INTEGER) AS f1 "
        "FROM range(200)"
    )
    chosen, est = blocking.choose_rules(
        con, "rec", 200, ["grp", "email"], {"grp": "f0", "email": "f1"}, 5000, 4.0
    )
    # budget max(4 * 200, 10_000) = 10_000 pairs: grp (19,900) is too costly; email (10) is
    # taken; grp+email is a superset of email and so redundant
    assert [r.keys for r in chosen] == [("email",)]
    assert dict(est)["email"] == 10.0 and dict(est)["grp"] == 19900.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=40), st.integers(1, 6))
def test_pairs_within_groups_equals_brute_force(keys: list[int], cap: int) -> None:
    rid = np.arange(len(keys), dtype=np.int64)[::-1].copy()  # any rid order
    h = np.array(keys, dtype=np.uint64)
    lr, skipped_groups, skipped_records, largest, kept = blocking.pairs_within_groups(rid, h, cap)
    sizes = {k: keys.count(k) for k in set(keys)}
    expect = sorted(
        (min(rid[i], rid[j]), max(rid[i], rid[j]))
        for i, j in itertools.combinations(range(len(keys)), 2)
        if keys[i] == keys[j] and sizes[keys[i]] <= cap
    )
    got = sorted(zip(lr[0].tolist(), lr[1].tolist(), strict=True))
    assert got == expect
    assert all(a < b for a, b in got)
    assert skipped_groups == sum(1 for v in sizes.values() if v > cap)
    assert skipped_records == sum(v for v in sizes.values() if v > cap)
    assert largest == max(sizes.values(), default=0)
    assert kept == max((v for v in sizes.values() if v <= cap), default=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(2**62), 2**62) | st.integers(0, 4), max_size=50))
def test_sorted_unique_equals_a_set(values: list[int]) -> None:
    # the distinct values in ascending order, from Python's set and sort
    got = blocking.sorted_unique(np.array(values, dtype=np.int64))
    assert got.dtype == np.int64
    assert got.tolist() == sorted(set(values))
