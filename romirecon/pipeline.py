"""Wires the stages together. Each stage owns its tables and SQL; this module only orders them,
checks the inputs before any work, and publishes the outputs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from romirecon.config import Project
from romirecon.db import RunLock, open_state
from romirecon.exitcodes import ExitCode, MissingInputError
from romirecon.pii import quarantine_query
from romirecon.publish import write_table
from romirecon.stages import contract, ingest
from romirecon.stages.common import add_metric, ensure_common_tables


@dataclass
class SourceSummary:
    name: str
    system: str
    entity: str
    files: int
    rows_read: int
    rows_staged: int
    rows_quarantined: int
    missing_optional: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    run_id: str
    exit_code: ExitCode
    out_dir: Path
    sources: list[SourceSummary] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)


def compute_run_id(project: Project, files: dict[str, list[ingest.FileInfo]]) -> str:
    """Content-addressed: the same project file, mappings and input files give the same run id,
    so a re-run of the same night produces byte-identical outputs."""
    h = hashlib.sha256()
    h.update(project.file.read_bytes())
    for s in project.sources:
        h.update(s.name.encode() + b"\0" + s.mapping_path.read_bytes())
        for f in files.get(s.name, []):
            h.update(f.display.encode() + b"\0" + f.sha256.encode())
    return h.hexdigest()[:16]


def ingest_and_stage(
    con: duckdb.DuckDBPyConnection, project: Project, run_id: str
) -> list[SourceSummary]:
    """Ingest + contract for every source; `stg_<entity>` views; ingest metrics."""
    ensure_common_tables(con)
    contract.ensure_tables(con)
    summaries = []
    for source in project.sources:
        res = ingest.ingest_source(con, project, source, run_id)
        if source.required and res.files and res.rows_read + res.rows_rejected == 0:
            raise MissingInputError(
                f"source '{source.name}': {', '.join(f.display for f in res.files)} "
                "contain no data rows (empty input)"
            )
        c = contract.stage_source(con, source, res, run_id, project.timezone)
        assert c.rows_in == c.rows_staged + c.rows_quarantined, (
            f"row conservation broken for {source.name}: {c.rows_in} read, "
            f"{c.rows_staged} staged, {c.rows_quarantined} quarantined"
        )
        for name, value in (
            ("rows_read", c.rows_in),
            ("rows_staged", c.rows_staged),
            ("rows_quarantined", c.rows_quarantined),
        ):
            add_metric(
                con,
                run_id,
                "contract",
                name,
                value,
                source_name=source.name,
                entity=source.entity,
                unit="rows",
            )
        add_metric(
            con,
            run_id,
            "contract",
            "quarantine_rate",
            (c.rows_quarantined / c.rows_in) if c.rows_in else 0.0,
            source_name=source.name,
            entity=source.entity,
            numerator=c.rows_quarantined,
            denominator=c.rows_in,
            unit="ratio",
        )
        for missing in c.missing_optional:
            con.execute(
                "INSERT INTO finding VALUES (?, 'contract', 'column-missing', 'warn', ?, ?, NULL, "
                "NULL, ?, NULL)",
                [
                    run_id,
                    source.name,
                    source.entity,
                    f"optional column {missing} is not in the export: mapped value left empty",
                ],
            )
        summaries.append(
            SourceSummary(
                source.name,
                source.system,
                source.entity,
                len(res.files),
                c.rows_in,
                c.rows_staged,
                c.rows_quarantined,
                c.missing_optional,
            )
        )
    contract.create_entity_views(con, project.sources)
    return summaries


def run(project: Project, fail_on: str = "fail") -> RunResult:
    """The nightly run. Inputs are checked first (missing / stale -> exit 4 before any work)."""
    files = {s.name: ingest.resolve_files(project, s) for s in project.sources}
    with RunLock(project.state_dir):
        run_id = compute_run_id(project, files)
        con = open_state(project)
        try:
            summaries = ingest_and_stage(con, project, run_id)
            out = project.output_dir
            written = write_table(
                con,
                quarantine_query(project, project.hash_pii),
                out,
                "quarantine",
                project.output_formats,
            )
            by_reason = dict(
                con.execute(
                    "SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY reason"
                ).fetchall()
            )
        finally:
            con.close()
    return RunResult(run_id, ExitCode.PASS, out, summaries, written, by_reason)
