"""A small hand-made state database for the SLA/report tests, with every figure known by hand.

crm_contacts (crm, contact): 200 rows read, 196 staged, 4 quarantined
  quarantine: rows 5, 6, 7 invalid-email; rows 5, 8 missing-required -> 4 distinct records
  entity_xref: c1..c190 -> G1..G190 (survivors); c191,c192 -> G1; c193..c196 -> G2..G5
    rows 196, distinct golden 190 -> duplicate_rate 6/196; groups 5 (G1..G5);
    rows involved 3 + 2*4 = 11
stripe_customers (billing, contact): 100 rows read and staged; s1..s100 -> G1..G100 (no dups)
  entity level: rows 296, per-source distinct goldens 190 + 100 -> 6/296
timestamps: c_i created 2026-01-01 + i days, updated +1h; s_i created = c_i updated + 60*i s
  (c191..c196 created 2026-12-01, after every s_i, so they never count as the CRM change)
  sync lag s_i = 60*i s, i = 1..100
findings: fx-rate-missing x2 (inv_1, inv_2), amount-mismatch x1, lost-billing-customer x1
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from romirecon.stages.common import add_metric, ensure_common_tables

RUN = "run-2"
NOW = datetime(2026, 12, 2, tzinfo=UTC)
XSS = "<script>alert(1)</script>"


def build(con: duckdb.DuckDBPyConnection, run_id: str = RUN, *, xref: bool = True) -> None:
    ensure_common_tables(con)
    con.execute(
        "CREATE OR REPLACE TABLE ingest_stats (source_name VARCHAR, file VARCHAR, "
        "file_sha256 VARCHAR, rows_read BIGINT, rows_staged BIGINT, rows_quarantined BIGINT)"
    )
    con.execute(
        "INSERT INTO ingest_stats VALUES "
        "('crm_contacts', 'exports/contacts.csv', 'aa11', 200, 196, 4),"
        "('stripe_customers', 'exports/customers.csv', 'bb22', 100, 100, 0)"
    )
    con.execute(
        "CREATE OR REPLACE TABLE quarantine (run_id VARCHAR, source_name VARCHAR, "
        "source_file VARCHAR, source_row BIGINT, reason VARCHAR, column_name VARCHAR, "
        "value VARCHAR, message VARCHAR, record VARCHAR)"
    )
    q = [
        (5, "invalid-email"), (6, "invalid-email"), (7, "invalid-email"),
        (5, "missing-required"), (8, "missing-required"),
    ]  # fmt: skip
    for row, reason in q:
        col = "email" if reason == "invalid-email" else "last_name"
        con.execute(
            "INSERT INTO quarantine VALUES (?, 'crm_contacts', 'exports/contacts.csv', ?, ?, ?, "
            "?, ?, '{}')",
            [run_id, row, reason, col, XSS, f"bad value {XSS}"],
        )
    # an older run's quarantine rows must be ignored
    con.execute(
        "INSERT INTO quarantine VALUES ('run-0', 'crm_contacts', 'x.csv', 99, 'invalid-email', "
        "'email', '', '', '{}')"
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE stg_contact AS
        SELECT 'c' || i AS source_id, 'crm_contacts' AS source_name, 'crm' AS source_system,
               CASE WHEN i <= 190 THEN TIMESTAMP '2026-01-01' + to_days(i::INTEGER)
                    ELSE TIMESTAMP '2026-12-01' END AS created_at,
               CASE WHEN i <= 190 THEN TIMESTAMP '2026-01-01' + to_days(i::INTEGER)
                    + INTERVAL 1 HOUR END AS updated_at
        FROM range(1, 197) t(i)
        UNION ALL
        SELECT 's' || i, 'stripe_customers', 'billing',
               TIMESTAMP '2026-01-01' + to_days(i::INTEGER) + INTERVAL 1 HOUR
                 + to_seconds(60 * i), NULL
        FROM range(1, 101) t(i)
        """
    )
    if xref:
        con.execute(
            f"""
            CREATE OR REPLACE TABLE entity_xref AS
            SELECT 'contact' AS entity, 'crm_contacts' AS source_name,
                   CASE WHEN i = 191 THEN '{XSS}' ELSE 'c' || i END AS source_id,
                   'G' || CASE WHEN i <= 190 THEN i WHEN i <= 192 THEN 1 ELSE i - 191 END
                     AS golden_id,
                   CASE WHEN i <= 190 THEN 'singleton' ELSE 'email-exact' END AS rule,
                   CASE WHEN i <= 190 THEN 1.0 ELSE 0.97 END AS match_probability,
                   i <= 190 AS is_survivor,
                   CASE WHEN i > 190 THEN 'email exact; name {XSS} jaro 0.97' END AS explanation
            FROM range(1, 197) t(i)
            UNION ALL
            SELECT 'contact', 'stripe_customers', 's' || i, 'G' || i, 'email-exact', 0.99, FALSE,
                   'linked by email'
            FROM range(1, 101) t(i)
            """
        )
        # the xref's id for c191 is the XSS string: keep stg in step for the latency join
        con.execute(f"UPDATE stg_contact SET source_id = '{XSS}' WHERE source_id = 'c191'")
    con.execute(
        "INSERT INTO finding VALUES "
        "(?, 'billing', 'fx-rate-missing', 'error', 'stripe_customers', 'invoice', 'inv_2', NULL, "
        "'no EUR rate', NULL),"
        "(?, 'billing', 'fx-rate-missing', 'error', 'stripe_customers', 'invoice', 'inv_1', NULL, "
        "'no EUR rate', NULL),"
        "(?, 'reconcile', 'amount-mismatch', 'warn', 'stripe_customers', 'invoice', 'inv_3', "
        "'erp_9', 'differs by 100', NULL),"
        "(?, 'reconcile', 'lost-billing-customer', 'warn', 'crm_contacts', 'contact', 'c7', NULL, "
        "'won deal without customer', NULL)",
        [run_id] * 4,
    )
    add_metric(con, run_id, "dedup", "stage_duration_seconds", 1.5, unit="seconds")
    add_metric(con, "run-0", "dedup", "stage_duration_seconds", 99.0, unit="seconds")
