"""Figures of ``icl-kernel transformer-check`` (matplotlib, Agg backend; the caller writes them atomically)."""
from __future__ import annotations

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)


def error_vs_n(summary: dict, path) -> None:
    """L1 to Bayes, L1 to the Oracle and accuracy vs the Oracle against n: transformer, kernels, Bayes."""
    grid = np.asarray(summary["config"]["grid"], float)
    c = summary["curves"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for name, row in c.items():
        style = dict(lw=2.5, color="k", marker="o") if name == "transformer" else dict(lw=1.2, marker=".", alpha=0.8)
        if name == "bayes":
            style = dict(lw=1.5, color="grey", ls="--", marker="x")
        label = {"transformer": "Transformer", "bayes": "Bayes"}.get(name, name.removeprefix("kernel:"))
        if name != "bayes":
            axes[0].plot(grid, row["l1_bayes"], label=label, **style)
        axes[1].plot(grid, row["l1_oracle"], label=label if name != "bayes" else "Bayes vs Oracle", **style)
        axes[2].plot(grid, row["acc_oracle"], label=label, **style)
    axes[0].axhline(0.05, color="r", ls=":", lw=1, label="target 0.05")
    for ax, yl, t in ((axes[0], "L1 to Bayes", "distance to exact Bayes"),
                      (axes[1], "L1 to Oracle", "distance to the Oracle P(y | x_test, θ*)"),
                      (axes[2], "argmax agreement with the Oracle", "accuracy vs the Oracle")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("demonstrations n")
        ax.set_ylabel(yl)
        ax.set_title(t)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[2].legend(fontsize=7, loc="lower right")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Trained GPT-J on {summary['num_prompts']} sweep prompts (label distribution renormalised over Y)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def _best_kernel(summary: dict, read: str = "span"):
    best = None
    for k, reads in summary["heads"]["kernels"].items():
        r = reads.get(read)
        if r is not None and (best is None or r["pearson"] > best[1]["pearson"]):
            best = (k, r)
    return best


def head_map(summary: dict, path) -> None:
    """Layer × head maps of the mean per-prompt Pearson correlation with the best-matching kernel, per read."""
    h = summary["heads"]
    reads = ("label", "delim", "span")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2 + 0.35 * h["layers"]))
    for ax, read in zip(axes, reads):
        best = _best_kernel(summary, read)
        if best is None:
            ax.set_axis_off()
            continue
        k, r = best
        m = np.asarray(r["map_pearson"], float)
        im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r", aspect="auto")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
        ax.set_title(f"read at {read}: vs {k}", fontsize=9)
        fig.colorbar(im, ax=ax, label="mean Pearson r")
    fig.suptitle(f"Attention from the last x_test token vs kernel weights (n = {h['n']}, all prompts)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def scatter(summary: dict, res, path) -> None:
    """Attention weight vs kernel weight for the selected head (held-out prompts, span read)."""
    best = _best_kernel(summary, "span")
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if best is not None:
        k, r = best
        j = summary["config"]["kernels"].index(k)
        rep = np.arange(1, res.attention.shape[0], 2)
        a = res.attention[rep, r["head"][0], r["head"][1], 2].ravel()
        kv = res.kernel_values[rep, j]
        w = (kv / kv.sum(-1, keepdims=True)).ravel()
        ax.scatter(w, a, s=3, alpha=0.3, label=f"L{r['head'][0]}H{r['head'][1]} (r = {r['pearson']:.2f})")
        n = summary["heads"]["n"]
        ax.axhline(1 / n, color="grey", ls=":", lw=1, label=f"uniform 1/n = {1 / n:.3f}")
        lim = [0, max(a.max(), w.max()) * 1.05]
        ax.plot(lim, lim, "k--", lw=1, label="attention = kernel weight")
        ax.set_title(f"selected head vs {k} (held-out prompts)", fontsize=10)
        ax.legend(fontsize=8)
    ax.set_xlabel("normalised kernel weight K(x_test, x_i) / Σ_j K")
    ax.set_ylabel("attention on demonstration i (span, normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
