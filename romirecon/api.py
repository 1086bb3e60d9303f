"""The library API: everything the CLI does is callable from Python without click."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from romirecon.config import PROJECT_FILE, Project, did_you_mean, load_project
from romirecon.exitcodes import ConfigError, ExitCode, MissingInputError, RomireconError


def run(
    project: str | Path | None = None,
    *,
    out_dir: str | Path | None = None,
    fail_on: str = "fail",
    log_format: str = "text",
    show_pii: bool = False,
    quiet: bool = False,
):  # -> pipeline.RunResult
    """Run the whole pipeline on a project folder; returns the result with its exit code."""
    import io

    from romirecon import pipeline

    proj = load_project(project, out_dir)
    stream = io.StringIO() if quiet else None
    result = pipeline.run(
        proj, fail_on=fail_on, log_format=log_format, log_stream=stream, show_pii=show_pii
    )
    if not quiet and log_format == "text":
        _print_summary(result)
    return result


def _print_summary(result) -> None:  # pipeline.RunResult
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False, highlight=False)
    table = Table(title=f"romirecon run {result.run_id}", title_justify="left")
    for col in ("source", "system", "entity", "files", "rows read", "staged", "quarantined"):
        table.add_column(
            col,
            justify="right" if col in ("files", "rows read", "staged", "quarantined") else "left",
        )
    for s in result.sources:
        table.add_row(
            s.name,
            s.system,
            s.entity,
            str(s.files),
            f"{s.rows_read:,}",
            f"{s.rows_staged:,}",
            f"{s.rows_quarantined:,}",
        )
    console.print(table)
    if result.quarantine_by_reason:
        reasons = ", ".join(f"{k}: {v:,}" for k, v in result.quarantine_by_reason.items())
        console.print(f"quarantined by reason: {reasons}")
    console.print(f"outputs in {result.out_dir}")
    if result.report is not None:
        from romirecon.obs import console_summary

        console_summary(result.report, sys.stdout)


@dataclass
class ValidateReport:
    exit_code: ExitCode
    lines: list[str] = field(default_factory=list)


def validate(project: str | Path | None = None) -> ValidateReport:
    """Check the project file, every mapping, and every export's header against its mapping.
    Every problem is reported at once (ConfigError with details)."""
    import duckdb

    from romirecon.stages import contract, ingest

    proj: Project = load_project(project)
    problems: list[str] = []
    lines: list[str] = []
    con = duckdb.connect()
    for s in proj.sources:
        try:
            files = ingest.resolve_files(proj, s)
        except MissingInputError as e:
            problems.append(e.message)
            continue
        if not files:
            lines.append(f"{s.name}: no files (optional source)")
            continue
        try:
            header = ingest.header_columns(con, proj, s, files[0])
        except RomireconError as e:
            problems.append(e.message)
            continue
        up = s.mapping.unpivot
        if up:  # the mapping reads the unpivoted rows: the kept columns plus name and value
            header = [*up["keep"], up["name_to"], up["value_to"]]
        cols = set(header)
        for name, spec in s.mapping.columns.items():
            if spec.source and not any(contract.source_ref(n, cols) for n in spec.source):
                hint = did_you_mean(spec.source[0], header)
                text = (
                    f"{s.mapping_path}: columns.{name}.from: source column "
                    f"'{spec.source[0]}' is not in {files[0].display}{hint}"
                )
                if spec.required:  # `run` stops on it (exit 3)
                    problems.append(text)
                else:  # `run` leaves the column empty and records a column-missing warning
                    lines.append(f"warning: {text} (optional: left empty)")
        lines.append(
            f"{s.name}: {len(files)} file(s), {len(header)} columns, mapping {s.mapping_path.name} ok"
        )
    con.close()
    if problems:
        raise ConfigError(f"{proj.file}: {len(problems)} problem(s) found", details=problems)
    lines.append(f"{proj.file}: valid ({len(proj.sources)} sources)")
    return ValidateReport(ExitCode.PASS, lines)


INIT_TEMPLATE = """\
# romirecon project file. Reference: README.md ("Project file").
version: 1
# Currency every report amount is converted to (ISO 4217).
reporting_currency: USD
# Zone for timestamps that carry none (mappings may override per export).
timezone: UTC

# One entry per export. `path` is a glob relative to this folder; `mapping` maps the export's
# columns onto a canonical entity (see mappings/ in the romirecon repository for real exports).
sources:
  - name: sf_contacts
    system: crm            # crm | erp | billing | ads | fx
    entity: contact
    mapping: mappings/salesforce_contact.yaml
    path: data/crm/Contact*.csv
    # required: true       # a missing file exits 4 (inconclusive)
    # max_age_hours: 36    # an older newest file is stale: exit 4
    # format: {delimiter: ";", encoding: latin-1}

outputs:
  dir: out                 # romirecon run --out overrides
  formats: [parquet, csv]

state:
  dir: .romirecon          # state database (history, golden ids) and the run lock
  # memory_limit: 4GB      # DuckDB spills to disk beyond this
  # threads: 2

# SLA thresholds: see README.md ("SLA thresholds").
sla: {}
"""


def init_project(directory: str | Path, *, force: bool = False) -> Path:
    """Scaffold a project folder with a commented romirecon.yaml."""
    d = Path(directory)
    target = d / PROJECT_FILE
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists (use --force to overwrite)")
    d.mkdir(parents=True, exist_ok=True)
    (d / "mappings").mkdir(exist_ok=True)
    (d / "data").mkdir(exist_ok=True)
    target.write_text(INIT_TEMPLATE, encoding="utf-8")
    return target
