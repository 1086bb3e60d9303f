"""Vectorised helpers: vendor-shaped ids, timestamps, deterministic writers.

Everything here works on whole numpy arrays / polars frames; nothing loops over records.
"""

from __future__ import annotations

import io
import json
import os
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

B62 = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
_SF_SUFFIX = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"))
EPOCH = date(1970, 1, 1)


def day_number(d: date) -> int:
    """Days since 1970-01-01."""
    return (d - EPOCH).days


def base62(values: np.ndarray, width: int) -> np.ndarray:
    """Fixed-width base-62 strings of non-negative integers (most significant digit first)."""
    v = np.asarray(values, dtype=np.uint64).copy()
    digits = np.empty((v.size, width), dtype=np.int64)
    for pos in range(width - 1, -1, -1):  # loop over digit positions, not records
        digits[:, pos] = (v % np.uint64(62)).astype(np.int64)
        v //= np.uint64(62)
    chars = np.ascontiguousarray(B62[digits])
    return chars.view(f"<U{width}").reshape(-1)


def scrambled(index: np.ndarray, salt: int, width: int) -> np.ndarray:
    """A bijective scramble of 0..n-1 into [0, 62**width): distinct inputs give distinct ids."""
    modulus = 62**width
    mult = 1_000_000_007  # prime, coprime with 62**width
    idx = np.asarray(index, dtype=np.uint64)  # n * mult stays far below 2**64 for n < 1e9
    return (idx * np.uint64(mult) + np.uint64(salt * 7919 + 12345)) % np.uint64(modulus)


def vendor_ids(prefix: str, index: np.ndarray, salt: int, width: int = 14) -> np.ndarray:
    """Stripe-style ids: prefix + fixed-width base-62 body, unique per index."""
    body = base62(scrambled(index, salt, min(width, 10)), min(width, 10))
    if width > 10:  # pad with a salt-derived constant so ids have the vendor's length
        pad = base62(np.array([salt * 104729 % (62 ** (width - 10))]), width - 10)[0]
        body = np.char.add(pad, body)
    return np.char.add(prefix, body)


def salesforce_ids(key_prefix: str, index: np.ndarray, org_pod: str = "5g0000") -> np.ndarray:
    """18-character Salesforce ids: 3-char key prefix + pod + base-62 counter + checksum suffix.

    The 3-character suffix encodes, for each 5-character chunk of the 15-character id, which
    characters are upper-case letters (Salesforce's case-insensitive id algorithm).
    """
    counter = base62(np.asarray(index, dtype=np.uint64) + np.uint64(1000), 15 - 3 - len(org_pod))
    id15 = np.char.add(np.char.add(key_prefix, org_pod), counter)
    chars = np.ascontiguousarray(id15).view("<U1").reshape(-1, 15)
    upper = (chars >= "A") & (chars <= "Z")
    weights = np.array([1, 2, 4, 8, 16])
    suffix_idx = (upper.reshape(-1, 3, 5) * weights).sum(axis=2)
    suffix = np.ascontiguousarray(_SF_SUFFIX[suffix_idx]).view("<U3").reshape(-1)
    return np.char.add(id15, suffix)


def numeric_ids(start: int, index: np.ndarray, step: int = 1) -> np.ndarray:
    return (start + np.asarray(index, dtype=np.int64) * step).astype(str)


def pick(
    rng: np.random.Generator, values: list[str], n: int, p: list[float] | None = None
) -> np.ndarray:
    arr = np.array(values)
    if p is not None:
        w = np.asarray(p, dtype=float)
        return arr[rng.choice(len(arr), size=n, p=w / w.sum())]
    return arr[rng.integers(0, len(arr), size=n)]


# ---------------------------------------------------------------- writers (deterministic)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_csv(
    df: pl.DataFrame,
    path: Path,
    *,
    header_lines: list[str] | None = None,
    footer_lines: list[str] | None = None,
    separator: str = ",",
    bom: bool = False,
    line_terminator: str = "\n",
    skip_header: bool = False,
    quote_style: str = "necessary",
) -> None:
    buf = io.BytesIO()
    df.write_csv(
        buf,
        separator=separator,
        line_terminator=line_terminator,
        quote_style=quote_style,
        include_header=not skip_header,
    )  # type: ignore[arg-type]
    body = buf.getvalue()
    head = "".join(h + line_terminator for h in header_lines or []).encode()
    foot = "".join(f + line_terminator for f in footer_lines or []).encode()
    _atomic_write_bytes(path, (b"\xef\xbb\xbf" if bom else b"") + head + body + foot)


def write_ndjson(records: pl.DataFrame, path: Path) -> None:
    """One JSON object per line; struct columns become nested objects, nulls are kept."""
    buf = io.BytesIO()
    records.write_ndjson(buf)
    _atomic_write_bytes(path, buf.getvalue())


def write_json_records(
    records: pl.DataFrame,
    path: Path,
    key: str,
    before: dict[str, object] | None = None,
    after: dict[str, object] | None = None,
) -> None:
    """One JSON document holding the records as an array under `key`, as REST APIs page them.

    `before` / `after` are the envelope's other members (written before / after the array).
    """
    buf = io.BytesIO()
    records.write_ndjson(buf)
    # JSON text never holds a raw newline inside a value, so each line is one record
    body = buf.getvalue().rstrip(b"\n").replace(b"\n", b",\n")

    def members(d: dict[str, object] | None) -> bytes:
        return b"".join(
            json.dumps(k).encode() + b":" + json.dumps(v).encode() + b","
            for k, v in (d or {}).items()
        )

    head = b"{" + members(before) + json.dumps(key).encode() + b":[\n"
    tail = b"\n]" + (b"," + members(after)[:-1] if after else b"") + b"}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(head)
        f.write(body)
        f.write(tail)
    os.replace(tmp, path)


def write_api_list(records: pl.DataFrame, path: Path, url: str) -> None:
    """A Stripe list document: {"object": "list", "data": [...], "has_more": false, "url": ...}."""
    write_json_records(records, path, "data", {"object": "list"}, {"has_more": False, "url": url})


def write_parquet(df: pl.DataFrame, path: Path) -> None:
    """Parquet with fixed settings so equal frames give byte-identical files."""
    table = df.to_arrow()
    table = table.replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=3,
        use_dictionary=True,
        write_statistics=True,
        row_group_size=1_000_000,
        store_schema=False,
        version="2.6",
    )
    _atomic_write_bytes(path, sink.getvalue().to_pybytes())


def write_json(obj: object, path: Path) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def epoch_to_str(seconds: pl.Expr, fmt: str) -> pl.Expr:
    """Format epoch seconds (UTC) with strftime."""
    return pl.from_epoch(seconds, time_unit="s").dt.strftime(fmt)
