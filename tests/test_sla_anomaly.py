"""The history anomaly check (median/MAD with floors) on hand-made histories."""

from __future__ import annotations

import duckdb
import pytest

from romirecon import history
from romirecon.report.model import Metric
from romirecon.stages.sla import anomaly_checks


def dup(value: float) -> Metric:
    return Metric("duplicate_rate", value, source_name="crm", entity="contact", unit="ratio")


def con_with(values: list[float], statuses: list[str] | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for i, v in enumerate(values):
        history.record_run(
            con,
            run_id=f"r{i}",
            project="p",
            started_at=None,
            finished_at=f"2026-01-{i + 1:02d}T00:00:00Z",
            status=(statuses or ["pass"] * len(values))[i],
            metrics=[dup(v)],
        )
    return con


HIST = [0.010, 0.011, 0.009, 0.010, 0.012, 0.010]
# median 0.010; |dev| = 0, .001, .001, 0, .002, 0 -> sorted 0,0,0,.001,.001,.002 -> MAD 0.0005
# allowed = max(3.5 * 1.4826 * 0.0005 = 0.00259455, floor 0.002, 0.1 * 0.010) = 0.00259455


def test_baseline_median_and_mad_in_sql() -> None:
    (b,) = history.baselines(con_with(HIST), "now", window=10)
    assert (b.runs, b.median, b.mad) == (6, pytest.approx(0.010), pytest.approx(0.0005))


def test_far_value_is_a_warning_near_value_is_not() -> None:
    base = history.baselines(con_with(HIST), "now", 10)
    (c,) = anomaly_checks([dup(0.0126)], base, {})  # deviation 0.0026 > 0.00259455
    assert (c.status, c.kind, c.id) == (
        "warn",
        "anomaly",
        "anomaly:duplicate_rate[source=crm,entity=contact]",
    )
    assert "median 1%" in c.message and "last 6 runs" in c.message
    assert anomaly_checks([dup(0.0125)], base, {}) == []  # 0.0025 <= 0.00259455
    assert anomaly_checks([dup(0.0074)], base, {})  # 0.0026 below the median counts too


def test_absolute_floor_guards_a_constant_history() -> None:
    base = history.baselines(con_with([0.01] * 6), "now", 10)  # MAD 0
    assert anomaly_checks([dup(0.0119)], base, {}) == []  # 0.0019 < floor 0.002
    (c,) = anomaly_checks([dup(0.0121)], base, {})
    assert "history constant" in c.message
    # a configured floor replaces the default one
    assert anomaly_checks([dup(0.0121)], base, {"floors": {"duplicate_rate": 0.005}}) == []


def test_min_runs_window_and_errored_runs() -> None:
    base = history.baselines(con_with(HIST[:4]), "now", 10)  # 4 runs < min_runs 5
    assert anomaly_checks([dup(0.5)], base, {}) == []
    assert anomaly_checks([dup(0.5)], base, {"min_runs": 4})
    # errored runs are not a baseline: 6 runs recorded, 2 errored -> 4 usable
    con = con_with(HIST, ["pass", "error", "pass", "fail", "error", "warn"])
    assert history.baselines(con, "now", 10)[0].runs == 4
    # window: only the newest 3 runs (0.010, 0.012, 0.010) -> median 0.010, MAD 0
    (b,) = history.baselines(con_with(HIST), "now", 3)
    assert (b.runs, b.median, b.mad) == (3, pytest.approx(0.010), pytest.approx(0.0))
    # the run being judged is never its own baseline
    assert history.baselines(con_with(HIST), "r5", 10)[0].runs == 5


def test_disabled_or_unwatched() -> None:
    base = history.baselines(con_with(HIST), "now", 10)
    assert anomaly_checks([dup(0.5)], base, {"enabled": False}) == []
    assert anomaly_checks([dup(0.5)], base, {"metrics": ["fx_gaps"]}) == []
