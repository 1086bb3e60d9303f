"""The Fellegi–Sunter model, trained without labels.

- u (P(level | non-match)) from random record pairs: almost all random pairs are non-matches.
- m (P(level | match)) and the share of matches among candidate pairs by EM over the distinct
  comparison-vector patterns weighted by their counts (a few hundred patterns stand for millions
  of pairs). EM also re-estimates a candidate-pair u internally, because blocking makes
  non-matching candidates agree more often than random pairs; only m is kept from it.
- Scoring: match weight = log2(prior odds) + Σ log2(m/u) over non-NULL fields, plus the optional
  term-frequency adjustment log2(u_exact / tf(value)) on exact agreements; probability =
  1 / (1 + 2^-weight). The prior is the global share of matching pairs: matches among candidates
  × candidates / all n(n-1)/2 pairs (as Splink's probability_two_random_records_match).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from romirecon.dedup.comparisons import LEVELS, FieldData, compare_all
from romirecon.dedup.spec import FieldSpec

_EPS = 1e-9


@dataclass
class FSModel:
    fields: list[FieldSpec]
    m: list[np.ndarray]  # per field, per level (0 = disagree ... top = exact)
    u: list[np.ndarray]
    prior: float  # probability two random records match
    lambda_candidates: float = 0.0
    em_iterations: int = 0
    em_converged: bool = False
    u_pairs: int = 0
    tf_floor: dict[str, float] = field(default_factory=dict)

    def bayes_factors(self) -> list[np.ndarray]:
        return [
            np.log2(np.maximum(m, _EPS) / np.maximum(u, _EPS))
            for m, u in zip(self.m, self.u, strict=True)
        ]

    @property
    def prior_weight(self) -> float:
        p = min(max(self.prior, 1e-15), 1 - 1e-15)
        return float(np.log2(p / (1 - p)))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "prior": self.prior,
            "prior_weight": self.prior_weight,
            "lambda_candidates": self.lambda_candidates,
            "em_iterations": self.em_iterations,
            "em_converged": self.em_converged,
            "u_pairs": self.u_pairs,
            "fields": [
                {
                    "column": f.column,
                    "kind": f.kind,
                    "tf": f.tf,
                    "levels": list(LEVELS[f.kind]),
                    "m": [float(x) for x in m],
                    "u": [float(x) for x in u],
                    "weight": [float(x) for x in w],
                }
                for f, m, u, w in zip(
                    self.fields, self.m, self.u, self.bayes_factors(), strict=True
                )
            ],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FSModel:
        fields = [FieldSpec(f["column"], f["kind"], bool(f["tf"])) for f in d["fields"]]
        return cls(
            fields,
            [np.asarray(f["m"], dtype=np.float64) for f in d["fields"]],
            [np.asarray(f["u"], dtype=np.float64) for f in d["fields"]],
            float(d["prior"]),
            float(d.get("lambda_candidates", 0.0)),
            int(d.get("em_iterations", 0)),
            bool(d.get("em_converged", False)),
            int(d.get("u_pairs", 0)),
        )


def random_pairs(n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` uniformly random pairs of distinct records (seeded: deterministic)."""
    if n < 2:
        return np.empty(0, np.int32), np.empty(0, np.int32)
    rng = np.random.default_rng(seed)
    left = rng.integers(0, n, size=count, dtype=np.int64)
    off = rng.integers(1, n, size=count, dtype=np.int64)  # never 0: left != right
    right = (left + off) % n
    return left.astype(np.int32), right.astype(np.int32)


def level_shares(
    levels: np.ndarray, n_levels: int, weights: np.ndarray | None = None, smoothing: float = 0.5
) -> np.ndarray:
    """Share of each level among non-NULL entries, add-`smoothing` so no level has share 0."""
    ok = levels >= 0
    w = None if weights is None else weights[ok]
    counts = np.bincount(levels[ok].astype(np.int64), weights=w, minlength=n_levels)
    counts = counts.astype(np.float64) + smoothing
    return counts / counts.sum()


def estimate_u(
    data: list[FieldData], n: int, max_pairs: int, seed: int
) -> tuple[list[np.ndarray], int]:
    # ~n/5 pairs, at least 50k (rare levels need them), at most max_pairs and all pairs there are
    count = int(min(max_pairs, max(50_000, n // 5), max(0, n * (n - 1) // 2)))
    left, right = random_pairs(n, count, seed)
    lev = compare_all(data, left, right)
    return [level_shares(lev[i], fd.n_levels) for i, fd in enumerate(data)], int(left.size)


def patterns(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct comparison vectors: (patterns × fields levels, counts, inverse index per pair)."""
    if levels.shape[1] == 0:
        return np.empty((0, levels.shape[0]), np.int8), np.empty(0, np.int64), np.empty(0, np.int64)
    code = np.zeros(levels.shape[1], dtype=np.int64)
    for row in levels:  # mixed radix over fields (a handful), not over pairs
        code = code * 16 + (row.astype(np.int64) + 1)
    _, first, inverse, counts = np.unique(
        code, return_index=True, return_inverse=True, return_counts=True
    )
    return levels[:, first].T.copy(), counts.astype(np.int64), inverse.reshape(-1)


def em(
    pats: np.ndarray,
    counts: np.ndarray,
    n_levels: list[int],
    u_init: list[np.ndarray],
    max_iter: int = 100,
    tol: float = 1e-6,
    lam_init: float = 0.05,
) -> tuple[list[np.ndarray], list[np.ndarray], float, int, bool]:
    """EM over weighted patterns. Returns (m, u among candidates, match share, iterations,
    converged). m starts high on the top levels so the match class is the agreeing one."""
    nf = len(n_levels)
    m = []
    for k in n_levels:
        start = np.array([0.5 ** (k - 1 - j) for j in range(k)], dtype=np.float64)
        m.append(start / start.sum())
    u = [x.copy() for x in u_init]
    lam = lam_init
    w_all = counts.astype(np.float64)
    it, converged = 0, False
    for step in range(1, max_iter + 1):
        it = step
        post = posterior(pats, m, u, lam)
        wm = w_all * post
        wu = w_all * (1.0 - post)
        new_lam = float(wm.sum() / w_all.sum())
        new_m = [level_shares(pats[:, f], n_levels[f], wm, 1e-3) for f in range(nf)]
        new_u = [level_shares(pats[:, f], n_levels[f], wu, 1e-3) for f in range(nf)]
        delta = max(
            [abs(new_lam - lam)]
            + [float(np.max(np.abs(x - y))) for x, y in zip(new_m, m, strict=True)]
        )
        m, u, lam = new_m, new_u, min(max(new_lam, 1e-12), 1 - 1e-12)
        if delta < tol:
            converged = True
            break
    return m, u, lam, it, converged


def posterior(pats: np.ndarray, m: list[np.ndarray], u: list[np.ndarray], lam: float) -> np.ndarray:
    """P(match | pattern) under the mixture (NULL levels contribute nothing)."""
    lm = np.zeros(pats.shape[0])
    lu = np.zeros(pats.shape[0])
    for f in range(pats.shape[1]):
        g = pats[:, f].astype(np.int64)
        ok = g >= 0
        lm[ok] += np.log(np.maximum(m[f][g[ok]], _EPS))
        lu[ok] += np.log(np.maximum(u[f][g[ok]], _EPS))
    a = np.log(lam) + lm
    b = np.log1p(-lam) + lu
    return 1.0 / (1.0 + np.exp(np.clip(b - a, -700, 700)))


def tf_adjustment(
    data: list[FieldData], model: FSModel, left: np.ndarray, right: np.ndarray, levels: np.ndarray
) -> np.ndarray:
    """Sum over term-frequency fields of log2(u_exact / tf(value)) on exact agreements."""
    adj = np.zeros(left.shape[0], dtype=np.float64)
    for i, fd in enumerate(data):
        if not fd.spec.tf:
            continue
        top = fd.n_levels - 1
        ex = np.flatnonzero(levels[i] == top)
        if ex.size == 0:
            continue
        tf = np.maximum(fd.freq[fd.codes[left[ex]]], _EPS)
        adj[ex] += np.log2(model.u[i][top] / tf)
    return adj


def pattern_weights(model: FSModel, pats: np.ndarray) -> np.ndarray:
    bfs = model.bayes_factors()
    w = np.full(pats.shape[0], model.prior_weight, dtype=np.float64)
    for f, bf in enumerate(bfs):
        g = pats[:, f].astype(np.int64)
        ok = g >= 0
        w[ok] += bf[g[ok]]
    return w


def probability(weight: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp2(-np.clip(weight, -1000, 1000)))


@dataclass
class Session:
    rule: str
    pairs: int
    blocked: list[str]
    matches: float  # expected matching pairs among this rule's pairs
    iterations: int
    converged: bool


def train_m(
    levels: np.ndarray,
    members: list[np.ndarray],
    first_rule: np.ndarray,
    rule_labels: list[str],
    blocked: list[set[int]],
    n_levels: list[int],
    u: list[np.ndarray],
    max_iter: int = 100,
    tol: float = 1e-6,
    min_pairs: int = 20,
) -> tuple[list[np.ndarray], float, list[Session]]:
    """m by EM, one session per blocking rule (as Splink trains): in a rule's session the fields
    the rule blocks on are switched off, because every pair of that rule agrees on them whatever
    its match status. Each field's m is the average over the sessions that saw it, weighted by
    their expected matches. Returns (m, expected matching candidate pairs, sessions)."""
    nf = len(n_levels)
    acc = [np.zeros(k) for k in n_levels]
    wsum = np.zeros(nf)
    total_matches = 0.0
    sessions: list[Session] = []
    for r, label in enumerate(rule_labels):
        sel = members[r]
        if sel.size == 0:
            continue
        sub = levels[:, sel].copy()
        for f in blocked[r]:
            sub[f] = -1
        pats, counts, _ = patterns(sub)
        active = [f for f in range(nf) if f not in blocked[r]]
        if sel.size < min_pairs or not active:
            # too few pairs to learn from: count them as matches at the global share later
            sessions.append(
                Session(label, int(sel.size), sorted(map(str, blocked[r])), float("nan"), 0, False)
            )
            continue
        m, u_c, lam, it, conv = em(pats, counts, n_levels, u, max_iter, tol)
        matches = lam * sel.size
        # expected matches among the distinct pairs this rule produced first
        own = levels[:, first_rule == r].copy()
        for f in blocked[r]:
            own[f] = -1
        opats, ocounts, _ = patterns(own)
        total_matches += float((posterior(opats, m, u_c, lam) * ocounts).sum())
        for f in active:
            acc[f] += m[f] * matches
            wsum[f] += matches
        sessions.append(
            Session(label, int(sel.size), sorted(map(str, blocked[r])), matches, it, conv)
        )
    # rules too small to train on: assume the match share of the trained ones
    share = total_matches / max(
        1,
        sum(int((first_rule == i).sum()) for i, s in enumerate(sessions) if s.matches == s.matches),
    )
    total_matches += share * sum(
        int((first_rule == i).sum()) for i, s in enumerate(sessions) if s.matches != s.matches
    )
    # a field blocked in every session: one more EM over all pairs for it (biased, but the
    # only estimate there is)
    missing = [f for f in range(nf) if wsum[f] <= 0]
    if missing and levels.shape[1]:
        pats, counts, _ = patterns(levels)
        m_all, _u, _lam, _it, _c = em(pats, counts, n_levels, u, max_iter, tol)
        for f in missing:
            acc[f] = m_all[f].copy()
            wsum[f] = 1.0
    m_out = []
    for f in range(nf):
        v = acc[f] / wsum[f] if wsum[f] > 0 else np.full(n_levels[f], 1.0 / n_levels[f])
        m_out.append(v / v.sum())
    return m_out, total_matches, sessions
