"""Field kinds, field specs and blocking rules: the vocabulary shared by the engine, the
standalone command and the pipeline stage."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from romirecon.exitcodes import ConfigError

KINDS = ("name", "text", "email", "phone", "date", "address", "exact")

# kinds whose exact-agreement weight is adjusted by how common the value is (Splink's term
# frequency adjustment): agreeing on "smith" is weaker evidence than agreeing on "zaborowski".
TF_DEFAULT = {
    "name": True,
    "text": False,
    "email": False,
    "phone": False,
    "date": False,
    "address": False,
    "exact": False,
}


@dataclass(frozen=True)
class FieldSpec:
    """One compared field: the source column, its comparison kind and term-frequency switch."""

    column: str
    kind: str
    tf: bool = False

    @property
    def name(self) -> str:
        return self.column


@dataclass(frozen=True)
class BlockingRule:
    """Candidate pairs are record pairs equal on every key. A key is a column name, or
    `column[:n]` for the first n characters of the normalized value."""

    keys: tuple[str, ...]

    @property
    def label(self) -> str:
        return "+".join(self.keys)

    def columns(self) -> set[str]:
        return {parse_key(k)[0] for k in self.keys}


@dataclass
class Settings:
    """Engine settings with their defaults (the `dedup:` section can override each)."""

    threshold: float = 0.9
    max_cluster_size: int = 1000
    max_block_size: int = 5000
    u_sample_pairs: int = 500_000
    em_max_iterations: int = 100
    em_tolerance: float = 1e-6
    seed: int = 42
    pairs_min_probability: float = 0.01
    rule_pair_budget: float = 4.0  # auto rules: at most this many candidate pairs per record
    extra: dict[str, object] = field(default_factory=dict)


_KEY = re.compile(r"^(?P<col>.+?)(?:\[:(?P<n>[0-9]+)\])?$")


def parse_key(key: str) -> tuple[str, int | None]:
    m = _KEY.match(key.strip())
    if not m:
        raise ConfigError(f"blocking key {key!r} is not COLUMN or COLUMN[:N]")
    n = m.group("n")
    return m.group("col").strip(), int(n) if n else None


def parse_field(text: str) -> tuple[str, str | None]:
    """`COLUMN[:KIND]` -> (column, kind or None). A column name may itself contain colons: only
    a trailing known kind is split off."""
    if ":" in text:
        col, kind = text.rsplit(":", 1)
        if kind in KINDS:
            return col, kind
        if kind.lower() in KINDS:
            return col, kind.lower()
        import difflib

        hint = difflib.get_close_matches(kind, KINDS, n=1)
        raise ConfigError(
            f"--field {text!r}: unknown kind {kind!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; valid kinds: {', '.join(KINDS)}"
        )
    return text, None


def parse_block(text: str) -> BlockingRule:
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    if not keys:
        raise ConfigError(f"--block {text!r} names no column")
    return BlockingRule(keys)


_NAME_HINTS: tuple[tuple[str, str], ...] = (
    ("email", "email"),
    ("e_mail", "email"),
    ("mail", "email"),
    ("phone", "phone"),
    ("mobile", "phone"),
    ("tel", "phone"),
    ("fax", "phone"),
    ("birth", "date"),
    ("dob", "date"),
    ("date", "date"),
    ("street", "address"),
    ("address", "address"),
    ("addr", "address"),
    ("company", "text"),
    ("organisation", "text"),
    ("organization", "text"),
    ("employer", "text"),
    ("name", "name"),
    ("surname", "name"),
    ("city", "name"),
    ("town", "name"),
    ("zip", "exact"),
    ("postcode", "exact"),
    ("postal", "exact"),
    ("country", "exact"),
    ("state", "exact"),
    ("gender", "exact"),
    ("sex", "exact"),
)


def infer_kind(column: str, duck_type: str) -> str:
    """A field's kind from its DuckDB type and its name (`--field COL` without `:KIND`)."""
    t = duck_type.upper()
    if t in ("DATE",) or t.startswith("TIMESTAMP"):
        return "date"
    if t in ("BOOLEAN",) or any(x in t for x in ("INT", "DECIMAL", "DOUBLE", "FLOAT")):
        return "exact"
    low = re.sub(r"[^a-z0-9]+", "_", column.lower())
    for hint, kind in _NAME_HINTS:
        if hint in low:
            return kind
    return "text"


def make_fields(specs: list[tuple[str, str | None]], types: dict[str, str]) -> list[FieldSpec]:
    """FieldSpecs from (column, kind-or-None) pairs; unknown columns are one ConfigError listing
    all of them."""
    unknown = [c for c, _ in specs if c not in types]
    if unknown:
        raise ConfigError(
            f"unknown column(s) {', '.join(map(repr, unknown))}",
            details=[f"available columns: {', '.join(types)}"],
        )
    seen: set[str] = set()
    out: list[FieldSpec] = []
    for col, kind in specs:
        if col in seen:
            raise ConfigError(f"--field {col!r} given twice")
        seen.add(col)
        k = kind or infer_kind(col, types[col])
        out.append(FieldSpec(col, k, TF_DEFAULT[k]))
    return out
