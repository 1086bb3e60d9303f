"""`romirecon history`: trend per metric from the state database."""

from __future__ import annotations

from pathlib import Path

import duckdb

from romirecon import history
from romirecon.report.model import Metric
from tests.conftest import run_cli


def record(state: Path, values: list[float | None], statuses: list[str]) -> None:
    state.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(state / "romirecon.duckdb"))
    for i, (v, st) in enumerate(zip(values, statuses, strict=True)):
        ms = [Metric("rows_read", 100 + i, unit="rows")]
        if v is not None:
            ms.append(
                Metric("duplicate_rate", v, source_name="crm", entity="contact", unit="ratio")
            )
        history.record_run(con, run_id=f"run{i}", project="p", started_at=None,
                           finished_at=f"2026-11-0{i + 1}T02:00:00Z", status=st, metrics=ms)  # fmt: skip
    con.close()


def test_history_shows_trend_per_metric(contact_project: Path) -> None:
    res = run_cli("history", "--project", str(contact_project))
    assert (res.returncode, res.stdout.strip()) == (
        0,
        f"no runs recorded yet ({contact_project / '.romirecon' / 'romirecon.duckdb'} does not exist)",
    )
    record(
        contact_project / ".romirecon", [0.01, None, 0.02, 0.05], ["pass", "error", "warn", "fail"]
    )
    res = run_cli("history", "--project", str(contact_project))
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[0] == "4 runs from 2026-11-01T02:00:00Z to 2026-11-04T02:00:00Z; latest run3 (fail)"
    assert out[1] == "statuses: P E W F  (oldest first)"
    # 0.01 -> lowest bar, the errored run a gap, 0.02 -> (0.01/0.04)*7 = 1.75 -> index 2, 0.05 top
    dup = next(x for x in out if x.startswith("duplicate_rate[source=crm,entity=contact]"))
    assert "▁ ▃█" in dup
    assert "latest 5% (+3% vs previous) range 1%..5%" in dup
    res = run_cli("history", "--project", str(contact_project), "--metric", "rows_read")
    assert [x.split()[0] for x in res.stdout.splitlines()[3:]] == ["rows_read"]
    assert "latest 103 (+1 vs previous) range 100..103" in res.stdout


def test_history_unknown_metric_is_a_usage_error(contact_project: Path) -> None:
    record(contact_project / ".romirecon", [0.01], ["pass"])
    res = run_cli("history", "--project", str(contact_project), "--metric", "duplicate_rat")
    assert res.returncode == 2
    assert "no metric named 'duplicate_rat' (did you mean 'duplicate_rate'?)" in res.stderr
