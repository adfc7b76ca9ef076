"""Reconstruction, alignment, correlation, probe and kernel-regression maths on synthetic arrays."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llm_check.realdata import analysis as A


def _toy():
    # One prompt: S = 14, two demonstrations. x spans [2,5) and [8,10), y at 6 and 11, blocks [0,7) and [7,12).
    L, H, S = 2, 3, 14
    rng = np.random.default_rng(0)
    rows = rng.random((L, H, S))
    rows /= rows.sum(-1, keepdims=True)
    xs = np.array([[2, 5], [8, 10]])
    ys = np.array([[6, 7], [11, 12]])
    bs = np.array([[0, 7], [7, 12]])
    return rows, xs, ys, bs


def test_kernel_weights_against_loops():
    rows, xs, ys, bs = _toy()
    for mode, span, sink in itertools.product(A.WEIGHT_MODES, A.SPAN_MODES, (False, True)):
        w = A.kernel_weights(rows, xs, ys, bs, mode, span, sink)
        assert w.shape == (2, 3, 2)
        for l, h, i in itertools.product(range(2), range(3), range(2)):
            r = rows[l, h].copy()
            if sink:
                r[0] = 0
            if mode == "at_y":
                want = r[ys[i, 0]]
            else:
                a = bs[i, 0] if span == "block" else xs[i, 0]
                seg = [r[t] for t in range(a, ys[i, 1])]
                want = {"max": max(seg), "sum": sum(seg), "mean": sum(seg) / len(seg)}[mode]
            assert w[l, h, i] == pytest.approx(want)
    # The sink matters only for spans that contain position 0.
    assert not np.allclose(A.kernel_weights(rows, xs, ys, bs, "sum", "block", True)[..., 0],
                           A.kernel_weights(rows, xs, ys, bs, "sum", "block", False)[..., 0])
    assert np.allclose(A.kernel_weights(rows, xs, ys, bs, "sum", "xy", True),
                       A.kernel_weights(rows, xs, ys, bs, "sum", "xy", False))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=8), st.data())
def test_reconstruct_matches_bruteforce(weights, data):
    n = len(weights)
    labels = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    got = A.reconstruct(np.array(weights), labels, 3)
    votes = [sum(w for w, y in zip(weights, labels) if y == c) for c in range(3)]
    best = max(votes)
    assert votes[int(got)] == best and int(got) == votes.index(best)


def test_reconstruct_per_head_and_accuracy():
    w = np.array([[[0.9, 0.1, 0.1], [0.1, 0.5, 0.6]]])  # L=1, H=2, n=3
    labels = np.array([1, 0, 0])
    r = A.reconstruct(w, labels, 2)
    assert r.tolist() == [[1, 0]]
    recon = np.stack([r, r, np.array([[0, 0]])])  # N = 3
    acc = A.head_accuracy(recon, np.array([1, 1, 0]))
    assert acc.tolist() == [[1.0, pytest.approx(1 / 3)]]  # head 1 predicts 0 three times
    ch = A.select_head(acc)
    assert (ch.layer, ch.head) == (0, 0) and ch.select_agreement == 1.0


def test_selection_split():
    s, h = A.selection_split(1324)
    assert len(s) == 700 and len(h) == 300 and s[-1] + 1 == h[0]
    s, h = A.selection_split(872)
    assert len(s) + len(h) == 872 and len(s) == 610 and set(s).isdisjoint(h)
    s, h = A.selection_split(2)
    assert len(s) == 1 and len(h) == 1
    with pytest.raises(ValueError, match="at least 2"):
        A.selection_split(1)


def test_rescale_and_aligned_map():
    v = np.array([0.0, 1.0, 4.0])
    r = A.rescale(v, 5)
    assert r.tolist() == pytest.approx([0.0, 0.5, 1.0, 2.5, 4.0])
    assert A.rescale(np.array([3.0]), 4).tolist() == [3.0] * 4
    rows, xs, ys, _ = _toy()
    ts = np.array([13, 14])  # x_test covers the last token; query is 13
    out, codes = A.aligned_map(rows, xs, ys, ts, 13, x_len=30)
    # prefix 2 + (30 + 3 gap) + (30 + 3 gap) + 30 test + 0 tail
    assert out.shape == (2, 3, 2 + 33 + 33 + 30) and codes.shape == (98,)
    assert (codes == 3).sum() == 2 and (codes == 1).sum() == 60 and (codes == 2).sum() == 30
    # y positions carry the original attention on y
    ypos = np.nonzero(codes == 3)[0]
    assert np.allclose(out[..., ypos[0]], rows[..., 6]) and np.allclose(out[..., ypos[1]], rows[..., 11])
    # end points of each rescaled x keep the original first/last values
    assert np.allclose(out[..., 2], rows[..., 2]) and np.allclose(out[..., 31], rows[..., 4])


def test_pearson_matches_numpy():
    rng = np.random.default_rng(1)
    attn = rng.random((5, 2, 3, 4))
    sim = rng.random((5, 4))
    r = A.pearson_per_head(attn, sim)
    for l, h in itertools.product(range(2), range(3)):
        assert r[l, h] == pytest.approx(np.corrcoef(attn[:, l, h, :].ravel(), sim.ravel())[0, 1])
    attn[:, 0, 0, :] = 1.0
    assert np.isnan(A.pearson_per_head(attn, sim)[0, 0])


def test_prediction_similarity():
    p = np.array([[0.5, 0.5, 0.0]])
    q = np.array([[[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])
    assert A.prediction_similarity(p, q).tolist() == [[0.5, 0.0]]


def test_ridge_probe_separable_and_chance():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 600)
    centers = rng.normal(size=(3, 16)) * 3
    x = centers[y] + rng.normal(size=(600, 16))
    assert A.ridge_probe(x[:400], y[:400], x[400:], y[400:]) > 0.95
    xr = rng.normal(size=(600, 16))
    assert A.ridge_probe(xr[:400], y[:400], xr[400:], y[400:]) < 0.5
    # Closed form agrees with numpy lstsq on an augmented system when lam -> 0.
    Y = np.eye(3)[y[:400]]
    Xa = np.c_[x[:400], np.ones(400)]
    W = np.linalg.lstsq(Xa, Y, rcond=None)[0]
    pred = np.argmax(np.c_[x[400:], np.ones(200)] @ W, 1)
    assert A.ridge_probe(x[:400], y[:400], x[400:], y[400:], lam=1e-9) == pytest.approx(np.mean(pred == y[400:]))


def test_kernel_regression_limits():
    rng = np.random.default_rng(3)
    et = rng.normal(size=(4, 8))
    ed = rng.normal(size=(4, 5, 8))
    ed[:, 2] = et * 2.0  # demo 2 is the nearest (cosine 1)
    labels = rng.integers(0, 2, (4, 5))
    nn = A.kernel_regression(et, ed, labels, 2, tau=1e-4)
    assert nn.tolist() == labels[:, 2].tolist()
    wide = A.kernel_regression(et, ed, labels, 2, tau=1e6)
    majority = [int(np.argmax(np.bincount(r, minlength=2))) for r in labels]
    assert wide.tolist() == majority


def test_bootstrap_ci_brackets_mean():
    c = np.r_[np.ones(70), np.zeros(30)]
    lo, hi = A.bootstrap_ci(c)
    assert lo < 0.7 < hi and 0.55 < lo and hi < 0.85
