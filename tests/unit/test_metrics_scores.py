"""simulate.metrics' predictor scores, NaN-aware means and per-row correlations against direct loops."""
from __future__ import annotations

import numpy as np
import pytest

from simulate import metrics


def test_predictor_metrics_equal_a_loop_and_propagate_nan():
    rng = np.random.default_rng(0)
    P, G, Y = 9, 3, 4
    pred, bayes = rng.dirichlet(np.ones(Y), (P, G)), rng.dirichlet(np.ones(Y), (P, G))
    oracle = rng.dirichlet(np.ones(Y), P)
    pred[2, 1, 0] = np.nan                                    # one broken prediction
    m = metrics.predictor_metrics(pred, bayes, oracle)
    assert set(m) == {"l1_bayes", "l1_oracle", "acc_oracle", "agree_bayes"}
    for p in range(P):
        for g in range(G):
            if (p, g) == (2, 1):
                assert all(np.isnan(v[p, g]) for v in m.values())
                continue
            assert m["l1_bayes"][p, g] == pytest.approx(sum(abs(pred[p, g, y] - bayes[p, g, y]) for y in range(Y)))
            assert m["l1_oracle"][p, g] == pytest.approx(sum(abs(pred[p, g, y] - oracle[p, y]) for y in range(Y)))
            assert m["acc_oracle"][p, g] == float(np.argmax(pred[p, g]) == np.argmax(oracle[p]))
            assert m["agree_bayes"][p, g] == float(np.argmax(pred[p, g]) == np.argmax(bayes[p, g]))
    means = metrics.column_means(m["l1_bayes"])
    for g in range(G):
        vals = [m["l1_bayes"][p, g] for p in range(P) if (p, g) != (2, 1)]
        assert means[g] == pytest.approx(sum(vals) / len(vals))
    assert np.isnan(metrics.column_means(np.full((3, 2), np.nan))).all()
    assert metrics.finite_mean([1.0, np.nan, 3.0, np.inf]) == 2.0 and np.isnan(metrics.finite_mean([np.nan]))
    x = rng.random(37)
    assert metrics.finite_mean(x) == float(x.mean())          # no non-finite entries: the plain mean, to the bit
    np.testing.assert_array_equal(metrics.column_means(x.reshape(37, 1))[0], x.mean())


def test_row_correlations_match_numpy_and_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    a, b = rng.random((6, 8)), rng.random((6, 8))
    a[0] = 0.25                                                # a constant row has no correlation
    r = metrics.pearson_rows(a, b)
    assert np.isnan(r[0])
    np.testing.assert_allclose(r[1:], [np.corrcoef(a[i], b[i])[0, 1] for i in range(1, 6)], atol=1e-12)
    ties = rng.integers(0, 3, (6, 8)).astype(float)
    np.testing.assert_allclose(metrics.average_ranks(ties), stats.rankdata(ties, axis=-1) - 1)
    want = [stats.spearmanr(ties[i], b[i]).statistic for i in range(6)]
    np.testing.assert_allclose(metrics.spearman_rows(ties, b), want, atol=1e-12)
