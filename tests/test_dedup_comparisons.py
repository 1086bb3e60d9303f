"""Comparison levels of every kind, on pairs whose answer is known by hand.

Levels: -1 NULL, 0 disagree, ..., top = exact (see comparisons.LEVELS)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from romirecon.dedup.comparisons import LEVELS, compare, field_data
from romirecon.dedup.spec import FieldSpec


def levels_of(kind: str, pairs: list[tuple[str | None, str | None]]) -> list[int]:
    """Records are laid out [l0, r0, l1, r1, ...]; pair k compares records 2k and 2k+1."""
    values = [v for p in pairs for v in p]
    fd = field_data(FieldSpec("x", kind), pa.array(values, pa.string()))
    left = np.arange(0, len(values), 2, dtype=np.int32)
    return compare(fd, left, left + 1).tolist()


def test_name_levels() -> None:
    # Jaro-Winkler("martha", "marhta") = 0.961 (the textbook example) -> >= 0.92 -> level 2;
    # JW("dwayne", "duane") = 0.840 -> [0.80, 0.92) -> level 1; "john"/"mary" share nothing.
    got = levels_of(
        "name",
        [
            ("martha", "martha"),
            ("martha", "marhta"),
            ("dwayne", "duane"),
            ("john", "mary"),
            (None, "mary"),
        ],
    )
    assert got == [3, 2, 1, 0, -1]


def test_email_levels() -> None:
    got = levels_of(
        "email",
        [
            ("ann.lee@acme.com", "ann.lee@acme.com"),  # exact -> 3
            ("ann.lee@acme.com", "ann.lee@acme.co"),  # one deletion -> edit distance 1 -> 2
            ("ann.lee@acme.com", "ann.lee@gmail.com"),  # same local part, other domain -> 1
            ("ann.lee@acme.com", "bob@acme.com"),  # -> 0
            ("ann.lee@acme.com", None),  # -> -1
        ],
    )
    assert got == [3, 2, 1, 0, -1]


def test_phone_levels() -> None:
    got = levels_of(
        "phone",
        [
            ("4155550101", "4155550101"),  # 3
            ("14155550101", "4155550101"),  # same last 9 digits "155550101" -> 2
            ("4155550101", "4155550110"),  # last two digits transposed: OSA distance 1 -> 1
            ("4155550101", "2125559999"),  # 0
        ],
    )
    assert got == [3, 2, 1, 0]


def test_date_levels() -> None:
    got = levels_of(
        "date",
        [
            ("1985-03-12", "1985-03-12"),  # 3
            ("1985-03-12", "1985-12-03"),  # day and month swapped -> 2
            ("1985-03-12", "1985-03-21"),  # digits of the day transposed: OSA 1 -> 2
            ("1985-03-12", "1985-06-30"),  # 110 days apart -> within a year -> 1
            ("1985-03-12", "1990-01-01"),  # 0
            ("12/03/1985", "1990-01-01"),  # not ISO: no day arithmetic, strings differ -> 0
        ],
    )
    assert got == [3, 2, 2, 1, 0, 0]


def test_text_and_address_levels() -> None:
    # token_set_ratio is 100 when one token set contains the other
    assert levels_of("text", [("acme", "acme"), ("acme corp", "acme"), ("acme", "zenith")]) == [
        3,
        2,
        0,
    ]
    assert levels_of(
        "address", [("12 high street", "12 high street flat 2"), ("12 high street", "99 low road")]
    ) == [2, 0]


def test_exact_levels() -> None:
    assert levels_of("exact", [("sw1a", "sw1a"), ("sw1a", "sw1b"), (None, None)]) == [1, 0, -1]


@pytest.mark.parametrize("kind", sorted(LEVELS))
def test_symmetric(kind: str) -> None:
    pairs = [
        ("martha lee", "marhta lee"),
        ("1985-03-12", "1985-12-03"),
        ("a@b.com", "a@c.com"),
        ("4155550101", "4155550110"),
    ]
    swapped = [(b, a) for a, b in pairs]
    assert levels_of(kind, pairs) == levels_of(kind, swapped)
