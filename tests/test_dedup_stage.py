"""The dedup pipeline stage on staged tables built here (ingest/contract are not needed)."""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pytest

from romirecon.stages import dedup, normalize
from romirecon.stages.common import entity_table_ddl

COLS = (
    "source_name, source_system, source_file, source_row, source_id, email, first_name, "
    "last_name, phone, company, merged_into, is_deleted, updated_at, external_ref"
)

# fmt: off
ROWS: list[tuple[Any, ...]] = [
    ("sf", "crm", "c.csv", 1, "003A", "ann.lee@acme.com", "Ann", "Lee", "+1 415 555 0101", "Acme Inc", None, False, "2024-01-02", None),
    ("sf", "crm", "c.csv", 2, "003B", "ann.lee@acme.com", "Anne", "Lee", None, "Acme", None, False, "2024-03-01", None),
    ("sf", "crm", "c.csv", 3, "003C", None, "Ann", "Lee", None, None, "003A", False, "2024-06-01", None),
    ("sf", "crm", "c2.csv", 1, "003A", "ann.lee@acme.com", "Ann", "Lee", "+1 415 555 0101", "Acme Inc", None, False, "2024-01-02", None),
    ("stripe", "billing", "s.csv", 1, "cus_1", " ANN.LEE@ACME.COM", None, None, None, None, None, False, "2024-02-01", None),
    ("stripe", "billing", "s.csv", 2, "cus_2", "bob@x.io", "Bob", "Stone", None, None, None, False, "2024-02-01", None),
    ("erp", "erp", "e.csv", 1, "C-9", "b.stone@y.io", "Bob", "Stone", "415-555-0199", "Y Ltd", None, False, None, "cus_2"),
    ("erp", "erp", "e.csv", 2, "C-10", "zed@z.io", "Zed", "Zulu", None, None, None, False, None, None),
    ("erp", "erp", "e.csv", 3, "C-11", "kim@k.io", "Kim", "Ko", None, None, None, True, "2025-01-01", None),
    ("stripe", "billing", "s.csv", 3, "cus_3", "kim@k.io", "Kim", None, None, None, None, False, "2020-01-01", None),
]
# fmt: on
KEYS = {"sf": [["email"]], "stripe": [["email"]], "erp": [["email"]]}
SETTINGS = {"source_priority": ["erp", "sf", "stripe"], "fuzzy": False}


def _insert(con: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]]) -> None:
    ph = ", ".join(["?"] * len(rows[0]))
    con.executemany(f"INSERT INTO stg_contact ({COLS}) VALUES ({ph})", [list(r) for r in rows])


def _run(
    con: duckdb.DuckDBPyConnection, run_id: str, settings: dict[str, Any] | None = None
) -> None:
    normalize.run(con, run_id)
    dedup.run(con, run_id, settings or SETTINGS, KEYS)


def _xref(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, int], tuple[Any, ...]]:
    rows = con.execute(
        "SELECT source_name, source_file, source_row, golden_id, rule, is_survivor "
        "FROM entity_xref WHERE entity = 'contact'"
    ).fetchall()
    return {(r[0], r[1], r[2]): r[3:] for r in rows}


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute(entity_table_ddl("contact"))
    _insert(c, ROWS)
    return c


def test_exact_evidence_rules_and_clusters(con: duckdb.DuckDBPyConnection) -> None:
    _run(con, "r1")
    x = _xref(con)
    ann = x[("sf", "c.csv", 2)][0]
    # Ann: 003A twice (whole row), 003C merged into 003A, cus_1 by normalized email
    assert {k for k, v in x.items() if v[0] == ann} == {
        ("sf", "c.csv", 1),
        ("sf", "c.csv", 2),
        ("sf", "c.csv", 3),
        ("sf", "c2.csv", 1),
        ("stripe", "s.csv", 1),
    }
    assert x[("sf", "c.csv", 1)][1] == "whole_row"
    assert x[("sf", "c.csv", 3)][1] == "merge_pointer"
    assert x[("stripe", "s.csv", 1)][1] == "exact:email"
    # Bob: the ERP record carries the Stripe id
    assert x[("stripe", "s.csv", 2)][0] == x[("erp", "e.csv", 1)][0]
    assert x[("stripe", "s.csv", 2)][1] == "exact:external_ref"
    # Zed alone
    assert x[("erp", "e.csv", 2)][1:] == ("original", True)


def test_survivorship(con: duckdb.DuckDBPyConnection) -> None:
    _run(con, "r1")
    x = _xref(con)
    # Ann's live records: sf (priority 1) beats stripe (2); among sf, 003B is the most recent
    # (2024-03-01); 003C is newer but merged away, so it is evidence, never the survivor
    assert x[("sf", "c.csv", 2)][1:] == ("original", True)
    assert x[("sf", "c.csv", 3)][2] is False
    # Kim: ERP has the top priority but its record is deleted: the Stripe record survives
    assert x[("stripe", "s.csv", 3)][1:] == ("original", True)
    assert x[("erp", "e.csv", 3)][2] is False
    g = con.execute(
        "SELECT email, first_name, phone, company, survivor_source_id, n_records, source_names "
        "FROM golden_contact WHERE golden_id = ?",
        [x[("sf", "c.csv", 2)][0]],
    ).fetchall()[0]
    # first non-NULL value in survivor order: 003B (email, Anne, company Acme) then 003A phone
    assert g == ("ann.lee@acme.com", "Anne", "+1 415 555 0101", "Acme", "003B", 5, ["sf", "stripe"])


def test_duplicates_table(con: duckdb.DuckDBPyConnection) -> None:
    _run(con, "r1")
    rows = con.execute(
        "SELECT source_name, source_file, source_row, rule, matched_source_id, survivor_source_id "
        "FROM duplicates ORDER BY source_name, source_file, source_row"
    ).fetchall()
    # 10 records, 4 golden entities (Ann, Bob, Zed, Kim): 6 non-survivors
    assert rows == [
        ("erp", "e.csv", 3, "exact:email", "cus_3", "cus_3"),
        ("sf", "c.csv", 1, "whole_row", "003A", "003B"),
        ("sf", "c.csv", 3, "merge_pointer", "003A", "003B"),
        ("sf", "c2.csv", 1, "whole_row", "003A", "003B"),
        ("stripe", "s.csv", 1, "exact:email", "003A", "003B"),
        ("stripe", "s.csv", 2, "exact:external_ref", "C-9", "C-9"),
    ]


def test_metrics(con: duckdb.DuckDBPyConnection) -> None:
    _run(con, "r1")
    got = {
        (r[0], r[1]): (r[2], r[3], r[4])
        for r in con.execute(
            "SELECT source_name, name, value, numerator, denominator FROM metric "
            "WHERE stage = 'dedup' AND entity = 'contact'"
        ).fetchall()
    }
    # sources: sf 4 rows / 1 golden id (Ann), stripe 3 / 3, erp 3 / 3. The entity line sums
    # the sources: (10 - (1 + 3 + 3)) / 10 = 0.3, one group (sf's Ann, 4 rows).
    assert got[(None, "duplicate_rate")] == (0.3, 3.0, 10.0)
    assert got[(None, "duplicate_groups")][0] == 1.0
    assert got[(None, "duplicate_rows")][0] == 4.0
    # across sources Ann, Bob, Zed, Kim: (10 - 4) / 10 = 0.6
    assert got[(None, "cross_source_merge_rate")] == (0.6, 6.0, 10.0)
    assert got[("sf", "duplicate_rate")] == (0.75, 3.0, 4.0)
    assert got[("sf", "duplicate_rows")][0] == 4.0
    assert got[("stripe", "duplicate_rate")] == (0.0, 0.0, 3.0)
    assert got[("erp", "duplicate_groups")][0] == 0.0


def test_metrics_per_cluster_label_equal_those_per_golden_id(
    con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The duplicate metrics count rows per (source, cluster label) when each label has its own
    golden id; per (source, golden id) from entity_xref, the path for a label that shares its
    id, they are the same rows."""
    from romirecon.stages.common import ensure_common_tables

    monkeypatch.setattr(dedup, "WORK_TABLES", ())  # keep _dd_m and _dd_gid for the comparison
    normalize.run(con, "r1")
    ensure_common_tables(con)
    dedup.ensure_map(con)
    con.execute(dedup.XREF_DDL)
    con.execute(dedup.DUPLICATES_DDL)
    sources = [r[0] for r in con.execute("SELECT DISTINCT source_name FROM stg_contact").fetchall()]
    keyed = {s: KEYS.get(s) or [] for s in sources}
    dedup.dedupe_entity(con, "r1", "contact", dedup._settings(SETTINGS), keyed)
    by_label = dedup._metric_rows(con, "r1", "contact", True)
    by_id = dedup._metric_rows(con, "r1", "contact", False)
    assert by_label == by_id
    assert len(by_label) == 1 + 3 * 4  # cross-source rate, 3 metrics x (3 sources + entity)
    # golden ids shared across labels (a collision): the per-id path counts them as one entity
    con.execute("UPDATE entity_xref SET golden_id = 'contact_x'")
    merged = {(r[2], r[4]): r[5] for r in dedup._metric_rows(con, "r1", "contact", False)}
    assert merged[(None, "cross_source_merge_rate")] == 0.9  # 10 rows, 1 golden id


def test_golden_ids_stable_when_a_record_is_added(con: duckdb.DuckDBPyConnection) -> None:
    _run(con, "r1")
    before = _xref(con)
    # fmt: off
    _insert(con, [
        ("stripe", "billing", "s.csv", 4, "cus_4", "zed@z.io", "Zed", None, None, None, None, False, None, None),
        ("stripe", "billing", "s.csv", 5, "cus_5", "new@n.io", "New", "Person", None, None, None, False, None, None),
    ])
    # fmt: on
    _run(con, "r2")
    after = _xref(con)
    for key, (gid, _, _) in before.items():
        assert after[key][0] == gid, key
    # the new Zed record joins Zed's golden entity; the new person gets an unused id
    assert after[("stripe", "s.csv", 4)][0] == before[("erp", "e.csv", 2)][0]
    assert after[("stripe", "s.csv", 5)][0] not in {v[0] for v in before.values()}
    n_map = con.execute("SELECT count(*) FROM golden_id_map").fetchall()[0][0]
    # record keys: 003A (twice, one key), 003B, 003C, cus_1..5, C-9, C-10, C-11 -> 11
    assert n_map == 11


def test_other_entities_dedupe_on_declared_keys() -> None:
    con = duckdb.connect()
    con.execute(entity_table_ddl("billing_event"))
    con.executemany(
        "INSERT INTO stg_billing_event (source_name, source_system, source_file, source_row, "
        "source_id, idempotency_key) VALUES (?, ?, ?, ?, ?, ?)",
        [
            ["events", "billing", "a.json", 1, "evt_1", "k1"],
            ["events", "billing", "b.json", 1, "evt_1", "k1"],  # overlapping export
            ["events", "billing", "b.json", 2, "evt_2", "k1"],  # retried request
            ["events", "billing", "b.json", 3, "evt_3", "k3"],
        ],
    )
    dedup.run(con, "r1", {}, {"events": [["idempotency_key"]]})
    rows = con.execute(
        "SELECT source_file, source_row, rule, golden_id FROM entity_xref "
        "WHERE entity = 'billing_event' ORDER BY source_file, source_row"
    ).fetchall()
    assert [r[2] for r in rows] == ["original", "whole_row", "exact:idempotency_key", "original"]
    assert len({r[3] for r in rows[:3]}) == 1 and rows[3][3] != rows[0][3]


def test_rows_sharing_a_source_row_are_each_numbered_once() -> None:
    """An unpivoted export stages several rows from one source row: the record table then
    numbers whole rows (not the provenance key), so no row is lost or doubled."""
    con = duckdb.connect()
    con.execute(entity_table_ddl("billing_event"))
    con.executemany(
        "INSERT INTO stg_billing_event (source_name, source_system, source_file, source_row, "
        "source_id, idempotency_key, event_type) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            ["wide", "billing", "w.csv", 1, "evt_1", "k1", "a"],
            ["wide", "billing", "w.csv", 1, "evt_2", "k2", "b"],  # same source row, unpivoted
            ["wide", "billing", "w.csv", 2, "evt_3", "k1", "c"],
        ],
    )
    dedup.run(con, "r1", {}, {"wide": [["idempotency_key"]]})
    rows = con.execute(
        "SELECT source_id, rule, golden_id FROM entity_xref WHERE entity = 'billing_event' "
        "ORDER BY source_id"
    ).fetchall()
    assert [r[0] for r in rows] == ["evt_1", "evt_2", "evt_3"]  # each once
    assert rows[0][2] == rows[2][2] != rows[1][2]  # evt_1 and evt_3 share k1


def test_unknown_match_key_is_a_config_error(con: duckdb.DuckDBPyConnection) -> None:
    from romirecon.exitcodes import ConfigError

    normalize.run(con, "r1")
    with pytest.raises(ConfigError, match="emial"):
        dedup.run(con, "r1", SETTINGS, {"sf": [["emial"]]})


def test_fuzzy_links_across_systems() -> None:
    from benchmarks.dedup_bench import generate

    recs, truth = generate(1500, seed=11)
    con = duckdb.connect()
    con.execute(entity_table_ddl("contact"))
    con.register("gen", recs.to_arrow())
    con.register("truth", truth.to_arrow())
    # spread records over three systems: the same person may be a CRM lead, an ERP customer
    # and a billing customer
    con.execute(
        "INSERT INTO stg_contact (source_name, source_system, source_file, source_row, source_id, "
        "first_name, last_name, email, phone, street, city, postal_code, company, country) "
        "SELECT ['crm', 'erp', 'billing'][id % 3 + 1], ['crm', 'erp', 'billing'][id % 3 + 1], "
        "'f.csv', id, CAST(id AS VARCHAR), first_name, last_name, email, phone, address, city, "
        "postcode, company, 'US' FROM gen"
    )
    _run(con, "r1", {"threshold": 0.9})
    # cluster pairs vs true pairs, computed independently of the stage
    tp, pred = con.execute(
        "WITH x AS (SELECT CAST(source_id AS BIGINT) AS id, golden_id FROM entity_xref) "
        "SELECT count(*) FILTER (WHERE ta.entity = tb.entity), count(*) FROM x a JOIN x b "
        "ON a.golden_id = b.golden_id AND a.id < b.id JOIN truth ta ON ta.id = a.id "
        "JOIN truth tb ON tb.id = b.id"
    ).fetchall()[0]
    true_pairs = con.execute(
        "SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) AS n FROM truth GROUP BY entity)"
    ).fetchall()[0][0]
    assert tp / pred > 0.97 and tp / true_pairs > 0.9
    ex = con.execute(
        "SELECT match_probability, explanation, source_system, matched_source_name "
        "FROM duplicates WHERE rule = 'fuzzy' LIMIT 50"
    ).fetchall()
    assert ex and all(p >= 0.9 for p, *_ in ex)
    e = json.loads(ex[0][1])
    assert "match_weight" in e and e["first_name_norm"]["label"] in (
        "null",
        "else",
        "jaro_winkler>=0.80",
        "jaro_winkler>=0.92",
        "exact",
    )
    # at least one fuzzy link joins two different systems
    assert any(s != m for _, _, s, m in ex)


def test_unknown_setting_suggests_the_right_one(con: duckdb.DuckDBPyConnection) -> None:
    from romirecon.exitcodes import ConfigError

    with pytest.raises(ConfigError) as err:
        dedup.run(con, "r1", {"treshold": 0.8}, KEYS)
    assert "treshold" in err.value.message
    assert err.value.details == ["dedup.treshold: did you mean 'threshold'?"]


def test_guard_and_blocking_metrics_are_reported(con: duckdb.DuckDBPyConnection) -> None:
    _run(con, "r1")
    names = {
        r[0]
        for r in con.execute(
            "SELECT name FROM metric WHERE stage = 'dedup' AND entity = 'contact' "
            "AND source_name IS NULL"
        ).fetchall()
    }
    assert {"oversized_clusters", "guard_unclustered_records", "blocking_skipped_records"} <= names


def test_block_size_cap_is_applied_and_reported() -> None:
    """Issue #8: no quadratic candidate-pair blow-up. A blocking key shared by more records
    than `max_block_size` is skipped (not expanded into pairs) and the run's metrics carry the
    cap, the largest block and the largest block that was scored."""
    con = duckdb.connect()
    con.execute(entity_table_ddl("contact"))
    people = [
        ("ann", "lee", "springfield"), ("bob", "ray", "springfield"),
        ("cid", "fox", "springfield"), ("dan", "kim", "springfield"),
        ("eve", "orr", "springfield"), ("fay", "poe", "springfield"),
        ("gus", "roe", "shelbyville"), ("gus", "roe", "shelbyville"),
        ("hal", "sun", "capital"), ("ivy", "tao", "ogdenville"),
    ]  # fmt: skip
    con.executemany(
        "INSERT INTO stg_contact (source_name, source_system, source_file, source_row, "
        "source_id, first_name, last_name, email, city, country) "
        "VALUES ('crm', 'crm', 'c.csv', ?, ?, ?, ?, ?, ?, 'US')",
        [
            [i + 1, f"C{i + 1}", f, last, f"{f}.{last}.{i}@example.org", city]
            for i, (f, last, city) in enumerate(people)
        ],
    )
    normalize.run(con, "r1")
    dedup.run(con, "r1", {"max_block_size": 4}, {"crm": [["source_id"]]})
    got = dict(
        con.execute(
            "SELECT name, value FROM metric WHERE stage = 'dedup' AND entity = 'contact' "
            "AND source_name IS NULL AND name LIKE 'blocking_%'"
        ).fetchall()
    )
    # blocks by value: city springfield 6 records (> cap 4: skipped), shelbyville 2; first
    # name gus 2, last name roe 2; emails all distinct. The city rule is chosen (its
    # shelbyville block gives 1 pair within the cap), so the largest block is springfield's 6,
    # and every scored block has 2 records
    assert got["blocking_max_block_size"] == 4.0
    assert got["blocking_largest_block"] == 6.0
    assert got["blocking_largest_scored_block"] == 2.0
    assert got["blocking_skipped_blocks"] == 1.0
    assert got["blocking_skipped_records"] == 6.0
    # only 2-record blocks are scored: every candidate pair is (gus, gus) or the shelbyville
    # pair, which are the same two records: 1 pair, not the 6*5/2 = 15 of springfield
    assert got["blocking_candidate_pairs"] == 1.0


def test_old_golden_id_map_with_primary_key_is_kept_and_rebuilt(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """A state database from before keeps golden_id_map with a PRIMARY KEY: its ids are still
    used, the table is rebuilt without the key, and every key stays once after two runs."""
    con.execute(
        "CREATE TABLE golden_id_map (entity VARCHAR, record_key VARCHAR, golden_id VARCHAR, "
        "first_run_id VARCHAR, last_run_id VARCHAR, PRIMARY KEY (entity, record_key))"
    )
    con.execute(
        "INSERT INTO golden_id_map VALUES ('contact', 'erp:C-10', 'contact_zed', 'r0', 'r0')"
    )
    _run(con, "r1")
    _run(con, "r2")
    pk = con.execute(
        "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'golden_id_map' "
        "AND constraint_type = 'PRIMARY KEY'"
    ).fetchall()[0][0]
    assert pk == 0
    # Zed (erp C-10, alone) keeps the id the old map gave it, first seen in r0
    assert _xref(con)[("erp", "e.csv", 2)][0] == "contact_zed"
    assert con.execute(
        "SELECT first_run_id, last_run_id FROM golden_id_map WHERE record_key = 'erp:C-10'"
    ).fetchall() == [("r0", "r2")]
    # 10 records, 9 keys (003A is exported twice): each once
    dup = con.execute(
        "SELECT count(*), count(DISTINCT (entity, record_key)) FROM golden_id_map"
    ).fetchall()[0]
    assert dup == (9, 9)


def test_golden_table_agrees_with_the_general_ranking(monkeypatch: pytest.MonkeyPatch) -> None:
    """The golden table from `_assign`'s ranks (grouped by cluster, values fetched from the one
    record supplying each column) equals the general statement that ranks every golden id's
    records again and takes `arg_min` per column: an independent path over the same inputs."""
    from romirecon.dedup import pipeline_sql as q
    from romirecon.model import ENTITIES

    def golden(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
        _run(con, "r1")
        return con.execute("SELECT * FROM golden_contact ORDER BY golden_id").fetchall()

    def fresh() -> duckdb.DuckDBPyConnection:
        c = duckdb.connect()
        c.execute(entity_table_ddl("contact"))
        _insert(c, ROWS)
        return c

    fast = golden(fresh())
    cfg = dedup._settings(SETTINGS)
    columns = list(ENTITIES["contact"])
    order = q.survivor_order(q.priority_case(cfg["priority"]), cfg["survivorship"], columns)
    monkeypatch.setattr(
        dedup, "golden_table_sql", lambda e, c, r=None: [dedup.golden_by_id_sql(e, order, c)]
    )
    general = golden(fresh())
    # 4 golden entities (Ann, Bob, Zed, Kim); Ann's phone comes from 003A, ranked after 003B
    assert len(fast) == 4
    assert fast == general


def test_normalized_keys_are_freed_after_dedup(con: duckdb.DuckDBPyConnection) -> None:
    normalize.run(con, "r1")
    tables = "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'norm\\_%' ESCAPE '\\'"
    assert sorted(r[0] for r in con.execute(tables).fetchall()) == ["norm_account", "norm_contact"]
    dedup.run(con, "r1", SETTINGS, KEYS)
    # read by dedup only: gone once it is done, and the results are there
    assert con.execute(tables).fetchall() == []
    assert con.execute("SELECT count(*) FROM entity_xref WHERE entity = 'contact'").fetchone() == (
        len(ROWS),
    )
