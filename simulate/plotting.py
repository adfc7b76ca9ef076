"""Figures for sweep run folders (matplotlib, Agg backend; written atomically)."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)

from icl_kernel.errors import one_line  # noqa: E402
from icl_kernel.runfolder import RunFolderError, atomic_write_bytes  # noqa: E402
from simulate.sweep import SweepConfigError, read_summary  # noqa: E402

# Plotted values are rounded to this many significant digits. A run's numbers differ from machine
# to machine (and between equivalent code paths) in their last bits (about 1e-9 relative for the
# Σ⁺ kernels), and Agg turns even a 1e-15 change into different anti-aliased pixels; 4 digits is
# far below a pixel (a 1e-4 relative change moves a point by < 0.05 px here), so the same run's
# numbers give the same PNG bytes wherever the sweep ran.
DISPLAY_DIGITS = 4

# The paper's Table 3 (App. C): distance and accuracy vs n; its metric and label set are unknown.
PAPER_TABLE3 = dict(n=[1, 2, 4, 8, 16, 32, 64, 128],
                    distance=[1.322, 0.942, 0.519, 0.218, 0.163, 0.085, 0.093, 0.083],
                    accuracy=[0.337, 0.532, 0.745, 0.901, 0.926, 0.968, 0.961, 0.964])


def plot_convergence(run_dir, out_path, kernels=None, show_paper: bool = True, bound: dict | None = None) -> Path:
    """Two panels: L1 distance of ŷ_n to Bayes (log-log, 95% bands, fitted rate) and agreement vs n.

    With ``bound`` (a run's bound.json), each kernel's median Theorem-1 bound (dotted, where finite)
    and its exactly computed mean bias (the floor, a short horizontal tick at the right) are overlaid.
    ``kernels`` restricts the figure to those labels; an unknown label is refused.
    """
    run_dir = Path(run_dir)
    s = read_summary(run_dir)
    s = {**s, **{k: for_display(s[k]) for k in ("kernels", "common", "curve") if s.get(k) is not None}}
    bound = None if bound is None else for_display(bound)
    if kernels is not None:
        unknown = [k for k in kernels if k not in s["kernels"]]
        if unknown or not kernels:
            raise SweepConfigError(f"--kernels {' '.join(kernels)!r}: {unknown or 'none given'} not in this run; "
                                   f"expected some of {list(s['kernels'])}")
    cfg = s["config"]
    grid = np.asarray(cfg["grid"], float)
    names = [k for k in s["kernels"] if kernels is None or k in kernels]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2 if bound is None else 7.0))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        ks = s["kernels"][name]
        c = colors[i % len(colors)]
        m = np.array([r["mean"] for r in ks["kernel_vs_bayes_l1"]])
        lo = np.array([r["lo"] for r in ks["kernel_vs_bayes_l1"]])
        hi = np.array([r["hi"] for r in ks["kernel_vs_bayes_l1"]])
        sl = ks["slope_kernel_vs_bayes_l1"]
        curve = s.get("curve")
        if curve is not None:  # every n: the mean as a line, the grid points (with bands) as markers
            ax1.plot(curve["n"], curve["kernels"][name]["kernel_vs_bayes_l1"], "-", color=c, linewidth=1.2)
            ax2.plot(curve["n"], curve["kernels"][name]["argmax_agreement"], "-", color=c, linewidth=1.2)
        ax1.plot(grid, m, "o" if curve is not None else "o-", color=c, label=f"{name} (slope {sl['value']:.2f})")
        ax1.fill_between(grid, lo, hi, color=c, alpha=0.18, linewidth=0)
        fn = np.asarray(sl["fitted_n"], float)
        if np.isfinite(sl["value"]) and len(fn) >= 2:
            idx = [list(grid).index(v) for v in fn]
            intercept = np.mean(np.log(m[idx]) - sl["value"] * np.log(fn))
            xs = np.geomspace(fn[0], fn[-1], 20)
            ax1.plot(xs, np.exp(intercept) * xs ** sl["value"], "--", color=c, linewidth=1)
        if bound is not None and name in bound.get("kernels", {}):
            bk = bound["kernels"][name]
            bn = np.asarray(bound["grid"], float)
            tot = np.array([np.nan if v is None else v for v in bk["median_total"]], float)
            keep = (bn <= grid[-1]) & np.isfinite(tot)
            if keep.any():
                ax1.plot(bn[keep], tot[keep], ":", color=c, linewidth=1.6, label=f"{name}: bound (median)")
            err = bk.get("median_bias_error", 0.0)
            if err is not None and err < bk["mean_bias"]:
                what = "exact bias" if err == 0 else f"bias (MC ±{err:.2f})"
                ax1.plot([grid[-1] * 0.8, grid[-1] * 1.25], [bk["mean_bias"]] * 2, "-", color=c, linewidth=3,
                         alpha=0.7, label=f"{name}: {what} {bk['mean_bias']:.3f}")
        a = np.array([r["mean"] for r in ks["argmax_agreement"]])
        alo = np.array([r["lo"] for r in ks["argmax_agreement"]])
        ahi = np.array([r["hi"] for r in ks["argmax_agreement"]])
        ax2.plot(grid, a, "o" if curve is not None else "o-", color=c, label=name)
        ax2.fill_between(grid, alo, ahi, color=c, alpha=0.18, linewidth=0)
    lows = [r["lo"] for k in names for r in s["kernels"][k]["kernel_vs_bayes_l1"] if np.isfinite(r["lo"])]
    highs = [r["hi"] for k in names for r in s["kernels"][k]["kernel_vs_bayes_l1"] if np.isfinite(r["hi"])]
    bo = np.array([r["mean"] for r in s["common"]["bayes_vs_oracle_l1"]])
    if s.get("curve") is not None:
        ax1.plot(s["curve"]["n"], s["curve"]["common"]["bayes_vs_oracle_l1"], "k-", linewidth=1, alpha=0.6,
                 label="Bayes vs Oracle L1 (every n)")
    else:
        ax1.plot(grid, bo, "k-", linewidth=1, alpha=0.6, label="Bayes vs Oracle L1")
    if show_paper:
        ax1.plot(PAPER_TABLE3["n"], PAPER_TABLE3["distance"], "kx", markersize=8, label="paper Table 3 (metric unstated)")
        ax2.plot(PAPER_TABLE3["n"], PAPER_TABLE3["accuracy"], "kx", markersize=8, label="paper Table 3")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    if lows and highs:
        ax1.set_ylim(min(min(lows), 0.08) * 0.7, max(highs) * 1.4 if bound is None else max(max(highs) * 1.4, 4.0))
    ax1.set_xlabel("number of demonstrations n")
    ax1.set_ylabel("L1 distance of ŷ_n to Bayes predictive (over labels)")
    ax1.set_title("Kernel regression vs exact Bayesian ICL" + ("\n(dotted: Theorem-1 bound, median over prompts; "
                  "bars: bias = floor)" if bound is not None else ""), fontsize=10 if bound is not None else None)
    ax1.grid(True, which="both", alpha=0.3)
    if bound is None:
        ax1.legend(fontsize=7, loc="lower left")
    else:  # many entries: below the panel, off the data
        ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("number of demonstrations n")
    ax2.set_ylabel("argmax agreement with Bayes (fraction)")
    ax2.set_ylim(0, 1.02)
    ax2.set_title("Agreement of argmax ŷ_n with argmax Bayes")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=7, loc="lower right")
    pp = cfg.get("preset_params", {})
    fig.suptitle(f"{run_dir.name}: preset {cfg['preset']} "
                 + (f"({pp.get('num_tasks', '')} tasks, {pp.get('num_states', '')} states, {pp.get('num_tokens', '')} tokens) "
                    if cfg["preset"] == "han" else "")
                 + f"l={cfg['length']}, labels {cfg['labels']}, {s['num_prompts']} prompts; bands: 95% bootstrap",
                 fontsize=9)
    return save_figure(fig, out_path)


def for_display(obj, digits: int = DISPLAY_DIGITS):
    """``obj`` (nested dicts/lists of numbers) with every float rounded to ``digits`` significant
    digits (NaN and ±inf kept; ints, bools and strings unchanged), so that float rounding noise in a
    run's numbers cannot change the rendered pixels."""
    if isinstance(obj, dict):
        return {k: for_display(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [for_display(v, digits) for v in obj]
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    return obj


def save_figure(fig, out_path) -> Path:
    """Lay out, render to PNG in memory, close, and write atomically (temporary name, then rename)."""
    fig.tight_layout()
    out_path = Path(out_path)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        plt.close(fig)
        raise RunFolderError(f"cannot write {out_path}: {one_line(exc.strerror or exc)}") from None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out_path, buf.getvalue())
    return out_path
