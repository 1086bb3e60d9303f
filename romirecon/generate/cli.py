"""`romirecon generate`: a thin click command over `romirecon.generate.generate_estate`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from romirecon.cli import handle_errors


@click.command("generate")
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder to write the estate into (new, empty, or an earlier estate).",
)
@click.option(
    "--customers",
    type=click.IntRange(min=1),
    required=True,
    help="Number of people in the modelled world.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Random seed: the same seed gives byte-identical files.",
)
@click.option(
    "--dup-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.05,
    show_default=True,
    help="Share of records that get a duplicate (0 injects none).",
)
@click.option(
    "--as-of",
    "as_of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Business date the estate ends on (default 2026-10-31).",
)
@click.option(
    "--json-layout",
    type=click.Choice(["api", "ndjson"]),
    default="api",
    show_default=True,
    help="API-list exports as list documents (api) or one record per line in .jsonl (ndjson).",
)
@handle_errors
def generate(
    out: Path,
    customers: int,
    seed: int,
    dup_rate: float,
    as_of: datetime | None,
    json_layout: str,
) -> None:
    """Write a synthetic estate (vendor exports, romirecon.yaml, truth/) with known duplicates."""
    from romirecon.generate import generate_estate

    result = generate_estate(
        out, customers, seed, dup_rate, as_of.date() if as_of else None, json_layout=json_layout
    )
    click.echo(f"wrote {len(result.files)} export files, project {result.project_file}")
    if result.missing_mappings:
        click.echo(
            "mappings not in this checkout yet: " + ", ".join(result.missing_mappings), err=True
        )
