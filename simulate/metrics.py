"""Distances, agreement, bootstrap bands and rate fits (numpy; deterministic)."""
from __future__ import annotations

import numpy as np

from theory.stats import bootstrap_mean, bootstrap_means, resample_matmul  # noqa: F401  (re-exported: one bootstrap for both halves)


def l1(a, b):
    """L1 distance over the last axis (NaN where either side is not finite)."""
    out = np.abs(np.asarray(a) - np.asarray(b)).sum(-1)
    bad = ~(np.isfinite(a).all(-1) & np.isfinite(b).all(-1))
    return np.where(bad, np.nan, out)


def argmax_agree(a, b):
    """1.0 where argmax over the last axis agrees, NaN where either side is not finite."""
    bad = ~(np.isfinite(a).all(-1) & np.isfinite(b).all(-1))
    eq = (np.argmax(np.nan_to_num(a, nan=-np.inf), -1) == np.argmax(np.nan_to_num(b, nan=-np.inf), -1)).astype(float)
    return np.where(bad, np.nan, eq)


def _ols_slopes(X, M):
    """Least-squares slope of log(M) on X per row of ``M [R, G]`` over the entries that are finite
    and > 0 (NaN where fewer than two are)."""
    ok = np.isfinite(M) & (M > 0)
    w = ok.astype(float)
    Y = np.log(np.where(ok, M, 1.0))
    cnt = w.sum(1)
    safe = np.maximum(cnt, 1)
    xm = (w * X).sum(1) / safe
    ym = (w * Y).sum(1) / safe
    dx = np.where(ok, X - xm[:, None], 0.0)
    sxx = (dx * dx).sum(1)
    slope = (dx * (Y - ym[:, None])).sum(1) / np.where(sxx > 0, sxx, 1.0)
    return np.where((cnt >= 2) & (sxx > 0), slope, np.nan)


def loglog_slope(ns, per_prompt, num: int = 1000, level: float = 0.95, seed: int = 0):
    """Least-squares slope of log(mean error) on log(n), with a bootstrap band over prompts.

    ``per_prompt [G, P]`` (NaN allowed). Returns (slope, lo, hi). The ``num`` resamples of the
    prompts are :func:`theory.stats.resample_matmul`'s (means by one matrix product each, NaNs left
    out of each mean as ``nanmean`` does).
    """
    X = np.log(np.asarray(ns, float))
    Y = np.asarray(per_prompt, float)
    fin = np.isfinite(Y)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = float(_ols_slopes(X, (np.where(fin, Y, 0).sum(1) / fin.sum(1))[None])[0])
        G, P = Y.shape
        # sums and counts of the same resamples in one product (the draws are made once)
        both = resample_matmul(P, np.concatenate([np.where(fin, Y, 0.0), fin]).T, num, seed)  # [num, 2G]
        boot_means = both[:, :G] / both[:, G:]
    boots = _ols_slopes(X, boot_means)
    boots = boots[np.isfinite(boots)]
    a = (1 - level) / 2
    if boots.size == 0:
        return s, float("nan"), float("nan")
    lo, hi = np.quantile(boots, [a, 1 - a])
    return s, float(lo), float(hi)
