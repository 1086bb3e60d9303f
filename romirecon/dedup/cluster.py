"""Connected components over accepted edges, vectorized, with a guard against giant clusters.

Labels are the smallest record index in each component (min-label propagation with pointer
jumping, numpy only). A component larger than `max_size` is usually a chain of weak links through
a few ambiguous records; the guard re-splits it keeping only its stronger edges (the weight bar
rises 2 bits per round) until every part fits, and as a last resort leaves its records single.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def connected_components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Component label (smallest member index) per record 0..n-1, for undirected edges."""
    labels = np.arange(n, dtype=np.int64)
    if left.size == 0:
        return labels
    a = left.astype(np.int64)
    b = right.astype(np.int64)
    while True:
        la, lb = labels[a], labels[b]
        lo = np.minimum(la, lb)
        before = labels.copy()
        # hook: each endpoint's root takes the smaller label of the edge
        np.minimum.at(labels, la, lo)
        np.minimum.at(labels, lb, lo)
        # pointer jumping until every record points at a root
        while True:
            nxt = labels[labels]
            if np.array_equal(nxt, labels):
                break
            labels = nxt
        if np.array_equal(labels, before):
            return labels


@dataclass
class GuardReport:
    oversized: int  # components above the cap before the guard
    split_rounds: int
    left_single: int  # records left unclustered because no bar split their component


def cluster(
    n: int,
    left: np.ndarray,
    right: np.ndarray,
    weight: np.ndarray,
    min_weight: float,
    max_size: int,
    max_rounds: int = 20,
) -> tuple[np.ndarray, GuardReport]:
    """Cluster labels from edges with weight >= min_weight, no cluster above max_size."""
    keep = weight >= min_weight
    labels = connected_components(n, left[keep], right[keep])
    sizes = np.bincount(labels, minlength=n)
    big = np.flatnonzero(sizes > max_size)
    report = GuardReport(int(big.size), 0, 0)
    bar = min_weight
    rounds = 0
    while big.size and rounds < max_rounds:
        rounds += 1
        bar += 2.0
        in_big = np.isin(labels[left], big)
        # edges inside oversized components must now clear the higher bar
        keep = keep & (~in_big | (weight >= bar))
        labels = connected_components(n, left[keep], right[keep])
        sizes = np.bincount(labels, minlength=n)
        big = np.flatnonzero(sizes > max_size)
    if big.size:
        members = np.isin(labels, big)
        report.left_single = int(members.sum())
        idx = np.flatnonzero(members)
        labels[idx] = idx
    report.split_rounds = rounds
    return labels, report
