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
    idx = np.random.default_rng(seed).integers(0, size, size=(num, size))
    counts = np.zeros((num, size))
    np.add.at(counts, (np.arange(num)[:, None], idx), 1.0)
    counts.setflags(write=False)
    return counts


def bootstrap_mean(x, num: int = 1000, level: float = 0.95, seed: int = 0):
    """Mean of ``x`` (NaNs dropped) and its percentile bootstrap band. Returns (mean, lo, hi, count)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    means = resample_counts(x.size, num, seed) @ x / x.size
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(x.mean()), float(lo), float(hi), int(x.size)


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
