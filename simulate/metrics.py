"""Distances, agreement, bootstrap bands and rate fits (numpy; deterministic)."""
from __future__ import annotations

import numpy as np

from theory.stats import bootstrap_mean  # noqa: F401  (re-exported: one bootstrap for both halves)


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


def loglog_slope(ns, per_prompt, num: int = 1000, level: float = 0.95, seed: int = 0):
    """Least-squares slope of log(mean error) on log(n), with a bootstrap band over prompts.

    ``per_prompt [G, P]`` (NaN allowed). Returns (slope, lo, hi).
    """
    ns = np.asarray(ns, float)
    X = np.log(ns)
    Y = np.asarray(per_prompt, float)

    def fit(m):
        ok = np.isfinite(m) & (m > 0)
        if ok.sum() < 2:
            return np.nan
        return float(np.polyfit(X[ok], np.log(m[ok]), 1)[0])

    s = fit(np.nanmean(Y, 1))
    rng = np.random.default_rng(seed)
    P = Y.shape[1]
    boots = [fit(np.nanmean(Y[:, rng.integers(0, P, P)], 1)) for _ in range(num)]
    boots = np.asarray(boots)
    boots = boots[np.isfinite(boots)]
    a = (1 - level) / 2
    if boots.size == 0:
        return s, float("nan"), float("nan")
    return s, float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))
