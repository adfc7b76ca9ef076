"""Position-aware baselines and position-controlled similarity on planted data, the reconstruction rules
and position baselines shared by the real-data and synthetic checks, and the exact McNemar test against scipy."""
from __future__ import annotations

import itertools

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


# ---------------------------------------------------------------- the shared reconstruction rules and baselines


def _planted_weights(seed=3, N=60, L=2, H=3, n=6, C=3):
    rng = np.random.default_rng(seed)
    w = rng.random((N, L, H, n))
    w[0] = 0.0                                              # all-zero weights: every class ties
    w[1, :, :, :] = 1.0                                     # equal weights: the label counts decide
    labels = rng.integers(0, C, (N, n))
    return rng, w, labels


def test_reconstruction_rules_equal_a_direct_loop():
    rng, w, labels = _planted_weights()
    N, L, H, n = w.shape
    C = 3
    soft = A.reconstruct(w, labels, C, "soft")
    hard = A.reconstruct(w, labels, C, "argmax")
    assert soft.shape == (N, L, H, C) and hard.shape == (N, L, H)
    for k, l, h in itertools.product(range(N), range(L), range(H)):
        votes = [0.0] * C
        for i in range(n):
            votes[labels[k, i]] += w[k, l, h, i]
        assert soft[k, l, h].tolist() == votes              # same order of summation: equal to the bit
        assert hard[k, l, h] == votes.index(max(votes))     # ties to the lower class
    # one prompt with its own labels [n] gives the same as the batched form
    for k in range(3):
        np.testing.assert_array_equal(A.reconstruct(w[k], labels[k], C), hard[k])
        np.testing.assert_array_equal(A.reconstruct(w[k], labels[k], C, "soft"), soft[k])
    # per-prompt weights without head axes
    np.testing.assert_array_equal(A.reconstruct(w[:, 0, 0], labels, C, "soft"), soft[:, 0, 0])
    with pytest.raises(ValueError, match="reconstruction rule 'vote'"):
        A.reconstruct(w, labels, C, "vote")


def test_shared_position_baselines_equal_a_direct_loop():
    from scipy.stats import binomtest

    rng, w, labels = _planted_weights(4)
    N, L, H, n = w.shape
    C = 3
    sel, held = np.arange(0, N, 2), np.arange(1, N, 2)
    pb = A.position_baselines(w, labels, C, sel)
    # the profile: each head's mean weight per slot over the selection items, and its vote
    for l, h, i in itertools.product(range(L), range(H), range(n)):
        assert pb.profile[l, h, i] == pytest.approx(sum(w[k, l, h, i] for k in sel) / len(sel), rel=1e-12)
    for k, l, h in itertools.product(range(N), range(L), range(H)):
        votes = [sum(pb.profile[l, h, i] for i in range(n) if labels[k, i] == c) for c in range(C)]
        assert pb.position_vote[k, l, h] == int(np.argmax(votes))
    for k in range(N):
        counts = [list(labels[k]).count(c) for c in range(C)]
        assert pb.last_label[k] == labels[k, -1] and pb.majority[k] == counts.index(max(counts))
    np.testing.assert_array_equal(pb.recon, A.reconstruct(w, labels, C))
    target = rng.integers(0, C, N)
    assert A.most_frequent(target[held], C) == max(range(C), key=lambda c: (list(target[held]).count(c), -c))
    sc = A.score_baselines(pb, target, held, 1, 2, constant=1)
    t = target[held]
    head_ok = [pb.recon[k, 1, 2] == target[k] for k in held]
    rivals = {"last_label": [pb.last_label[k] for k in held], "position_vote": [pb.position_vote[k, 1, 2] for k in held],
              "majority_vote": [pb.majority[k] for k in held], "constant": [1] * len(held)}
    assert list(sc.versus) == list(A.BASELINES)
    for name, pred in rivals.items():
        ok = [p == y for p, y in zip(pred, t)]
        b = sum(a and not c for a, c in zip(head_ok, ok))
        c = sum(c and not a for a, c in zip(head_ok, ok))
        v = sc.versus[name]
        assert v.agreement == pytest.approx(sum(ok) / len(ok)) and (v.only_head, v.only_baseline) == (b, c)
        assert v.p_value == pytest.approx(1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue, rel=1e-12)
    assert sc.head.head_agreement == pytest.approx(sum(head_ok) / len(held))
    assert sc.head.position_agreement == sc.versus["position_vote"].agreement
    for l, h in itertools.product(range(L), range(H)):
        a = [pb.recon[k, l, h] == target[k] for k in held]
        p = [pb.position_vote[k, l, h] == target[k] for k in held]
        b = sum(x and not y for x, y in zip(a, p))
        c = sum(y and not x for x, y in zip(a, p))
        pv = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
        assert sc.kernel_like[l, h] == (sum(a) > sum(p) and pv < 0.05)
        assert sc.head_agreement[l, h] == pytest.approx(sum(a) / len(held))
        assert sc.position_vote_agreement[l, h] == pytest.approx(sum(p) / len(held))


def test_report_position_baselines_are_the_shared_ones():
    """The real-data report's results.json keys are read off the shared baselines."""
    from llm_check.realdata.report import position_baselines

    rng, w, labels = _planted_weights(5)
    N, C = w.shape[0], 3
    sel, held = np.arange(0, N, 2), np.arange(1, N, 2)
    yhat, gold = rng.integers(0, C, N), rng.integers(0, C, N)
    choice = A.select_head(A.head_accuracy(A.reconstruct(w, labels, C)[sel], yhat[sel]))
    r = position_baselines(w, labels, yhat, gold, sel, held, choice, C)
    pb = A.position_baselines(w, labels, C, sel)
    sc = A.score_baselines(pb, yhat, held, choice.layer, choice.head, A.most_frequent(yhat[held], C))
    assert r["reconstruction_rule"] == "argmax" and r["constant_fitted_on"] == "heldout"
    for key, name in (("last_label_agreement_heldout", "last_label"), ("majority_vote_agreement_heldout", "majority_vote"),
                      ("position_vote_agreement_heldout", "position_vote"), ("constant_agreement_heldout", "constant")):
        assert r[key] == sc.versus[name].agreement
    assert r["kernel_like_heads"] == int(sc.kernel_like.sum())
    assert r["last_label_accuracy_heldout"] == pytest.approx(np.mean(labels[held, -1] == gold[held]))
