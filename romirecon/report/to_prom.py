"""metrics.prom: the Prometheus textfile-collector format (node_exporter `--collector.textfile`).

Base units (seconds, bytes, ratios 0..1), one HELP/TYPE block per family with fixed texts, label
values escaped. `romirecon_last_success_timestamp_seconds` is the finish time of the last run that
exited 0; a failed run carries the previous file's value forward so `time() - last_success`
alerts keep working.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from romirecon.report.model import REPORT_STATUSES, Report

LAST_SUCCESS = "romirecon_last_success_timestamp_seconds"

# report metric name -> (family, help, label name for Metric.label, extra fixed labels)
FAMILIES: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "duplicate_rate": (
        "romirecon_duplicate_ratio",
        "Duplicate rate: (rows - distinct golden entities) / rows.",
        "label",
        {},
    ),
    "duplicate_groups": (
        "romirecon_duplicate_groups",
        "Golden entities with more than one record in a source.",
        "label",
        {},
    ),
    "duplicate_rows": (
        "romirecon_duplicate_rows",
        "Records in duplicate groups, survivors included.",
        "label",
        {},
    ),
    "quarantine_rate": (
        "romirecon_quarantine_ratio",
        "Quarantined records / records read.",
        "label",
        {},
    ),
    "quarantine_rate_by_reason": (
        "romirecon_quarantine_reason_ratio",
        "Records quarantined for a reason / records read.",
        "reason",
        {},
    ),
    "lost_record_rate": (
        "romirecon_lost_record_ratio",
        "Records missing from the downstream system / records expected.",
        "label",
        {},
    ),
    "lost_records": (
        "romirecon_lost_records",
        "Records missing from the downstream system.",
        "label",
        {},
    ),
    "fx_gaps": ("romirecon_fx_gaps", "Amounts that found no FX rate.", "label", {}),
    "amount_mismatches": (
        "romirecon_amount_mismatches",
        "Amounts that disagree between systems.",
        "label",
        {},
    ),
    "rows_read": ("romirecon_rows_read", "Records read from the exports.", "label", {}),
    "rows_staged": ("romirecon_rows_staged", "Records that passed the contract.", "label", {}),
    "rows_quarantined": (
        "romirecon_rows_quarantined",
        "Records quarantined by the contract.",
        "label",
        {},
    ),
    "sync_latency_p50_seconds": (
        "romirecon_sync_latency_seconds",
        "CRM change to ERP/billing record creation, quantile over golden entities.",
        "label",
        {"quantile": "0.5"},
    ),
    "sync_latency_p95_seconds": (
        "romirecon_sync_latency_seconds",
        "CRM change to ERP/billing record creation, quantile over golden entities.",
        "label",
        {"quantile": "0.95"},
    ),
    "freshness_seconds": (
        "romirecon_newest_record_age_seconds",
        "Age of the newest record of a source at the end of the run.",
        "label",
        {},
    ),
    "stage_duration_seconds": (
        "romirecon_stage_duration_seconds",
        "Wall-clock duration of a pipeline stage.",
        "stage",
        {},
    ),
    "stage_cpu_seconds": (
        "romirecon_stage_cpu_seconds",
        "CPU time (user + system) of a pipeline stage.",
        "stage",
        {},
    ),
    "stage_peak_rss_bytes": (
        "romirecon_stage_peak_rss_bytes",
        "Peak resident memory of the process at the end of a stage.",
        "stage",
        {},
    ),
    "stage_rows_in": ("romirecon_stage_rows_in", "Rows a stage read.", "stage", {}),
    "stage_rows_out": ("romirecon_stage_rows_out", "Rows a stage wrote.", "stage", {}),
    "stage_rows_per_second": (
        "romirecon_stage_rows_per_second",
        "Rows a stage read per second of wall-clock time.",
        "stage",
        {},
    ),
}

CHECK_CODES = {"pass": 0, "warn": 1, "fail": 2, "skipped": -1}

_LAST_RE = re.compile(rf"^{LAST_SUCCESS}(?:\{{[^}}]*\}})?\s+(\S+)", re.MULTILINE)


def _name(raw: str) -> str:
    s = re.sub(r"[^a-zA-Z0-9_]", "_", raw)
    return "romirecon_" + (s if not s[:1].isdigit() else "_" + s)


def _esc_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _esc_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(float(v))


def _labels(d: dict[str, str | None]) -> str:
    items = [(k, v) for k, v in d.items() if v is not None]
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_esc_label(str(v))}"' for k, v in items) + "}"


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def previous_last_success(text: str | None) -> float | None:
    """The last-success timestamp of a previous metrics.prom (None if absent or unreadable)."""
    if not text:
        return None
    m = _LAST_RE.search(text)
    if not m:
        return None
    try:
        v = float(m.group(1))
    except ValueError:
        return None
    return v if math.isfinite(v) else None


class _Families:
    def __init__(self) -> None:
        self.help: dict[str, str] = {}
        self.samples: dict[str, list[tuple[str, float]]] = {}

    def add(
        self, family: str, help_: str, labels: dict[str, str | None], value: float | None
    ) -> None:
        if value is None:
            return
        self.help.setdefault(family, help_)
        self.samples.setdefault(family, []).append((_labels(labels), float(value)))

    def render(self) -> str:
        out = []
        for fam in self.samples:
            out.append(f"# HELP {fam} {_esc_help(self.help[fam])}")
            out.append(f"# TYPE {fam} gauge")
            seen: set[str] = set()
            for labels, v in self.samples[fam]:
                if labels in seen:  # a family may not repeat a label set
                    continue
                seen.add(labels)
                out.append(f"{fam}{labels} {_num(v)}")
        return "\n".join(out) + "\n"


def render(report: Report, previous: str | None = None) -> str:
    f = _Families()
    finished = _epoch(report.finished_at)
    started = _epoch(report.started_at)
    f.add(
        "romirecon_run_info",
        "Run metadata; the value is always 1.",
        {"run_id": report.run_id, "project": report.project, "version": report.tool_version},
        1,
    )
    for s in REPORT_STATUSES:
        f.add(
            "romirecon_run_status",
            "1 for the status of the last run (pass, warn, fail, inconclusive, error), else 0.",
            {"status": s},
            1 if report.status == s else 0,
        )
    f.add(
        "romirecon_run_exit_code",
        "Exit code of the last run: 0 pass, 1 SLA breached, 3 runtime error, 4 inconclusive.",
        {},
        int(report.exit_code()),
    )
    f.add("romirecon_run_timestamp_seconds", "Unix time the last run finished.", {}, finished)
    if started is not None and finished is not None:
        f.add(
            "romirecon_run_duration_seconds",
            "Wall-clock duration of the last run.",
            {},
            finished - started,
        )
    success = finished if int(report.exit_code()) == 0 else previous_last_success(previous)
    f.add(
        LAST_SUCCESS, "Unix time of the last run that exited 0 (0 if none yet).", {}, success or 0
    )
    counts = report.counts()
    for s in ("pass", "warn", "fail", "skipped"):
        f.add(
            "romirecon_checks",
            "Number of SLA checks of the last run by status.",
            {"status": s},
            counts[s],
        )
    for c in report.checks:
        f.add(
            "romirecon_check_status",
            "Status of an SLA check: 0 pass, 1 warn, 2 fail, -1 skipped.",
            {
                "check": c.id,
                "metric": c.metric,
                "kind": c.kind,
                "source": c.source_name,
                "entity": c.entity,
            },
            CHECK_CODES[c.status],
        )
    for m in report.metrics:
        if m.value is None:
            continue
        if m.name in FAMILIES:
            fam, help_, label_name, extra = FAMILIES[m.name]
        else:
            fam = _name(m.name)
            help_, label_name, extra = (
                f"romirecon metric {m.name}" + (f" ({m.unit})" if m.unit else "") + ".",
                "label",
                {},
            )
        f.add(
            fam,
            help_,
            {"source": m.source_name, "entity": m.entity, label_name: m.label, **extra},
            m.value,
        )
    return f.render()
