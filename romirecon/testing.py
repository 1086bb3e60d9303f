"""Helpers for tests (ours and users'): stage one sample export through one mapping."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import duckdb
import yaml

from romirecon.config import load_project
from romirecon.db import configure


def stage_sample(
    mapping_path: str | Path,
    sample_path: str | Path,
    system: str,
    entity: str,
    fmt: dict[str, Any] | None = None,
    reporting_currency: str = "USD",
) -> tuple[duckdb.DuckDBPyConnection, str, list[dict[str, Any]]]:
    """Ingest `sample_path` through `mapping_path` into an in-memory DuckDB.

    Returns the connection, the staged entity table name (`stg_<entity>`) and the quarantine rows
    (as dicts). Raises the same errors `romirecon run` would.
    """
    from romirecon.pipeline import ingest_and_stage

    with tempfile.TemporaryDirectory() as d:
        src: dict[str, Any] = {
            "name": "sample",
            "system": system,
            "entity": entity,
            "mapping": str(Path(mapping_path).resolve()),
            "path": str(Path(sample_path).resolve()),
        }
        if fmt:
            src["format"] = fmt
        doc = {"version": 1, "reporting_currency": reporting_currency, "sources": [src]}
        (Path(d) / "romirecon.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        project = load_project(d)
        con = duckdb.connect()
        configure(con)
        ingest_and_stage(con, project, "test")
    cur = con.execute("SELECT * FROM quarantine ORDER BY source_file, source_row, source_line")
    names = [c[0] for c in cur.description]
    quarantine = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return con, f"stg_{entity}", quarantine
