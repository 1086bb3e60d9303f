"""junit.xml: one test case per check, for CI (GitLab, Jenkins, GitHub test reporters).

A failed check is a `<failure>`, a warning passes (its message goes to `<system-out>`), a skipped
check is `<skipped>`, a runtime error is an `<error>` in a `run` test case. Built with ElementTree
so every value is escaped; characters XML 1.0 forbids are dropped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from romirecon.report.model import Check, Report
from romirecon.report.thresholds import fmt_num, fmt_value

_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _t(value: object) -> str:
    return _BAD_XML.sub("", "" if value is None else str(value))


def _detail(c: Check) -> str:
    unit = c.unit if c.measure == "value" else ""
    lines = [
        f"metric: {c.metric}",
        f"scope: source={c.source_name or '*'} entity={c.entity or '*'}"
        + (f" label={c.label}" if c.label else ""),
        f"observed: {fmt_value(c.observed, unit)} (warn {fmt_value(c.warn, unit)}, "
        f"fail {fmt_value(c.fail, unit)}, {c.direction})",
    ]
    if c.denominator is not None:
        lines.append(f"numerator/denominator: {fmt_num(c.numerator)}/{fmt_num(c.denominator)}")
    if c.sample_record_ids:
        lines.append("sample records: " + ", ".join(c.sample_record_ids))
    return "\n".join(lines)


def render(report: Report) -> str:
    counts = report.counts()
    errors = 1 if report.status in ("error", "inconclusive") else 0
    tests = len(report.checks) + errors
    root = ET.Element(
        "testsuites",
        name="romirecon",
        tests=str(tests),
        failures=str(counts["fail"]),
        errors=str(errors),
        skipped=str(counts["skipped"]),
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        name="romirecon.sla",
        tests=str(tests),
        failures=str(counts["fail"]),
        errors=str(errors),
        skipped=str(counts["skipped"]),
        timestamp=_t(report.finished_at or ""),
    )
    props = ET.SubElement(suite, "properties")
    for k, v in (("run_id", report.run_id), ("project", report.project), ("status", report.status)):
        ET.SubElement(props, "property", name=k, value=_t(v))
    if errors:
        case = ET.SubElement(suite, "testcase", classname="romirecon.run", name="run", time="0")
        kind = "RuntimeError" if report.status == "error" else "Inconclusive"
        msg = report.error or (
            "an input is missing, empty or stale" if report.status == "inconclusive" else ""
        )
        el = ET.SubElement(case, "error", message=_t(msg), type=kind)
        el.text = _t(msg)
    for c in report.checks:
        case = ET.SubElement(
            suite, "testcase", classname=_t(f"romirecon.sla.{c.metric}"), name=_t(c.id), time="0"
        )
        if c.status == "fail":
            el = ET.SubElement(case, "failure", message=_t(c.message), type="SLABreached")
            el.text = _t(_detail(c))
        elif c.status == "skipped":
            ET.SubElement(case, "skipped", message=_t(c.message))
        elif c.status == "warn":
            out = ET.SubElement(case, "system-out")
            out.text = _t(f"WARNING: {c.message}\n{_detail(c)}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
