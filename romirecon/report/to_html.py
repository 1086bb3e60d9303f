"""sla_report.html: one self-contained page (no scripts, no external CSS, fonts or images).

Every data value goes through `e()` (html.escape with quotes) on its way into the page; the page
also carries a Content-Security-Policy that forbids scripts, so even a missed escape could not run
one. Charts are inline SVG drawn here from the report's history series.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable

from romirecon.report.model import Check, HistorySeries, Report
from romirecon.report.thresholds import fmt_num, fmt_value

LINE = "#1565c0"
BAR = "#ef6c00"
WARN = "#f9a825"
FAIL = "#c62828"
STATUS_COLORS = {
    "pass": "#2e7d32",
    "warn": WARN,
    "fail": FAIL,
    "skipped": "#757575",
    "error": "#6a1b9a",
    "inconclusive": "#455a64",
}
MAX_CHARTS = 8

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#212121;background:#fff}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e0e0e0}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
table{border-collapse:collapse;font-size:13px;margin:6px 0;display:block;overflow-x:auto;max-width:100%}th,td{border:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{border:1px solid #e0e0e0;padding:8px}
.chart h3{font-size:13px;margin:0 0 4px}.muted{color:#757575}code{font-size:12px}
details{margin:4px 0}summary{cursor:pointer}
"""


def e(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def _badge(status: str) -> str:
    color = STATUS_COLORS.get(status, "#757575")
    return f'<span class="badge" style="background:{color}">{e(status.upper())}</span>'


def _scope(source: str | None, entity: str | None, label: str | None) -> str:
    return " / ".join(x for x in (source, entity, label) if x) or "all"


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def line_chart(
    series: HistorySeries, levels: Iterable[tuple[str, float, str]] = (), w: int = 440, h: int = 170
) -> str:
    """An SVG line chart of one metric over runs, with dashed threshold lines."""
    pts = [(p.run_id, p.finished_at, p.value) for p in series.points if p.value is not None]
    pts = [p for p in pts if math.isfinite(p[2])]
    levels = list(levels)
    left, right, top, bottom = 64, 12, 10, 26
    pw, ph = w - left - right, h - top - bottom
    values = [v for _, _, v in pts] + [lv for _, lv, _ in levels]
    lo = min([0.0, *values])
    hi = _nice_max(max([*values, 0.0]) * 1.05) if values else 1.0
    span = (hi - lo) or 1.0

    def x(i: int) -> float:
        return left + (pw / 2 if len(pts) == 1 else pw * i / max(len(pts) - 1, 1))

    def y(v: float) -> float:
        return top + ph - (v - lo) / span * ph

    title = f"{series.metric} ({_scope(series.source_name, series.entity, series.label)})"
    out = [
        f'<svg class="linechart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" aria-label="{e(title)}">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#e0e0e0"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        v = lo + span * frac
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eeeeee"/>'
            f'<text x="{left - 4}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end" '
            f'fill="#616161">{e(fmt_value(v, series.unit))}</text>'
        )
    for name, lv, color in levels:
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y(lv):.1f}" y2="{y(lv):.1f}" stroke="{color}" '
            f'stroke-dasharray="4 3"><title>{e(name)} {e(fmt_value(lv, series.unit))}</title></line>'
        )
    if pts:
        path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, (_, _, v) in enumerate(pts))
        out.append(f'<polyline points="{path}" fill="none" stroke="{LINE}" stroke-width="3"/>')
        for i, (rid, fin, v) in enumerate(pts):
            out.append(
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="4" fill="{LINE}">'
                f"<title>{e(rid)} {e(fin)}: {e(fmt_value(v, series.unit))}</title></circle>"
            )
        out.append(
            f'<text x="{left}" y="{h - 8}" font-size="10" fill="#616161">{e(pts[0][1][:10])}</text>'
            f'<text x="{left + pw}" y="{h - 8}" font-size="10" text-anchor="end" fill="#616161">'
            f"{e(pts[-1][1][:10])} ({len(pts)} run{'s' if len(pts) != 1 else ''})</text>"
        )
    else:
        out.append(f'<text x="{left + 8}" y="{top + 20}" font-size="12">no data</text>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(items: list[tuple[str, float]], unit: str, w: int = 440) -> str:
    """Horizontal SVG bars, one per (label, value)."""
    row = 22
    left = 220
    h = 10 + row * max(len(items), 1)
    hi = _nice_max(max([v for _, v in items] + [0.0]))
    out = [
        f'<svg class="barchart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img">'
    ]
    for i, (label, v) in enumerate(items):
        bw = max((w - left - 70) * (v / hi), 1.0)
        yy = 5 + i * row
        out.append(
            f'<text x="{left - 6}" y="{yy + 14}" font-size="11" text-anchor="end">'
            f"{e(label[:40])}</text>"
            f'<rect x="{left}" y="{yy + 3}" width="{bw:.1f}" height="{row - 8}" fill="{BAR}">'
            f"<title>{e(label)}: {e(fmt_value(v, unit))}</title></rect>"
            f'<text x="{left + bw + 4:.1f}" y="{yy + 14}" font-size="11">{e(fmt_value(v, unit))}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _levels(report: Report, s: HistorySeries) -> list[tuple[str, float, str]]:
    for c in report.checks:
        if (c.kind, c.metric, c.source_name, c.entity, c.label, c.measure) == (
            "threshold",
            s.metric,
            s.source_name,
            s.entity,
            s.label,
            "value",
        ):
            out = []
            if c.warn is not None:
                out.append(("warn", c.warn, WARN))
            if c.fail is not None:
                out.append(("fail", c.fail, FAIL))
            return out
    return []


def _chart_series(report: Report) -> list[HistorySeries]:
    """History series to draw: duplicate rate first, aggregates before per-source."""
    if report.history:
        chosen = list(report.history)
    else:  # no history recorded: this run's values as one-point series
        from romirecon.report.model import HistoryPoint

        chosen = [
            HistorySeries(
                m.name,
                m.source_name,
                m.entity,
                m.label,
                m.unit,
                [HistoryPoint(report.run_id, report.finished_at or "", m.value)],
            )
            for m in report.metrics
            if m.name in ("duplicate_rate", "quarantine_rate") and m.value is not None
        ]
    order = {"duplicate_rate": 0, "quarantine_rate": 1, "lost_record_rate": 2}
    chosen.sort(
        key=lambda s: (
            order.get(s.metric, 9),
            s.metric,
            s.source_name is not None,
            s.source_name or "",
            s.entity or "",
            s.label or "",
        )
    )
    return chosen[:MAX_CHARTS]


def _check_row(c: Check) -> str:
    unit = c.unit if c.measure == "value" else ""
    frac = f"{fmt_num(c.numerator)} / {fmt_num(c.denominator)}" if c.denominator is not None else ""
    ids = ", ".join(c.sample_record_ids)
    return (
        f"<tr><td>{_badge(c.status)}</td><td><code>{e(c.id)}</code></td>"
        f"<td>{e(_scope(c.source_name, c.entity, c.label))}</td>"
        f'<td class="n">{e(fmt_value(c.observed, unit))}</td>'
        f'<td class="n">{e(fmt_value(c.previous, unit))}</td>'
        f'<td class="n">{e(fmt_value(c.warn, unit))}</td><td class="n">{e(fmt_value(c.fail, unit))}</td>'
        f'<td class="n">{e(frac)}</td><td>{e(c.message)}</td><td><code>{e(ids)}</code></td></tr>'
    )


def render(report: Report) -> str:
    counts = report.counts()
    p: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>romirecon SLA report {e(report.run_id)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>romirecon SLA report {_badge(report.status)}</h1>",
        f'<p class="muted">run <code>{e(report.run_id)}</code>'
        + (f" &middot; project {e(report.project)}" if report.project else "")
        + f" &middot; finished {e(report.finished_at or '-')} &middot; exit code "
        f"{e(int(report.exit_code()))} (fail-on {e(report.fail_on)}) &middot; report v{e(report.version)}</p>",
        f"<p><strong>{counts['fail']}</strong> failed, <strong>{counts['warn']}</strong> warnings, "
        f"<strong>{counts['pass']}</strong> passed, <strong>{counts['skipped']}</strong> skipped</p>",
    ]
    if report.error:
        p.append(f'<p style="color:{FAIL}"><strong>Runtime error:</strong> {e(report.error)}</p>')

    p.append("<h2>Checks</h2>")
    if report.checks:
        p.append(
            "<table><thead><tr><th>status</th><th>check</th><th>scope</th><th>observed</th><th>previous</th>"
            "<th>warn</th><th>fail</th><th>numerator / denominator</th><th>message</th>"
            "<th>sample records</th></tr></thead><tbody>"
        )
        p += [_check_row(c) for c in report.checks]
        p.append("</tbody></table>")
    else:
        p.append('<p class="muted">no checks</p>')

    charts = _chart_series(report)
    dup_now = [
        (m.source_name or f"{m.entity} (all sources)", m.value)
        for m in report.metrics
        if m.name == "duplicate_rate" and m.value is not None
    ]
    if charts or dup_now:
        p.append('<h2>Trends</h2><div class="charts">')
        for s in charts:
            scope = _scope(s.source_name, s.entity, s.label)
            p.append(
                f'<div class="chart"><h3>{e(s.metric)} &middot; {e(scope)}</h3>'
                f"{line_chart(s, _levels(report, s))}</div>"
            )
        if dup_now:
            p.append(
                '<div class="chart"><h3>duplicate_rate by source (this run)</h3>'
                f"{bar_chart(dup_now, 'ratio')}</div>"
            )
        p.append("</div>")

    if report.top_clusters:
        p.append("<h2>Top duplicate clusters</h2>")
        for cl in report.top_clusters:
            p.append(
                f"<details open><summary><code>{e(cl.golden_id)}</code> &middot; {e(cl.entity)} "
                f"&middot; {e(cl.size)} records</summary><table><thead><tr><th>source</th>"
                "<th>id</th><th>survivor</th><th>rule</th><th>probability</th><th>explanation</th>"
                "</tr></thead><tbody>"
            )
            for m in cl.members:
                prob = "" if m.match_probability is None else f"{m.match_probability:.4f}"
                surv = "" if m.is_survivor is None else ("yes" if m.is_survivor else "no")
                p.append(
                    f"<tr><td>{e(m.source_name)}</td><td><code>{e(m.source_id)}</code></td>"
                    f'<td>{e(surv)}</td><td>{e(m.rule)}</td><td class="n">{e(prob)}</td>'
                    f"<td>{e(m.explanation)}</td></tr>"
                )
            p.append("</tbody></table></details>")

    if report.quarantine_by_reason:
        p.append("<h2>Quarantine by reason</h2>")
        p.append(
            bar_chart(
                [(f"{q.source_name}: {q.reason}", q.rows) for q in report.quarantine_by_reason], ""
            )
        )
        p.append(
            "<table><thead><tr><th>source</th><th>reason</th><th>column</th><th>records</th>"
            "</tr></thead><tbody>"
        )
        for q in report.quarantine_by_reason:
            p.append(
                f"<tr><td>{e(q.source_name)}</td><td>{e(q.reason)}</td><td>{e(q.column_name)}</td>"
                f'<td class="n">{e(q.rows)}</td></tr>'
            )
        p.append("</tbody></table>")

    if report.findings:
        p.append(
            "<h2>Findings (sample)</h2><table><thead><tr><th>code</th><th>total</th>"
            "<th>severity</th><th>source</th><th>record</th><th>other</th><th>message</th>"
            "</tr></thead><tbody>"
        )
        for f in report.findings:
            p.append(
                f'<tr><td>{e(f.code)}</td><td class="n">{e(report.findings_total.get(f.code, ""))}</td>'
                f"<td>{e(f.severity)}</td><td>{e(f.source_name)}</td><td><code>{e(f.record_id)}</code></td>"
                f"<td><code>{e(f.other_id)}</code></td><td>{e(f.message)}</td></tr>"
            )
        p.append("</tbody></table>")

    stage_rows = [m for m in report.metrics if m.name.startswith("stage_")]
    if stage_rows:
        stages = sorted({m.label or "" for m in stage_rows})
        names = ["stage_rows_in", "stage_rows_out", "stage_rows_per_second",
                 "stage_duration_seconds", "stage_peak_rss_bytes", "stage_cpu_seconds"]  # fmt: skip
        val = {(m.label, m.name): m for m in stage_rows}
        p.append(
            "<h2>Stages</h2><table><thead><tr><th>stage</th><th>rows in</th><th>rows out</th>"
            "<th>rows/s</th><th>duration</th><th>peak RSS</th><th>CPU</th></tr></thead><tbody>"
        )
        for st in stages:
            cells = []
            for n in names:
                m = val.get((st, n))
                cells.append(f'<td class="n">{e(fmt_value(m.value, m.unit) if m else "")}</td>')
            p.append(f"<tr><td>{e(st)}</td>{''.join(cells)}</tr>")
        p.append("</tbody></table>")

    if report.inputs:
        p.append(
            "<h2>Inputs</h2><table><thead><tr><th>source</th><th>file</th><th>rows read</th>"
            "<th>staged</th><th>quarantined</th><th>sha256</th></tr></thead><tbody>"
        )
        for f in report.inputs:
            p.append(
                f"<tr><td>{e(f.source_name)}</td><td>{e(f.file)}</td>"
                f'<td class="n">{e(fmt_num(f.rows_read))}</td><td class="n">{e(fmt_num(f.rows_staged))}</td>'
                f'<td class="n">{e(fmt_num(f.rows_quarantined))}</td><td><code>{e(f.sha256)}</code></td></tr>'
            )
        p.append("</tbody></table>")
    p.append("</body></html>\n")
    return "\n".join(p)
