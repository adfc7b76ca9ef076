"""GINC's prompt law (simulate/ginc.sample_prompts) against GINC's own 1000 reference prompts (k = 3):
lengths and layout, start slots, concept frequencies, the first demonstration's tokens and the label
rule. Two-sample chi-square tests at significance 1e-3 (cells pooled to expected counts >= 5), so
the thresholds come from sampling error; each test also checks that it can reject (a shifted law)."""
import os

import jax
import numpy as np
import pytest
from scipy import stats

from simulate import ginc as G

REF = "/work/shared/data/ginc/ginc_reference.npz"
pytestmark = pytest.mark.skipif(not os.path.isfile(REF), reason="GINC reference data not present")
ALPHA = 1e-3
K = 3


@pytest.fixture(scope="module")
def ref():
    z = np.load(REF)
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def idp():
    return G.load_reference(REF)[0]


@pytest.fixture(scope="module")
def ours(idp):
    """3000 of our ID prompts with n = 1 (k = 3): the first demonstration and x_test of each."""
    return G.sample_prompts(jax.random.PRNGKey(19), idp, K, 1, 3000)


def two_sample_p(a, b, cats):
    """p-value of the chi-square test that samples ``a`` and ``b`` (of categories ``cats``) share a law."""
    ca = np.array([np.sum(a == c) for c in cats], float)
    cb = np.array([np.sum(b == c) for c in cats], float)
    tot = ca + cb
    exp_small = np.minimum(tot * len(a) / (len(a) + len(b)), tot * len(b) / (len(a) + len(b))) < 5
    if exp_small.any():  # pool sparse cells into one
        ca = np.append(ca[~exp_small], ca[exp_small].sum())
        cb = np.append(cb[~exp_small], cb[exp_small].sum())
    keep = (ca + cb) > 0
    return stats.chi2_contingency(np.stack([ca[keep], cb[keep]]))[1]


def test_reference_layout_and_lengths(ref, idp):
    n, L, tok = ref["prompt_n"], ref["prompt_len"], ref["prompt_tok"]
    np.testing.assert_array_equal(L, n * (K + 1) + K - 1)
    for i in range(0, 1000, 13):
        seq = tok[i, :L[i]]
        assert np.all(seq[K:n[i] * (K + 1):K + 1] == 0)  # '/' after every demonstration
        np.testing.assert_array_equal(seq[-(K - 1):], ref["prompt_x"][i])
        assert np.all(tok[i, L[i]:] == -1)
    # ours, flattened the same way, for the same n
    for n_ in (0, 1, 4):
        pr = G.sample_prompts(jax.random.PRNGKey(n_), idp, K, n_, 5)
        toks, length = G.prompt_tokens(pr.demos_x, pr.demos_y, pr.x_test)
        assert length == n_ * (K + 1) + K - 1 and toks.shape == (5, length)
        assert np.all(toks[:, K:n_ * (K + 1):K + 1] == 0)


def test_start_slot_law(ref, ours, idp):
    S = idp.num_slots
    cats = np.arange(S)
    ref_slot, our_slot = ref["prompt_slot_pattern"][:, 0], np.asarray(ours.start_slot)
    assert our_slot.min() >= 1 and our_slot.max() <= S - 1
    assert two_sample_p(ref_slot, our_slot, cats) > ALPHA
    assert stats.chisquare(np.bincount(our_slot, minlength=S)[1:]).pvalue > ALPHA  # uniform on 1..S-1
    # the test can reject: start slot fixed to 1 (the old sampler) against GINC's
    assert two_sample_p(ref_slot, np.ones_like(our_slot), cats) < ALPHA
    # x_test starts at the start slot: its first token is emitted by a state at that slot
    for slot, x in ((ref_slot, ref["prompt_x"]), (our_slot, np.asarray(ours.x_test))):
        assert all(x[i, 0] in idp.memory[:, slot[i]] for i in range(len(slot)))


def test_concept_frequencies(ref, ours):
    cats = np.arange(5)
    assert two_sample_p(ref["prompt_hmm"], np.asarray(ours.concept), cats) > ALPHA
    assert stats.chisquare(np.bincount(np.asarray(ours.concept), minlength=5)).pvalue > ALPHA
    skew = np.asarray(ours.concept) % 3  # concepts 0..2 only: a law the test must reject
    assert two_sample_p(ref["prompt_hmm"], skew, cats) < ALPHA


def test_first_demonstration_and_x_test_tokens(ref, ours):
    """The chain's tokens: first token, sampled label (k-th token) of the first demonstration (one per
    prompt, so the draws are independent), and the two tokens of x_test."""
    cats = np.arange(50)
    has = ref["prompt_n"] >= 1
    demo = ref["prompt_tok"][has, :K]  # x_1 y_1 of every reference prompt with n >= 1
    ours_demo = np.concatenate([np.asarray(ours.demos_x)[:, 0], np.asarray(ours.demos_y)[:, :1]], -1)
    for j in range(K):
        assert two_sample_p(demo[:, j], ours_demo[:, j], cats) > ALPHA, f"token {j} of the first demonstration"
    for j in range(K - 1):
        assert two_sample_p(ref["prompt_x"][:, j], np.asarray(ours.x_test)[:, j], cats) > ALPHA
    # transition pairs inside the demonstration: (token 0, token 1) as one category
    pair_ref, pair_ours = demo[:, 0] * 50 + demo[:, 1], ours_demo[:, 0] * 50 + ours_demo[:, 1]
    assert two_sample_p(pair_ref, pair_ours, np.unique(np.concatenate([pair_ref, pair_ours]))) > ALPHA
    # the test can reject: a shifted token law
    shifted = (ours_demo[:, 1] + 1) % 50
    assert two_sample_p(demo[:, 1], shifted, cats) < ALPHA


def test_label_rule(ref, ours, idp):
    """The test label is the argmax over all symbols of GINC's score (the first maximum); the
    demonstrations' labels are sampled tokens, which differ from that argmax rule."""
    start = G.start_id(idp, ref["prompt_slot_pattern"][:, 0])
    o = G.oracle(idp, ref["prompt_x"], ref["prompt_hmm"], start)
    np.testing.assert_array_equal(np.asarray(o.label), ref["prompt_label"])
    np.testing.assert_array_equal(np.asarray(ours.label), np.argmax(np.asarray(ours.oracle), -1))
    # how often the label equals the sampled k-th token: same rate in GINC's data would need its
    # sampled tokens (not stored), so compare ours to the Oracle's own probability of its argmax
    hit = np.asarray(ours.label) == np.asarray(ours.sampled_y)
    pmax = np.asarray(ours.oracle).max(-1)
    se = np.sqrt(np.sum(pmax * (1 - pmax))) / len(pmax)
    assert abs(hit.mean() - pmax.mean()) < 3.3 * se  # binomial bound at about ALPHA
    assert hit.mean() < 1  # demonstration labels are samples, not argmaxes


def test_ood_law(idp):
    _, oodp = G.load_reference(REF)
    k, n = 5, 3
    pr = G.sample_prompts(jax.random.PRNGKey(3), oodp, k, n, 2000, law="ood")
    slots, values = np.asarray(pr.slots), np.asarray(pr.values)
    assert slots.shape == (2000, n + 1, k) and slots.min() >= 1 and slots.max() <= oodp.num_slots - 1
    assert np.all(values == values[..., :1])  # one value per example
    assert np.all(np.asarray(pr.start_slot) == -1)
    # each slot of the pattern uniform on 1..S-1, independently of position
    for j in range(k):
        assert stats.chisquare(np.bincount(slots[:, 0, j], minlength=oodp.num_slots)[1:]).pvalue > ALPHA
    assert stats.chisquare(np.bincount(values[:, 0, 0], minlength=oodp.num_values)).pvalue > ALPHA
    np.testing.assert_array_equal(np.asarray(pr.demos_x), oodp.memory[values[:, :n, :k - 1], slots[:, :n, :k - 1]])
