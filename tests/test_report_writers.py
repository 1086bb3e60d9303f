"""The five writers: schema-valid JSON, parseable metrics.prom, well-formed JUnit, Markdown,
escaped HTML, atomic replacement."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import _sla_estate as E
import duckdb
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from prometheus_client.parser import text_string_to_metric_families

from romirecon.report import FILES, error_report, render_all, to_html, write_all
from romirecon.report._atomic import write_atomic
from romirecon.stages.sla import evaluate

FINISHED = E.NOW.timestamp()  # 2026-12-02T00:00:00Z


@pytest.fixture
def report():
    con = duckdb.connect()
    E.build(con)
    return evaluate(con, E.RUN, {}, project="demo", now=E.NOW)


def passing_report(now: datetime):
    con = duckdb.connect()
    E.build(con, xref=False)
    cfg = {"defaults": False, "checks": [{"metric": "rows_read", "fail": 1000}]}
    return evaluate(con, "ok-run", cfg, now=now)


def validator() -> Draft202012Validator:
    text = resources.files("romirecon.schemas").joinpath("sla_report.schema.json").read_text()
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def test_json_validates_against_published_schema(report, tmp_path: Path) -> None:
    write_all(report, tmp_path)
    doc = json.loads((tmp_path / "sla_report.json").read_text())
    assert list(validator().iter_errors(doc)) == []
    assert (doc["version"], doc["run_id"], doc["status"], doc["exit_code"]) == (
        "1.0",
        E.RUN,
        "fail",
        1,
    )
    assert doc["inputs"][0] == {
        "source_name": "crm_contacts", "file": "exports/contacts.csv", "sha256": "aa11",
        "rows_read": 200, "rows_staged": 196, "rows_quarantined": 4,
    }  # fmt: skip
    check = next(
        c for c in doc["checks"] if c["id"] == "duplicate_rate[source=crm_contacts,entity=contact]"
    )
    assert (check["numerator"], check["denominator"], check["fail"], check["status"]) == (
        6,
        196,
        0.01,
        "fail",
    )
    # a mangled document is rejected, so the validation above means something
    doc["checks"][0]["status"] = "broken"
    assert list(validator().iter_errors(doc))
    err = json.loads(render_all(error_report("r", "boom", now=E.NOW), tmp_path)["sla_report.json"])
    assert list(validator().iter_errors(err)) == [] and err["exit_code"] == 3


def prom(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_prom_parses_and_carries_last_success(report, tmp_path: Path) -> None:
    ok = passing_report(datetime(2026, 12, 1, tzinfo=UTC))
    write_all(ok, tmp_path)
    first = prom((tmp_path / "metrics.prom").read_text())
    success_1 = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert first[("romirecon_last_success_timestamp_seconds", ())] == success_1
    assert first[("romirecon_run_exit_code", ())] == 0
    write_all(report, tmp_path)  # failed run: last success carried forward
    text = (tmp_path / "metrics.prom").read_text()
    got = prom(text)
    assert got[("romirecon_last_success_timestamp_seconds", ())] == success_1
    assert got[("romirecon_run_timestamp_seconds", ())] == FINISHED
    assert got[("romirecon_run_status", (("status", "fail"),))] == 1
    assert got[("romirecon_run_status", (("status", "pass"),))] == 0
    assert got[
        ("romirecon_duplicate_ratio", (("entity", "contact"), ("source", "crm_contacts")))
    ] == pytest.approx(6 / 196)
    assert got[("romirecon_sync_latency_seconds", (("entity", "contact"), ("quantile", "0.95"), ("source", "stripe_customers")))] == pytest.approx(5703)  # fmt: skip
    assert got[("romirecon_stage_duration_seconds", (("stage", "dedup"),))] == 1.5
    assert got[("romirecon_checks", (("status", "fail"),))] == 2
    assert (
        "# HELP romirecon_duplicate_ratio Duplicate rate: (rows - distinct golden entities) / rows."
        in text
    )
    # no previous file and a failed run: 0 ("never succeeded")
    other = tmp_path / "fresh"
    write_all(report, other)
    assert (
        prom((other / "metrics.prom").read_text())[("romirecon_last_success_timestamp_seconds", ())]
        == 0
    )


def test_junit_failure_for_breach_error_for_runtime(report, tmp_path: Path) -> None:
    write_all(report, tmp_path)
    root = ET.parse(tmp_path / "junit.xml").getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(report.checks) == int(suite.get("tests"))
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == [
        "duplicate_rate[entity=contact]",
        "duplicate_rate[source=crm_contacts,entity=contact]",
    ]
    assert suite.get("failures") == "2" and root.get("errors") == "0"
    text = cases[1].find("failure").text
    assert "numerator/denominator: 6/196" in text and E.XSS in text  # escaped by the XML writer
    warn = next(c for c in cases if c.get("name") == "fx_gaps")
    assert warn.find("failure") is None and "WARNING" in warn.find("system-out").text
    write_all(error_report("r9", "cannot read a.csv\x00: bad <gzip>", now=E.NOW), tmp_path)
    root = ET.parse(tmp_path / "junit.xml").getroot()
    err = root.find("testsuite/testcase/error")
    assert err is not None and err.get("message") == "cannot read a.csv: bad <gzip>"
    assert root.get("errors") == "1"


def test_markdown_lists_checks_and_goes_to_step_summary(
    report, tmp_path: Path, monkeypatch
) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    write_all(report, tmp_path / "out")
    md = (tmp_path / "out" / "sla_report.md").read_text()
    for c in report.checks:
        assert f"| `{c.id}` |" in md
    assert (
        "| ❌ fail | `duplicate_rate[source=crm_contacts,entity=contact]` | crm_contacts / contact | 3.06% | - | 0.5% | 1% | 6 / 196 |"
        in md
    )
    assert "<script>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert summary.read_text() == "earlier step\n" + md + "\n"


def test_html_escapes_every_value_and_is_self_contained(report, tmp_path: Path) -> None:
    write_all(report, tmp_path)
    page = (tmp_path / "sla_report.html").read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the contact id and explanation
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "@import" not in page and "url(" not in page
    assert page.count("<svg") >= 3 and "<polyline" not in page.split("Trends")[0]
    assert "Content-Security-Policy" in page
    assert to_html.e('"><b>') == "&quot;&gt;&lt;b&gt;"


def test_rendering_is_deterministic(report, tmp_path: Path) -> None:
    a = render_all(report, tmp_path)
    b = render_all(report, tmp_path)
    assert a == b and set(a) == set(FILES)


def test_a_failing_writer_leaves_previous_files_intact(report, tmp_path: Path, monkeypatch) -> None:
    write_all(passing_report(E.NOW), tmp_path)
    before = {n: (tmp_path / n).read_bytes() for n in FILES}

    def boom(_report):
        raise RuntimeError("renderer bug")

    monkeypatch.setattr(to_html, "render", boom)
    with pytest.raises(RuntimeError):
        write_all(report, tmp_path)
    assert {n: (tmp_path / n).read_bytes() for n in FILES} == before
    assert sorted(os.listdir(tmp_path)) == sorted(FILES)


def test_write_atomic_failure_keeps_old_file_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "junit.xml"
    write_atomic(target, "old")

    def fail_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["junit.xml"]


def test_write_error_report_records_the_failed_run(tmp_path: Path) -> None:
    from romirecon import history
    from romirecon.report import write_error_report

    con = duckdb.connect()
    write_error_report(tmp_path, "r9", "stage billing failed", con=con, now=E.NOW, project="p")
    assert history.runs(con) == [("r9", "2026-12-02T00:00:00Z", "error")]
    doc = json.loads((tmp_path / "sla_report.json").read_text())
    assert (doc["status"], doc["exit_code"], doc["error"]) == ("error", 3, "stage billing failed")
    inc = error_report("r8", "crm export is 30 h old", status="inconclusive", now=E.NOW)
    assert inc.exit_code("never") == 4


def test_console_summary_lists_breaches(report) -> None:
    import io

    from romirecon.obs import console_summary

    buf = io.StringIO()
    console_summary(report, buf)
    text = buf.getvalue()
    assert text.startswith("SLA FAIL: 2 failed, 4 warnings, 2 passed, 0 skipped")
    assert "duplicate_rate[source=crm_contacts,entity=contact]" in text
    assert "stripe_customers" not in text  # passing checks are not listed
