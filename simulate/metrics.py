"""Distances, agreement, correlations, NaN-aware means, bootstrap bands and rate fits (numpy; deterministic)."""
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


def predictor_metrics(pred, bayes, oracle) -> dict:
    """Per-prompt scores of one predictor's label distribution (NaN where either side is not finite).

    ``pred, bayes [P, G, |Y|]``, ``oracle [P, |Y|]`` → ``[P, G]`` each: ``l1_bayes``, ``l1_oracle``,
    ``acc_oracle`` (argmax agreement with the Oracle), ``agree_bayes`` (argmax agreement with Bayes).
    """
    pred, bayes = np.asarray(pred, float), np.asarray(bayes, float)
    oracle = np.asarray(oracle, float)[:, None]
    return dict(l1_bayes=l1(pred, bayes), l1_oracle=l1(pred, oracle),
                acc_oracle=argmax_agree(pred, oracle), agree_bayes=argmax_agree(pred, bayes))


def column_means(x) -> np.ndarray:
    """Mean over axis 0 with the non-finite entries left out (NaN where a column has none): ``[P, ...] -> [...]``."""
    x = np.asarray(x, float)
    ok = np.isfinite(x)
    cnt = ok.sum(0)
    return np.where(cnt > 0, np.where(ok, x, 0.0).sum(0) / np.maximum(cnt, 1), np.nan)


def finite_mean(x) -> float:
    """Mean of the finite entries of ``x`` (NaN when there are none)."""
    x = np.asarray(x, float)
    ok = np.isfinite(x)
    cnt = int(ok.sum())
    return float(np.where(ok, x, 0.0).sum() / cnt) if cnt else float("nan")


def pearson_rows(a, b):
    """Pearson correlation over the last axis, per row (NaN where either row is constant or not finite)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-300, (a * b).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def average_ranks(x):
    """0-based ranks over the last axis, tied values sharing their mean rank (``scipy.stats.rankdata`` − 1)."""
    x = np.asarray(x, float)
    n = x.shape[-1]
    order = np.argsort(x, axis=-1, kind="stable")
    flat_s = np.take_along_axis(x, order, -1).reshape(-1, n)
    flat_r = np.broadcast_to(np.arange(n, dtype=float), flat_s.shape).copy()
    for r in range(flat_s.shape[0]):
        i = 0
        while i < n:
            j = i
            while j + 1 < n and flat_s[r, j + 1] == flat_s[r, i]:
                j += 1
            if j > i:
                flat_r[r, i:j + 1] = (i + j) / 2.0
            i = j + 1
    out = np.empty_like(x)
    np.put_along_axis(out, order, flat_r.reshape(x.shape), -1)
    return out


def spearman_rows(a, b, decimals: int = 12):
    """Spearman correlation over the last axis, per row: Pearson of the average ranks of the values
    rounded to ``decimals`` (values equal up to rounding are ties). NaN where a row is constant."""
    return pearson_rows(average_ranks(np.round(np.asarray(a, float), decimals)),
                        average_ranks(np.round(np.asarray(b, float), decimals)))


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
