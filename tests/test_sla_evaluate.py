"""evaluate() on a hand-made state database: metric values, samples, statuses, exit codes."""

from __future__ import annotations

from datetime import UTC, datetime

import _sla_estate as E
import duckdb
import pytest

from romirecon.exitcodes import ConfigError, ExitCode
from romirecon.report import error_report
from romirecon.stages.common import ensure_common_tables
from romirecon.stages.sla import evaluate


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    E.build(c)
    return c


def metric(report, name, source=None, entity=None, label=None):
    found = [m for m in report.metrics if m.key == (name, source, entity, label)]
    assert len(found) == 1, (name, source, entity, label)
    return found[0]


def test_duplicate_metrics_by_hand(con) -> None:
    r = evaluate(con, E.RUN, {}, now=E.NOW)
    crm = metric(r, "duplicate_rate", "crm_contacts", "contact")
    assert (crm.numerator, crm.denominator) == (6, 196)  # 196 rows, 190 golden ids
    assert crm.value == pytest.approx(6 / 196)
    assert metric(r, "duplicate_rate", "stripe_customers", "contact").value == 0
    ent = metric(r, "duplicate_rate", None, "contact")  # within-source duplicates summed
    assert (ent.numerator, ent.denominator) == (6, 296)
    assert metric(r, "duplicate_groups", "crm_contacts", "contact").value == 5  # G1..G5
    assert metric(r, "duplicate_rows", "crm_contacts", "contact").value == 11  # 3 + 2*4


def test_quarantine_metrics_by_hand(con) -> None:
    r = evaluate(con, E.RUN, {}, now=E.NOW)
    q = metric(r, "quarantine_rate", "crm_contacts", "contact")
    assert (q.numerator, q.denominator) == (4, 200)  # rows 5,6,7,8; row 5 has two reasons
    assert (
        metric(r, "quarantine_rate", None).numerator,
        metric(r, "quarantine_rate").denominator,
    ) == (4, 300)
    email = metric(r, "quarantine_rate_by_reason", "crm_contacts", "contact", "invalid-email")
    req = metric(r, "quarantine_rate_by_reason", "crm_contacts", "contact", "missing-required")
    assert (email.numerator, req.numerator) == (3, 2)
    assert [(x.reason, x.rows) for x in r.quarantine_by_reason] == [
        ("invalid-email", 3),
        ("missing-required", 2),
    ]


def test_latency_freshness_and_finding_counts(con) -> None:
    r = evaluate(con, E.RUN, {}, now=E.NOW)
    # lags 60*i s, i = 1..100: p50 = 60 * 50.5, p95 = 60 * (1 + 0.95 * 99) (linear interpolation)
    p50 = metric(r, "sync_latency_p50_seconds", "stripe_customers", "contact")
    p95 = metric(r, "sync_latency_p95_seconds", "stripe_customers", "contact")
    assert p50.value == pytest.approx(3030.0)
    assert p95.value == pytest.approx(5703.0)
    assert p50.denominator == 100
    # newest crm record: 2026-12-01 00:00, run at 2026-12-02 00:00
    assert metric(r, "freshness_seconds", "crm_contacts", "contact").value == 86400
    newest_stripe = datetime(2026, 4, 11, 2, 40, tzinfo=UTC)  # 1 Jan + 100 d + 1 h + 6000 s
    assert metric(r, "freshness_seconds", "stripe_customers", "contact").value == (
        (E.NOW - newest_stripe).total_seconds()
    )
    assert metric(r, "fx_gaps").value == 2
    assert metric(r, "amount_mismatches").value == 1
    assert metric(r, "lost_records").value == 1
    # the stage metric of this run only (run-0 wrote 99 s)
    assert metric(r, "stage_duration_seconds", label="dedup").value == 1.5


def test_checks_status_and_samples(con) -> None:
    r = evaluate(con, E.RUN, {}, now=E.NOW)
    by = {c.id: c for c in r.checks}
    assert by["duplicate_rate[source=crm_contacts,entity=contact]"].status == "fail"
    assert by["duplicate_rate[source=crm_contacts,entity=contact]"].sample_record_ids == [
        "crm_contacts:" + E.XSS, "crm_contacts:c192", "crm_contacts:c193",
        "crm_contacts:c194", "crm_contacts:c195", "crm_contacts:c196",
    ]  # fmt: skip
    q = by["quarantine_rate[source=crm_contacts,entity=contact]"]
    assert q.status == "warn"  # 2% between 1% and 5%
    assert q.sample_record_ids == [f"crm_contacts:exports/contacts.csv:{i}" for i in (5, 6, 7, 8)]
    assert by["fx_gaps"].sample_record_ids == ["inv_1", "inv_2"]
    assert r.status == "fail"
    # failures first, then warnings, then passes
    order = [c.status for c in r.checks]
    assert order == sorted(order, key=["fail", "warn", "pass", "skipped"].index)


def test_fail_on_maps_to_exit_codes(con) -> None:
    r = evaluate(con, E.RUN, {}, now=E.NOW)
    assert r.exit_code("fail") == ExitCode.SLA_BREACHED
    assert r.exit_code("warn") == ExitCode.SLA_BREACHED
    assert r.exit_code("never") == ExitCode.PASS
    with pytest.raises(ConfigError):
        r.exit_code("sometimes")
    # loosen duplicates: only warnings remain
    cfg = {"checks": [{"metric": "duplicate_rate", "warn": "1%", "fail": "50%"}]}
    r = evaluate(con, E.RUN, cfg, "warn", now=E.NOW)
    assert r.status == "warn"
    assert (r.exit_code("fail"), r.exit_code("warn"), r.exit_code("never")) == (0, 1, 0)
    assert r.exit_code() == ExitCode.SLA_BREACHED  # the report remembers its fail_on
    with pytest.raises(ConfigError):
        evaluate(con, E.RUN, {}, "sometimes")


def test_inconclusive_and_runtime_error_codes(con) -> None:
    con.execute(
        "INSERT INTO finding VALUES (?, 'ingest', 'input-stale', 'error', 'crm_contacts', NULL, "
        "NULL, NULL, 'newest file is 30 h old', NULL)",
        [E.RUN],
    )
    r = evaluate(con, E.RUN, {}, now=E.NOW)
    assert r.status == "inconclusive"
    assert r.exit_code("never") == ExitCode.INCONCLUSIVE  # even never: nothing was judged
    e = error_report("r9", "cannot read exports/a.csv: bad gzip", now=E.NOW)
    assert (e.status, e.exit_code(), e.exit_code("never")) == ("error", 3, 3)


def test_all_rows_empty_is_inconclusive() -> None:
    c = duckdb.connect()
    ensure_common_tables(c)
    c.execute(
        "CREATE TABLE ingest_stats AS SELECT 'a' AS source_name, 'a.csv' AS file, "
        "0::BIGINT AS rows_read, 0::BIGINT AS rows_staged, 0::BIGINT AS rows_quarantined"
    )
    r = evaluate(c, "r", {}, now=E.NOW)
    assert r.status == "inconclusive" and r.exit_code() == ExitCode.INCONCLUSIVE
    assert r.inputs[0].sha256 is None  # no file_sha256 column: robust, not a crash


def test_optional_tables_absent() -> None:
    c = duckdb.connect()
    r = evaluate(c, "r", None, now=E.NOW)
    assert (r.status, r.checks, r.metrics, r.top_clusters) == ("pass", [], [], [])


def test_top_clusters_and_history_idempotent(con) -> None:
    r = evaluate(con, E.RUN, {}, now=E.NOW)
    top = r.top_clusters[0]
    # G1: c1 + c191 (XSS id) + c192 in crm, s1 in stripe = 4 records, the largest cluster
    assert (top.golden_id, top.size) == ("G1", 4)
    assert top.members[0].source_id == "c1" and top.members[0].is_survivor
    assert any(m.explanation and E.XSS in m.explanation for m in top.members)
    evaluate(con, E.RUN, {}, now=E.NOW)
    assert con.execute("SELECT count(*) FROM sla_run").fetchone() == (1,)
    n = con.execute("SELECT count(*) FROM sla_history WHERE run_id = ?", [E.RUN]).fetchone()[0]
    assert n == len(r.metrics)


def test_counts_on_the_contract_stage_quarantine(contact_project) -> None:
    """The real ingest+contract tables (reasons[] list, source_line for reader rejects)."""
    from romirecon.config import load_project
    from romirecon.db import configure
    from romirecon.pipeline import ingest_and_stage

    project = load_project(contact_project)
    c = duckdb.connect()
    configure(c)
    ingest_and_stage(c, project, "t1")
    c.execute(
        "INSERT INTO quarantine (run_id, source_name, source_file, source_row, source_line, "
        "reason, reasons) VALUES ('t1', ?, 'x.csv', NULL, 10, 'malformed-row', ['malformed-row']),"
        "('t1', ?, 'x.csv', NULL, 11, 'malformed-row', ['malformed-row'])",
        [project.sources[0].name] * 2,
    )
    r = evaluate(c, "t1", {}, now=E.NOW)
    q = metric(r, "quarantine_rate", "sf_contacts", "contact")
    # 2 rows read, 003B lacks its LastName -> 1 quarantined; plus the two reader rejects without
    # a row number, which are two records, not one (rows_read stays the ingest figure)
    assert (q.numerator, q.denominator) == (1 + 2, 2)
    by_reason = {(x.reason, x.rows) for x in r.quarantine_by_reason}
    assert by_reason == {("missing-required", 1), ("malformed-row", 2)}


def test_previous_run_value_is_carried_for_comparison(con) -> None:
    first = evaluate(con, "run-1", {}, now=datetime(2026, 12, 1, tzinfo=UTC))
    assert all(c.previous is None for c in first.checks)  # nothing before it
    # the metric/finding rows belong to E.RUN; run-1 saw only the table-derived metrics
    con.execute("DELETE FROM entity_xref WHERE source_id IN ('c195', 'c196')")  # 4 dups left
    r = evaluate(con, E.RUN, {}, now=E.NOW)
    c = {x.id: x for x in r.checks}["duplicate_rate[source=crm_contacts,entity=contact]"]
    assert c.previous == pytest.approx(6 / 196) and c.observed == pytest.approx(4 / 194)


def test_source_date_epoch_fixes_the_clock(con, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(E.NOW.timestamp())))
    r = evaluate(con, E.RUN, {})
    assert r.finished_at == "2026-12-02T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        evaluate(con, E.RUN, {})


def test_run_and_write_on_a_real_project(contact_project, tmp_path) -> None:
    """ingest + contract from main, then the SLA step the pipeline calls last."""
    from romirecon.config import load_project
    from romirecon.db import configure
    from romirecon.pipeline import ingest_and_stage
    from romirecon.report import FILES
    from romirecon.stages.sla import run_and_write

    project = load_project(contact_project)
    c = duckdb.connect()
    configure(c)
    ingest_and_stage(c, project, "t1")
    report, paths = run_and_write(c, project, "t1", now=E.NOW, out_dir=tmp_path / "out")
    assert [p.name for p in paths] == list(FILES)
    q = {x.id: x for x in report.checks}["quarantine_rate[source=sf_contacts,entity=contact]"]
    # 1 of 2 rows quarantined = 50%, but 2 rows < min_rows 100: skipped, so the run passes
    assert (q.status, q.numerator, q.denominator) == ("skipped", 1, 2)
    assert report.status == "pass" and report.exit_code() == ExitCode.PASS
    assert report.project == "proj"
    assert evaluate(c, "t1", {"min_rows": 0}, now=E.NOW).status == "fail"  # 50% > 5% if judged
