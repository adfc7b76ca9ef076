"""Figures of the llm-check run (the paper's Figs. 2–5 analogues). Matplotlib, Agg backend."""
from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def fig2(path: str, avg: np.ndarray, codes: np.ndarray, title: str) -> None:
    """Averaged last-token attention ``avg[L, T]`` (mean over heads) on the aligned positions."""
    plt = _plt()
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Patch

    L, T = avg.shape
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(13, 7.5), height_ratios=[3, 1.3], sharex=True)
    im = ax0.imshow(np.clip(avg, 1e-4, None), aspect="auto", origin="lower", cmap="viridis",
                    norm=LogNorm(vmin=1e-4, vmax=max(float(avg.max()), 1e-3)), interpolation="nearest")
    fig.colorbar(im, ax=ax0, label="attention weight (mean over heads and prompts, log scale)", pad=0.01)
    ax0.set_ylabel("layer (0-based)")
    ax0.set_title(f"Fig. 2 analogue: last-token attention, each x rescaled to 30 positions\n{title}")
    colors = {1: "#cfe2f3", 2: "#f4cccc", 3: "#ffd966", 0: "#eeeeee"}
    for t in range(T):
        ax1.axvspan(t - 0.5, t + 0.5, color=colors[int(codes[t])], lw=0)
    for l, c in ((0, "tab:blue"), (L // 3, "tab:orange"), (L // 2, "tab:green"), (2 * L // 3, "tab:red"), (L - 1, "k")):
        ax1.plot(np.arange(T), avg[l], color=c, lw=1, label=f"layer {l}")
    ax1.set_yscale("log")
    ax1.set_ylabel("attention")
    ax1.set_xlabel("aligned position in [x_1 y_1 … x_n y_n x_test] (x segments = 30 positions each)")
    handles, labels = ax1.get_legend_handles_labels()
    handles += [Patch(color=colors[1], label="x_i"), Patch(color=colors[3], label="y_i"),
                Patch(color=colors[2], label="x_test"), Patch(color=colors[0], label="template")]
    ax1.legend(handles=handles, ncol=9, fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _heat(ax, m, title, vmin, vmax, cmap, label, mark=None):
    im = ax.imshow(m, aspect="auto", origin="lower", vmin=vmin, vmax=vmax, cmap=cmap, interpolation="nearest")
    ax.set_xlabel("head (0-based)")
    ax.set_ylabel("layer (0-based)")
    ax.set_title(title, fontsize=10)
    ax.set_xticks(range(m.shape[1]))
    cb = ax.figure.colorbar(im, ax=ax)
    cb.set_label(label)
    if mark is not None:
        ax.plot(mark[1], mark[0], marker="s", mfc="none", mec="red", ms=9, mew=2, ls="none",
                label=f"chosen head L{mark[0]} H{mark[1]}")
        ax.legend(loc="lower left", fontsize=8)


def fig3(path: str, agree: np.ndarray, acc: np.ndarray, title: str, chosen) -> None:
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 6))
    _heat(a, agree, f"(a) agreement ỹ vs ŷ (max {agree.max():.3f})", 0, 1, "magma", "fraction of prompts", chosen)
    _heat(b, acc, f"(b) accuracy ỹ vs gold (max {acc.max():.3f})", 0, 1, "magma", "fraction of prompts", chosen)
    fig.suptitle(f"Fig. 3 analogue: reconstruction ỹ = argmax Σ a_i e(y_i), a_i = max attention on [x_i, y_i]\n{title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig4(path: str, corr: np.ndarray, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    v = float(np.nanmax(np.abs(corr))) if np.isfinite(corr).any() else 1.0
    _heat(ax, corr, f"Pearson r: attention a_i vs sim(x_test, x_i) = P(o|x_test)ᵀP(o|x_i)\n{title}",
          -v, v, "RdBu_r", "Pearson r (pooled over prompts × demonstrations)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig5(path: str, probes: dict, offsets, title: str) -> None:
    """``probes['accuracy'][kind]`` is ``[L, H, len(offsets)]``."""
    plt = _plt()
    kinds = list(probes["accuracy"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        acc = np.asarray(probes["accuracy"][kind])  # [L, H, O]
        L = acc.shape[0]
        for j, off in enumerate(offsets):
            c = plt.cm.viridis(j / max(1, len(offsets) - 1))
            ax.scatter(np.repeat(np.arange(L), acc.shape[1]) + 0.12 * (j - 2), acc[:, :, j].ravel(), s=4, color=c, alpha=0.35)
            ax.plot(np.arange(L), acc[:, :, j].mean(1), color=c, lw=1.8, label=f"offset {off:+d} (layer mean)")
        base = probes.get("chance", {}).get(kind)
        if base is not None:
            ax.axhline(base, color="gray", ls="--", lw=1, label=f"majority class {base:.2f}")
        ax.set_xlabel("layer (0-based)")
        ax.set_ylabel("held-out probe accuracy (dots: heads)")
        ax.set_title(probes["titles"][kind], fontsize=10)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Fig. 5 analogue: ridge probes (λ = 0.01) on per-head vectors around the high-attention position\n{title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bars(path: str, labels, series: dict, title: str, ylabel: str, intervals: dict | None = None) -> None:
    """Grouped bars: ``series[name] = values`` aligned with ``labels``; ``intervals[name] = [(lo, hi)
    or None per label]`` draws those as error bars on that series."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(labels)), 5.5))
    k = len(series)
    w = 0.8 / k
    for j, (name, vals) in enumerate(series.items()):
        x = np.arange(len(labels)) + (j - (k - 1) / 2) * w
        vals = np.array([np.nan if v is None else v for v in vals], float)
        ax.bar(x, vals, w, label=name)
        ci = (intervals or {}).get(name)
        if ci is not None:
            lo = np.array([np.nan if c is None else c[0] for c in ci], float)
            hi = np.array([np.nan if c is None else c[1] for c in ci], float)
            ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(vals)
            ax.errorbar(x[ok], vals[ok], yerr=[vals[ok] - lo[ok], hi[ok] - vals[ok]], fmt="none", ecolor="black",
                        capsize=2, lw=0.8)
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("run (task and condition)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def position_maps(path, maps: dict, title: str, chosen=None) -> None:
    """Per similarity (rows): the head map of Pearson r before (left) and after (right) removing
    position. ``maps[name] = (r_raw[L, H], r_within[L, H])``."""
    plt = _plt()
    fig, axes = plt.subplots(len(maps), 2, figsize=(11, 4.6 * len(maps)), squeeze=False)
    for row, (name, (raw, within)) in zip(axes, maps.items()):
        both = np.concatenate([np.ravel(raw), np.ravel(within)])
        v = float(np.nanmax(np.abs(both))) if np.isfinite(both).any() else 1.0
        _heat(row[0], raw, f"{name}: before removing position\n(max |r| {np.nanmax(np.abs(raw)):.3f})", -v, v,
              "RdBu_r", "Pearson r (pooled over prompts × demonstrations)", chosen)
        _heat(row[1], within, f"{name}: within position (residualised)\n(max |r| {np.nanmax(np.abs(within)):.3f})",
              -v, v, "RdBu_r", "Pearson r after subtracting each position's mean", chosen)
    fig.suptitle(f"Attention a_i vs similarity, before and after removing position\n{title}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
