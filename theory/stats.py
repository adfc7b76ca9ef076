"""Small statistics shared by the simulator and the LLM harness (numpy; deterministic)."""
from __future__ import annotations

import functools
import math

import numpy as np


@functools.lru_cache(maxsize=16)
def resample_counts(size: int, num: int = 1000, seed: int = 0) -> np.ndarray:
    """How often each of ``size`` items is drawn in each of ``num`` bootstrap resamples, ``[num, size]``.

    The draws are ``default_rng(seed).integers(0, size, (num, size))`` (the same stream as ``num``
    successive draws of ``size``); a resample's mean of ``x`` is then ``counts @ x / size``, one
    matrix product for every resample instead of a gather. Cached (read-only) per argument set.
    """
    counts = _draw_counts(np.random.default_rng(seed), num, size)
    counts.setflags(write=False)
    return counts


def _draw_counts(rng: np.random.Generator, rows: int, size: int) -> np.ndarray:
    """The next ``rows`` resamples of ``size`` items from ``rng``, as counts ``[rows, size]`` float."""
    idx = rng.integers(0, size, size=(rows, size)) + (np.arange(rows) * size)[:, None]
    return np.bincount(idx.ravel(), minlength=rows * size).reshape(rows, size).astype(float)


DENSE_RESAMPLE_LIMIT = 2**24  # entries of [num, size] up to which the count matrix is built whole and cached
RESAMPLE_BLOCK = 2**21        # entries per block of resamples beyond it (about 50 MB of temporaries)


def resample_matmul(size: int, X, num: int = 1000, seed: int = 0) -> np.ndarray:
    """``resample_counts(size, num, seed) @ X`` for ``X [size]`` or ``[size, M]``, in bounded memory.

    Up to :data:`DENSE_RESAMPLE_LIMIT` entries it is exactly that product (the cached matrix). Beyond
    (e.g. 10⁵ prompts x 1000 resamples: 800 MB per matrix), the same draws are made a block of
    resamples at a time (successive ``integers`` calls continue the one stream), counted, multiplied
    and dropped: the same counts, the product equal to rounding, memory O(RESAMPLE_BLOCK), nothing cached.
    """
    X = np.asarray(X, float)
    if X.shape[0] != size:
        raise ValueError(f"X has {X.shape[0]} rows, expected {size}")
    if size * num <= DENSE_RESAMPLE_LIMIT:
        return resample_counts(size, num, seed) @ X
    rng = np.random.default_rng(seed)
    rows = max(1, RESAMPLE_BLOCK // size)
    out = np.empty((num, *X.shape[1:]))
    for a in range(0, num, rows):
        r = min(rows, num - a)
        out[a:a + r] = _draw_counts(rng, r, size) @ X
    return out


def bootstrap_mean(x, num: int = 1000, level: float = 0.95, seed: int = 0):
    """Mean of ``x`` (NaNs dropped) and its percentile bootstrap band. Returns (mean, lo, hi, count)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    means = resample_matmul(x.size, x, num, seed) / x.size
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(x.mean()), float(lo), float(hi), int(x.size)


def bootstrap_means(X, num: int = 1000, level: float = 0.95, seed: int = 0) -> list:
    """:func:`bootstrap_mean` of every column of ``X [size, M]`` with one set of resamples.

    For columns with NaNs (their own sizes) and below :data:`DENSE_RESAMPLE_LIMIT` it is
    :func:`bootstrap_mean` column by column (the same numbers bit for bit); above it, the finite
    columns share one blocked pass of draws (same draws, products equal to rounding).
    """
    X = np.asarray(X, float)
    size, M = X.shape
    fin = np.isfinite(X).all(0)
    out: list = [None] * M
    if size * num > DENSE_RESAMPLE_LIMIT and fin.any():
        cols = np.flatnonzero(fin)
        means = resample_matmul(size, X[:, cols], num, seed) / size
        a = (1 - level) / 2
        q = np.quantile(means, [a, 1 - a], axis=0)
        for j, c in enumerate(cols):
            out[c] = (float(X[:, c].mean()), float(q[0, j]), float(q[1, j]), int(size))
    return [o if o is not None else bootstrap_mean(X[:, c], num, level, seed) for c, o in enumerate(out)]


def mcnemar_exact(a_correct, b_correct) -> tuple[int, int, float]:
    """Exact (binomial) two-sided McNemar test of paired 0/1 outcomes ``a_correct[N]``, ``b_correct[N]``.

    Returns ``(b, c, p)``: b = items where only A is right, c = items where only B is right, and
    p = min(1, 2 P[Bin(b + c, 1/2) <= min(b, c)]) (1.0 when b + c = 0).
    """
    a = np.asarray(a_correct, bool)
    b_ = np.asarray(b_correct, bool)
    if a.shape != b_.shape:
        raise ValueError(f"paired outcomes of shapes {a.shape} and {b_.shape}; expected equal shapes")
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    m = b + c
    if m == 0:
        return b, c, 1.0
    k = min(b, c)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2.0 ** m
    return b, c, float(min(1.0, 2.0 * tail))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values for ``p_values[m]`` (family-wise error over m tests).

    With p_(1) <= ... <= p_(m): adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)), returned in the
    input order. Rejecting every test with adj <= alpha is Holm's procedure at level alpha.
    """
    p = np.asarray(p_values, float)
    if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must be a 1-D array in [0, 1]; got {p_values!r}")
    m = p.size
    order = np.argsort(p, kind="stable")
    adj_sorted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj_sorted
    return out
