"""SLA thresholds: the `sla:` section of romirecon.yaml, parsed and applied to metrics.

Configuration (every key optional; `romirecon/schemas/project.schema.json` `$defs/sla` is the
schema)::

    sla:
      defaults: true          # keep the built-in rules below (user rules override them)
      min_rows: 100           # default guard for rate checks: skip when the denominator is smaller
      checks:
        - metric: duplicate_rate   # a metric name (see romirecon.stages.sla for the list)
          source: crm_contacts     # optional scope: a source name from `sources`
          entity: contact          # optional scope: a canonical entity
          label: invalid-email     # optional: e.g. the reason of quarantine_rate_by_reason
          warn: 0.5%               # number in the metric's unit, or "N%" (= N/100, for rates)
          fail: 1%
          direction: above         # above (default): breach when observed > level; below: <
          measure: value           # value (default) or numerator: judge the rate's count instead
          min_rows: 200            # skip when the denominator (rows) is below this
          id: dup-crm              # optional stable check id (default: built from metric+scope)
      anomaly:
        enabled: true
        window: 10            # previous runs compared against
        min_runs: 5           # fewer previous runs: no anomaly check
        threshold: 3.5        # robust z-score: |x - median| / (1.4826 * MAD)
        floor: 0.0            # absolute floor: smaller deviations are never anomalies
        relative_floor: 0.1   # ... nor deviations below this fraction of |median|
        metrics: [duplicate_rate, ...]
        floors: {duplicate_rate: 0.002}   # per-metric absolute floor

Levels are compared strictly: with `fail: 1%` an observed 1.0% passes and 1.01% fails. A rule
without `source`/`entity` applies to every scope the metric is reported for (each source, each
entity, the run-wide total); the most specific matching rule wins (source+entity+label beats
source beats entity beats none), and at equal specificity the later rule (user over default).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from romirecon.exitcodes import ConfigError
from romirecon.report.model import Check, Metric

_PERCENT = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]+)?)\s*%\s*$")

DEFAULT_MIN_ROWS = 100

# Built-in rules: a clean estate passes, an estate with 5% injected duplicates fails on
# duplicate_rate (5 extra rows per 100 -> 5/105 = 4.8% > 1%).
DEFAULT_CHECKS: list[dict[str, Any]] = [
    {"metric": "duplicate_rate", "warn": "0.5%", "fail": "1%"},
    {"metric": "quarantine_rate", "warn": "1%", "fail": "5%"},
    {"metric": "lost_record_rate", "warn": "1%", "fail": "5%"},
    {"metric": "fx_gaps", "warn": 0},
    {"metric": "amount_mismatches", "warn": 0},
]

DEFAULT_ANOMALY: dict[str, Any] = {
    "enabled": True,
    "window": 10,
    "min_runs": 5,
    "threshold": 3.5,
    "floor": 0.0,
    "relative_floor": 0.1,
    "metrics": [
        "duplicate_rate",
        "quarantine_rate",
        "lost_record_rate",
        "fx_gaps",
        "amount_mismatches",
        "rows_read",
        "sync_latency_p95_seconds",
    ],
    "floors": {
        "duplicate_rate": 0.002,
        "quarantine_rate": 0.002,
        "lost_record_rate": 0.002,
        "fx_gaps": 1,
        "amount_mismatches": 1,
        "rows_read": 10,
        "sync_latency_p95_seconds": 3600,
    },
}


@dataclass(frozen=True)
class Rule:
    metric: str
    warn: float | None
    fail: float | None
    source: str | None = None
    entity: str | None = None
    label: str | None = None
    direction: str = "above"
    measure: str = "value"
    min_rows: int | None = None
    id: str | None = None
    user: bool = False

    @property
    def specificity(self) -> int:
        return (4 if self.source else 0) + (2 if self.entity else 0) + (1 if self.label else 0)

    def matches(self, m: Metric) -> bool:
        return (
            m.name == self.metric
            and (self.source is None or m.source_name == self.source)
            and (self.entity is None or m.entity == self.entity)
            and (self.label is None or m.label == self.label)
        )


def parse_level(value: Any, where: str) -> float | None:
    """`0.01`, `5`, `"1%"` (= 0.01). None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"sla: {where}: expected a number or 'N%', got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ConfigError(f"sla: {where}: expected a finite number, got {value!r}")
        return float(value)
    m = _PERCENT.match(str(value))
    if not m:
        raise ConfigError(f"sla: {where}: expected a number or 'N%', got {value!r}")
    return float(m.group(1)) / 100.0


def validate_sla_config(sla: dict[str, Any] | None) -> dict[str, Any]:
    """Check `sla` against the schema; raise ConfigError listing every problem."""
    sla = dict(sla or {})
    from jsonschema import Draft202012Validator

    from romirecon.config import _fmt_path, schema

    proj = schema("project")
    sub = {**proj["$defs"]["sla"], "$defs": proj["$defs"]}
    problems = sorted(
        f"sla{'.' if e.absolute_path else ''}{_fmt_path(e.absolute_path) if e.absolute_path else ''}"
        f": {e.message}"
        for e in Draft202012Validator(sub).iter_errors(sla)
    )
    if problems:
        raise ConfigError(
            f"sla: {len(problems)} problem{'s' if len(problems) != 1 else ''} found",
            details=problems,
        )
    return sla


def rules_from_config(sla: dict[str, Any] | None) -> list[Rule]:
    sla = validate_sla_config(sla)
    default_min = int(sla.get("min_rows", DEFAULT_MIN_ROWS))
    specs: list[tuple[dict[str, Any], bool, str]] = []
    if sla.get("defaults", True):
        specs += [(d, False, f"default {d['metric']}") for d in DEFAULT_CHECKS]
    specs += [(d, True, f"checks[{i}]") for i, d in enumerate(sla.get("checks") or [])]
    rules = []
    for d, user, where in specs:
        warn = parse_level(d.get("warn"), f"{where}.warn")
        fail = parse_level(d.get("fail"), f"{where}.fail")
        direction = d.get("direction", "above")
        if (
            warn is not None
            and fail is not None
            and ((direction == "above" and warn > fail) or (direction == "below" and warn < fail))
        ):
            raise ConfigError(
                f"sla: {where}: warn level {d.get('warn')} is beyond the fail level "
                f"{d.get('fail')} for direction '{direction}'"
            )
        rules.append(
            Rule(
                metric=d["metric"],
                warn=warn,
                fail=fail,
                source=d.get("source"),
                entity=d.get("entity"),
                label=d.get("label"),
                direction=direction,
                measure=d.get("measure", "value"),
                min_rows=int(d.get("min_rows", default_min)),
                id=d.get("id"),
                user=user,
            )
        )
    return rules


def check_id(metric: str, source: str | None, entity: str | None, label: str | None) -> str:
    parts = [f"{k}={v}" for k, v in (("source", source), ("entity", entity), ("label", label)) if v]
    return metric + (f"[{','.join(parts)}]" if parts else "")


def _breach(observed: float, level: float | None, direction: str) -> bool:
    if level is None:
        return False
    return observed > level if direction == "above" else observed < level


def judge(rule: Rule, m: Metric) -> Check:
    """One check: the metric's observed value (or numerator) against the rule's levels."""
    observed = m.numerator if rule.measure == "numerator" else m.value
    base = check_id(m.name, m.source_name, m.entity, m.label)
    c = Check(
        id=(f"{rule.id}:{base}" if rule.id else base),
        metric=m.name,
        status="pass",
        observed=observed,
        warn=rule.warn,
        fail=rule.fail,
        direction=rule.direction,
        measure=rule.measure,
        source_name=m.source_name,
        entity=m.entity,
        label=m.label,
        numerator=m.numerator,
        denominator=m.denominator,
        unit=m.unit,
        min_rows=rule.min_rows if m.denominator is not None else None,
    )
    if observed is None or (isinstance(observed, float) and math.isnan(observed)):
        c.status, c.message = "skipped", "no value observed"
    elif m.denominator is not None and rule.min_rows and m.denominator < rule.min_rows:
        c.status = "skipped"
        c.message = f"only {fmt_num(m.denominator)} rows (min_rows {rule.min_rows})"
    elif _breach(observed, rule.fail, rule.direction):
        c.status = "fail"
        c.message = _msg(c, rule.fail, "fail")
    elif _breach(observed, rule.warn, rule.direction):
        c.status = "warn"
        c.message = _msg(c, rule.warn, "warn")
    else:
        c.message = "within thresholds"
    return c


def _msg(c: Check, level: float | None, which: str) -> str:
    word = "above" if c.direction == "above" else "below"
    return (
        f"{fmt_value(c.observed, c.unit if c.measure == 'value' else '')} is {word} the {which} "
        f"level {fmt_value(level, c.unit if c.measure == 'value' else '')}"
    )


def select_rules(rules: list[Rule], metrics: list[Metric]) -> list[tuple[Rule, Metric]]:
    """For every metric the most specific matching rule (later rules win ties)."""
    out = []
    for m in metrics:
        best: Rule | None = None
        for r in rules:
            if r.matches(m) and (best is None or r.specificity >= best.specificity):
                best = r
        if best is not None:
            out.append((best, m))
    return out


def apply_rules(rules: list[Rule], metrics: list[Metric]) -> list[Check]:
    """Every check of this run, plus a `skipped` check for each user rule that matched nothing
    (a typo in a source name must not silently pass)."""
    pairs = select_rules(rules, metrics)
    checks = [judge(r, m) for r, m in pairs]
    used = {id(r) for r, _ in pairs}
    for r in rules:
        if r.user and id(r) not in used and not any(r.matches(m) for m in metrics):
            checks.append(
                Check(
                    id=r.id or check_id(r.metric, r.source, r.entity, r.label),
                    metric=r.metric,
                    status="skipped",
                    observed=None,
                    warn=r.warn,
                    fail=r.fail,
                    direction=r.direction,
                    measure=r.measure,
                    source_name=r.source,
                    entity=r.entity,
                    label=r.label,
                    min_rows=r.min_rows,
                    message="metric not produced by this run for this scope",
                )
            )
    return checks


def fmt_num(x: float | None) -> str:
    if x is None:
        return "-"
    if float(x).is_integer():
        return f"{int(x):d}"
    return f"{x:.6g}"


def fmt_value(x: float | None, unit: str) -> str:
    """Human form: ratios as percent, seconds as s/h, counts as integers."""
    if x is None:
        return "-"
    if unit == "ratio":
        return f"{x * 100:.3g}%"
    if unit == "seconds":
        return f"{x / 3600:.3g}h" if abs(x) >= 3600 else f"{x:.3g}s"
    if unit == "bytes":
        return f"{x / 2**20:.1f} MiB"
    return fmt_num(x)
