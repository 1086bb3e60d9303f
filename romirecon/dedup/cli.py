"""Click commands `dedupe` and `explain`: parse options, one library call, print a summary.
Registered on the main group in `romirecon/cli.py`; the library is imported inside the commands
so `romirecon --help` stays instant."""

from __future__ import annotations

from pathlib import Path

import click

from romirecon.cli import handle_errors


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--id", "id_column", required=True, help="Column that identifies a record.")
@click.option(
    "--field",
    "fields",
    multiple=True,
    metavar="COLUMN[:KIND]",
    help="A compared column; KIND is name, text, email, phone, date, address or exact "
    "(default: inferred). Repeat. Default: every column but the id.",
)
@click.option(
    "--block",
    "blocks",
    multiple=True,
    metavar='"COL1,COL2"',
    help="A blocking rule: records equal on all these columns are compared (COL[:N] compares "
    "the first N characters). Repeat for several rules. Default: chosen from the data.",
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder."
)
@click.option(
    "--threshold",
    type=float,
    default=0.9,
    show_default=True,
    help="Match probability at or above which two records are clustered.",
)
@click.option(
    "--max-cluster-size",
    type=int,
    default=1000,
    show_default=True,
    help="Clusters above this size are re-split on their strongest links.",
)
@click.option(
    "--max-block-size",
    type=int,
    default=5000,
    show_default=True,
    help="Blocks above this many records are skipped (and reported).",
)
@click.option("--threads", type=int, default=None, help="DuckDB threads (default: all cores).")
@handle_errors
def dedupe(
    file: Path,
    id_column: str,
    fields: tuple[str, ...],
    blocks: tuple[str, ...],
    out_dir: Path,
    threshold: float,
    max_cluster_size: int,
    max_block_size: int,
    threads: int | None,
) -> None:
    """Find duplicate records in one FILE (CSV, TSV, Parquet, JSON) without labels.

    Writes OUT/pairs.parquet (left_id, right_id, match_probability, per-field levels),
    OUT/clusters.parquet (id, cluster_id) and OUT/model.json (what `explain` reads).
    """
    from romirecon.dedup.api import dedupe_file

    r = dedupe_file(
        file,
        id_column,
        list(fields),
        list(blocks),
        out_dir,
        threshold,
        max_cluster_size=max_cluster_size,
        max_block_size=max_block_size,
        threads=threads,
    )
    click.echo(
        f"{r.records} records -> {r.clusters} clusters ({r.duplicate_records} duplicates); "
        f"{r.candidate_pairs} pairs scored, {r.matched_pairs} at p >= {r.threshold}"
    )
    click.echo("fields: " + ", ".join(f"{f.column}:{f.kind}" for f in r.fields))
    click.echo("blocking rules: " + "; ".join(r.rules))
    click.echo(
        f"wrote {r.out_dir / 'pairs.parquet'}, {r.out_dir / 'clusters.parquet'}, "
        f"{r.out_dir / 'model.json'} in {r.timings.get('total', 0):.1f}s"
    )


@click.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.argument("left_id")
@click.argument("right_id")
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    default=None,
    help="The deduped file, if it moved since `dedupe` ran.",
)
@handle_errors
def explain(out_dir: Path, left_id: str, right_id: str, input_path: Path | None) -> None:
    """Explain why records LEFT_ID and RIGHT_ID of a `dedupe` OUT_DIR matched or did not:
    per-field values, comparison levels, Bayes-factor weights and the final probability."""
    from romirecon.dedup.api import explain_pair

    click.echo(explain_pair(out_dir, left_id, right_id, input_path).render())
