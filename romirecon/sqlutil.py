"""SQL helpers: the one place identifiers and literals are quoted.

Values go to DuckDB as parameters wherever DuckDB accepts them. Where it cannot (DDL, table-function
arguments such as file paths), `literal` renders a safe SQL string literal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SAFE = re.compile(r"^[a-z_][a-z0-9_]*$")


def ident(name: str) -> str:
    """Quote an identifier: `x"; DROP TABLE t` becomes a harmless column name."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A SQL string literal (single quotes doubled). Use only where parameters are impossible."""
    if "\x00" in value:
        raise ValueError("literal contains a NUL byte")
    return "'" + value.replace("'", "''") + "'"


def literal_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(literal(v) for v in values) + "]"


def table_name(prefix: str, name: str) -> str:
    """A table name built from a user-chosen name: lower-cased, non-word characters folded to _."""
    slug = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "x"
    return f"{prefix}_{slug}"


def is_plain(name: str) -> bool:
    return bool(_SAFE.match(name))
