"""Per-field comparison levels, vectorized over aligned pair arrays.

Each field is loaded once as a dictionary: `codes` (one int32 per record, -1 for NULL) into
`values` (the distinct normalized strings). Exact agreement is an integer comparison of codes;
only pairs that are neither NULL nor exact go through rapidfuzz `process.cpdist` (aligned pairs,
all cores). Levels follow Splink's gamma convention: -1 NULL (no evidence), 0 disagree, and
higher is closer, the top level being exact agreement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA, JaroWinkler

from romirecon.dedup.spec import FieldSpec

# level labels per kind, from 0 (disagree) to the top (exact)
LEVELS: dict[str, tuple[str, ...]] = {
    "name": ("else", "jaro_winkler>=0.80", "jaro_winkler>=0.92", "exact"),
    "text": ("else", "token_set>=70", "token_set>=90", "exact"),
    "address": ("else", "token_set>=75", "token_set>=90", "exact"),
    "email": ("else", "same_local_part", "edit_distance<=1", "exact"),
    "phone": ("else", "edit_distance<=1", "same_last_9_digits", "exact"),
    "date": ("else", "within_1_year", "typo_or_day_month_swap", "exact"),
    "exact": ("else", "exact"),
}


@dataclass
class FieldData:
    """One field of the record table as a dictionary: per-record codes into distinct values."""

    spec: FieldSpec
    codes: np.ndarray  # int32 per record, -1 NULL
    values: np.ndarray  # object array of distinct strings
    freq: np.ndarray  # float64 per distinct value: its share of the non-NULL records
    aux: dict[str, np.ndarray] = field(default_factory=dict)  # per distinct value

    @property
    def n_levels(self) -> int:
        return len(LEVELS[self.spec.kind])


def field_data(spec: FieldSpec, column: pa.Array | pa.ChunkedArray) -> FieldData:
    """Dictionary-encode one normalized column (records in rid order) and precompute the
    per-value helpers its kind needs (email parts, phone suffix, date parts)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    enc = pc.dictionary_encode(arr.cast(pa.string()))
    dictionary = enc.dictionary
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    nn = codes[codes >= 0]
    counts = np.bincount(nn, minlength=len(dictionary)).astype(np.float64)
    freq = counts / max(1, nn.size)
    values = np.asarray(dictionary.to_numpy(zero_copy_only=False), dtype=object)
    aux: dict[str, np.ndarray] = {}
    if spec.kind == "email":
        parts = pc.split_pattern(dictionary, "@", max_splits=1)
        local = pc.list_element(parts, 0)
        aux["local"] = _codes_of(local)
    elif spec.kind == "phone":
        suffix = pc.utf8_slice_codeunits(dictionary, -9)
        long_enough = pc.greater_equal(pc.utf8_length(dictionary), 9)
        sc = _codes_of(suffix)
        sc[~long_enough.to_numpy(zero_copy_only=False)] = -1
        aux["suffix"] = sc
    elif spec.kind == "date":
        ts = pc.strptime(dictionary, format="%Y-%m-%d", unit="s", error_is_null=True)
        days = pc.cast(pc.cast(ts, pa.date32()), pa.int32())
        aux["days"] = days.fill_null(np.iinfo(np.int32).min).to_numpy(zero_copy_only=False)
        aux["month"] = pc.month(ts).fill_null(-1).to_numpy(zero_copy_only=False)
        aux["day"] = pc.day(ts).fill_null(-2).to_numpy(zero_copy_only=False)
        aux["year"] = pc.year(ts).fill_null(-3).to_numpy(zero_copy_only=False)
    return FieldData(spec, codes, values, freq, aux)


def _codes_of(arr: pa.Array) -> np.ndarray:
    enc = pc.dictionary_encode(arr)
    return enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _sim(scorer: object, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.size == 0:
        return np.empty(0, dtype=np.float32)
    return process.cpdist(a, b, scorer=scorer, workers=-1, dtype=np.float32)


def _osa_le1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.size == 0:
        return np.empty(0, dtype=bool)
    d = process.cpdist(a, b, scorer=OSA.distance, score_cutoff=2, workers=-1, dtype=np.int32)
    return d <= 1


def compare(fd: FieldData, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Comparison levels (int8) of field `fd` for the aligned record index arrays."""
    cl = fd.codes[left]
    cr = fd.codes[right]
    top = fd.n_levels - 1
    null = (cl < 0) | (cr < 0)
    exact = (cl == cr) & ~null
    lev = np.zeros(left.shape[0], dtype=np.int8)
    lev[null] = -1
    lev[exact] = top
    idx = np.flatnonzero(~null & ~exact)
    if idx.size == 0 or top == 1:
        return lev
    vl, vr = cl[idx], cr[idx]
    a, b = fd.values[vl], fd.values[vr]
    kind = fd.spec.kind
    sub = np.zeros(idx.size, dtype=np.int8)
    if kind == "name":
        s = _sim(JaroWinkler.normalized_similarity, a, b)
        sub[s >= 0.80] = 1
        sub[s >= 0.92] = 2
    elif kind in ("text", "address"):
        lo, hi = (70, 90) if kind == "text" else (75, 90)
        s = _sim(fuzz.token_set_ratio, a, b)
        sub[s >= lo] = 1
        sub[s >= hi] = 2
    elif kind == "email":
        loc = fd.aux["local"]
        sub[(loc[vl] == loc[vr]) & (loc[vl] >= 0)] = 1
        sub[_osa_le1(a, b)] = 2
    elif kind == "phone":
        sub[_osa_le1(a, b)] = 1
        suf = fd.aux["suffix"]
        sub[(suf[vl] == suf[vr]) & (suf[vl] >= 0)] = 2
    elif kind == "date":
        days, mon, day, year = fd.aux["days"], fd.aux["month"], fd.aux["day"], fd.aux["year"]
        valid = (days[vl] != np.iinfo(np.int32).min) & (days[vr] != np.iinfo(np.int32).min)
        near = valid & (np.abs(days[vl].astype(np.int64) - days[vr]) <= 366)
        sub[near] = 1
        swap = valid & (year[vl] == year[vr]) & (mon[vl] == day[vr]) & (day[vl] == mon[vr])
        sub[swap | _osa_le1(a, b)] = 2
    lev[idx] = sub
    return lev


def compare_all(data: list[FieldData], left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Levels of every field: int8 matrix (fields × pairs)."""
    out = np.empty((len(data), left.shape[0]), dtype=np.int8)
    for i, fd in enumerate(data):
        out[i] = compare(fd, left, right)
    return out
