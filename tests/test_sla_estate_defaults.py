"""The default thresholds on generated estates (romirecon.generate). Duplicates are taken from
the generator's ground truth (the true identity of every exported record), so this judges the
SLA stage's defaults and arithmetic, not the matcher's precision: a clean estate exits 0, one
with 5% injected duplicates fails on duplicate_rate (exit 1)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from romirecon.config import load_project
from romirecon.db import configure
from romirecon.exitcodes import ExitCode
from romirecon.generate import generate_estate
from romirecon.pipeline import ingest_and_stage
from romirecon.sqlutil import literal
from romirecon.stages.sla import evaluate

pytestmark = pytest.mark.slow


def judge(root: Path, dup_rate: float):
    generate_estate(root, customers=300, seed=11, dup_rate=dup_rate)
    doc = yaml.safe_load((root / "romirecon.yaml").read_text())
    # mappings another branch has not delivered yet are left out, as tests/test_generate.py does
    doc["sources"] = [s for s in doc["sources"] if (root / s["mapping"]).exists()]
    doc.pop("sla", None)
    (root / "romirecon.yaml").write_text(yaml.safe_dump(doc))
    project = load_project(root)
    con = duckdb.connect()
    configure(con)
    ingest_and_stage(con, project, "e2e")
    truth = literal(str(root / "truth" / "records.parquet"))
    con.execute("CREATE TABLE src (source_name VARCHAR, entity VARCHAR)")
    con.executemany("INSERT INTO src VALUES (?, ?)", [[s.name, s.entity] for s in project.sources])
    con.execute(
        "CREATE TABLE entity_xref AS SELECT s.entity, t.source AS source_name, t.source_id, "
        f"t.entity_id AS golden_id FROM read_parquet({truth}) t JOIN src s ON s.source_name = t.source"
    )
    report = evaluate(con, "e2e", None, now=datetime(2026, 11, 1, tzinfo=UTC), record_history=False)
    return report, root / "truth" / "records.parquet"


def test_clean_estate_passes_with_default_thresholds(tmp_path: Path) -> None:
    r, _ = judge(tmp_path / "clean", 0.0)
    dup = [c for c in r.checks if c.metric == "duplicate_rate"]
    assert len(dup) > 10 and all(c.observed == 0 for c in dup if c.status != "skipped")
    assert r.exit_code("fail") == ExitCode.PASS, [(c.id, c.status) for c in r.checks]


def test_five_percent_duplicates_fail_on_duplicate_rate(tmp_path: Path) -> None:
    r, truth = judge(tmp_path / "dirty", 0.05)
    # independent count for one source: rows minus distinct true identities, in Python
    rows = pq.read_table(truth, columns=["source", "entity_id"]).to_pylist()
    lead = Counter(x["entity_id"] for x in rows if x["source"] == "salesforce_lead")
    n, distinct = sum(lead.values()), len(lead)
    check = {c.id: c for c in r.checks}["duplicate_rate[source=salesforce_lead,entity=contact]"]
    assert (check.numerator, check.denominator) == (n - distinct, n)
    assert check.status == "fail" and check.observed > 0.02
    assert {c.id: c for c in r.checks}["duplicate_rate[entity=contact]"].status == "fail"
    assert r.exit_code("fail") == ExitCode.SLA_BREACHED
    assert r.exit_code("never") == ExitCode.PASS
