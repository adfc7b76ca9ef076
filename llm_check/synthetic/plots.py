"""Figures of ``icl-kernel transformer-check`` (matplotlib, Agg backend; the caller writes them atomically)."""
from __future__ import annotations

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)


def error_vs_n(summary: dict, path) -> None:
    """L1 to Bayes, L1 to the Oracle and accuracy vs the Oracle against n: transformer, kernels, Bayes.

    For a GINC sweep (``summary["ginc"]``) a fourth panel: accuracy against the prompt's label (GINC's
    metric; Bayes on the prompts of positive probability under p_pre) with the Oracle's accuracy and
    the fraction of prompts of probability 0."""
    grid = np.asarray(summary["config"]["grid"], float)
    c = summary["curves"]
    gi = summary.get("ginc")
    fig, axes = plt.subplots(1, 4 if gi else 3, figsize=(20 if gi else 15, 4.6))
    for name, row in c.items():
        style = dict(lw=2.5, color="k", marker="o") if name == "transformer" else dict(lw=1.2, marker=".", alpha=0.8)
        if name == "bayes":
            style = dict(lw=1.5, color="grey", ls="--", marker="x")
        if name == "oracle":
            style = dict(lw=1.5, color="tab:purple", ls="-.", marker="+")
        label = {"transformer": "Transformer", "bayes": "Bayes", "oracle": "Oracle"}.get(name, name.removeprefix("kernel:"))
        if gi:
            axes[3].plot(grid, np.asarray(row["accuracy"], float), label=label, **style)
        if name == "oracle":                                 # its distances are the Bayes row's, its agreement 1
            continue
        if name != "bayes":
            axes[0].plot(grid, np.asarray(row["l1_bayes"], float), label=label, **style)
        axes[1].plot(grid, np.asarray(row["l1_oracle"], float), label=label if name != "bayes" else "Bayes vs Oracle",
                     **style)
        axes[2].plot(grid, np.asarray(row["acc_oracle"], float), label=label, **style)
    axes[0].axhline(0.05, color="r", ls=":", lw=1, label="target 0.05")
    panels = [(axes[0], "L1 to Bayes", "distance to exact Bayes"),
              (axes[1], "L1 to Oracle", "distance to the Oracle P(y | x_test, θ*)"),
              (axes[2], "argmax agreement with the Oracle", "accuracy vs the Oracle")]
    if gi:
        axes[3].plot(grid, np.asarray(gi["zero_probability"], float), color="tab:red", ls=":", marker="s", ms=3,
                     label="fraction P(prompt | p_pre) = 0")
        axes[3].set_ylim(-0.02, 1.5)                         # room above 1 for the legend
        axes[3].set_yticks(np.linspace(0, 1, 6))
        axes[3].legend(fontsize=6.5, loc="upper left", ncol=2, framealpha=0.85)
        panels.append((axes[3], "accuracy (argmax = the prompt's label)", "GINC's accuracy (Bayes: P > 0 prompts)"))
    for ax, yl, t in panels:
        if grid.min() > 0:
            ax.set_xscale("log", base=2)
        else:                                                # n = 0 on the axis: linear up to 1, log beyond
            ax.set_xscale("symlog", base=2, linthresh=1)
        ax.set_xlabel("demonstrations n")
        ax.set_ylabel(yl)
        ax.set_title(t)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[2].legend(fontsize=7, loc="lower right")
    axes[0].legend(fontsize=7)
    if gi:
        fig.suptitle(f"Trained GPT-J on {summary['num_prompts']} GINC prompts ({gi['prompt_law']}, k = {gi['k']}; "
                     "next-symbol distribution over all symbols; Bayes and L1 to it on prompts of positive probability)")
    else:
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
        lim = [0, float(np.nanmax(np.concatenate([a, w]))) * 1.05]   # GINC: rows with no finite weight are NaN
        ax.plot(lim, lim, "k--", lw=1, label="attention = kernel weight")
        ax.set_title(f"selected head vs {k} (held-out prompts)", fontsize=10)
        ax.legend(fontsize=8)
    ax.set_xlabel("normalised kernel weight K(x_test, x_i) / Σ_j K")
    ax.set_ylabel("attention on demonstration i (span, normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def position_map(summary: dict, path) -> None:
    """Per read (rows): layer × head maps of the pooled correlation of attention with the best-matching
    kernel's normalised weights before and after removing position (held-out prompts; within-position
    permutation p in each cell), and the mean attention per demonstration position of the head chosen
    by vote agreement (the head the position-only vote is built from)."""
    h = summary["heads"]
    pos = h.get("position") or {}
    reads = [r for r in ("label", "delim", "span") if r in pos]
    L, H, N = h["layers"], h["heads"], h["n"]
    fig, axes = plt.subplots(len(reads), 3, figsize=(15, (2.2 + 0.45 * L) * len(reads) + 0.8), squeeze=False,
                             gridspec_kw=dict(width_ratios=[1, 1, 1.2]))
    for row, read in zip(axes, reads):
        p = pos[read]
        best = _best_kernel(summary, read)
        k = best[0] if best is not None else next(iter(p["kernels"]))
        c = p["kernels"][k]
        raw = np.asarray(c["map_r_raw"], float)
        within = np.asarray(c["map_r_within"], float)
        pw = np.asarray(c["map_p_within"], float)
        lim = max(0.05, float(np.nanmax(np.abs(np.concatenate([raw.ravel(), within.ravel()])), initial=0.0)))
        for ax, m, t in ((row[0], raw, "before removing position"), (row[1], within, "within position")):
            im = ax.imshow(m, vmin=-lim, vmax=lim, cmap="RdBu_r", aspect="auto")
            for (i, j), v in np.ndenumerate(m):
                txt = f"{v:.2f}" if np.isfinite(v) else "nan"
                if m is within and np.isfinite(pw[i, j]):
                    txt += f"\np={pw[i, j]:.2g}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=7)
            lh = p["head"]
            ax.add_patch(plt.Rectangle((lh[1] - 0.5, lh[0] - 0.5), 1, 1, fill=False, ec="k", lw=2))
            ax.set_xticks(range(H))
            ax.set_yticks(range(L))
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            ax.set_title(f"{read} read vs {k}: r {t}", fontsize=9)
            fig.colorbar(im, ax=ax, label="pooled Pearson r")
        ax = row[2]
        prof = np.asarray(p["position_profile"], float)
        ax.plot(np.arange(1, N + 1), prof, "o-", color="k",
                label=f"L{p['head'][0]}H{p['head'][1]} (boxed; chosen by vote agreement)")
        kh = best[1]["head"] if best is not None else None
        if kh is not None and kh != p["head"]:
            kprof = np.asarray(p["map_position_profile"], float)[kh[0], kh[1]]
            ax.plot(np.arange(1, N + 1), kprof, "s--", color="tab:blue", label=f"L{kh[0]}H{kh[1]} (best Pearson with {k})")
        ax.axhline(1 / N, color="grey", ls=":", lw=1, label=f"uniform 1/n = {1 / N:.3f}")
        top = max([float(np.nanmax(ln.get_ydata())) for ln in ax.get_lines()] + [1 / N])
        ax.set_ylim(0, 1.45 * top)                           # from 0, with room for the legend above the data
        t = p["against"].get("transformer", {})
        ax.set_title(f"{read} read: vote {t.get('head_agreement', np.nan):.3f} vs position vote "
                     f"{t.get('position_vote_agreement', np.nan):.3f} (McNemar p = {t.get('mcnemar_p', np.nan):.2g})",
                     fontsize=9)
        ax.set_xlabel("demonstration position (1 = first, n = next to x_test)")
        ax.set_ylabel("mean attention (selection prompts)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", framealpha=0.8)
    fig.suptitle(f"Attention vs kernel weights with position removed (n = {N}, {h['report_prompts']} held-out prompts; "
                 "within position: each slot's mean over prompts subtracted)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
