"""Fellegi–Sunter: EM recovers known parameters; u from random pairs; weights and probability."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa

from romirecon.dedup import fs
from romirecon.dedup.comparisons import field_data
from romirecon.dedup.spec import FieldSpec


def test_em_recovers_known_mixture() -> None:
    # Three conditionally independent binary fields (level 0 disagree, 1 agree). Pattern counts
    # are the exact expectations of the mixture lam * prod(m) + (1 - lam) * prod(u) over 10^6
    # pairs, so EM's fixed point is the generating parameters (3 binary fields identify a
    # 2-class latent model).
    lam = 0.2
    m = [np.array([0.1, 0.9]), np.array([0.2, 0.8]), np.array([0.05, 0.95])]
    u = [np.array([0.8, 0.2]), np.array([0.7, 0.3]), np.array([0.9, 0.1])]
    pats = np.array(list(itertools.product([0, 1], repeat=3)), dtype=np.int8)
    counts = np.array(
        [
            1e6
            * (
                lam * np.prod([m[f][g] for f, g in enumerate(p)])
                + (1 - lam) * np.prod([u[f][g] for f, g in enumerate(p)])
            )
            for p in pats
        ]
    )
    # start u off the truth (as random-pair estimates would be) to show EM moves it
    u0 = [np.array([0.85, 0.15]), np.array([0.75, 0.25]), np.array([0.92, 0.08])]
    m_hat, u_hat, lam_hat, iters, converged = fs.em(
        pats, counts, [2, 2, 2], u0, max_iter=5000, tol=1e-10
    )
    assert converged and iters > 1
    assert abs(lam_hat - lam) < 1e-3
    for f in range(3):
        np.testing.assert_allclose(m_hat[f], m[f], atol=2e-3)
        np.testing.assert_allclose(u_hat[f], u[f], atol=2e-3)


def test_em_ignores_null_levels() -> None:
    # the same mixture with field 2 NULL (-1) in every pattern: fields 0/1 alone still give a
    # fixed point; the NULL field must not move and must not crash
    pats = np.array([[0, 0, -1], [0, 1, -1], [1, 0, -1], [1, 1, -1]], dtype=np.int8)
    counts = np.array([600.0, 100.0, 100.0, 200.0])
    m_hat, _, lam_hat, _, _ = fs.em(pats, counts, [2, 2, 2], [np.array([0.8, 0.2])] * 3)
    assert 0 < lam_hat < 1
    # no evidence on field 2: its m is the smoothed uniform share
    np.testing.assert_allclose(m_hat[2], [0.5, 0.5])


def test_u_from_random_pairs_matches_value_frequencies() -> None:
    # 1000 records, 500 'a' and 500 'b': two distinct random records agree with probability
    # 2 * (500 * 499) / (1000 * 999) = 0.4995
    fd = field_data(FieldSpec("x", "exact"), pa.array(["a", "b"] * 500))
    u, n_pairs = fs.estimate_u([fd], 1000, 200_000, seed=1)
    assert n_pairs == 200_000
    assert abs(u[0][1] - 0.4995) < 0.01


def test_random_pairs_never_pair_a_record_with_itself() -> None:
    left, right = fs.random_pairs(5, 10_000, seed=3)
    assert (left != right).all() and left.min() >= 0 and right.max() <= 4


def test_weights_and_probability() -> None:
    model = fs.FSModel(
        [FieldSpec("a", "exact"), FieldSpec("b", "exact")],
        m=[np.array([0.1, 0.9]), np.array([0.2, 0.8])],
        u=[np.array([0.9, 0.1]), np.array([0.8, 0.2])],
        prior=1 / 9,  # prior odds 1:8 -> -3 bits
    )
    pats = np.array([[1, 1], [0, -1]], dtype=np.int8)
    w = fs.pattern_weights(model, pats)
    # [1,1]: -3 + log2(0.9/0.1) + log2(0.8/0.2) = -3 + 3.1699 + 2 = 2.1699
    # [0,-1]: -3 + log2(0.1/0.9) = -3 - 3.1699 = -6.1699 (NULL field adds nothing)
    np.testing.assert_allclose(w, [2.169925, -6.169925], atol=1e-6)
    p = fs.probability(np.array([0.0, 1.0, -1.0]))
    np.testing.assert_allclose(p, [0.5, 2 / 3, 1 / 3])


def test_term_frequency_adjustment() -> None:
    # 'smith' is 3 of 4 records, 'zab' 1 of 4. u_exact = 0.25. An exact agreement on 'smith'
    # is adjusted by log2(0.25 / 0.75) = -1.585 bits; on 'zab' by log2(0.25 / 0.25) = 0.
    fd = field_data(FieldSpec("x", "name", tf=True), pa.array(["smith", "smith", "smith", "zab"]))
    model = fs.FSModel(
        [fd.spec], [np.array([0.1, 0.1, 0.1, 0.7])], [np.array([0.6, 0.1, 0.05, 0.25])], prior=0.01
    )
    left = np.array([0, 3], dtype=np.int32)
    right = np.array([1, 3], dtype=np.int32)
    lev = np.array([[3, 3]], dtype=np.int8)
    adj = fs.tf_adjustment([fd], model, left, right, lev)
    np.testing.assert_allclose(adj, [np.log2(0.25 / 0.75), 0.0])


def test_model_json_round_trip() -> None:
    model = fs.FSModel(
        [FieldSpec("a", "name", True)],
        [np.array([0.1, 0.2, 0.3, 0.4])],
        [np.array([0.7, 0.1, 0.1, 0.1])],
        prior=1e-4,
        lambda_candidates=0.3,
    )
    back = fs.FSModel.from_json(model.to_json())
    assert back.fields == model.fields and back.prior == model.prior
    np.testing.assert_allclose(back.m[0], model.m[0])
