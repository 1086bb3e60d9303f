"""The one report model every writer reads (JSON, Markdown, HTML, JUnit, Prometheus).

Plain dataclasses with no behaviour beyond the exit-code mapping and a JSON-ready `to_dict`, so a
writer can never compute a different answer from another writer.

Statuses
- Check: `pass`, `warn`, `fail`, `skipped` (metric not produced, or fewer rows than `min_rows`).
- Report: `pass`, `warn`, `fail`, `inconclusive` (an input missing, empty or stale), `error`
  (a runtime error left the results incomplete).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from romirecon.exitcodes import ConfigError, ExitCode

# Bump the major when a field changes meaning or disappears; the minor when one is added.
REPORT_VERSION = "1.0"

CHECK_STATUSES = ("pass", "warn", "fail", "skipped")
REPORT_STATUSES = ("pass", "warn", "fail", "inconclusive", "error")
FAIL_ON = ("warn", "fail", "never")


@dataclass
class InputFile:
    source_name: str
    file: str
    sha256: str | None
    rows_read: int | None
    rows_staged: int | None
    rows_quarantined: int | None


@dataclass
class Metric:
    """One observed value. `source_name`/`entity` are None for entity- or run-wide values;
    `label` qualifies a metric further (the quarantine reason of `quarantine_rate_by_reason`)."""

    name: str
    value: float | None
    stage: str = "sla"
    source_name: str | None = None
    entity: str | None = None
    label: str | None = None
    numerator: float | None = None
    denominator: float | None = None
    unit: str = ""

    @property
    def key(self) -> tuple[str, str | None, str | None, str | None]:
        return (self.name, self.source_name, self.entity, self.label)


@dataclass
class Check:
    id: str
    metric: str
    status: str
    observed: float | None
    warn: float | None = None
    fail: float | None = None
    direction: str = "above"  # above: breach when observed > threshold; below: when <
    measure: str = "value"  # value | numerator (absolute count of a rate's numerator)
    kind: str = "threshold"  # threshold | anomaly
    source_name: str | None = None
    entity: str | None = None
    label: str | None = None
    numerator: float | None = None
    denominator: float | None = None
    unit: str = ""
    min_rows: int | None = None
    previous: float | None = None  # the judged value in the previous (non-error) run
    sample_record_ids: list[str] = field(default_factory=list)
    message: str = ""


@dataclass
class Finding:
    stage: str
    code: str
    severity: str
    source_name: str | None
    entity: str | None
    record_id: str | None
    other_id: str | None
    message: str | None


@dataclass
class ClusterMember:
    source_name: str
    source_id: str
    rule: str | None
    match_probability: float | None
    is_survivor: bool | None
    explanation: str | None


@dataclass
class Cluster:
    entity: str
    golden_id: str
    size: int
    members: list[ClusterMember]


@dataclass
class QuarantineReason:
    source_name: str
    reason: str
    column_name: str | None
    rows: int


@dataclass
class HistoryPoint:
    run_id: str
    finished_at: str
    value: float | None


@dataclass
class HistorySeries:
    metric: str
    source_name: str | None
    entity: str | None
    label: str | None
    unit: str
    points: list[HistoryPoint]


@dataclass
class Report:
    run_id: str
    status: str
    project: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    fail_on: str = "fail"
    version: str = REPORT_VERSION
    tool_version: str = ""
    error: str | None = None
    inputs: list[InputFile] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    findings_total: dict[str, int] = field(default_factory=dict)
    top_clusters: list[Cluster] = field(default_factory=list)
    quarantine_by_reason: list[QuarantineReason] = field(default_factory=list)
    history: list[HistorySeries] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(CHECK_STATUSES, 0)
        for c in self.checks:
            out[c.status] += 1
        return out

    def exit_code(self, fail_on: str | None = None) -> ExitCode:
        """0 pass (warnings allowed), 1 breached, 3 runtime error, 4 inconclusive.

        `fail_on`: `fail` (default) exits 1 on a failed check; `warn` also on a warning;
        `never` never exits 1 (errors and inconclusive runs still exit 3 and 4)."""
        fail_on = fail_on or self.fail_on
        if fail_on not in FAIL_ON:
            raise ConfigError(f"--fail-on: '{fail_on}' is not one of: {', '.join(FAIL_ON)}")
        if self.status == "error":
            return ExitCode.RUNTIME
        if self.status == "inconclusive":
            return ExitCode.INCONCLUSIVE
        if fail_on == "never":
            return ExitCode.PASS
        if self.status == "fail" or (self.status == "warn" and fail_on == "warn"):
            return ExitCode.SLA_BREACHED
        return ExitCode.PASS

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = self.counts()
        d["exit_code"] = int(self.exit_code())
        return d


def overall_status(checks: list[Check]) -> str:
    statuses = {c.status for c in checks}
    if "fail" in statuses:
        return "fail"
    if "warn" in statuses:
        return "warn"
    return "pass"
