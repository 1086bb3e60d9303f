"""Threshold rules: levels, percent/absolute, scope precedence, min_rows, defaults."""

from __future__ import annotations

import duckdb
import pytest

from romirecon.exitcodes import ConfigError
from romirecon.report.model import Metric
from romirecon.report.thresholds import (
    apply_rules,
    judge,
    parse_level,
    rules_from_config,
    validate_sla_config,
)
from romirecon.stages.sla import evaluate


def rate(name: str, num: float, den: float, source: str | None = None, entity: str | None = None):
    return Metric(name, num / den, source_name=source, entity=entity, numerator=num,
                  denominator=den, unit="ratio")  # fmt: skip


def only(cfg: dict, metrics: list[Metric]) -> dict[str, str]:
    return {c.id: c.status for c in apply_rules(rules_from_config(cfg), metrics)}


def test_parse_level_percent_and_absolute() -> None:
    assert parse_level("0.1%", "x") == pytest.approx(0.001)
    assert parse_level(" 5 % ", "x") == pytest.approx(0.05)
    assert parse_level(3, "x") == 3.0
    assert parse_level(None, "x") is None
    for bad in ("abc", "1%%", True, float("nan")):
        with pytest.raises(ConfigError):
            parse_level(bad, "x")


def test_warn_and_fail_levels_are_strict() -> None:
    rule = rules_from_config({"defaults": False, "checks": [
        {"metric": "duplicate_rate", "warn": "0.5%", "fail": "1%", "min_rows": 0}]})[0]  # fmt: skip
    # 1 duplicate in 200 rows = 0.5%: equal to warn -> pass
    assert judge(rule, rate("duplicate_rate", 1, 200)).status == "pass"
    # 2/200 = 1%: above warn, equal to fail -> warn
    assert judge(rule, rate("duplicate_rate", 2, 200)).status == "warn"
    # 3/200 = 1.5% -> fail, message names the level
    c = judge(rule, rate("duplicate_rate", 3, 200))
    assert c.status == "fail"
    assert c.message == "1.5% is above the fail level 1%"
    assert (c.numerator, c.denominator, c.warn, c.fail) == (3, 200, 0.005, 0.01)


def test_below_direction_and_absolute_numerator() -> None:
    rules = rules_from_config({"defaults": False, "checks": [
        {"metric": "match_rate", "warn": 0.9, "fail": 0.8, "direction": "below", "min_rows": 0},
        {"metric": "duplicate_rate", "fail": 5, "measure": "numerator", "min_rows": 0},
    ]})  # fmt: skip
    assert judge(rules[0], rate("match_rate", 85, 100)).status == "warn"  # 0.85 < 0.9
    assert judge(rules[0], rate("match_rate", 79, 100)).status == "fail"  # 0.79 < 0.8
    assert judge(rules[0], rate("match_rate", 95, 100)).status == "pass"
    # 6 duplicate rows > 5 fails although the rate is only 6/10000 = 0.06%
    c = judge(rules[1], rate("duplicate_rate", 6, 10_000))
    assert (c.status, c.observed) == ("fail", 6)


def test_min_rows_guard_skips_tiny_tables() -> None:
    cfg = {"defaults": False, "min_rows": 100, "checks": [
        {"metric": "duplicate_rate", "fail": "1%"},
        {"metric": "duplicate_rate", "source": "tiny", "fail": "1%", "min_rows": 10},
    ]}  # fmt: skip
    got = only(cfg, [
        rate("duplicate_rate", 1, 50, "small"),  # 2% but 50 < 100 rows -> skipped
        rate("duplicate_rate", 2, 100, "big"),  # 2%, 100 rows -> fail
        rate("duplicate_rate", 1, 20, "tiny"),  # 5%, own min_rows 10 <= 20 -> fail
    ])  # fmt: skip
    assert got == {
        "duplicate_rate[source=small]": "skipped",
        "duplicate_rate[source=big]": "fail",
        "duplicate_rate[source=tiny]": "fail",
    }
    checks = apply_rules(rules_from_config(cfg), [rate("duplicate_rate", 1, 50, "small")])
    assert checks[0].message == "only 50 rows (min_rows 100)"


def test_most_specific_rule_wins_and_user_overrides_default() -> None:
    cfg = {"min_rows": 0, "checks": [
        {"metric": "duplicate_rate", "warn": "2%", "fail": "3%"},  # replaces default 0.5%/1%
        {"metric": "duplicate_rate", "source": "crm", "fail": "10%"},
        {"metric": "duplicate_rate", "entity": "account", "fail": "0.1%"},
    ]}  # fmt: skip
    got = only(cfg, [
        rate("duplicate_rate", 25, 1000, "erp", "contact"),  # 2.5%: user 2%/3% -> warn
        rate("duplicate_rate", 50, 1000, "crm", "contact"),  # 5%: crm rule 10% -> pass
        rate("duplicate_rate", 2, 1000, "erp", "account"),  # 0.2%: account 0.1% -> fail
        rate("duplicate_rate", 50, 1000, "crm", "account"),  # source beats entity: 5% < 10%
    ])  # fmt: skip
    assert got == {
        "duplicate_rate[source=erp,entity=contact]": "warn",
        "duplicate_rate[source=crm,entity=contact]": "pass",
        "duplicate_rate[source=erp,entity=account]": "fail",
        "duplicate_rate[source=crm,entity=account]": "pass",
    }


def test_label_scope_for_quarantine_reasons() -> None:
    m = [
        Metric("quarantine_rate_by_reason", 0.03, source_name="crm", label="invalid-email",
               numerator=3, denominator=100, unit="ratio"),
        Metric("quarantine_rate_by_reason", 0.03, source_name="crm", label="missing-required",
               numerator=3, denominator=100, unit="ratio"),
    ]  # fmt: skip
    cfg = {
        "checks": [{"metric": "quarantine_rate_by_reason", "label": "invalid-email", "fail": "2%"}]
    }
    assert only(cfg, m) == {"quarantine_rate_by_reason[source=crm,label=invalid-email]": "fail"}


def test_user_rule_matching_nothing_is_reported_skipped() -> None:
    cfg = {
        "defaults": False,
        "checks": [{"metric": "duplicate_rate", "source": "crm_contcts", "fail": "1%"}],
    }
    checks = apply_rules(rules_from_config(cfg), [rate("duplicate_rate", 1, 100, "crm_contacts")])
    assert [(c.id, c.status) for c in checks] == [("duplicate_rate[source=crm_contcts]", "skipped")]


def test_bad_config_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as e:
        validate_sla_config(
            {"chekcs": [], "checks": [{"metric": "x", "warn": "lots"}, {"metric": "y"}]}
        )
    text = "\n".join(e.value.details)
    assert "chekcs" in text and "checks[0].warn" in text and "checks[1]" in text
    with pytest.raises(ConfigError, match="beyond the fail level"):
        rules_from_config({"checks": [{"metric": "x", "warn": "2%", "fail": "1%"}]})


def test_project_schema_accepts_documented_example() -> None:
    from romirecon.config import schema_problems

    doc = {
        "reporting_currency": "USD",
        "sources": [
            {"name": "a", "system": "crm", "entity": "contact", "mapping": "m", "path": "p"}
        ],
        "sla": {
            "min_rows": 200,
            "checks": [{"metric": "duplicate_rate", "source": "a", "warn": "0.5%", "fail": 0.01}],
            "anomaly": {"window": 10, "min_runs": 5, "floors": {"duplicate_rate": 0.002}},
        },
    }
    assert schema_problems(doc, "project", "romirecon.yaml") == []
    doc["sla"]["checks"][0]["fail"] = "1 percent"
    assert schema_problems(doc, "project", "romirecon.yaml")


def _xref(con: duckdb.DuckDBPyConnection, clean: int, dups: int) -> None:
    """`clean` distinct contacts in one source plus `dups` extra records of existing ones."""
    con.execute(
        "CREATE OR REPLACE TABLE entity_xref AS "
        "SELECT 'contact' AS entity, 'crm' AS source_name, 'r' || i AS source_id, "
        "'G' || CASE WHEN i <= ? THEN i ELSE i - ? END AS golden_id "
        "FROM range(1, ? + 1) t(i)",
        [clean, clean, clean + dups],
    )


def test_default_thresholds_pass_clean_and_fail_five_percent_duplicates() -> None:
    con = duckdb.connect()
    _xref(con, 1000, 0)
    r = evaluate(con, "clean", None, record_history=False)
    assert r.status == "pass" and int(r.exit_code()) == 0
    # 1000 distinct + 50 duplicates (5% injected): 50 / 1050 = 4.76% > 1% default fail level
    _xref(con, 1000, 50)
    r = evaluate(con, "dirty", None, record_history=False)
    dup = {c.id: c for c in r.checks}["duplicate_rate[source=crm,entity=contact]"]
    assert dup.status == "fail"
    assert (dup.numerator, dup.denominator) == (50, 1050)
    assert dup.observed == pytest.approx(50 / 1050)
    assert int(r.exit_code()) == 1
