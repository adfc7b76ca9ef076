r"""Phenomena the paper argues in words (§4.2), run exactly in the simulator.

* ``retrieval``: each prompt has a pool of M demonstrations from θ*; n of them are chosen by the
  predictive kernel's cosine similarity to x_test (``kernel``), by positional token agreement with
  x_test (``hamming``, ties at random) or at random (``random``). Bayes is the exact forward pass
  over the chosen demonstrations (most similar first); every kernel regresses on the same ones.
* ``labels``: the demonstration labels are sent through a bijection π: Y → Y' (default: the next
  |Y| emittable non-delimiter tokens outside Y). Bayes on the mapped prompt is read over Y'
  (renormalised) and compared with the Oracle transported through π; kernel regression is
  label-agnostic, so its estimate transports exactly.
* ``ood``: demonstration inputs come from θ*'s chain with emissions mixed toward uniform,
  B_λ = (1−λ)B + λU on the non-delimiter tokens (the delimiter column unchanged), and the labels
  from the true P(y | x, θ*). x_test stays in distribution. ε_θ(λ) = ρ(Σ_pre⁺ − Σ_{q_λ,θ}⁺), with
  Σ_{q_λ,θ} = Σ_x s_θᵀT^λ_x 1 · φ(x)φ(x)ᵀ (T^λ: the mixed chain, φ: the true features) by
  enumeration, so ε_θ(0) is the paper's ρ(Σ_pre⁺ − Σ_θ⁺).

Run folder ``runs/<name>/``: ``config.json`` (the resolved configuration), ``metrics.csv`` (per
condition, estimator, metric, n, seed: the mean over prompts), ``summary.json`` (per condition,
estimator, metric, n: mean and 95% bootstrap band over prompts, plus the phenomenon's extras),
``per_prompt.npz`` (every metric per prompt). Files are written atomically.
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from icl_kernel.errors import UserError
from simulate.metrics import argmax_agree, bootstrap_mean, l1
from simulate.sweep import (SweepConfig, _check_folder, atomic_savez, atomic_write_bytes, atomic_write_json,
                            evaluate_in_chunks, make_evaluator, prepare_kernels, prompt_key, resolve)
from theory import kernels as tk
from theory.bounds import all_inputs, eta, gram_epsilon, paper_epsilon
from theory.hmm import HMM, input_tokens, make_hmm

KINDS = ("retrieval", "labels", "ood")
# The small exact setting: 4 tasks × 4 states, 8 tokens (7 inputs). With l = 3 there are 7³ = 343 inputs,
# so every Σ is exact by enumeration. Retrieval uses l = 7 (823 543 inputs; it needs no Σ but the Gram,
# which is exact at any l), so that the chosen demonstrations are rarely copies of x_test.
DEFAULT_PARAMS = dict(num_tasks=4, num_states=16, num_tokens=8)
DEFAULTS = dict(
    retrieval=dict(grid=(1, 2, 4, 8, 16, 32), length=7,
                   kernels=("predictive", "predictive:beta=20", "belief", "gram")),
    labels=dict(grid=(1, 2, 4, 8, 16, 32, 64), length=3, kernels=("predictive", "gram")),
    ood=dict(grid=(1, 4, 16, 64, 256, 1024), length=3, kernels=("gram", "pretrain", "predictive", "belief")),
)
SELECTIONS = ("kernel", "hamming", "random")
MAPPINGS = ("other", "permute", "identity")
DEFAULT_LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
DEFAULT_PROMPTS = 200
EPS_RTOL = 1e-10


class PhenomenaError(UserError):
    """A phenomenon configuration that cannot run (one-line message naming the value)."""


@dataclass
class PhenomenonConfig:
    """A phenomenon run: the common prompt/kernel settings plus the kind's own options."""

    kind: str
    common: SweepConfig = field(default_factory=SweepConfig)
    pool: int | None = None  # retrieval: candidates per prompt (default 8 · max n)
    mapping: str = "other"  # labels: other | permute | identity
    lambdas: tuple = DEFAULT_LAMBDAS  # ood: emission mixing weights


def default_config(kind: str, **common) -> PhenomenonConfig:
    """The kind's defaults (small HMM, |Y| = 3, float64, :data:`DEFAULTS`); ``common`` overrides SweepConfig fields."""
    if kind not in KINDS:
        raise PhenomenaError(f"unknown phenomenon {kind!r}; expected one of {', '.join(KINDS)}")
    base = dict(preset_params=dict(DEFAULT_PARAMS), grid=DEFAULTS[kind]["grid"], seeds=DEFAULT_SEEDS,
                prompts_per_seed=DEFAULT_PROMPTS, length=DEFAULTS[kind]["length"], num_labels=3, kernels=DEFAULTS[kind]["kernels"], dtype="float64")
    base.update(common)
    return PhenomenonConfig(kind, SweepConfig(**base))


# ------------------------------------------------------------------ pure pieces


def label_mapping(hmm: HMM, labels, mode: str) -> list[int]:
    """π(Y) as a list aligned with ``labels``: ``other`` (next emittable tokens outside Y), ``permute``
    (the cyclic shift y_i → y_{i+1}, a derangement for |Y| ≥ 2) or ``identity``."""
    labels = [int(y) for y in labels]
    if mode == "identity":
        return list(labels)
    if mode == "permute":
        if len(labels) < 2:
            raise PhenomenaError(f"--mapping permute needs at least 2 labels, got {labels}")
        return labels[1:] + labels[:1]
    if mode != "other":
        raise PhenomenaError(f"mapping {mode!r}, expected one of {', '.join(MAPPINGS)}")
    B = np.asarray(hmm.B)
    free = [o for o in range(hmm.num_tokens)
            if o != int(hmm.delim) and o not in labels and np.any(B[:, o] > 0)]
    after = [o for o in free if o > max(labels)] + [o for o in free if o < max(labels)]
    if len(after) < len(labels):
        raise PhenomenaError(f"--mapping other needs {len(labels)} emittable non-delimiter tokens outside the labels "
                             f"{labels}, the vocabulary has {len(after)}; use fewer labels or --mapping permute")
    return after[:len(labels)]


def mix_emissions(hmm: HMM, lam: float) -> HMM:
    """The HMM with B_λ = (1−λ)B + λU: U spreads each state's non-delimiter mass uniformly."""
    if not 0.0 <= float(lam) <= 1.0:
        raise PhenomenaError(f"lambda {lam!r} is outside [0, 1]")
    B = np.asarray(hmm.B, float)
    inp = input_tokens(hmm)
    U = np.zeros_like(B)
    U[:, inp] = (1.0 - B[:, int(hmm.delim)])[:, None] / len(inp)
    U[:, int(hmm.delim)] = B[:, int(hmm.delim)]
    Bl = (1.0 - lam) * B + lam * U
    return make_hmm(hmm.T, Bl, hmm.R, hmm.p0, hmm.task_start, hmm.task_of_state, hmm.delim, hmm.delim_weight)


def true_label_probs(hmm: HMM, xs, task, labels) -> np.ndarray:
    """P(y | x, θ*) over ``labels`` (renormalised) for inputs ``xs [P, N, l]`` of tasks ``task [P]``."""
    import jax.numpy as jnp
    from simulate.forward import filter_tokens, hmm_arrays, next_token_probs

    A = hmm_arrays(hmm, jnp.float64)
    xs = jnp.asarray(xs)
    start = jnp.broadcast_to(A.task_start[jnp.asarray(task)][:, None, :], xs.shape[:2] + (A.T.shape[0],))
    alpha, _ = filter_tokens(A, start, jnp.zeros(xs.shape[:2], jnp.float64), xs)
    return np.asarray(next_token_probs(A, alpha, jnp.asarray(labels, jnp.int32)))


def draw_categorical(probs, u) -> np.ndarray:
    """Index i with probability probs[..., i], by inverse CDF of the uniforms ``u`` (shape probs[..., 0])."""
    c = np.cumsum(probs, -1)
    return np.minimum((c < u[..., None] * c[..., -1:]).sum(-1), probs.shape[-1] - 1)


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


def input_law_weights(hmm_w: HMM, start, xs) -> np.ndarray:
    """startᵀ T^w_x 1 for each x of ``xs [S, l]`` under ``hmm_w`` (the probability that x comes first)."""
    import jax.numpy as jnp
    from simulate.forward import filter_tokens, hmm_arrays

    A = hmm_arrays(hmm_w, jnp.float64)
    xs = jnp.asarray(xs)
    a0 = jnp.broadcast_to(jnp.asarray(start, jnp.float64), (xs.shape[0], A.T.shape[0]))
    _, logz = filter_tokens(A, a0, jnp.zeros(xs.shape[0], jnp.float64), xs)
    return np.exp(np.asarray(logz))


def _enumerate_inputs(hmm: HMM, length: int) -> np.ndarray:
    xs = all_inputs(hmm, length)
    if xs is None:
        m_in = len(input_tokens(hmm))
        raise PhenomenaError(f"exact ε_θ enumerates {m_in}^{length} = {m_in ** length} inputs (> 200000); "
                             "use fewer tokens (-P num_tokens=) or a shorter --length")
    return xs


def shift_measures(hmm: HMM, lambdas, length: int) -> dict:
    """Per λ and task θ: ε_θ(λ) = ρ(Σ_pre⁺ − Σ_{q_λ,θ}⁺), its scale-free form min_c ρ(c Σ_pre⁺ − Σ_{q_λ,θ}⁺)
    (kernel regression ignores the scale of Σ), and ‖Σ_{q_λ,θ} − Σ_θ‖_F / ‖Σ_θ‖_F; η² = max_x ‖T_x‖_F²."""
    xs = _enumerate_inputs(hmm, length)
    blocks = tk.block_structure(hmm)
    phi = tk.operator_features(hmm, xs, blocks)
    sig_pre = tk.second_moment_exact(hmm, hmm.p0, length, blocks)
    pre_inv, pre_info = tk.psd_pinv(sig_pre, EPS_RTOL, 0.0, "Sigma_pre")
    starts = np.asarray(hmm.task_start)
    sig0 = [tk.second_moment_exact(hmm, s, length, blocks) for s in starts]  # Σ_θ
    out = dict(eps=[], eps_scaled=[], rel_shift=[])
    for lam in lambdas:
        h = mix_emissions(hmm, lam)
        sig = [(phi * input_law_weights(h, s, xs)[:, None]).T @ phi for s in starts]
        out["eps"].append([paper_epsilon(sig_pre, S, EPS_RTOL) for S in sig])
        out["eps_scaled"].append([gram_epsilon(pre_inv, tk.psd_pinv(S, EPS_RTOL, 0.0, "Sigma_q")[0]).value
                                  for S in sig])
        out["rel_shift"].append([float(np.linalg.norm(S - S0) / np.linalg.norm(S0)) for S, S0 in zip(sig, sig0)])
    return dict(out, eta2=eta(hmm, length).value ** 2, sigma_pre=pre_info)


def compare(pred, ref, name: str) -> dict:
    """Per-prompt L1 and argmax agreement of ``pred [G, P, Y]`` with ``ref`` (``[G, P, Y]`` or ``[P, Y]``)."""
    return {f"l1_{name}": l1(pred, ref), f"agree_{name}": argmax_agree(pred, np.broadcast_to(ref, pred.shape))}


def renorm(p, idx) -> np.ndarray:
    """p[..., idx] renormalised over idx."""
    q = np.asarray(p)[..., idx]
    return q / q.sum(-1, keepdims=True)


def _concat(pieces):
    """Join evaluate_in_chunks pieces: (bayes [G,P,·], oracle [P,·], task_mass [G,P], [ŷ_k [G,P,·]])."""
    bayes = np.concatenate([np.asarray(sb.bayes) for sb, _ in pieces], axis=1)
    oracle = np.concatenate([np.asarray(sb.oracle) for sb, _ in pieces], axis=0)
    mass = np.concatenate([np.asarray(sb.task_mass) for sb, _ in pieces], axis=1)
    yhats = [np.concatenate([np.asarray(k[j][0]) for _, k in pieces], axis=1) for j in range(len(pieces[0][1]))]
    return bayes, oracle, mass, yhats


def _estimators(bayes, oracle, mass, yhats, names, oracle_ref=None) -> dict:
    """Metrics per estimator: Bayes vs Oracle (+ posterior mass on θ*), each kernel vs Oracle and vs Bayes."""
    oracle_ref = oracle if oracle_ref is None else oracle_ref
    out = {"bayes": dict(compare(bayes, oracle_ref, "oracle"), task_mass=mass)}
    for name, yh in zip(names, yhats):
        out[name] = dict(compare(yh, oracle_ref, "oracle"), **compare(yh, bayes, "bayes"))
    return out


# ------------------------------------------------------------------ runners (one seed each)


def _retrieval_seed(ctx, seed):
    from simulate.sampling import sample_prompts

    r = ctx.resolved
    pr = sample_prompts(prompt_key(seed), ctx.hmm, r["labels"], r["prompts_per_seed"], r["pool"], r["length"])
    rng = np.random.default_rng([seed, 0x5345])
    scores = similarity_scores(ctx.hmm, pr.demos_x, pr.x_test, rng)
    out = {}
    for sel in SELECTIONS:
        idx = select_top(scores[sel], ctx.N)
        dx = np.take_along_axis(pr.demos_x, idx[..., None], axis=1)
        dy = np.take_along_axis(pr.demos_y, idx, axis=1)
        res = _concat(evaluate_in_chunks(ctx.evaluate, (dx, dy, pr.x_test, pr.task), bar=ctx.bar))
        out[sel] = _estimators(*res, ctx.names)
        # How many of the first n chosen demonstrations are copies of x_test (a finite input space has them).
        copies = np.cumsum((dx == pr.x_test[:, None]).all(-1), axis=1)
        g = np.asarray(r["grid"])
        out[sel]["selection"] = dict(x_test_copies=(copies[:, g - 1] / g).T)
    # Reference: every kernel over the whole pool of M (what a smaller bandwidth can use).
    full = _estimators(*_concat(evaluate_in_chunks(ctx.evaluate_pool, (pr.demos_x, pr.demos_y, pr.x_test, pr.task))),
                       ctx.names)
    side = {f"full_pool|{est}|{met}": a[0] for est, mets in full.items() for met, a in mets.items()}
    return out, side


def _labels_seed(ctx, seed):
    from simulate.sampling import sample_prompts

    r = ctx.resolved
    Y, Yp = r["labels"], r["mapped_labels"]
    pr = sample_prompts(prompt_key(seed), ctx.hmm, Y, r["prompts_per_seed"], ctx.N, r["length"])
    lut = np.arange(ctx.hmm.num_tokens)
    lut[Y] = Yp
    out = {}
    for cond, dy, lab in (("original", pr.demos_y, Y), ("mapped", lut[pr.demos_y], Yp)):
        bayes, oracle, mass, yhats = _concat(evaluate_in_chunks(ctx.evaluate, (pr.demos_x, dy, pr.x_test, pr.task),
                                                                bar=ctx.bar))
        # Over the whole vocabulary: read on the condition's label set; the Oracle is carried along π.
        est = _estimators(renorm(bayes, lab), renorm(oracle, Y), mass, [renorm(y, lab) for y in yhats], ctx.names)
        # Next-token probability of the original and the mapped label sets (whole vocabulary, not renormalised).
        est["bayes"].update(mass_Y=bayes[..., Y].sum(-1), mass_piY=bayes[..., Yp].sum(-1))
        if cond == "mapped":
            est["bayes@Y"] = compare(renorm(bayes, Y), renorm(oracle, Y), "oracle")
        out[cond] = est
    return out, {}


def ood_prompts(hmm: HMM, labels, lam: float, seed: int, num_prompts: int, num_demos: int, length: int,
                true=None):
    """OOD prompts for λ: inputs from the B_λ chain (same uniforms for every λ), labels from the true
    P(y | x, θ*), x_test and θ* from the true model. Returns a :class:`simulate.sampling.Prompts`.

    ``true`` (the seed's in-distribution prompts, the same for every λ) may be passed precomputed.
    """
    from simulate.sampling import sample_prompts

    key = prompt_key(seed)
    if true is None:
        true = sample_prompts(key, hmm, labels, num_prompts, num_demos, length)
    mixed = sample_prompts(key, mix_emissions(hmm, lam), labels, num_prompts, num_demos, length)
    probs = true_label_probs(hmm, mixed.demos_x, true.task, labels)
    u = np.random.default_rng([seed, 0x4F4F44]).random(probs.shape[:2])
    ys = np.asarray(labels, np.int32)[draw_categorical(probs, u)]
    return true._replace(demos_x=mixed.demos_x, demos_y=ys)


def _ood_seed(ctx, seed):
    from simulate.sampling import sample_prompts

    r = ctx.resolved
    out, by_task = {}, {}
    true = sample_prompts(prompt_key(seed), ctx.hmm, r["labels"], r["prompts_per_seed"], ctx.N, r["length"])
    for lam in r["lambdas"]:
        pr = ood_prompts(ctx.hmm, r["labels"], lam, seed, r["prompts_per_seed"], ctx.N, r["length"], true)
        res = _concat(evaluate_in_chunks(ctx.evaluate, (pr.demos_x, pr.demos_y, pr.x_test, pr.task), bar=ctx.bar))
        out[_lam_name(lam)] = _estimators(*res, ctx.names)
        by_task[f"task|{_lam_name(lam)}"] = pr.task
    return out, by_task


def _lam_name(lam: float) -> str:
    return f"lambda={lam:g}"


RUNNERS = dict(retrieval=_retrieval_seed, labels=_labels_seed, ood=_ood_seed)


# ------------------------------------------------------------------ the run


def resolve_phenomenon(cfg: PhenomenonConfig) -> tuple[dict, HMM]:
    """Validate everything (before any file is written) and return the resolved config and the HMM."""
    if cfg.kind not in KINDS:
        raise PhenomenaError(f"unknown phenomenon {cfg.kind!r}; expected one of {', '.join(KINDS)}")
    resolved, hmm = resolve(cfg.common)
    resolved["kind"] = cfg.kind
    for k in ("save_predictions", "label_mode", "task"):
        resolved.pop(k, None)
    N = max(resolved["grid"])
    if cfg.kind == "retrieval":
        M = 8 * N if cfg.pool is None else int(cfg.pool)
        if M < N:
            raise PhenomenaError(f"pool size {M} is smaller than the largest n = {N}; expected pool >= max n")
        resolved["pool"] = M
    elif cfg.kind == "labels":
        resolved["mapping"] = cfg.mapping
        resolved["mapped_labels"] = label_mapping(hmm, resolved["labels"], cfg.mapping)
    else:
        lams = [float(v) for v in cfg.lambdas]
        if not lams:
            raise PhenomenaError("no lambdas given; expected e.g. 0,0.5,1")
        for v in lams:
            mix_emissions(hmm, v)  # range check
        resolved["lambdas"] = sorted(set(lams))
        _enumerate_inputs(hmm, resolved["length"])  # enumeration check
        F = tk.feature_dim(tk.block_structure(hmm))
        if F > 4096:
            raise PhenomenaError(f"exact ε_θ needs Σ over vec(T_x), which has {F} dimensions here (> 4096); "
                                 "use a smaller HMM")
    return resolved, hmm


@dataclass
class _Context:
    resolved: dict
    hmm: HMM
    evaluate: object
    names: list
    N: int
    bar: object = None
    evaluate_pool: object = None


def run_phenomenon(cfg: PhenomenonConfig, out_dir, *, force: bool = False, quiet: bool = False,
                   figure: str | Path | None = None) -> dict:
    """Run one phenomenon into ``out_dir``; write the figure (if given); return the summary."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    resolved, hmm = resolve_phenomenon(cfg)
    specs = [tk.parse_kernel(k) for k in resolved["kernels"]]
    prepared, infos, blocks = prepare_kernels(hmm, specs, resolved["length"])
    extras = dict(kernels=infos)
    if cfg.kind == "ood":
        extras.update(shift_measures(hmm, resolved["lambdas"], resolved["length"]))
    out = Path(out_dir)
    _check_folder(out, resolved, force)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", resolved)
    eval_labels = list(range(hmm.num_tokens)) if cfg.kind == "labels" else resolved["labels"]
    evaluate = make_evaluator(hmm, prepared, blocks, eval_labels, resolved["grid"], resolved["dtype"])
    conds = {"retrieval": len(SELECTIONS), "labels": 2, "ood": len(resolved.get("lambdas", []))}[cfg.kind]
    P = resolved["prompts_per_seed"]
    bar = tqdm(total=len(resolved["seeds"]) * conds * P, unit="prompt", disable=quiet, delay=2.0,
               desc=f"phenomena {cfg.kind}", dynamic_ncols=True)
    ctx = _Context(resolved, hmm, evaluate, resolved["kernels"], max(resolved["grid"]), bar)
    if cfg.kind == "retrieval":
        ctx.evaluate_pool = make_evaluator(hmm, prepared, blocks, eval_labels, [resolved["pool"]], resolved["dtype"])
    per_seed, side = [], {}
    for s in resolved["seeds"]:
        res, sd = RUNNERS[cfg.kind](ctx, s)
        per_seed.append((s, res))
        for k, v in sd.items():
            side.setdefault(k, []).append(v)
    bar.close()
    summary = summarise(out, resolved, per_seed, extras, {k: np.concatenate(v) for k, v in side.items()})
    summary["wall_seconds"] = time.perf_counter() - t0
    atomic_write_json(out / "summary.json", summary)
    if figure is not None:
        summary["figure"] = str(plot_phenomenon(summary, figure))
    return summary


def _band_dict(x, **kw) -> dict:
    m, lo, hi, c = bootstrap_mean(x)
    return dict(kw, mean=m, lo=lo, hi=hi, count=c)


def summarise(out: Path, resolved: dict, per_seed, extras: dict, side: dict) -> dict:
    """metrics.csv (per seed), per_prompt.npz and the summary dict (bands over all prompts).

    ``side`` holds per-prompt arrays beside the n grid: ``full_pool|est|metric`` (retrieval: every
    estimator over the whole pool) and ``task|condition`` (ood: the test task of each prompt)."""
    grid = resolved["grid"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["condition", "estimator", "metric", "n", "seed", "mean"])
    pooled: dict = {}
    for seed, res in per_seed:
        for cond, ests in res.items():
            for est, mets in ests.items():
                for met, arr in mets.items():
                    pooled.setdefault((cond, est, met), []).append(arr)
                    for g, n in enumerate(grid):
                        w.writerow([cond, est, met, n, seed, f"{np.nanmean(arr[g]):.6g}"])
    atomic_write_bytes(out / "metrics.csv", buf.getvalue().encode())
    pooled = {k: np.concatenate(v, axis=-1) for k, v in pooled.items()}
    atomic_savez(out / "per_prompt.npz", **{"|".join(k): v for k, v in pooled.items()}, **side)
    results: dict = {}
    for (cond, est, met), arr in pooled.items():
        results.setdefault(cond, {}).setdefault(est, {})[met] = [_band_dict(arr[g], n=n) for g, n in enumerate(grid)]
    summary = dict(config=resolved, num_prompts=int(next(iter(pooled.values())).shape[-1]), results=results,
                   extras=extras)
    for key, arr in side.items():
        kind, *rest = key.split("|")
        if kind == "full_pool":
            summary.setdefault("full_pool", {}).setdefault(rest[0], {})[rest[1]] = _band_dict(arr, n=resolved["pool"])
    tasks = {k.split("|", 1)[1]: v for k, v in side.items() if k.startswith("task|")}
    if tasks:  # ood: the floor (largest n) per test task, to pair with ε_θ per task
        by_task = {}
        for cond, t in tasks.items():
            for est in results[cond]:
                arr = pooled[(cond, est, "l1_oracle")][-1]
                by_task.setdefault(cond, {})[est] = [float(np.nanmean(arr[t == k])) if np.any(t == k) else None
                                                     for k in range(len(extras["eps"][0]))]
        summary["floor_by_task"] = by_task
    return summary


# ------------------------------------------------------------------ tables


def _fmt(r) -> str:
    return f"{r['mean']:.3f} [{r['lo']:.3f},{r['hi']:.3f}]"


def format_table(summary: dict) -> str:
    """The kind's plain-text table (means with 95% bootstrap bands)."""
    kind = summary["config"]["kind"]
    return dict(retrieval=_table_retrieval, labels=_table_labels, ood=_table_ood)[kind](summary)


def _rows_by_n(summary, rows, label_w=40):
    grid = summary["config"]["grid"]
    lines = [f"{'':{label_w}s}" + "".join(f"{'n=' + str(n):>9s}" for n in grid)]
    for label, series in rows:
        lines.append(f"{label:{label_w}s}" + "".join(f"{r['mean']:9.3f}" for r in series))
    return lines


def _header(summary) -> str:
    c = summary["config"]
    pp = c["preset_params"]
    hmm = (f"{pp.get('num_tasks')} tasks, {pp.get('num_states')} states, {pp.get('num_tokens')} tokens"
           if c["preset"] == "han" else c["preset"])
    return (f"{c['kind']}: preset {c['preset']} ({hmm}), l={c['length']}, labels {c['labels']}, "
            f"{summary['num_prompts']} prompts (seeds {c['seeds']})")


def _table_retrieval(summary) -> str:
    res = summary["results"]
    lines = [_header(summary) + f", pool {summary['config']['pool']}",
             "L1 to Oracle P(y|x_test,θ*) (mean over prompts); agreement = argmax agrees with the Oracle"]
    rows = []
    for sel in SELECTIONS:
        rows.append((f"copies of x_test among chosen / {sel}", res[sel]["selection"]["x_test_copies"]))
    for est in ["bayes", *summary["config"]["kernels"]]:
        for sel in SELECTIONS:
            rows.append((f"{est} / {sel} : L1", res[sel][est]["l1_oracle"]))
        for sel in SELECTIONS:
            rows.append((f"{est} / {sel} : agree", res[sel][est]["agree_oracle"]))
    lines += _rows_by_n(summary, rows)
    N = summary["config"]["grid"][-1]
    k0 = summary["config"]["kernels"][0]
    lines.append(f"{k0} at n={N} (95% bands): " + "; ".join(f"{sel} {_fmt(res[sel][k0]['l1_oracle'][-1])}"
                                                             for sel in SELECTIONS))
    fp = summary["full_pool"]
    lines.append(f"all {summary['config']['pool']} pool demos (random order), L1 to Oracle: "
                 + "; ".join(f"{est} {_fmt(fp[est]['l1_oracle'])}" for est in fp))
    return "\n".join(lines)


def _table_labels(summary) -> str:
    c = summary["config"]
    res = summary["results"]
    o, m = res["original"], res["mapped"]
    lines = [_header(summary) + f", mapping {c['mapping']}: {c['labels']} -> {c['mapped_labels']}"]
    rows = [("Bayes orig vs Oracle: L1", o["bayes"]["l1_oracle"]),
            ("Bayes mapped vs π(Oracle): L1", m["bayes"]["l1_oracle"]),
            ("Bayes mapped read on Y vs Oracle", m["bayes@Y"]["l1_oracle"]),
            ("Bayes orig vs Oracle: agree", o["bayes"]["agree_oracle"]),
            ("Bayes mapped vs π(Oracle): agree", m["bayes"]["agree_oracle"]),
            ("posterior mass θ*: orig", o["bayes"]["task_mass"]),
            ("posterior mass θ*: mapped", m["bayes"]["task_mass"]),
            ("next-token mass on Y: orig", o["bayes"]["mass_Y"]),
            ("next-token mass on Y: mapped", m["bayes"]["mass_Y"]),
            ("next-token mass on π(Y): orig", o["bayes"]["mass_piY"]),
            ("next-token mass on π(Y): mapped", m["bayes"]["mass_piY"])]
    for k in c["kernels"]:
        rows.append((f"{k} vs Oracle L1 (orig = mapped)", o[k]["l1_oracle"]))
        rows.append((f"{k} vs Bayes L1: orig", o[k]["l1_bayes"]))
        rows.append((f"{k} vs Bayes L1: mapped", m[k]["l1_bayes"]))
    return "\n".join([*lines, *_rows_by_n(summary, rows)])


def _table_ood(summary) -> str:
    c = summary["config"]
    res, ex = summary["results"], summary["extras"]
    N = c["grid"][-1]
    ests = ["bayes", *c["kernels"]]
    lines = [_header(summary),
             f"floor = L1 to Oracle at n={N} (95% band); ε_θ = ρ(Σ_pre⁺ − Σ_qλ⁺) and ε_c = min_c ρ(c Σ_pre⁺ − Σ_qλ⁺), "
             f"means over tasks; shift = ‖Σ_qλ − Σ_θ‖_F/‖Σ_θ‖_F; η² = {ex['eta2']:.3g}; mass θ* at n={N}",
             f"{'λ':>5s} {'ε_θ':>9s} {'η²ε_θ':>9s} {'ε_c':>9s} {'shift':>6s} {'mass θ*':>8s} "
             + " ".join(f"{e:>22s}" for e in ests)]
    for i, lam in enumerate(c["lambdas"]):
        r = res[_lam_name(lam)]
        eps = float(np.mean(ex["eps"][i]))
        lines.append(f"{lam:5.2f} {eps:9.3g} {ex['eta2'] * eps:9.3g} {np.mean(ex['eps_scaled'][i]):9.3g} "
                     f"{np.mean(ex['rel_shift'][i]):6.3f} "
                     f"{r['bayes']['task_mass'][-1]['mean']:8.3f} "
                     + " ".join(f"{_fmt(r[e]['l1_oracle'][-1]):>22s}" for e in ests))
    return "\n".join(lines)


# ------------------------------------------------------------------ figures


def _band(ax, x, rows, **kw):
    m = np.array([r["mean"] for r in rows], float)
    lo = np.array([r["lo"] for r in rows], float)
    hi = np.array([r["hi"] for r in rows], float)
    line, = ax.plot(x, m, **kw)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    return line


def plot_phenomenon(summary: dict, out_path) -> Path:
    """The kind's figure (PNG, written atomically); 95% bootstrap bands over prompts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind = summary["config"]["kind"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    dict(retrieval=_plot_retrieval, labels=_plot_labels, ood=_plot_ood)[kind](summary, axes)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(_header(summary) + "; bands: 95% bootstrap over prompts", fontsize=9)
    from simulate.plotting import save_figure

    return save_figure(fig, out_path)


def _log2_n(ax, ylabel, title):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of demonstrations n")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)


def _label_n_axes(axes, labels):
    """Three panels over n: (y label, title) each; the middle one is a fraction in [0, 1]."""
    for ax, (ylabel, title) in zip(axes, labels):
        _log2_n(ax, ylabel, title)
    axes[1].set_ylim(0, 1.02)


def _plot_retrieval(summary, axes):
    res = summary["results"]
    grid = summary["config"]["grid"]
    k0 = summary["config"]["kernels"][0]
    colors = dict(kernel="tab:blue", hamming="tab:orange", random="tab:green")
    for sel in SELECTIONS:
        c = colors[sel]
        _band(axes[0], grid, res[sel][k0]["l1_oracle"], color=c, marker="o", label=f"{k0} kernel, {sel} demos")
        _band(axes[0], grid, res[sel]["bayes"]["l1_oracle"], color=c, ls="--", marker=".", label=f"Bayes, {sel} demos")
        _band(axes[1], grid, res[sel][k0]["agree_oracle"], color=c, marker="o", label=f"{k0} kernel, {sel} demos")
        _band(axes[1], grid, res[sel]["bayes"]["agree_oracle"], color=c, ls="--", marker=".", label=f"Bayes, {sel} demos")
    others = [k for k in summary["config"]["kernels"][1:] if k != "gram"]
    for k, ls in zip(others, (":", "-.")):
        _band(axes[0], grid, res["random"][k]["l1_oracle"], color="black", ls=ls, label=f"{k}, random demos")
        for sel in ("kernel", "random"):
            _band(axes[2], grid, res[sel][k]["l1_oracle"], color=colors[sel], ls=ls, label=f"{k}, {sel} demos")
    for sel in ("kernel", "random"):
        _band(axes[2], grid, res[sel][k0]["l1_oracle"], color=colors[sel], marker="o", label=f"{k0}, {sel} demos")
    M = summary["config"]["pool"]
    for k, ls in zip([k0, *others], ("-", ":", "-.")):
        axes[2].axhline(summary["full_pool"][k]["l1_oracle"]["mean"], color="gray", ls=ls, lw=1.2,
                        label=f"{k}, all {M} pool demos")
    _label_n_axes(axes, [("L1 distance to Oracle P(y | x_test, θ*) (over labels)", "Retrieved vs random demonstrations"),
                         ("argmax agreement with the Oracle (fraction)", "Agreement with the Oracle"),
                         ("L1 distance to Oracle (over labels)", "Retrieval vs a smaller bandwidth (β)")])


def _plot_labels(summary, axes):
    res = summary["results"]
    grid = summary["config"]["grid"]
    o, m = res["original"], res["mapped"]
    _band(axes[0], grid, o["bayes"]["l1_oracle"], color="tab:blue", marker="o", label="Bayes, original labels")
    _band(axes[0], grid, m["bayes"]["l1_oracle"], color="tab:red", marker="o", label="Bayes, mapped labels (vs π(Oracle))")
    _band(axes[0], grid, m["bayes@Y"]["l1_oracle"], color="tab:purple", ls="--", label="Bayes, mapped prompt read on Y")
    for k, ls in zip(summary["config"]["kernels"], (":", "-.", "--")):
        _band(axes[0], grid, o[k]["l1_oracle"], color="black", ls=ls, label=f"{k} kernel (identical under π)")
    _band(axes[1], grid, o["bayes"]["task_mass"], color="tab:blue", marker="o", label="original labels")
    _band(axes[1], grid, m["bayes"]["task_mass"], color="tab:red", marker="o", label="mapped labels")
    _band(axes[2], grid, o["bayes"]["mass_Y"], color="tab:blue", marker="o", label="original prompt: mass on Y")
    _band(axes[2], grid, m["bayes"]["mass_Y"], color="tab:red", ls="--", label="mapped prompt: mass on Y")
    _band(axes[2], grid, o["bayes"]["mass_piY"], color="tab:blue", marker="s", ls=":", label="original prompt: mass on π(Y)")
    _band(axes[2], grid, m["bayes"]["mass_piY"], color="tab:red", marker="s", label="mapped prompt: mass on π(Y)")
    _label_n_axes(axes, [("L1 distance to the (transported) Oracle (over labels)", "Changed label format"),
                         ("posterior mass on the true task θ* (probability)", "Task identification"),
                         ("Bayes next-token probability of the label set", "Where the output goes")])


def _plot_ood(summary, axes):
    c = summary["config"]
    res, ex = summary["results"], summary["extras"]
    lams = c["lambdas"]
    ests = ["bayes", *c["kernels"]]
    colors = plt_colors()
    scale = 10.0 ** np.floor(np.log10(max(np.max(ex["eps"]), 1e-300)))
    eps_mean = np.array([np.mean(e) for e in ex["eps"]]) / scale
    for i, e in enumerate(ests):
        floors = [res[_lam_name(lam)][e]["l1_oracle"][-1] for lam in lams]
        _band(axes[0], lams, floors, color=colors[i], marker="o", label=e)
        per_task = summary["floor_by_task"]
        xs = [ex["eps"][j][t] / scale for j, lam in enumerate(lams) for t in range(len(ex["eps"][j]))
              if per_task[_lam_name(lam)][e][t] is not None]
        ys = [per_task[_lam_name(lam)][e][t] for j, lam in enumerate(lams) for t in range(len(ex["eps"][j]))
              if per_task[_lam_name(lam)][e][t] is not None]
        axes[1].scatter(xs, ys, color=colors[i], s=14, alpha=0.7, label=f"{e} (per task θ, λ)")
        axes[1].plot(eps_mean, [f["mean"] for f in floors], color=colors[i], lw=1)
    k0 = "predictive" if "predictive" in c["kernels"] else c["kernels"][0]
    cmap = matplotlib_cmap(len(lams))
    for j, lam in enumerate(lams):
        _band(axes[2], c["grid"], res[_lam_name(lam)][k0]["l1_oracle"], color=cmap[j], marker="o", label=f"{k0}, λ={lam:g}")
        _band(axes[2], c["grid"], res[_lam_name(lam)]["bayes"]["l1_oracle"], color=cmap[j], ls="--", label=f"Bayes, λ={lam:g}")
    N = c["grid"][-1]
    shift = [np.mean(v) for v in ex["rel_shift"]]
    axes[0].set_xticks(lams, [f"{lam:g}\n[{v:.2f}]" for lam, v in zip(lams, shift)])
    axes[0].set_xlabel("emission mixing λ (0 = in distribution) [‖Σ_qλ − Σ_θ‖_F / ‖Σ_θ‖_F]")
    axes[0].set_ylabel(f"floor: L1 to Oracle at n={N} (over labels)")
    axes[0].set_title("Floor vs how far demonstrations are drawn from p_pre", fontsize=10)
    for x, lam in zip(eps_mean, lams):
        axes[1].axvline(x, color="gray", ls=":", lw=0.8)
        axes[1].annotate(f"λ={lam:g}", (x, 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                         va="top", ha="right", color="gray")
    axes[1].set_xlabel(f"ε_θ = ρ(Σ_pre⁺ − Σ_qλ⁺) (×{scale:.0e}, units of Σ⁻¹; lines: task means)")
    axes[1].set_ylabel(f"floor: L1 to Oracle at n={N} (over labels)")
    axes[1].set_title("Floor vs ε_θ (dots: one task θ at one λ)", fontsize=10)
    axes[2].set_yscale("log")
    axes[2].set_ylim(bottom=1e-4)
    _log2_n(axes[2], "L1 distance to Oracle (over labels; below 1e-4 not shown)",
            f"Convergence by λ ({k0} kernel, Bayes dashed)")


def plt_colors():
    import matplotlib.pyplot as plt

    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


def matplotlib_cmap(k: int):
    import matplotlib.pyplot as plt

    return [plt.get_cmap("viridis")(v) for v in np.linspace(0, 0.9, max(k, 1))]
