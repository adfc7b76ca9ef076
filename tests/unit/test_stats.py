"""Bootstrap bands in bounded memory: the blocked resamples are the dense matrix's draws."""
import numpy as np
import pytest

from simulate.metrics import loglog_slope
from theory import stats


@pytest.fixture
def small_limits(monkeypatch):
    """Force the blocked path at test sizes (dense limit 2000 entries, blocks of 300)."""
    monkeypatch.setattr(stats, "DENSE_RESAMPLE_LIMIT", 2000)
    monkeypatch.setattr(stats, "RESAMPLE_BLOCK", 300)


def test_blocked_resamples_equal_dense_counts(small_limits):
    rng = np.random.default_rng(1)
    for size in (57, 200, 401):  # 1..7 resamples per block, a short last block
        X = rng.normal(size=(size, 3))
        idx = np.random.default_rng(5).integers(0, size, size=(40, size))  # the draws, independently counted
        direct = np.stack([np.bincount(row, minlength=size) for row in idx]).astype(float)
        np.testing.assert_array_equal(stats.resample_counts(size, 40, 5), direct)
        dense = direct @ X
        blocked = stats.resample_matmul(size, X, 40, 5)  # 40 * size > 2000: blocked
        np.testing.assert_allclose(blocked, dense, rtol=1e-13, atol=1e-12)
        np.testing.assert_allclose(stats.resample_matmul(size, X[:, 0], 40, 5), dense[:, 0], rtol=1e-13, atol=1e-12)


def test_bootstrap_means_equal_bootstrap_mean(small_limits):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 4))
    X[5, 2] = np.nan  # a column with NaN: its own size, the single-column path
    many = stats.bootstrap_means(X, num=50)
    for c in range(4):
        one = stats.bootstrap_mean(X[:, c], num=50)
        assert many[c][3] == one[3] and many[c][0] == pytest.approx(one[0], rel=1e-14)
        np.testing.assert_allclose(many[c][1:3], one[1:3], rtol=1e-12)
    assert many[2][3] == 299


def test_dense_path_unchanged_and_slope_blocked_equals_dense(monkeypatch):
    """Below the limit bootstrap_mean is the cached matrix product bit for bit; loglog_slope's
    blocked path gives the dense path's band."""
    x = np.random.default_rng(3).normal(size=500)
    m, lo, hi, c = stats.bootstrap_mean(x)
    means = stats.resample_counts(500, 1000, 0) @ x / 500
    assert (lo, hi) == tuple(float(q) for q in np.quantile(means, [0.025, 0.975])) and c == 500
    ns = [1, 2, 4, 8]
    Y = np.abs(np.random.default_rng(4).normal(size=(4, 300))) / np.asarray(ns)[:, None]
    Y[1, 7] = np.nan
    dense = loglog_slope(ns, Y, num=60)
    monkeypatch.setattr(stats, "DENSE_RESAMPLE_LIMIT", 1000)
    monkeypatch.setattr(stats, "RESAMPLE_BLOCK", 700)
    np.testing.assert_allclose(loglog_slope(ns, Y, num=60), dense, rtol=1e-12)


def _holm_stepdown_rejections(p, alpha):
    """Holm's procedure as its definition states it: walk the sorted p-values, reject while
    p_(k) <= alpha / (m - k + 1), stop at the first that fails."""
    m = len(p)
    rejected = set()
    for k, i in enumerate(sorted(range(m), key=lambda j: p[j])):
        if p[i] <= alpha / (m - k):
            rejected.add(i)
        else:
            break
    return rejected


def test_holm_adjusted_p_values_reproduce_the_step_down_procedure():
    rng = np.random.default_rng(0)
    for _ in range(300):
        m = int(rng.integers(1, 12))
        p = rng.uniform(0, 1, m) ** rng.uniform(1, 6)  # many small p-values
        if rng.random() < 0.3:
            p[rng.integers(m)] = p[0]  # ties
        adj = stats.holm(p)
        assert np.all(adj >= p - 1e-15) and np.all(adj <= 1.0)
        assert adj.min() == pytest.approx(min(1.0, m * p.min()))
        for alpha in (0.001, 0.01, 0.05, 0.2, float(rng.uniform(0, 1))):
            assert {i for i in range(m) if adj[i] <= alpha} == _holm_stepdown_rejections(p, alpha)
    assert stats.holm([0.03]).tolist() == [0.03]
    with pytest.raises(ValueError, match="p-values"):
        stats.holm([0.5, 1.5])
