"""sla_report.md: a summary for humans and for `$GITHUB_STEP_SUMMARY`."""

from __future__ import annotations

from romirecon.report.model import Report
from romirecon.report.thresholds import fmt_num, fmt_value

ICONS = {
    "pass": "✅",
    "warn": "⚠️",
    "fail": "❌",
    "skipped": "⏭️",
    "error": "💥",
    "inconclusive": "❔",
}


def cell(value: object) -> str:
    """A table cell: data is untrusted, so no HTML, no pipes, no line breaks, no code spans."""
    s = "" if value is None else str(value)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = s.replace("|", "\\|").replace("`", "\\`").replace("*", "\\*")
    s = s.replace("[", "\\[").replace("]", "\\]")
    return " ".join(s.split())


def code(value: object) -> str:
    """An identifier as a code span: rendered literally (no HTML, no links); backticks and line
    breaks cannot occur inside, pipes stay escaped for the table."""
    s = " ".join(("" if value is None else str(value)).replace("`", "'").split())
    return "`" + s.replace("|", "\\|") + "`"


def _scope(source: str | None, entity: str | None, label: str | None) -> str:
    return " / ".join(x for x in (source, entity, label) if x) or "all"


def render(report: Report) -> str:
    counts = report.counts()
    exit_code = int(report.exit_code())
    lines = [
        f"# romirecon SLA report: {ICONS.get(report.status, '')} {report.status.upper()}",
        "",
        f"- run: {code(report.run_id)}" + (f" ({cell(report.project)})" if report.project else ""),
        f"- finished: {cell(report.finished_at or '-')}, exit code {exit_code} (fail-on {report.fail_on})",
        f"- checks: {counts['fail']} failed, {counts['warn']} warnings, {counts['pass']} passed, "
        f"{counts['skipped']} skipped",
    ]
    if report.error:
        lines += ["", f"**Runtime error:** {cell(report.error)}"]
    if report.checks:
        lines += [
            "",
            "## Checks",
            "",
            "| status | check | scope | observed | previous | warn | fail | numerator / denominator "
            "| message |",
            "|---|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for c in report.checks:
            unit = c.unit if c.measure == "value" else ""
            frac = (
                f"{fmt_num(c.numerator)} / {fmt_num(c.denominator)}"
                if c.denominator is not None
                else "-"
            )
            lines.append(
                f"| {ICONS[c.status]} {c.status} | {code(c.id)} | "
                f"{cell(_scope(c.source_name, c.entity, c.label))} | "
                f"{cell(fmt_value(c.observed, unit))} | {cell(fmt_value(c.previous, unit))} | "
                f"{cell(fmt_value(c.warn, unit))} | "
                f"{cell(fmt_value(c.fail, unit))} | {frac} | {cell(c.message)} |"
            )
        breached = [c for c in report.checks if c.sample_record_ids]
        if breached:
            lines += ["", "### Sample records", ""]
            for c in breached:
                ids = ", ".join(cell(i) for i in c.sample_record_ids)
                lines.append(f"- {code(c.id)}: {ids}")
    if report.inputs:
        lines += [
            "",
            "## Inputs",
            "",
            "| source | file | rows read | staged | quarantined | sha256 |",
            "|---|---|---:|---:|---:|---|",
        ]
        for f in report.inputs:
            lines.append(
                f"| {cell(f.source_name)} | {cell(f.file)} | {fmt_num(f.rows_read)} | "
                f"{fmt_num(f.rows_staged)} | {fmt_num(f.rows_quarantined)} | "
                f"{cell((f.sha256 or '-')[:12])} |"
            )
    if report.quarantine_by_reason:
        lines += [
            "",
            "## Quarantine by reason",
            "",
            "| source | reason | column | rows |",
            "|---|---|---|---:|",
        ]
        for q in report.quarantine_by_reason:
            lines.append(
                f"| {cell(q.source_name)} | {cell(q.reason)} | {cell(q.column_name or '-')} | {q.rows} |"
            )
    if report.findings_total:
        lines += ["", "## Findings", "", "| code | count |", "|---|---:|"]
        for code_, n in sorted(report.findings_total.items()):
            lines.append(f"| {cell(code_)} | {n} |")
    lines.append("")
    return "\n".join(lines)
