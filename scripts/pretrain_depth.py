"""Excess loss of a pretrained GPT-J over exact Bayes as a function of depth in the context,
on held-out p_pre documents and on a sweep's ICL prompts, compared at equal depth.

    .venv/bin/python scripts/pretrain_depth.py runs/pt-han4-tiny runs/sw-han4-l3

For every position t of a token sequence (t = 0 is the first token after BOS) three per-position
numbers, all in nats:

* ``excess``: the model's NLL of the observed token minus the exact Bayes NLL,
  −log q(o_t | o_<t) + log P(o_t | o_<t; p_pre) (``simulate.corpus.token_log_probs`` is the Bayes
  reference; the full-vocabulary Bayes predictive used here is checked against it on every run);
* ``kl_full``: KL(Bayes ‖ model) over the whole vocabulary at t, the expected excess of the next
  token under p_pre (on documents the mean of ``excess`` estimates it; it needs no observed token);
* ``kl_labels``: the same KL after renormalising both distributions over the label set Y — the
  quantity transformer-check's label predictions are scored on.

Documents: ``--docs`` held-out documents of the pretrain run's held-out stream (its evaluation
documents are the first ones). Prompts ``BOS x_1 y_1 δ … x_n y_n δ x_test`` (the sweep's saved
prompts, every seed): the label positions y_i (i = 1..N, depth (i−1)(l+2)+l) of the longest prompt
(causal, so the same for every n ≥ i) and the query after x_test for every n of the grid (depth
n(l+2)+l, ``kl_full``/``kl_labels`` only: no token is observed there). Each prompt number is
compared with the documents at exactly the same positions: the difference of means with a 95%
bootstrap interval (documents and prompts resampled independently) and Welch's t-test; the depth
bins (0–7, 8–31, 32–63, 64–127, …) average each item over the label positions inside the bin, on
both sides.

Writes ``--json`` (default ``runs/pretrain-depth-<model run>.json``) and ``--figure`` (default
``figures/pretrain_excess_by_depth.png``), both atomically, and prints the tables.
"""
from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from icl_kernel.errors import UserError  # noqa: E402
from icl_kernel.runfolder import atomic_write_bytes, open_existing, strict_json_text  # noqa: E402

METRICS = ("excess", "kl_full", "kl_labels")
METRIC_TITLES = {
    "excess": "model NLL − Bayes NLL at the observed token",
    "kl_full": "KL(Bayes ‖ model), full vocabulary",
    "kl_labels": "KL(Bayes ‖ model) over the label set Y",
}


class DepthError(UserError):
    """Unusable run folders or arguments (one line)."""


# ------------------------------------------------------------------ pure functions


def depth_edges(length: int) -> list[int]:
    """Bin edges 0, 8, 32, 64, 128, 256, … cut at ``length`` (the last bin ends at ``length``)."""
    if length < 1:
        raise ValueError(f"length {length}, expected >= 1")
    edges = [0]
    for e in [8, 32] + [64 * 2 ** k for k in range(32)]:
        if e >= length:
            break
        edges.append(e)
    return edges + [length]


def bin_names(edges) -> list[str]:
    return [f"{a}–{b - 1}" for a, b in zip(edges[:-1], edges[1:])]


def label_depths(n: int, length: int) -> np.ndarray:
    """Positions of y_1 … y_n in ``x_1 y_1 δ … x_n y_n δ x_test`` (0 = the first token after BOS): ``[n]``."""
    return np.arange(n) * (length + 2) + length


def query_depth(n: int, length: int) -> int:
    """Position of the (unobserved) label after x_test in the n-demonstration prompt."""
    return n * (length + 2) + length


class PositionMetrics(NamedTuple):
    """Per item and position, nats. ``excess [D, S]``; ``kl_full``, ``kl_labels [D, R]`` with R = S
    or S + 1 (then the last column is the prediction after the whole sequence)."""

    excess: np.ndarray
    kl_full: np.ndarray
    kl_labels: np.ndarray


def _log_softmax(a, axis=-1):
    a = np.asarray(a, np.float64)
    m = a.max(axis, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis, keepdims=True))


def position_metrics(bayes_lp, model_lp, tokens, labels) -> PositionMetrics:
    """Excess NLL and the two KLs from log-predictives.

    ``bayes_lp [D, R, m]``: exact log P(v | o_<t) over the HMM's m tokens for t = 0..R-1 (R = S or
    S + 1); ``model_lp [D, R, V]`` (V ≥ m; extra entries such as BOS are the model's mass on tokens
    p_pre never emits); ``tokens [D, S]``; ``labels``: token ids of Y.
    """
    bayes_lp = np.asarray(bayes_lp, np.float64)
    model_lp = np.asarray(model_lp, np.float64)
    tokens = np.asarray(tokens, np.int64)
    m = bayes_lp.shape[-1]
    S = tokens.shape[1]
    if (model_lp.shape[:2] != bayes_lp.shape[:2] or bayes_lp.shape[0] != tokens.shape[0]
            or bayes_lp.shape[1] not in (S, S + 1) or model_lp.shape[-1] < m):
        raise ValueError(f"shapes bayes {bayes_lp.shape}, model {model_lp.shape}, tokens {tokens.shape}; "
                         "expected [D, R, m], [D, R, >= m], [D, S] with R = S or S + 1")
    obs = tokens[..., None]
    excess = (np.take_along_axis(bayes_lp[:, :S], obs, -1) - np.take_along_axis(model_lp[:, :S], obs, -1))[..., 0]
    p = np.exp(bayes_lp)
    with np.errstate(invalid="ignore"):
        kl_full = np.where(p > 0, p * (bayes_lp - model_lp[..., :m]), 0.0).sum(-1)
    labels = np.asarray(labels, np.int64)
    bl, ml = _log_softmax(bayes_lp[..., labels]), _log_softmax(model_lp[..., labels])
    kl_labels = (np.exp(bl) * (bl - ml)).sum(-1)
    return PositionMetrics(excess, kl_full, kl_labels)


def bootstrap_means(x, reps: int, rng) -> np.ndarray:
    """Means over axis 0 of ``reps`` resamples (with replacement) of the rows of ``x [N, ...]``: ``[reps, ...]``."""
    x = np.asarray(x, np.float64)
    N = x.shape[0]
    counts = rng.multinomial(N, np.full(N, 1.0 / N), size=reps).astype(np.float64)   # [reps, N]
    return np.tensordot(counts, x, axes=(1, 0)) / N


def mean_ci(x, reps: int, rng) -> dict:
    """Mean over axis 0 with a 95% percentile bootstrap interval (lists for array-valued x)."""
    x = np.asarray(x, np.float64)
    b = bootstrap_means(x, reps, rng)
    lo, hi = np.percentile(b, [2.5, 97.5], axis=0)
    return dict(mean=_py(x.mean(0)), lo=_py(lo), hi=_py(hi), n=int(x.shape[0]))


def compare(prompts, docs, reps: int, rng) -> dict:
    """Prompts vs documents (independent samples ``[Np]``, ``[Nd]``): means, difference, 95% CIs, Welch p."""
    from scipy import stats

    a, b = np.asarray(prompts, np.float64), np.asarray(docs, np.float64)
    ba, bb = bootstrap_means(a, reps, rng), bootstrap_means(b, reps, rng)
    d = ba - bb
    t = stats.ttest_ind(a, b, equal_var=False)
    pct = lambda v: [float(q) for q in np.percentile(v, [2.5, 97.5])]  # noqa: E731
    return dict(prompts=float(a.mean()), prompts_ci=pct(ba), docs=float(b.mean()), docs_ci=pct(bb),
                diff=float(a.mean() - b.mean()), diff_ci=pct(d), ratio=float(a.mean() / b.mean()) if b.mean() else None,
                welch_t=float(t.statistic), welch_p=float(t.pvalue), n_prompts=int(a.size), n_docs=int(b.size))


def bin_means(values, depths, edges) -> tuple[np.ndarray, list]:
    """Per item, the mean of ``values [N, K]`` (columns at positions ``depths [K]``) inside each bin.

    Returns ``[N, B]`` (NaN for a bin with no column) and, per bin, the positions it holds.
    """
    values = np.asarray(values, np.float64)
    depths = np.asarray(depths)
    out = np.full((values.shape[0], len(edges) - 1), np.nan)
    held = []
    for j, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        sel = (depths >= a) & (depths < b)
        held.append(depths[sel].tolist())
        if sel.any():
            out[:, j] = values[:, sel].mean(1)
    return out, held


def _py(a):
    a = np.asarray(a)
    return float(a) if a.ndim == 0 else a.astype(float).tolist()


# ------------------------------------------------------------------ predictives (JAX)


def bayes_log_predictive(hmm, seqs) -> np.ndarray:
    """Exact log P(v | o_<t; p_pre) for every position t = 0..S and token v: ``[D, S+1, m]`` float64.

    The filter of the document process (``simulate.forward``'s steps: an ordinary token moves with
    T, the delimiter with R), from p0, with the full-vocabulary predictive read before each token
    and after the last one.
    """
    from simulate.forward import hmm_arrays

    seqs = np.asarray(seqs, np.int32)
    with jax.enable_x64(True):
        A = hmm_arrays(hmm, jnp.float64)
        return np.asarray(_bayes_scan(A, jnp.asarray(seqs), int(hmm.delim)))


@partial(jax.jit, static_argnames=("delim",))
def _bayes_scan(A, seqs, delim):
    from simulate.forward import delim_step, next_token_probs, token_step

    D = seqs.shape[0]
    vocab = jnp.arange(A.Bt.shape[0])
    alpha0 = jnp.broadcast_to(A.p0 / A.p0.sum(), (D, A.p0.shape[0]))

    def f(carry, tok):
        alpha, logz = carry
        pred = next_token_probs(A, alpha, vocab)
        a1, l1 = token_step(A, alpha, logz, tok)
        a2, l2 = delim_step(A, alpha, logz)
        is_d = tok == delim
        return (jnp.where(is_d[:, None], a2, a1), jnp.where(is_d, l2, l1)), pred

    (alpha, _), preds = jax.lax.scan(f, (alpha0, jnp.zeros((D,), A.p0.dtype)), seqs.T)
    last = next_token_probs(A, alpha, vocab)
    return jnp.log(jnp.concatenate([jnp.moveaxis(preds, 0, 1), last[:, None]], axis=1))


def check_bayes(hmm, seqs, bayes_lp, tol: float = 1e-9) -> float:
    """Max |difference| between the full predictive at the observed tokens and ``corpus.token_log_probs``."""
    from simulate.corpus import token_log_probs

    seqs = np.asarray(seqs, np.int64)
    with jax.enable_x64(True):
        ref = token_log_probs(hmm, seqs, jnp.float64)
    got = np.take_along_axis(bayes_lp[:, :-1], seqs[..., None], -1)[..., 0]
    err = float(np.abs(got - ref).max())
    if not err <= tol:
        raise DepthError(f"the full-vocabulary Bayes predictive differs from corpus.token_log_probs by {err:.3g} "
                         f"nats; expected <= {tol:g} (is this HMM's delimiter step the document process's?)")
    return err


def model_log_predictive(model, seqs, bos: int, final: bool = True, chunk: int = 256) -> np.ndarray:
    """The model's log q(v | BOS, o_<t), float64: for t = 0..S ``[D, S+1, V]`` (input ``BOS o_0 … o_{S-1}``),
    or with ``final=False`` for t = 0..S-1 ``[D, S, V]`` (input ``BOS o_0 … o_{S-2}``, as in training, so a
    document as long as the context fits)."""
    from llm_check.models import forward

    seqs = np.asarray(seqs, np.int32)
    ids = np.concatenate([np.full((seqs.shape[0], 1), bos, np.int32), seqs if final else seqs[:, :-1]], axis=1)
    out = []
    for a in range(0, ids.shape[0], chunk):
        logits = np.asarray(forward(model, ids[a:a + chunk]).logits, np.float64)
        out.append(_log_softmax(logits))
    return np.concatenate(out, axis=0)


# ------------------------------------------------------------------ the analysis


def load(model_dir, sweep_dir):
    """Model, pretrain config, HMM, sweep config and the concatenated prompts of every saved seed."""
    from llm_check.synthetic.train import load_trained
    from simulate.sampling import Prompts
    from simulate.sweep import load_prompts, load_run_hmm

    model, resolved, hmm = load_trained(model_dir)
    sw = open_existing(sweep_dir, "sweep")
    scfg = sw.read_json("config.json")
    shmm = load_run_hmm(sw)
    for name, a, b in zip(hmm._fields, hmm, shmm):
        if np.shape(a) != np.shape(b) or not np.allclose(a, b, rtol=0, atol=1e-12):
            raise DepthError(f"{sweep_dir} was made on another HMM than {model_dir} ({name} differs); "
                             "expected a sweep of the pretraining preset")
    parts = []
    for s in scfg["seeds"]:
        if not sw.exists(f"prompts/seed_{s}.npz"):
            continue
        parts.append(load_prompts(sw, s))
    if not parts:
        raise DepthError(f"{sweep_dir} has no saved prompts (prompts/seed_S.npz); expected a sweep run with --save-prompts")
    pr = Prompts(*(np.concatenate([np.asarray(getattr(p, f)) for p in parts]) for f in Prompts._fields))
    if (np.asarray(pr.demos_x) < 0).any():
        raise DepthError(f"{sweep_dir}'s prompts have padded inputs; expected a fixed input length")
    return model, resolved, hmm, scfg, pr


def analyse(model_dir, sweep_dir, num_docs: int = 2048, reps: int = 2000, seed: int = 0, log=print) -> dict:
    from simulate import corpus
    from simulate.forward import prompt_tokens

    model, resolved, hmm, scfg, pr = load(model_dir, sweep_dir)
    L, bos = int(resolved.config.context), int(resolved.bos)
    labels = [int(y) for y in scfg["labels"]]
    grid = sorted(int(n) for n in scfg["grid"])
    l = int(np.asarray(pr.x_test).shape[1])
    N = int(np.asarray(pr.demos_x).shape[1])
    if query_depth(max(grid), l) >= L:
        raise DepthError(f"the longest prompt (n = {max(grid)}, l = {l}) needs {query_depth(max(grid), l) + 1} "
                         f"positions; the model's context is {L}")
    rng = np.random.default_rng(seed)

    log(f"documents: {num_docs} held-out × {L} tokens")
    docs = np.asarray(corpus.documents(corpus.split_key(resolved.config.seed, "heldout"), hmm, 0, num_docs, L))
    bl = bayes_log_predictive(hmm, docs)
    bayes_err = check_bayes(hmm, docs, bl)
    bl = bl[:, :L]
    ml = model_log_predictive(model, docs, bos, final=False)
    dm = position_metrics(bl, ml, docs, labels)
    del bl, ml
    n_eval = int(resolved.config.eval_docs)
    eval_excess = float(dm.excess[:n_eval].mean())

    log(f"prompts: {pr.x_test.shape[0]} from seeds {scfg['seeds']}, N = {N}, grid {grid}")
    dx, dy, xt = (np.asarray(a, np.int32) for a in (pr.demos_x, pr.demos_y, pr.x_test))
    seq = np.asarray(prompt_tokens(dx, dy, xt, N, int(hmm.delim)))
    bl = bayes_log_predictive(hmm, seq)
    check_bayes(hmm, seq, bl)
    pm = position_metrics(bl, model_log_predictive(model, seq, bos), seq, labels)
    ld = label_depths(N, l)
    label_vals = {k: getattr(pm, k)[:, ld] for k in METRICS}                       # [P, N]
    query = {k: [] for k in ("kl_full", "kl_labels")}
    for n in grid:
        s = np.asarray(prompt_tokens(dx, dy, xt, n, int(hmm.delim)))
        qm = position_metrics(bayes_log_predictive(hmm, s), model_log_predictive(model, s, bos), s, labels)
        for k in query:
            query[k].append(getattr(qm, k)[:, -1])
    query = {k: np.stack(v, 1) for k, v in query.items()}                         # [P, G]
    qd = np.asarray([query_depth(n, l) for n in grid])

    edges = depth_edges(L)
    names = bin_names(edges)
    out = dict(model_run=str(model_dir), sweep_run=str(sweep_dir), num_docs=num_docs, context=L,
               num_prompts=int(seq.shape[0]), input_length=l, labels=labels, grid=grid, bootstrap_reps=reps,
               bootstrap_seed=seed, bayes_check_max_abs_err=bayes_err,
               eval_docs_mean_excess=eval_excess, run_final_excess=_summary_excess(model_dir),
               bins=names, label_depths=ld.tolist(), query_depths=qd.tolist())

    # documents: per position and per bin (all positions of the bin)
    docs_pos = {k: mean_ci(getattr(dm, k), reps, rng) for k in METRICS}
    docs_all = {k: mean_ci(getattr(dm, k).mean(1), reps, rng) for k in METRICS}
    docs_bins = {}
    for k in METRICS:
        v, _ = bin_means(getattr(dm, k), np.arange(L), edges)
        docs_bins[k] = [mean_ci(v[:, j], reps, rng) for j in range(v.shape[1])]
    out["documents"] = dict(per_position=docs_pos, all_positions=docs_all, bins=docs_bins)

    # prompts' label positions vs documents at the same positions
    lab = dict(per_position={}, bins={})
    for k in METRICS:
        dv = getattr(dm, k)[:, ld]
        lab["per_position"][k] = [dict(depth=int(t), i=i + 1, **compare(label_vals[k][:, i], dv[:, i], reps, rng))
                                  for i, t in enumerate(ld)]
        pb, held = bin_means(label_vals[k], ld, edges)
        db, _ = bin_means(dv, ld, edges)
        lab["bins"][k] = [dict(bin=names[j], depths=held[j], **compare(pb[:, j], db[:, j], reps, rng))
                          for j in range(len(names)) if held[j]]
    out["labels"] = lab

    # queries (after x_test) vs documents at the same position
    qo = {}
    for k in query:
        dv = getattr(dm, k)
        qo[k] = [dict(n=n, depth=int(t), **compare(query[k][:, g], dv[:, t], reps, rng))
                 for g, (n, t) in enumerate(zip(grid, qd))]
    out["queries"] = qo
    return out


def _summary_excess(model_dir):
    try:
        return float(open_existing(model_dir, "pretrain").read_json("summary.json")["final_excess_loss"])
    except (UserError, KeyError, OSError, ValueError):
        return None


# ------------------------------------------------------------------ report


def tables(res: dict) -> str:
    f4 = lambda v: f"{v:.4f}"  # noqa: E731
    ci = lambda c: f"[{c[0]:.4f}, {c[1]:.4f}]"  # noqa: E731
    lines = [f"model {res['model_run']}; prompts {res['sweep_run']} ({res['num_prompts']}); "
             f"{res['num_docs']} held-out documents × {res['context']}; nats; 95% bootstrap CIs ({res['bootstrap_reps']})",
             f"check: Bayes predictive vs corpus.token_log_probs max |err| {res['bayes_check_max_abs_err']:.1e}; "
             f"mean excess on the run's evaluation documents "
             f"{res['eval_docs_mean_excess']:.4f} (run summary {res['run_final_excess']})", ""]
    d = res["documents"]
    lines.append("Documents, all positions of each depth bin:")
    lines.append(f"  {'bin':>8} " + " ".join(f"{k:>26}" for k in METRICS))
    for j, b in enumerate(res["bins"]):
        lines.append(f"  {b:>8} " + " ".join(f"{f4(d['bins'][k][j]['mean']):>8} {ci((d['bins'][k][j]['lo'], d['bins'][k][j]['hi'])):>17}"
                                            for k in METRICS))
    lines.append(f"  {'all':>8} " + " ".join(f"{f4(d['all_positions'][k]['mean']):>8} "
                                           f"{ci((d['all_positions'][k]['lo'], d['all_positions'][k]['hi'])):>17}" for k in METRICS))
    for k in METRICS:
        lines += ["", f"Label positions y_i vs documents at the same positions — {METRIC_TITLES[k]}:",
                  f"  {'depth':>5} {'i':>3} {'prompts':>8} {'docs':>8} {'diff':>8} {'diff 95% CI':>19} {'Welch p':>8}"]
        for r in res["labels"]["per_position"][k]:
            lines.append(f"  {r['depth']:>5} {r['i']:>3} {f4(r['prompts']):>8} {f4(r['docs']):>8} {r['diff']:>8.4f} "
                         f"{ci(r['diff_ci']):>19} {r['welch_p']:>8.2g}")
        lines.append("  by bin (each item's mean over the label positions in the bin):")
        for r in res["labels"]["bins"][k]:
            lines.append(f"  {r['bin']:>9} {f4(r['prompts']):>8} {f4(r['docs']):>8} {r['diff']:>8.4f} "
                         f"{ci(r['diff_ci']):>19} {r['welch_p']:>8.2g}  ({len(r['depths'])} positions)")
    for k, rows in res["queries"].items():
        lines += ["", f"Query (after x_test) vs documents at the same position — {METRIC_TITLES[k]}:",
                  f"  {'n':>3} {'depth':>5} {'prompts':>8} {'docs':>8} {'diff':>8} {'diff 95% CI':>19} {'ratio':>6} {'Welch p':>8}"]
        for r in rows:
            lines.append(f"  {r['n']:>3} {r['depth']:>5} {f4(r['prompts']):>8} {f4(r['docs']):>8} {r['diff']:>8.4f} "
                         f"{ci(r['diff_ci']):>19} {r['ratio']:>6.2f} {r['welch_p']:>8.2g}")
    return "\n".join(lines)


def plot(res: dict, path) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    L = res["context"]
    t = np.arange(L)
    for ax, k in zip(axes, METRICS):
        d = res["documents"]["per_position"][k]
        ax.plot(t, d["mean"], color="C0", lw=1.2, label=f"held-out documents ({res['num_docs']})")
        ax.fill_between(t, d["lo"], d["hi"], color="C0", alpha=0.25, lw=0)
        allp = res["documents"]["all_positions"][k]["mean"]
        ax.axhline(allp, color="C0", ls=":", lw=1, label=f"document average, all positions ({allp:.4f})")
        rows = res["labels"]["per_position"][k]
        x = np.array([r["depth"] for r in rows], float)
        y = np.array([r["prompts"] for r in rows])
        lo = np.array([r["prompts_ci"][0] for r in rows])
        hi = np.array([r["prompts_ci"][1] for r in rows])
        ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="o", ms=4, color="C3", capsize=2,
                    label=f"prompt labels y_i ({res['num_prompts']} prompts)")
        if k in res["queries"]:
            q = res["queries"][k]
            xq = np.array([r["depth"] for r in q], float)
            yq = np.array([r["prompts"] for r in q])
            loq = np.array([r["prompts_ci"][0] for r in q])
            hiq = np.array([r["prompts_ci"][1] for r in q])
            ax.errorbar(xq + 0.8, yq, yerr=[yq - loq, hiq - yq], fmt="s", ms=5, mfc="none", color="C2", capsize=2,
                        label="prompt query after x_test (n = " + ", ".join(str(r["n"]) for r in q) + ")")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlim(0, L)
        ax.set_xticks([0, 8, 16, 32, 48, 64, 96, L])
        ax.set_xlabel("depth t: position in the context (tokens after BOS)")
        ax.set_ylabel("nats per token")
        ax.set_title(METRIC_TITLES[k] + ("\n(prompt labels are drawn from θ*'s rule, not from p_pre)"
                                         if k == "excess" else ""), fontsize=10)
        ax.legend(fontsize=7, loc="lower left" if k == "excess" else "upper right")
    name = Path(res["model_run"]).name
    fig.suptitle(f"Excess over exact Bayes by depth: documents vs ICL prompts ({name}; 95% bootstrap intervals)",
                 fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_run", help="a pretrain run folder (icl-kernel pretrain)")
    ap.add_argument("sweep_run", help="a sweep run folder of the same HMM with saved prompts")
    ap.add_argument("--docs", type=int, default=2048, help="held-out documents (default 2048)")
    ap.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    ap.add_argument("--json", default=None, help="output JSON (default runs/pretrain-depth-<model run>.json)")
    ap.add_argument("--figure", default="figures/pretrain_excess_by_depth.png", help="output PNG")
    ap.add_argument("--from-json", default=None, metavar="PATH",
                    help="redraw the figure and reprint the tables from a JSON this script wrote (no model run)")
    args = ap.parse_args(argv)
    if args.from_json:
        try:
            res = json.loads(Path(args.from_json).read_text())
            plot(res, args.figure)
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: {args.from_json} is not a JSON written by this script ({' '.join(str(exc).split())})",
                  file=sys.stderr)
            return 2
        print(tables(res))
        print(f"\nwrote {args.figure}")
        return 0
    try:
        for name in ("docs", "reps"):
            if getattr(args, name) < 1:
                raise DepthError(f"--{name} {getattr(args, name)}, expected an integer >= 1")
        if args.seed < 0:
            raise DepthError(f"--seed {args.seed}, expected an integer >= 0")
        res = analyse(args.model_run, args.sweep_run, args.docs, args.reps, args.seed)
        out = Path(args.json or f"runs/pretrain-depth-{Path(args.model_run).name}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, strict_json_text(res).encode())
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        plot(res, args.figure)
    except UserError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(tables(res))
    print(f"\nwrote {out} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
