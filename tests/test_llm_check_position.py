"""Position-aware baselines and position-controlled similarity on planted data (issue 12), and the
exact McNemar test against scipy."""
from __future__ import annotations

import numpy as np
import pytest

from llm_check.realdata import analysis as A
from theory.stats import bootstrap_mean, mcnemar_exact

N, L, H, n, C = 400, 2, 3, 8, 2


def _planted(seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, (N, n))
    # a similarity that itself rises with position (so position confounds a raw correlation)
    sim = np.linspace(0.0, 1.0, n)[None, :] + rng.normal(0, 0.3, (N, n))
    profile = np.exp(np.linspace(-2.0, 1.0, n))            # recency: weight grows with position
    return rng, labels, sim, profile


def test_position_only_attention_matches_the_position_vote_and_has_no_within_position_correlation():
    rng, labels, sim, profile = _planted()
    exact = np.broadcast_to(profile, (N, L, H, n)).copy()  # attention depends only on position
    recon = np.argmax(np.einsum("nlhi,nic->nlhc", exact, np.eye(C)[labels]), -1)
    pv = A.position_vote(A.position_profile(exact[: N // 2]), labels, C)
    np.testing.assert_array_equal(recon, pv)               # the same predictions, so the same agreement
    target = rng.integers(0, C, N)
    hv = A.head_vs_position(recon[N // 2:, 0, 0], pv[N // 2:, 0, 0], target[N // 2:])
    assert hv.head_agreement == hv.position_agreement and hv.p_value == 1.0 and not hv.kernel_like
    noisy = exact + rng.normal(0, 0.01, exact.shape)       # content-blind noise on top of position
    pc = A.position_controlled_corr(noisy, sim, n_perm=50)
    assert np.all(pc.r_raw > 0.5)                          # position makes the raw correlation large
    assert np.all(np.abs(pc.r_within) < 0.06)              # and removing it leaves ≈ 0
    assert np.all(pc.p_within > 0.01)


def test_attention_equal_to_a_similarity_kernel_correlates_one_before_and_after():
    rng, labels, sim, _ = _planted(1)
    attn = np.broadcast_to(2.0 * sim + 0.5, (L, H, N, n)).transpose(2, 0, 1, 3)
    pc = A.position_controlled_corr(attn, sim, n_perm=20)
    np.testing.assert_allclose(pc.r_raw, 1.0, atol=1e-12)
    np.testing.assert_allclose(pc.r_within, 1.0, atol=1e-12)
    assert np.all(pc.p_within == 1 / 21)                    # no shuffle reaches it
    # a per-layer similarity ([N, L, n]): layer 0 is the kernel, layer 1 is unrelated noise
    per_layer = np.stack([sim, rng.normal(size=sim.shape)], axis=1)
    pc2 = A.position_controlled_corr(attn, per_layer, n_perm=20)
    np.testing.assert_allclose(pc2.r_within[0], 1.0, atol=1e-12)
    assert np.all(np.abs(pc2.r_within[1]) < 0.1)


def test_a_content_head_beats_the_position_vote():
    rng, labels, sim, profile = _planted(2)
    nearest = np.argmax(sim, axis=1)
    target = labels[np.arange(N), nearest]                  # ŷ follows the most similar demonstration
    attn = np.broadcast_to(np.exp(8 * sim), (L, H, N, n)).transpose(2, 0, 1, 3)
    recon = np.argmax(np.einsum("nlhi,nic->nlhc", attn, np.eye(C)[labels]), -1)
    pv = A.position_vote(A.position_profile(attn[: N // 2]), labels, C)
    hv = A.head_vs_position(recon[N // 2:, 0, 0], pv[N // 2:, 0, 0], target[N // 2:])
    assert hv.head_agreement > hv.position_agreement and hv.p_value < 1e-3 and hv.kernel_like


def test_baseline_labels():
    labels = np.array([[0, 1, 1], [2, 2, 0], [1, 0, 2]])
    assert A.last_label(labels).tolist() == [1, 0, 2]
    assert A.majority_label(labels, 3).tolist() == [1, 2, 0]   # a three-way tie goes to class 0
    assert A.follow_rate(np.array([1, 0, 0]), A.last_label(labels)) == pytest.approx(2 / 3)


@pytest.mark.parametrize("b,c", [(0, 0), (3, 0), (10, 4), (7, 7), (1, 25), (40, 61)])
def test_mcnemar_exact_matches_scipy_binomtest(b, c):
    from scipy.stats import binomtest

    a = np.r_[np.ones(b, bool), np.zeros(c, bool), np.ones(5, bool), np.zeros(3, bool)]
    d = np.r_[np.zeros(b, bool), np.ones(c, bool), np.ones(5, bool), np.zeros(3, bool)]
    bb, cc, p = mcnemar_exact(a, d)
    assert (bb, cc) == (b, c)
    want = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert p == pytest.approx(want, rel=1e-12)


def test_bootstrap_mean_is_the_shared_one():
    from simulate import metrics

    assert metrics.bootstrap_mean is bootstrap_mean
    x = np.r_[np.ones(70), np.zeros(30)]
    m, lo, hi, k = bootstrap_mean(x)
    assert (m, k) == (0.7, 100) and A.bootstrap_ci(x) == (lo, hi)


def test_kernel_like_verdicts_need_every_baseline_and_holm():
    from llm_check.realdata.report import BASELINE_KEYS, kernel_like_verdicts
    from theory.stats import holm

    def run(agree, p, **base):
        r = {"reconstruction_agreement_heldout": agree, "head_vs_position": {"mcnemar_p": p},
             "head_vs_baselines": {k: {"mcnemar_p": p} for k in ("last_label", "position_vote", "majority_vote",
                                                                  "constant")}}
        r.update({k: 0.5 for k in BASELINE_KEYS})
        r.update(base)
        return r

    res = [run(0.8, 0.001),                                   # beats all, survives Holm
           run(0.8, 0.04),                                    # p < 0.05 alone, not after Holm
           run(0.8, 0.045),                                   # idem
           run(0.8, 1e-6, constant_agreement_heldout=0.9),   # loses to the constant prediction
           {"reconstruction_agreement_heldout": 0.9, "head_vs_position": {"mcnemar_p": 1e-9},
            **{k: 0.5 for k in BASELINE_KEYS}}]               # an old run without the per-baseline tests
    out = kernel_like_verdicts(res)
    adj = holm([0.001, 0.04, 0.045, 1e-6])
    assert [a for a, _ in out[:4]] == pytest.approx(adj.tolist())
    assert adj[1] > 0.05 and adj[2] > 0.05
    assert [b for _, b in out] == [True, False, False, False, None]
    assert out[4] == (None, None)
    # a tie with a baseline is not a win
    assert kernel_like_verdicts([run(0.5, 1e-9)])[0][1] is False
    # with the per-baseline tests, the weakest win decides
    r = run(0.8, 1e-9)
    r["head_vs_baselines"] = {k: {"mcnemar_p": p} for k, p in
                              zip(("last_label", "position_vote", "majority_vote", "constant"), (0.2, 1e-9, 1e-9, 1e-9))}
    assert kernel_like_verdicts([r]) == [(0.2, False)]
