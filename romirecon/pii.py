"""PII in output tables: with `outputs.hash_pii: true`, emails and phones are replaced by a salted
SHA-256 (the salt lives in the state folder, so the same value hashes the same way every night and
joins across outputs still work, but the value cannot be looked up from another estate)."""

from __future__ import annotations

import secrets
from pathlib import Path

import duckdb

from romirecon.config import Project
from romirecon.sqlutil import ident, literal

PII_COLUMNS = ("email", "phone")
SALT_FILE = "pii_salt"


def salt(state_dir: Path) -> str:
    path = state_dir / SALT_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(16))
    return path.read_text().strip()


def hashed(expr: str, salt_value: str) -> str:
    """SQL: the salted hash of a text expression (NULL stays NULL)."""
    return f"CASE WHEN {expr} IS NOT NULL THEN 'sha256:' || sha256({literal(salt_value)} || {expr}) END"


def quarantine_record_expr(project: Project, salt_value: str) -> str:
    """The quarantine's `record` JSON with every source column mapped to email/phone hashed."""
    cases = []
    for s in project.sources:
        fields = sorted(
            {
                name
                for col in PII_COLUMNS
                if col in s.mapping.columns
                for name in s.mapping.columns[col].source
            }
        )
        if not fields:
            continue
        patch = ", ".join(
            f"{literal(f)}, {hashed(f'json_extract_string(record, {literal(chr(36) + chr(46) + json_key(f))})', salt_value)}"
            for f in fields
        )
        cases.append(
            f"WHEN {literal(s.name)} THEN CAST(json_merge_patch(record, json_object({patch})) AS VARCHAR)"
        )
    if not cases:
        return "record"
    return f"CASE source_name {' '.join(cases)} ELSE record END"


def json_key(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


QUARANTINE_COLUMNS = (
    "source_name", "entity", "source_file", "source_row", "source_line", "reason", "column_name",
    "value", "message", "reasons", "record",
)  # fmt: skip


def quarantine_query(project: Project, hash_pii: bool) -> str:
    """The quarantine output: same columns either way; emails/phones hashed when asked."""
    order = "ORDER BY source_name, source_file, source_row NULLS LAST, source_line"
    cols = {c: ident(c) for c in QUARANTINE_COLUMNS}
    if hash_pii:
        s = salt(project.state_dir)
        is_pii = f"column_name IN ({', '.join(literal(c) for c in PII_COLUMNS)})"
        cols["value"] = f"CASE WHEN {is_pii} THEN {hashed('value', s)} ELSE value END"
        cols["message"] = (
            f"CASE WHEN {is_pii} THEN replace(message, value, '[hashed]') ELSE message END"
        )
        cols["record"] = quarantine_record_expr(project, s)
    select = ", ".join(f"{expr} AS {ident(c)}" for c, expr in cols.items())
    return f"SELECT {select} FROM quarantine {order}"


def hash_pii_columns(con: duckdb.DuckDBPyConnection, query: str, salt_value: str) -> str:
    """Wrap an output query so every text column named like an email or phone is hashed."""
    cols = con.execute(f"DESCRIBE {query}").fetchall()
    out = []
    for name, ctype, *_ in cols:
        q = ident(name)
        lowered = name.lower()
        if ctype == "VARCHAR" and ("email" in lowered or "phone" in lowered):
            out.append(f"{hashed(q, salt_value)} AS {q}")
        else:
            out.append(q)
    return f"SELECT {', '.join(out)} FROM ({query})"
