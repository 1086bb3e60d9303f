"""The SQL builders that replaced wide windows and ordered aggregates for issue #8 give what the
straightforward formulations give (each test computes the expected answer by hand or by the
slow, obvious query)."""

from __future__ import annotations

import itertools
from decimal import Decimal

import duckdb
import pytest

from romirecon.stages import billing, fx, reconcile


@pytest.fixture()
def con() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


def test_repeated_key_dedup_keeps_the_same_copies(con: duckdb.DuckDBPyConnection) -> None:
    # key 'a' three copies (v 3 wins: ORDER BY v DESC), 'b' two copies (v 7 wins), 'c' one,
    # and two NULL-key rows that are never duplicates of anything
    con.execute(
        """CREATE TABLE t AS SELECT * FROM (VALUES
        ('a', 1, 's', 'f', 1), ('a', 3, 's', 'f', 2), ('a', 2, 's', 'f', 3),
        ('b', 7, 's', 'g', 1), ('b', 5, 's', 'g', 2), ('c', 9, 's', 'h', 1),
        (NULL, 4, 's', 'h', 2), (NULL, 4, 's', 'h', 3)
    ) v(k, v, source_name, source_file, source_row)"""
    )
    con.execute(f"CREATE TABLE keys AS {billing.dup_keys_sql('t', 'k')}")
    assert con.execute("SELECT _key FROM keys ORDER BY 1").fetchall() == [("a",), ("b",)]
    con.execute(f"CREATE TABLE ranked AS {billing.dedup_sql('t', 'k', 'v DESC', 'keys')}")
    kept = con.execute(
        f"""SELECT k, v, source_row FROM ({billing.unique_rows_sql("t", "k", "keys")})
        UNION ALL SELECT k, v, source_row FROM ranked WHERE _copy = 1
        ORDER BY k NULLS LAST, source_row"""
    ).fetchall()
    assert kept == [("a", 3, 2), ("b", 7, 1), ("c", 9, 1), (None, 4, 2), (None, 4, 3)]
    # the surplus copies name the kept copy's provenance
    dups = con.execute(
        "SELECT k, v, kept_source_file, kept_source_row FROM ranked WHERE _copy > 1 ORDER BY k, v"
    ).fetchall()
    assert dups == [("a", 1, "f", 2), ("a", 2, "f", 2), ("b", 5, "g", 1)]


def test_rules_sql_matches_ordered_distinct_string_agg(con: duckdb.DuckDBPyConnection) -> None:
    # every non-empty multiset (up to 2 copies of each rule) of the four rules as one group
    groups = []
    for n, counts in enumerate(itertools.product(range(3), repeat=len(reconcile.LINK_RULES))):
        rules = [r for r, c in zip(reconcile.LINK_RULES, counts, strict=True) for _ in range(c)]
        groups += [(n, r) for r in rules]
    con.execute("CREATE TABLE e (g INTEGER, rule VARCHAR)")
    con.executemany("INSERT INTO e VALUES (?, ?)", groups)
    got = con.execute(
        f"SELECT g, {reconcile.rules_sql('rule')} FROM e GROUP BY g ORDER BY g"
    ).fetchall()
    want = con.execute(
        "SELECT g, string_agg(DISTINCT rule, ',' ORDER BY rule) FROM e GROUP BY g ORDER BY g"
    ).fetchall()
    assert got == want
    assert len(got) == 3**4 - 1  # every group but the empty one
    assert ("converted_to,external_ref,golden_id,merged_into") in {r for _, r in got}


@pytest.mark.parametrize(
    ("num", "den", "want"),
    [
        ("1", "3", "0.3333333333"),  # 0.33333333333... rounds down
        ("2", "3", "0.6666666667"),  # 0.66666666666... rounds up
        # ties at the 10th decimal (the terms are DECIMAL(38,10), so the tie comes from / 2):
        ("0.0000000001", "2", "0.0000000000"),  # 0.00000000005: 0 is even, stays
        ("0.0000000003", "2", "0.0000000002"),  # 0.00000000015: 1 is odd, goes up to 2
        ("0.0000000005", "2", "0.0000000002"),  # 0.00000000025: 2 is even, stays
        ("31.41", "44.75", "0.7018994413"),  # 31.41 / 44.75 = 0.70189944134...
    ],
)
def test_quotient_from_terms_equals_div_half_even(
    con: duckdb.DuckDBPyConnection, num: str, den: str, want: str
) -> None:
    n, d = fx.div_terms_sql("x", "y")
    row = con.execute(
        f"""SELECT {fx.div_half_even_sql("x", "y")},
               {fx.quotient_half_even_sql("_n // _d", "_n % _d", "_d")}
        FROM (SELECT *, {n} AS _n, {d} AS _d
              FROM (SELECT CAST(? AS DECIMAL(38,14)) AS x, CAST(? AS DECIMAL(38,14)) AS y))""",
        [num, den],
    ).fetchone()
    assert row == (Decimal(want), Decimal(want))


def test_multi_column_dedup_key_is_not_a_concatenation(con: duckdb.DuckDBPyConnection) -> None:
    # key (vendor, id): ('a|b', 'c') and ('a', 'b|c') would both concatenate to 'a|b|c' but are
    # different records; ('s', 'x') twice is a real repeat (row 4 wins: ORDER BY source_row DESC);
    # ('s', NULL) twice has no id and is never a duplicate
    con.execute(
        """CREATE TABLE t AS SELECT * FROM (VALUES
        ('a|b', 'c', 's', 'f', 1), ('a', 'b|c', 's', 'f', 2),
        ('s', 'x', 's', 'f', 3), ('s', 'x', 's', 'f', 4),
        ('s', NULL, 's', 'f', 5), ('s', NULL, 's', 'f', 6)
    ) v(vendor, id, source_name, source_file, source_row)"""
    )
    key = ["coalesce(vendor, '')", "id"]
    con.execute(f"CREATE TABLE keys AS {billing.dup_keys_sql('t', key)}")
    assert con.execute("SELECT _key1, _key2 FROM keys").fetchall() == [("s", "x")]
    con.execute(f"CREATE TABLE ranked AS {billing.dedup_sql('t', key, 'source_row DESC', 'keys')}")
    assert con.execute(
        "SELECT source_row, _copy, kept_source_row FROM ranked ORDER BY source_row"
    ).fetchall() == [(3, 2, 4), (4, 1, 4)]
    kept = con.execute(
        f"""SELECT source_row FROM ({billing.unique_rows_sql("t", key, "keys")})
        UNION ALL SELECT source_row FROM ranked WHERE _copy = 1 ORDER BY 1"""
    ).fetchall()
    assert kept == [(1,), (2,), (4,), (5,), (6,)]


def test_entity_link_label_is_the_smallest_node_key(con: duckdb.DuckDBPyConnection) -> None:
    # nodes are numbered in no particular order now; the entity id must still hash the smallest
    # node key of the component: b2 converted to a1 -> one component {contact|sf|a1,
    # contact|sf|b2}, labelled 'contact|sf|a1' ('a1' < 'b2'); c3 stands alone
    import hashlib

    from romirecon.stages.common import entity_table_ddl

    con.execute(entity_table_ddl("contact"))
    con.execute(
        """INSERT INTO stg_contact (source_system, source_name, source_vendor, source_id,
        converted_to) VALUES ('crm', 'sf_leads', 'sf', 'b2', 'a1'),
        ('crm', 'sf_contacts', 'sf', 'a1', NULL), ('crm', 'sf_contacts', 'sf', 'c3', NULL)"""
    )
    reconcile.build_entity_link(con, "run1")

    def eid(node: str) -> str:
        return "E:" + hashlib.sha256(node.encode()).hexdigest()[:16]

    got = con.execute("SELECT source_id, entity_id, rule FROM entity_link ORDER BY 1").fetchall()
    assert got == [
        ("a1", eid("contact|sf|a1"), "converted_to"),
        ("b2", eid("contact|sf|a1"), "converted_to"),
        ("c3", eid("contact|sf|c3"), "own-id"),
    ]
