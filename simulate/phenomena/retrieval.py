"""Retrieval of demonstrations similar to x_test (§4.2 (a)).

Each prompt has a pool of M demonstrations from θ*; n of them are chosen by the predictive
kernel's cosine similarity to x_test (``kernel``), by positional token agreement with x_test
(``hamming``, ties at random) or at random (``random``). Bayes is the exact forward pass over the
chosen demonstrations (most similar first); every kernel regresses on the same ones. The
reference runs every estimator on the whole pool.

Conditions: ``kernel``, ``hamming``, ``random``. Besides ``bayes`` and the kernels, each condition
has the estimator ``selection`` with the metric ``x_test_copies`` ``[P, G]`` (the share of the
first n chosen demonstrations that are copies of x_test). Side arrays:
``full_pool|EST|METRIC`` ``[P]`` (every estimator on all M pool demonstrations, in pool order).
"""
from __future__ import annotations

import numpy as np

from simulate.phenomena.common import (Context, Phenomenon, PhenomenaError, Pooled, SeedResult, band,
                                       draw_band, evaluation_metrics, fmt_band, header, label_n_axes, rows_by_n)
from simulate.sampling import sample_prompts
from simulate.sweep import prompt_key
from theory import kernels as tk
from theory.hmm import HMM

SELECTIONS = ("kernel", "hamming", "random")


# ------------------------------------------------------------------ pure pieces


def similarity_scores(hmm: HMM, pool_x, x_test, rng) -> dict:
    """Selection scores ``[P, M]`` (higher = chosen first) for each rule of :data:`SELECTIONS`.

    ``kernel``: cos(P(o | x), P(o | x_test)), the predictive kernel's similarity; ``hamming``: number
    of positions where x agrees with x_test, plus a uniform in [0, 0.5) that breaks ties at random;
    ``random``: uniforms.
    """
    ft = tk.predictive_features(hmm, x_test)
    fd = tk.predictive_features(hmm, pool_x)
    nt = ft / np.linalg.norm(ft, axis=-1, keepdims=True)
    nd = fd / np.linalg.norm(fd, axis=-1, keepdims=True)
    ham = (np.asarray(pool_x) == np.asarray(x_test)[:, None, :]).sum(-1)
    return dict(kernel=tk.kernel_values_vector(nt, nd),
                hamming=ham + 0.5 * rng.random(ham.shape),
                random=rng.random(ham.shape))


def select_top(scores, n: int) -> np.ndarray:
    """Indices ``[P, n]`` of the n highest scores per row, highest first (stable on ties)."""
    return np.argsort(-np.asarray(scores), axis=1, kind="stable")[:, :n]


# ------------------------------------------------------------------ the phenomenon


class Retrieval(Phenomenon):
    kind = "retrieval"
    help = "demonstrations retrieved by similarity to x_test (predictive kernel, token agreement) vs random ones"
    # l = 7 (823 543 inputs; retrieval needs no Σ but the Gram, which is exact at any l), so that the
    # chosen demonstrations are rarely copies of x_test.
    grid = (1, 2, 4, 8, 16, 32)
    length = 7
    kernels = ("predictive", "predictive:beta=20", "belief", "gram")
    options = dict(pool=None)  # candidates per prompt (None: 8 · max n)

    def resolve(self, hmm, resolved, options):
        N = max(resolved.grid)
        pool = options["pool"]
        M = 8 * N if pool is None else pool
        if isinstance(M, bool) or not isinstance(M, (int, np.integer)):
            raise PhenomenaError(f"pool size {M!r}, expected an integer >= max n = {N}")
        if M < N:
            raise PhenomenaError(f"pool size {M} is smaller than the largest n = {N}; expected pool >= max n")
        return dict(pool=int(M))

    def conditions(self, resolved):
        return list(SELECTIONS)

    def grids(self, resolved):
        return [tuple(resolved.sweep.grid), (resolved.options["pool"],)]

    def run_seed(self, ctx: Context, seed: int) -> SeedResult:
        r = ctx.resolved
        s = r.sweep
        pr = sample_prompts(prompt_key(seed), ctx.hmm, s.labels, s.prompts_per_seed, r.options["pool"], s.length)
        rng = np.random.default_rng([seed, 0x5345])
        scores = similarity_scores(ctx.hmm, pr.demos_x, pr.x_test, rng)
        g = np.asarray(r.sweep.grid)
        out = {}
        for sel in SELECTIONS:
            idx = select_top(scores[sel], ctx.max_n)
            chosen = pr._replace(demos_x=np.take_along_axis(pr.demos_x, idx[..., None], axis=1),
                                 demos_y=np.take_along_axis(pr.demos_y, idx, axis=1))
            out[sel] = evaluation_metrics(ctx.evaluate(chosen), ctx.names)
            # How many of the first n chosen demonstrations are copies of x_test (a finite input space has them).
            copies = np.cumsum((chosen.demos_x == pr.x_test[:, None]).all(-1), axis=1)
            out[sel]["selection"] = dict(x_test_copies=copies[:, g - 1] / g)
        # Reference: every kernel over the whole pool of M (what a smaller bandwidth can use).
        full = evaluation_metrics(ctx.evaluate(pr, grid=(r.options["pool"],), progress=False), ctx.names)
        side = {f"full_pool|{est}|{met}": a[:, 0] for est, mets in full.items() for met, a in mets.items()}
        return SeedResult(out, side)

    def summarise(self, summary: dict, pooled: Pooled) -> None:
        pool = summary["config"]["pool"]
        for key, arr in pooled.side.items():
            kind, est, met = key.split("|")
            if kind == "full_pool":
                summary.setdefault("full_pool", {}).setdefault(est, {})[met] = band(arr, n=pool)

    def table(self, summary: dict) -> str:
        res = summary["results"]
        c = summary["config"]
        lines = [header(summary) + f", pool {c['pool']}",
                 "L1 to Oracle P(y|x_test,θ*) (mean over prompts); agreement = argmax agrees with the Oracle"]
        rows = []
        for sel in SELECTIONS:
            rows.append((f"copies of x_test among chosen / {sel}", res[sel]["selection"]["x_test_copies"]))
        for est in ["bayes", *c["kernels"]]:
            for sel in SELECTIONS:
                rows.append((f"{est} / {sel} : L1", res[sel][est]["l1_oracle"]))
            for sel in SELECTIONS:
                rows.append((f"{est} / {sel} : agree", res[sel][est]["agree_oracle"]))
        lines += rows_by_n(summary, rows)
        N = c["grid"][-1]
        k0 = c["kernels"][0]
        lines.append(f"{k0} at n={N} (95% bands): " + "; ".join(f"{sel} {fmt_band(res[sel][k0]['l1_oracle'][-1])}"
                                                                 for sel in SELECTIONS))
        fp = summary["full_pool"]
        lines.append(f"all {c['pool']} pool demos (random order), L1 to Oracle: "
                     + "; ".join(f"{est} {fmt_band(fp[est]['l1_oracle'])}" for est in fp))
        return "\n".join(lines)

    def plot(self, summary: dict, axes) -> None:
        res = summary["results"]
        c = summary["config"]
        grid = c["grid"]
        k0 = c["kernels"][0]
        colors = dict(kernel="tab:blue", hamming="tab:orange", random="tab:green")
        for sel in SELECTIONS:
            col = colors[sel]
            draw_band(axes[0], grid, res[sel][k0]["l1_oracle"], color=col, marker="o", label=f"{k0} kernel, {sel} demos")
            draw_band(axes[0], grid, res[sel]["bayes"]["l1_oracle"], color=col, ls="--", marker=".",
                      label=f"Bayes, {sel} demos")
            draw_band(axes[1], grid, res[sel][k0]["agree_oracle"], color=col, marker="o", label=f"{k0} kernel, {sel} demos")
            draw_band(axes[1], grid, res[sel]["bayes"]["agree_oracle"], color=col, ls="--", marker=".",
                      label=f"Bayes, {sel} demos")
        others = [k for k in c["kernels"][1:] if k != "gram"]
        for k, ls in zip(others, (":", "-.")):
            draw_band(axes[0], grid, res["random"][k]["l1_oracle"], color="black", ls=ls, label=f"{k}, random demos")
            for sel in ("kernel", "random"):
                draw_band(axes[2], grid, res[sel][k]["l1_oracle"], color=colors[sel], ls=ls, label=f"{k}, {sel} demos")
        for sel in ("kernel", "random"):
            draw_band(axes[2], grid, res[sel][k0]["l1_oracle"], color=colors[sel], marker="o", label=f"{k0}, {sel} demos")
        M = c["pool"]
        for k, ls in zip([k0, *others], ("-", ":", "-.")):
            mean = summary["full_pool"][k]["l1_oracle"]["mean"]
            if mean is not None:
                axes[2].axhline(mean, color="gray", ls=ls, lw=1.2, label=f"{k}, all {M} pool demos")
        label_n_axes(axes, [("L1 distance to Oracle P(y | x_test, θ*) (over labels)", "Retrieved vs random demonstrations"),
                            ("argmax agreement with the Oracle (fraction)", "Agreement with the Oracle"),
                            ("L1 distance to Oracle (over labels)", "Retrieval vs a smaller bandwidth (β)")])


PHENOMENON = Retrieval()
