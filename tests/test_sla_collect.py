"""The SLA stage's dedup queries on a hand-made entity_xref (known answers)."""

from __future__ import annotations

import duckdb

from romirecon.stages import sla


def _con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE entity_xref (entity VARCHAR, source_name VARCHAR, source_id VARCHAR, "
        "golden_id VARCHAR, rule VARCHAR, match_probability DOUBLE, is_survivor BOOLEAN)"
    )
    rows = [
        # g1: two crm records and a billing one: 3 records, 2 sources -> surplus 1
        ("crm", "1", "g1", "original", None, True),
        ("crm", "2", "g1", "exact:email", 1.0, False),
        ("billing", "3", "g1", "exact:external_ref", 1.0, False),
        # g2: one crm record linked to its billing customer: no duplicate
        ("crm", "4", "g2", "original", None, True),
        ("billing", "5", "g2", "fuzzy", 0.97, False),
        # g3: a record without a source and a crm one: 2 records, 1 named source -> surplus 1
        (None, "6", "g3", "original", None, True),
        ("crm", "7", "g3", "fuzzy", 0.95, False),
        # g4: three crm records and a billing one: 4 records, 2 sources -> surplus 2
        ("crm", "8", "g4", "original", None, True),
        ("crm", "9", "g4", "whole_row", 1.0, False),
        ("crm", "10", "g4", "whole_row", 1.0, False),
        ("billing", "11", "g4", "exact:external_ref", 1.0, False),
    ]
    con.executemany(
        "INSERT INTO entity_xref VALUES ('contact', ?, ?, ?, ?, ?, ?)", [list(r) for r in rows]
    )
    con.execute(
        "CREATE TABLE duplicates (entity VARCHAR, source_name VARCHAR, source_id VARCHAR, "
        "explanation VARCHAR)"
    )
    con.execute(
        "INSERT INTO duplicates VALUES ('contact', 'crm', '2', 'why 2'), "
        "('contact', 'crm', '9', 'why 9'), ('contact', 'billing', '5', 'not shown')"
    )
    return con


def test_top_clusters_rank_by_surplus_then_size() -> None:
    con = _con()
    sql = sla.top_clusters_sql("entity_xref", "", None, True, "duplicates")
    rows = con.execute(sql, [10, 2]).fetchall()
    # g4 (surplus 2) first, then g1 (surplus 1, size 3), then g3 (surplus 1, size 2); g2 is a
    # cross-system link, not a duplicate. Two members each: the survivor first, then by source
    # name and id ('10' < '9' as text)
    assert [(r[1], r[2], r[3], r[4], r[7], r[8]) for r in rows] == [
        ("g4", 4, "crm", "8", True, None),
        ("g4", 4, "billing", "11", False, None),
        ("g1", 3, "crm", "1", True, None),
        ("g1", 3, "billing", "3", False, None),
        ("g3", 2, None, "6", True, None),
        ("g3", 2, "crm", "7", False, None),
    ]
    # one cluster, all its members: the explanation of a non-survivor comes from duplicates
    rows = con.execute(sql, [1, 10]).fetchall()
    assert [(r[4], r[8]) for r in rows] == [
        ("8", None),
        ("11", None),
        ("10", None),
        ("9", "why 9"),
    ]


def test_duplicate_stats_by_hand() -> None:
    con = _con()
    rows = con.execute(sla.duplicate_stats_sql("entity_xref", "")).fetchall()
    # per (entity, source): rows, golden ids, groups (golden ids with two rows in the source),
    # rows in those groups. crm: ids 1,2 (g1) 4 (g2) 7 (g3) 8,9,10 (g4) -> 7 rows, 4 goldens,
    # groups g1 + g4 = 2, rows 2 + 3 = 5. billing: 3 (g1) 5 (g2) 11 (g4) -> 3 rows, 3 goldens,
    # no group. No source: 6 (g3). The entity line (first: totals come before a NULL source)
    # 11 rows, 4 + 3 + 1 = 8 goldens, 2 groups.
    assert rows == [
        ("contact", None, 11, 8, 2, 5),
        ("contact", None, 1, 1, 0, 0),
        ("contact", "billing", 3, 3, 0, 0),
        ("contact", "crm", 7, 4, 2, 5),
    ]


def test_materialized_per_table_gives_the_same_answers() -> None:
    """evaluate() aggregates the xref once into a table; every query reading that table must
    answer exactly as the same query aggregating the xref itself."""
    con = _con()
    con.execute(f"CREATE TABLE per AS {sla.per_sql('entity_xref', '')}")
    pairs = [
        (sla.duplicate_stats_sql("entity_xref", ""), []),
        (sla.cross_source_sql("entity_xref", ""), []),
        (sla.duplicate_samples_sql("entity_xref", "", True), [10]),
        (sla.top_clusters_sql("entity_xref", "", None, True, "duplicates"), [10, 3]),
    ]
    with_per = [
        sla.duplicate_stats_sql("entity_xref", "", "per"),
        sla.cross_source_sql("entity_xref", "", "per"),
        sla.duplicate_samples_sql("entity_xref", "", True, "per"),
        sla.top_clusters_sql("entity_xref", "", None, True, "duplicates", "per"),
    ]
    for (inline, params), materialized in zip(pairs, with_per, strict=True):
        want = con.execute(inline, params).fetchall()
        assert want  # the fixture has duplicates: an empty answer would prove nothing
        assert con.execute(materialized, params).fetchall() == want
    # cross-source by hand: 11 rows, golden ids g1..g4 -> 4
    assert con.execute(sla.cross_source_sql("entity_xref", "", "per")).fetchall() == [
        ("contact", 11, 4)
    ]
