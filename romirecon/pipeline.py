"""Wires the stages together. Each stage owns its tables and SQL; this module only orders them,
checks the inputs before any work, and publishes the outputs."""

from __future__ import annotations

import contextlib
import hashlib
import io
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import duckdb

from romirecon.config import Project, Source, resolve_inside
from romirecon.db import RunLock, keep_tables, open_state
from romirecon.exitcodes import (
    ConfigError,
    ExitCode,
    MissingInputError,
    ResourceError,
    RomireconError,
)
from romirecon.obs import Logger
from romirecon.pii import hash_pii_columns, quarantine_query
from romirecon.pii import salt as pii_salt
from romirecon.publish import write_table
from romirecon.sqlutil import ident
from romirecon.stages import contract, ingest
from romirecon.stages.common import (
    add_metric,
    drop_relation,
    ensure_common_tables,
    transaction,
)


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
    report: Any = None  # romirecon.report.model.Report


def compute_run_id(project: Project, files: dict[str, list[ingest.FileInfo]]) -> str:
    """`<UTC start>-<inputs hash>`: unique per execution (the history records a re-run as a run of
    its own) and naming the inputs it saw. Data outputs never carry it, so a re-run of the same
    night still writes byte-identical data files."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{inputs_hash(project, files)[:8]}"


def inputs_hash(project: Project, files: dict[str, list[ingest.FileInfo]]) -> str:
    """The project file, every mapping and every input file's content, hashed together."""
    h = hashlib.sha256()
    h.update(project.file.read_bytes())
    for s in project.sources:
        h.update(s.name.encode() + b"\0" + s.mapping_path.read_bytes())
        for f in files.get(s.name, []):
            h.update(f.display.encode() + b"\0" + f.sha256.encode())
    return h.hexdigest()


def ingest_and_stage(
    con: duckdb.DuckDBPyConnection,
    project: Project,
    run_id: str,
    log: Logger | None = None,
    files: dict[str, list[ingest.FileInfo]] | None = None,
) -> list[SourceSummary]:
    """Ingest + contract for every source; `stg_<entity>` views; ingest metrics. `files`: each
    source's files as `ingest.resolve_all` found and hashed them (else resolved here)."""
    log = log or Logger(run_id, "text", stream=io.StringIO())
    ensure_common_tables(con)
    contract.ensure_tables(con)
    # source by source: read one export, stage it, drop its raw rows. Reading every export
    # before staging any held all raw text at once (16 GB spilled at 1M customers); now the
    # largest single export bounds it. Ingest and contract still report as two stages.
    ingest_stage = log.stage_in_pieces("ingest", con)
    contract_stage = log.stage_in_pieces("contract", con)
    rows_read = 0
    summaries = []
    for source in project.sources:
        # ingest writes temp tables only, statement by statement (a reader error it recovers
        # from, e.g. the CSV sniffer on mixed line endings, would abort an open transaction);
        # contract writes the source's staged table and quarantine rows in one transaction
        with ingest_stage.piece():
            res = ingest.ingest_source(
                con, project, source, run_id, files.get(source.name) if files else None
            )
            if source.required and res.files and res.rows_read + res.rows_rejected == 0:
                raise MissingInputError(
                    f"source '{source.name}': {', '.join(f.display for f in res.files)} "
                    "contain no data rows (empty input)"
                )
            rows_read += res.rows_read + res.rows_rejected
        with contract_stage.piece():
            with transaction(con):
                summaries.append(_contract_one(con, source, res, run_id, project.timezone))
            ingest.drop_raw(con, source.name)  # after the commit: freed now (see transaction)
    with contract_stage.piece(), transaction(con):
        contract.create_entity_views(con, project.sources)
    ingest_stage.span.rows_out = rows_read
    contract_stage.span.rows_in = rows_read
    contract_stage.span.rows_out = sum(s.rows_staged for s in summaries)
    ingest_stage.end()
    contract_stage.end()
    return summaries


def _contract_one(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    res: ingest.IngestResult,
    run_id: str,
    tz: str,
) -> SourceSummary:
    c = contract.stage_source(con, source, res, run_id, tz)
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
            con, run_id, "contract", name, value, source_name=source.name,
            entity=source.entity, unit="rows",
        )  # fmt: skip
    add_metric(
        con, run_id, "contract", "quarantine_rate",
        (c.rows_quarantined / c.rows_in) if c.rows_in else 0.0,
        source_name=source.name, entity=source.entity,
        numerator=c.rows_quarantined, denominator=c.rows_in, unit="ratio",
    )  # fmt: skip
    for missing in c.missing_optional:
        con.execute(
            "INSERT INTO finding VALUES (?, 'contract', 'column-missing', 'warn', ?, ?, NULL, "
            "NULL, ?, NULL)",
            [run_id, source.name, source.entity,
             f"optional column {missing} is not in the export: mapped value left empty"],
        )  # fmt: skip
    return SourceSummary(
        source.name, source.system, source.entity, len(res.files), c.rows_in,
        c.rows_staged, c.rows_quarantined, c.missing_optional,
    )  # fmt: skip


def analyse(con: duckdb.DuckDBPyConnection, project: Project, run_id: str, log: Logger) -> None:
    """Every stage after staging: normalise, dedup, billing, reconcile, attribution and ROMI."""
    from romirecon.stages import attribution, billing, dedup, normalize, reconcile, romi

    dedup_cfg = project.section("dedup")
    if "source_priority" not in dedup_cfg:
        # survivorship follows `sources[].priority` (lower wins; file order by default)
        dedup_cfg["source_priority"] = {s.name: s.priority for s in project.sources}
    with log.stage("normalize", con), transaction(con):
        normalize.run(
            con, run_id,
            default_region=str(dedup_cfg.get("default_region", "US")),
            gmail_canonical=bool(dedup_cfg.get("gmail_canonical", False)),
        )  # fmt: skip
    with log.stage("dedup", con) as span, transaction(con):
        dedup.run(con, run_id, dedup_cfg, {s.name: s.mapping.match_keys for s in project.sources})
        span.rows_out = _count(con, "entity_xref")
    with log.stage("billing", con) as span, transaction(con):
        billing_cfg = project.section("billing")
        if project.raw.get("as_of") and "as_of" not in billing_cfg:
            billing_cfg["as_of"] = str(project.raw["as_of"])
        billing.run(
            con, run_id, project.reporting_currency, billing_cfg,
            source_exponents={s.name: s.mapping.exponents for s in project.sources},
        )  # fmt: skip
        span.rows_out = billing.daily_row_count(con)  # the day rows, without expanding them
        release(con, "billing", project.keep_tables)
    with log.stage("reconcile", con) as span, transaction(con):
        reconcile_cfg = project.section("reconcile")
        if project.raw.get("as_of") and "as_of" not in reconcile_cfg:
            reconcile_cfg["as_of"] = str(project.raw["as_of"])
        reconcile.run(con, run_id, project.reporting_currency, reconcile_cfg)
        span.rows_out = _count(con, "reconciliation")
        release(con, "reconcile", project.keep_tables)
    attribution_cfg = project.section("attribution")
    if attribution_cfg.get("campaign_mapping"):
        problems: list[str] = []
        resolve_inside(
            project.root, str(attribution_cfg["campaign_mapping"]), "campaign_mapping",
            problems, f"{project.file}: attribution.campaign_mapping",
        )  # fmt: skip
        if problems:
            raise ConfigError(problems[0])
    with log.stage("attribution", con) as span, transaction(con):
        attribution.run(con, run_id, attribution_cfg, base_dir=project.root)
        span.rows_out = _count(con, "attribution_credit")
    with log.stage("romi", con) as span, transaction(con):
        romi.run(con, run_id, project.reporting_currency, attribution_cfg, base_dir=project.root)
        span.rows_out = _count(con, "romi")
        release(con, "romi", project.keep_tables)


# Per-run tables (and one view) that nothing after a stage reads, neither a later stage nor
# publish nor the SLA report, by the stage that reads them last. `release` drops them inside
# that stage's transaction, so DuckDB frees them when the stage commits. At 1M customers they
# held several GB to the end of the run, which DuckDB wrote to its spill files once memory_limit
# was reached; released, the stages after billing took 168 s instead of 177 s (outputs
# byte-identical). A dead table costs one spill write, not more: the gain is that write.
RELEASED_AFTER: dict[str, tuple[str, ...]] = {
    "billing": ("revenue_event", "billing_duplicate", "revenue_adjustment"),
    "reconcile": ("recon_link",),
    "romi": (
        "revenue_daily", "revenue_item", "conversion", "entity_link", "touchpoint",
        "attribution_conversion",
    ),
}  # fmt: skip


def release(con: duckdb.DuckDBPyConnection, stage: str, keep: Iterable[str] = ()) -> None:
    """Drop the per-run relations `stage` was the last reader of (RELEASED_AFTER), except those
    `state.keep_tables` copies into the state database after the run."""
    kept = set(keep)
    for name in RELEASED_AFTER.get(stage, ()):
        if name not in kept:
            drop_relation(con, name)


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {ident(table)}").fetchone()[0])


def publish(con: duckdb.DuckDBPyConnection, project: Project) -> list[Path]:
    """Write the data outputs (each file atomically)."""
    from romirecon.stages import attribution, billing, reconcile, romi

    out, fmts, pii = project.output_dir, project.output_formats, project.hash_pii
    salt_value = pii_salt(project.state_dir) if pii else None
    tables: list[tuple[str, str]] = [
        ("romi", romi.romi_output_query()),
        ("romi_lineage", romi.romi_lineage_output_query()),
        ("attribution_credit", attribution.attribution_credit_output_query()),
        ("quarantine", quarantine_query(project, pii)),
        ("duplicates", DUPLICATES_QUERY),
        ("golden_contact", "SELECT * FROM golden_contact ORDER BY golden_id"),
        ("golden_account", "SELECT * FROM golden_account ORDER BY golden_id"),
        ("revenue", billing.revenue_output_query()),
        ("reconciliation", reconcile.reconciliation_output_query()),
    ]
    written: list[Path] = []
    for stem, query in tables:
        if stem != "quarantine" and salt_value is not None:
            query = hash_pii_columns(con, query, salt_value)
        # the lineage has a row per revenue line x model x touch: 2 GB of CSV at 100k customers
        # that no spreadsheet opens; it is written as Parquet only
        formats = ["parquet"] if stem in PARQUET_ONLY else fmts
        written += write_table(con, query, out, stem, formats)
    return written


PARQUET_ONLY = {"romi_lineage"}

DUPLICATES_QUERY = (
    "SELECT * FROM duplicates ORDER BY entity, golden_id, source_name, source_id, source_file, "
    "source_row"
)


def run(
    project: Project,
    fail_on: str = "fail",
    log_format: str = "text",
    log_stream: IO[str] | None = None,
    show_pii: bool = False,
) -> RunResult:
    """The nightly run. Inputs are checked first (missing / stale -> exit 4 before any work)."""
    from romirecon.report import write_all, write_error_report
    from romirecon.stages import sla

    started = datetime.now(UTC)
    try:
        files = ingest.resolve_all(project)
    except MissingInputError as e:
        # the most common cron failure (an export did not arrive) still gets its junit
        # <error> and a metrics.prom that carries the last success forward
        write_error_report(
            project.output_dir, compute_run_id(project, {}), e.message, started_at=started,
            status="inconclusive", project=str(project.raw.get("name") or project.root.name),
        )  # fmt: skip
        raise
    with RunLock(project.state_dir):
        run_id = compute_run_id(project, files)
        if log_stream is None and log_format == "text" and not sys.stderr.isatty():
            # text mode is for people: stage lines only on a terminal; cron/CI get the summary
            # and the one-line error (use --log-format json for machine-readable logs)
            log_stream = io.StringIO()
        log = Logger(run_id, log_format, stream=log_stream)
        log.info("run.start", sources=len(project.sources))
        con = open_state(project)
        try:
            try:
                with resource_errors(project):
                    # a transaction per stage (per source in ingest/contract): see transaction()
                    summaries = ingest_and_stage(con, project, run_id, log, files)
                    analyse(con, project, run_id, log)
                    with log.stage("publish", con):
                        written = publish(con, project)
                    if project.keep_tables:  # state.keep_tables: copies for inspection
                        with log.stage("keep_tables", con), transaction(con):
                            keep_tables(con, project.keep_tables)
            except RomireconError as e:
                _rollback(con)
                # CI still gets a junit <error> and cron a metrics.prom with the failure
                status = "inconclusive" if e.exit_code == ExitCode.INCONCLUSIVE else "error"
                write_error_report(
                    project.output_dir, run_id, e.message, con=con, started_at=started,
                    status=status, project=str(project.raw.get("name") or project.root.name),
                )  # fmt: skip
                log.error("run.error", error=e.message, exit_code=int(e.exit_code))
                raise
            report = sla.evaluate(
                con, run_id, project.section("sla"), fail_on,
                project=str(project.raw.get("name") or project.root.name),
                started_at=started, sources={s.name: s.entity for s in project.sources},
            )  # fmt: skip
            if show_pii:
                add_pii_display(con, report)
            report_files = write_all(report, project.output_dir)
            by_reason = dict(
                con.execute(
                    "SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY reason"
                ).fetchall()
            )
        except BaseException:
            _rollback(con)
            raise
        finally:
            con.close()
    code = ExitCode(report.exit_code(fail_on))
    log.info("run.end", exit_code=int(code), status=report.status)
    return RunResult(
        run_id, code, project.output_dir, summaries, written + report_files, by_reason, report
    )


@contextlib.contextmanager
def resource_errors(project: Project) -> Iterator[None]:
    """DuckDB spills to state.temp_dir beyond state.memory_limit; when even that is not enough
    (an operator that cannot spill, or a full disk) say which setting to change, not a trace."""
    from romirecon.db import DEFAULT_MEMORY_LIMIT

    limit = project.memory_limit or DEFAULT_MEMORY_LIMIT
    temp = project.temp_dir or (project.state_dir / "tmp")
    try:
        yield
    except duckdb.OutOfMemoryException as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ResourceError(
            f"out of memory within state.memory_limit {limit} (DuckDB spills to {temp}, "
            f"but this step could not): raise state.memory_limit ({first[:160]})"
        ) from None
    except duckdb.IOException as e:
        if "no space left" not in str(e).lower():
            raise
        raise ResourceError(
            f"no space left on the device while writing (temp files go to {temp}): free space "
            "or point state.temp_dir at a larger disk"
        ) from None


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Undo the failed stage's work. Stages before it stay committed: every per-run table is
    rebuilt by the next run, and the output files are only replaced once all stages finished."""
    with contextlib.suppress(duckdb.Error):  # no transaction open
        con.execute("ROLLBACK")


def add_pii_display(con: duckdb.DuckDBPyConnection, report: Any) -> None:
    """--show-pii: name and email next to each top-cluster member (reports show ids otherwise)."""
    keys = sorted(
        {(c.entity, m.source_name, m.source_id) for c in report.top_clusters for m in c.members}
    )
    if not keys:
        return
    con.execute("CREATE OR REPLACE TEMP TABLE _pii_keys (entity VARCHAR, s VARCHAR, id VARCHAR)")
    con.executemany("INSERT INTO _pii_keys VALUES (?, ?, ?)", keys)
    found: dict[tuple[str, str, str], str] = {}
    for entity in ("contact", "account"):
        rows = con.execute(
            f"""SELECT k.s, k.id, min(concat_ws(' ',
                    coalesce(t.full_name, nullif(concat_ws(' ', t.first_name, t.last_name), ''),
                             t.company),
                    '<' || t.email || '>'))
                FROM _pii_keys k JOIN {ident("stg_" + entity)} t
                  ON k.entity = ? AND t.source_name = k.s AND t.source_id = k.id
                GROUP BY ALL""",
            [entity],
        ).fetchall()
        found.update({(entity, s, i): d for s, i, d in rows})
    for c in report.top_clusters:
        for m in c.members:
            m.display = found.get((c.entity, m.source_name, m.source_id))
