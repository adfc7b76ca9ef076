"""The evaluator: one prompt batch → exact Bayes, the Oracle and every kernel's ŷ_n, named.

Shared by the sweep, the bound and the phenomena. Three steps:

1. :func:`prepare_kernels` builds, once per run, what each kernel needs (Σ⁺ matrices for the
   matrix kernels) as typed values (:class:`MatrixKernel`, :class:`FeatureKernel`).
2. :func:`make_evaluator` returns a jitted function of one batch of prompts.
3. :func:`evaluate_prompts` runs it over a :class:`simulate.sampling.Prompts` in chunks, each
   chunk padded to a multiple of the devices and sharded over them (every process's, under
   ``jax.distributed``), and returns one
   :class:`Evaluation` whose every array has the **prompt axis first**, so trimming the padding
   is the same slice for every field.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from simulate.factorised import (FactorisationError, factorised_arrays, restart_factorisation_applies,
                                 sweep_bayes_factorised)
from simulate.forward import hmm_arrays, sweep_bayes
from simulate.metrics import argmax_agree, l1
from simulate.runtime import fetch, prompt_sharding, put_batch, replicate
from simulate.sampling import sample_inputs
from theory import kernels as tk
from theory.errors import KernelError
from theory.hmm import HMM, input_tokens

MAX_MATRIX_DIM = 4096
MAX_RECURSION_BLOCK = 16  # states per task block up to which Σ is computed exactly by the recursion


# ------------------------------------------------------------------ prepared kernels


@dataclass(frozen=True)
class MatrixKernel:
    """K(x, x') = φ(x)ᵀ A φ(x') with φ = vec(T_x) on its block support.

    ``inverses``: ``[S, F, F]`` Σ⁺ (S = 1, or one per task for the ``task`` kernel, which then uses
    the prompt's own task θ*).
    """

    spec: tk.KernelSpec
    inverses: np.ndarray
    per_task: bool

    @property
    def label(self) -> str:
        return self.spec.label


@dataclass(frozen=True)
class FeatureKernel:
    """K(x, x') = ⟨f(x), f(x')⟩ or exp(β cos(f(x), f(x'))) with f = belief or predictive features."""

    spec: tk.KernelSpec

    @property
    def label(self) -> str:
        return self.spec.label


class PreparedKernels(NamedTuple):
    """What the evaluator needs per kernel, a report per kernel (kernels.json), the block structure."""

    kernels: tuple
    infos: list
    blocks: tk.Blocks


def prepare_kernels(hmm: HMM, specs, length: int, seed: int = 0) -> PreparedKernels:
    """Build each kernel once per run (Σ⁺ exact where the inputs can be enumerated, else Monte Carlo)."""
    blocks = tk.block_structure(hmm)
    F = tk.feature_dim(blocks)
    m_in = len(input_tokens(hmm))
    second_moments: dict = {}

    def starts_of(name):
        return {"gram": [None], "pretrain": [np.asarray(hmm.p0)], "task": list(np.asarray(hmm.task_start))}[name]

    def method_of(spec):
        # Σ_{p,l} exactly: by enumeration when the inputs are few, else by the third-moment
        # recursion while the blocks are small enough for its O(K³ b⁶ l) cost; Monte Carlo beyond.
        if spec.name == "gram":
            return "gram"
        if m_in ** length <= spec.enum_limit:
            return "enumeration"
        return "recursion" if blocks.b <= MAX_RECURSION_BLOCK else "monte carlo"

    # Every recursion-method Σ (pretrain's p0 and task's K starts) in one call: starts that are
    # proportional on a block share one run there, so p0 comes free with the task starts.
    rec = [(spec.name, t, start) for spec in specs if spec.name in tk.MATRIX_KERNELS and F <= MAX_MATRIX_DIM
           and method_of(spec) == "recursion" for t, start in enumerate(starts_of(spec.name))]
    rec = list({(name, t): (name, t, start) for name, t, start in rec}.values())
    if rec:
        Ss = tk.second_moment_recursive(hmm, np.stack([start for _, _, start in rec]), length, blocks)
        for (name, t, _), S_t in zip(rec, Ss):
            second_moments[(name, t, 0)] = (S_t, 0.0)
    kernels, infos = [], []
    for j, spec in enumerate(specs):
        info = dict(kernel=spec.label)
        if spec.name not in tk.MATRIX_KERNELS:
            kernels.append(FeatureKernel(spec))
            infos.append(info)
            continue
        if F > MAX_MATRIX_DIM:
            raise KernelError(f"kernel {spec.name!r}: vec(T_x) has {F} dimensions on its support "
                              f"(> {MAX_MATRIX_DIM}) for this HMM; use belief or predictive kernels")
        starts = starts_of(spec.name)
        method = method_of(spec)
        invs = []
        for t, start in enumerate(starts):
            exact = method != "monte carlo"
            ck = (spec.name, t, 0 if exact else spec.mc_samples)
            if ck not in second_moments:
                if spec.name == "gram":
                    second_moments[ck] = (tk.gram_matrix(hmm, length, blocks), 0.0)
                elif exact:
                    second_moments[ck] = (tk.second_moment_exact(hmm, start, length, blocks), 0.0)
                else:
                    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1000 * j + t)
                    second_moments[ck] = tk.second_moment_from_samples(
                        mc_features(key, hmm, start, length, spec.mc_samples, blocks))
            S, rel = second_moments[ck]
            inv, pinfo = tk.psd_pinv(S, spec.rtol, spec.ridge, what=f"Sigma for kernel {spec.label}")
            invs.append(inv)
            info.setdefault("per_start", []).append(dict(pinfo, exact=bool(exact), method=method, mc_rel_se=rel))
        kernels.append(MatrixKernel(spec, np.stack(invs), per_task=spec.name == "task"))
        infos.append(info)
    return PreparedKernels(tuple(kernels), infos, blocks)


def mc_features(key, hmm: HMM, start, length: int, num: int, blocks: tk.Blocks) -> np.ndarray:
    """φ(x) of ``num`` inputs x ~ P(x | start, no delimiter): ``[num, K b²]`` float64."""
    keys = jax.random.split(key, num)
    return np.asarray(_mc_features(keys, hmm, jnp.asarray(start, jnp.float64), jnp.asarray(blocks.order),
                                   length, blocks.K, blocks.b))


@partial(jax.jit, static_argnames=("length", "K", "b"))
def _mc_features(keys, hmm, start, order, length: int, K: int, b: int):
    xs, _ = jax.vmap(lambda k: sample_inputs(k, hmm, start, length, None))(keys)
    return tk.operator_features(hmm, xs, tk.Blocks(order, K, b), xp=jnp)


# ------------------------------------------------------------------ one batch


class KernelEstimate(NamedTuple):
    """One kernel's estimates on a batch of P prompts at the G grid points.

    Attributes:
        yhat: ``[P, G, |Y|]`` ŷ_n = Σ_{i≤n} K(x_test, x_i) e(y_i) / Σ_{i≤n} K(x_test, x_i).
        denominator: ``[P, G]`` Σ_{i≤n} K(x_test, x_i).
        negative_weight_frac: ``[P, G]`` fraction of the first n weights that are negative.
    """

    yhat: jax.Array
    denominator: jax.Array
    negative_weight_frac: jax.Array


class Evaluation(NamedTuple):
    """Bayes, the Oracle and every kernel on P prompts at the G grid points (prompt axis first).

    Attributes:
        bayes: ``[P, G, |Y|]`` P(y | x_1 y_1 δ … x_n y_n δ x_test; p_pre), renormalised over Y.
        log_evidence: ``[P, G]`` log P(prompt_n) under p_pre.
        task_mass: ``[P, G]`` posterior mass of θ*'s block after the prompt.
        oracle: ``[P, |Y|]`` P(y | x_test; θ*), renormalised over Y.
        kernels: one :class:`KernelEstimate` per prepared kernel, in order (at the grid's n ≥ 1).
        zero: ``[P, G]`` bool, P(prompt_n | p_pre) = 0 (Bayes is NaN there); None when not computed
            (then it is ``log_evidence == -inf``).
    """

    bayes: jax.Array
    log_evidence: jax.Array
    task_mass: jax.Array
    oracle: jax.Array
    kernels: tuple
    zero: object = None


FORWARDS = ("auto", "factorised", "general")


def choose_forward(hmm: HMM, labels, length: int | None, forward: str = "auto") -> str:
    """The Bayes pass to use: ``factorised`` where the restart factorisation holds, else ``general``.

    ``forward="general"`` forces the prompt-long scan (the reference); ``"factorised"`` demands the
    factorisation and raises :class:`simulate.factorised.FactorisationError` naming the failed check.
    """
    if forward not in FORWARDS:
        raise KernelError(f"forward {forward!r}, expected one of {', '.join(FORWARDS)}")
    if forward == "general" or length is None:
        return "general"
    ok, reason = restart_factorisation_applies(hmm, labels, length)
    if forward == "factorised" and not ok:
        raise FactorisationError(f"--forward factorised: the restart factorisation does not apply: {reason}")
    return "factorised" if ok else "general"


class _Static(NamedTuple):
    """What the compiled evaluator is specialised on (hashable): everything else is an argument."""

    grid: tuple
    kernels: tuple  # per kernel: ("matrix", per_task) or ("belief" | "predictive", beta)
    K: int
    b: int
    factorised: bool
    drop_undefined: bool = False  # GINC prompts: a non-finite kernel value (impossible input) counts as 0


class EvaluatorParams(NamedTuple):
    """The evaluator's arrays, passed to the compiled function as arguments (not baked in as
    constants), so one executable serves every HMM and Σ of the same shapes."""

    hmm: HMM
    A: object            # simulate.forward.HMMArrays (general scan) or None
    F: object            # simulate.factorised.FactorisedArrays or None
    mats: tuple          # per kernel: Σ⁺ stack [S, F, F] (matrix kernels) or None
    labels: jax.Array    # [|Y|] int32
    order: jax.Array     # [K b] states block by block


def make_evaluator(hmm: HMM, prepared: PreparedKernels, labels, grid, dtype, *, length: int | None = None,
                   forward: str = "general"):
    """A function ``(demos_x [P,N,l], demos_y [P,N], x_test [P,l], task [P]) -> Evaluation`` (jitted).

    ``forward`` (see :func:`choose_forward`; needs ``length`` for anything but ``general``) picks the
    Bayes pass: the restart factorisation (per-demonstration likelihoods and cumulative sums) or
    the general scan over the whole prompt. Both give the same numbers to rounding (tested).
    The returned function has ``.lower(*batch)`` for ahead-of-time compilation (profiling).
    """
    blocks = prepared.blocks
    path = choose_forward(hmm, labels, length, forward)
    F = factorised_arrays(hmm, labels, length, jnp.dtype(dtype)) if path == "factorised" else None
    params = EvaluatorParams(
        hmm=jax.tree_util.tree_map(jnp.asarray, hmm),
        A=None if F is not None else hmm_arrays(hmm, jnp.dtype(dtype)),
        F=F,
        mats=tuple(jnp.asarray(k.inverses, jnp.float64) if isinstance(k, MatrixKernel) else None
                   for k in prepared.kernels),
        labels=jnp.asarray(labels, jnp.int32),
        order=jnp.asarray(blocks.order))
    # Batches sharded over the prompt mesh (evaluate_prompts) use parameters placed there once:
    # left on one device they would be copied to the others on every call. Anything else (numpy,
    # one device) uses the unplaced parameters, as jit would place them.
    placed = replicate(params)
    mesh_devices = placed.labels.sharding.device_set

    def _params(batch):
        on_mesh = all(isinstance(x, jax.Array) and x.sharding.device_set == mesh_devices for x in batch)
        return placed if on_mesh else params

    static = _Static(grid=tuple(int(n) for n in grid),
                     kernels=tuple(("matrix", k.per_task) if isinstance(k, MatrixKernel) else (k.spec.name, k.spec.beta)
                                   for k in prepared.kernels),
                     K=blocks.K, b=blocks.b, factorised=F is not None)

    def evaluate(demos_x, demos_y, x_test, task) -> Evaluation:
        batch = (demos_x, demos_y, x_test, task)
        return _evaluate(_params(batch), *batch, static=static)

    evaluate.lower = lambda *batch: _evaluate.lower(_params(batch), *batch, static=static)
    return evaluate


def _kernel_estimates(params: EvaluatorParams, demos_x, demos_y, x_test, task, static: _Static) -> tuple:
    """Every kernel's :class:`KernelEstimate` at the grid's n ≥ 1 (traced inside a jitted caller).

    With ``static.drop_undefined`` a kernel value that is not finite (an input p_pre cannot produce
    has no belief) counts as 0: that demonstration gets no weight.
    """
    kgrid = tuple(n for n in static.grid if n > 0)
    grid_j = jnp.asarray(kgrid)
    hmm = params.hmm
    lab_idx = jnp.argmax(demos_y[..., None] == params.labels, axis=-1)
    blocks = tk.Blocks(params.order, static.K, static.b)
    if any(kind == "matrix" for kind, _ in static.kernels):
        phi_d = tk.operator_features(hmm, demos_x, blocks, xp=jnp)
        phi_t = tk.operator_features(hmm, x_test, blocks, xp=jnp)
    features = {}
    estimates = []
    for (kind, arg), M in zip(static.kernels, params.mats):
        if kind == "matrix":
            if arg:  # Σ⁺ of the prompt's own task: every task's product, then each prompt's row
                # (gathering M[task] would copy a [P, F, F] stack: ~1 GB in float64 at the han preset)
                u = jnp.take_along_axis(jnp.einsum("pf,kfg->kpg", phi_t, M), task[None, :, None], axis=0)[0]
            else:
                u = phi_t @ M[0]
            Kv = jnp.einsum("pf,pnf->pn", u, phi_d)
        else:
            if kind not in features:
                fn = tk.belief_features if kind == "belief" else tk.predictive_features
                features[kind] = (fn(hmm, x_test, xp=jnp), fn(hmm, demos_x, xp=jnp))
            ft, fd = features[kind]
            Kv = tk.kernel_values_vector(ft, fd, arg, xp=jnp)
        if static.drop_undefined:
            Kv = jnp.where(jnp.isfinite(Kv), Kv, 0.0)
        yhat, den = tk.kernel_regression(Kv, lab_idx, params.labels.shape[0], kgrid, xp=jnp)  # [G, P, ·]
        neg = jnp.cumsum((Kv < 0).astype(Kv.dtype), axis=1)[:, grid_j - 1] / grid_j
        estimates.append(KernelEstimate(jnp.moveaxis(yhat, 0, 1), den.T, neg))
    return tuple(estimates)


@partial(jax.jit, static_argnames=("static",))
def _evaluate(params: EvaluatorParams, demos_x, demos_y, x_test, task, *, static: _Static) -> Evaluation:
    grid = static.grid
    if static.factorised:
        sb = sweep_bayes_factorised(params.F, demos_x, demos_y, x_test, task, grid)
    else:
        sb = sweep_bayes(params.A, demos_x, demos_y, x_test, task, params.labels, grid)
    estimates = _kernel_estimates(params, demos_x, demos_y, x_test, task, static)
    return Evaluation(jnp.moveaxis(sb.bayes, 0, 1), sb.log_evidence.T, sb.task_mass.T, sb.oracle, estimates)


@partial(jax.jit, static_argnames=("static",))
def _evaluate_kernels(params: EvaluatorParams, demos_x, demos_y, x_test, task, *, static: _Static) -> tuple:
    return _kernel_estimates(params, demos_x, demos_y, x_test, task, static)


@partial(jax.jit, static_argnames=("grid",))
def _general_bayes(A, demos_x, demos_y, x_test, task, labels, grid):
    return sweep_bayes(A, demos_x, demos_y, x_test, task, labels, grid)


def make_ginc_evaluator(hmm: HMM, prepared: PreparedKernels, params, grid, dtype, *, forward: str = "ginc"):
    """The evaluator of GINC prompts: ``(demos_x, demos_y, x_test, task, oracle) -> Evaluation``.

    Bayes under p_pre (``hmm``, the pretraining concepts ``params`` of :mod:`simulate.ginc`) over
    all A symbols, by :func:`simulate.ginc.bayes_nested` (``forward="ginc"``, float64, with its
    exact zero-probability mask) or by the general scan :func:`simulate.forward.sweep_bayes`
    (``forward="general"``, the reference). The Oracle is given (GINC's ``score`` under the
    prompt law, ``[P, A]``, NaN where x_test is impossible under it); ``task`` is the prompt's
    concept when it is a pretraining concept, else -1 (OOD: ``task_mass`` is NaN). Kernels use
    every symbol as a label; a demonstration p_pre cannot produce gets weight 0. Returns
    :class:`Evaluation` with ``zero [P, G]`` (P(prompt_n | p_pre) = 0: ``bayes`` NaN there).
    """
    from simulate import ginc

    if forward not in ("ginc", "general"):
        raise KernelError(f"forward {forward!r} for GINC prompts, expected ginc or general")
    blocks = prepared.blocks
    A_sym = hmm.num_tokens
    labels = jnp.arange(A_sym, dtype=jnp.int32)
    kparams = EvaluatorParams(
        hmm=jax.tree_util.tree_map(jnp.asarray, hmm), A=None, F=None,
        mats=tuple(jnp.asarray(k.inverses, jnp.float64) if isinstance(k, MatrixKernel) else None
                   for k in prepared.kernels),
        labels=labels, order=jnp.asarray(blocks.order))
    grid = tuple(int(n) for n in grid)
    static = _Static(grid=grid,
                     kernels=tuple(("matrix", k.per_task) if isinstance(k, MatrixKernel) else (k.spec.name, k.spec.beta)
                                   for k in prepared.kernels),
                     K=blocks.K, b=blocks.b, factorised=False, drop_undefined=True)
    tables = ginc.tables(params, jnp.float64) if forward == "ginc" else None
    A = hmm_arrays(hmm, jnp.dtype(dtype)) if forward == "general" else None

    def evaluate(demos_x, demos_y, x_test, task, oracle) -> Evaluation:
        dx, dy, xt, tsk = (np.asarray(a) for a in (demos_x, demos_y, x_test, task))
        if forward == "ginc":
            gb = ginc.bayes_nested(tables, dx, dy, xt, grid)
            zero = np.asarray(gb.zero)  # [G, P]
            bayes = np.where(zero[..., None], np.nan, np.asarray(gb.bayes))
            log_ev = np.asarray(gb.log_evidence)
            post = np.asarray(gb.posterior)  # [G, P, C]
            mass = np.take_along_axis(post, np.maximum(tsk, 0)[None, :, None], axis=-1)[..., 0]
        else:
            sb = _general_bayes(A, jnp.asarray(dx), jnp.asarray(dy), jnp.asarray(xt), jnp.asarray(np.maximum(tsk, 0)),
                                labels, grid)
            log_ev = np.asarray(sb.log_evidence)
            zero = np.isneginf(log_ev)
            bayes = np.where(zero[..., None], np.nan, np.asarray(sb.bayes))
            mass = np.asarray(sb.task_mass)
        mass = np.where((tsk < 0)[None, :] | zero, np.nan, mass)
        est = _evaluate_kernels(kparams, jnp.asarray(dx), jnp.asarray(dy), jnp.asarray(xt), jnp.asarray(tsk),
                                static=static)
        return Evaluation(np.moveaxis(bayes, 0, 1), log_ev.T, mass.T, np.asarray(oracle, float),
                          tuple(jax.tree_util.tree_map(np.asarray, e) for e in est), zero.T)

    return evaluate


# ------------------------------------------------------------------ many batches


def batch_size(chunk: int, num_prompts: int, num_devices: int) -> int:
    """Prompts per evaluated batch: ``chunk`` (at most ``num_prompts``) rounded up to a multiple of the devices."""
    return max(num_devices, (min(int(chunk), num_prompts) + num_devices - 1) // num_devices * num_devices)


def evaluate_prompts(evaluate, demos_x, demos_y, x_test, task, chunk: int = 256, bar=None) -> Evaluation:
    """Run ``evaluate`` over all prompts in chunks sharded over the devices (numpy out).

    A chunk whose size does not divide by the device count is padded with copies of its first
    prompt; the padding is cut from axis 0 of every output (the prompt axis of :class:`Evaluation`).
    Under ``jax.distributed`` the devices are those of every process (:func:`prompt_sharding`):
    each process passes the same prompts, places its own devices' rows, and gets every output whole.
    """
    if int(chunk) < 1:
        raise ValueError(f"chunk {chunk}, expected >= 1 prompts per batch")
    sharding, ndev = prompt_sharding()
    arrays = [np.asarray(a) for a in (demos_x, demos_y, x_test, task)]
    P = arrays[0].shape[0]
    chunk = batch_size(chunk, P, ndev)
    pieces = []
    for a in range(0, P, chunk):
        batch = [x[a:a + chunk] for x in arrays]
        real = batch[0].shape[0]
        pad = (-real) % ndev
        if pad:
            batch = [np.concatenate([x, np.repeat(x[:1], pad, axis=0)]) for x in batch]
        out = fetch(evaluate(*[put_batch(x, sharding) for x in batch]))
        pieces.append(jax.tree_util.tree_map(lambda v: v[:real], out))
        if bar is not None:
            bar.update(real)
    return jax.tree_util.tree_map(lambda *vs: np.concatenate(vs, axis=0), *pieces)


# ------------------------------------------------------------------ metrics


class PromptMetrics(NamedTuple):
    """Per-prompt metrics ``[P, G]`` of one evaluation: the common ones and one dict per kernel."""

    common: dict
    kernels: list


COMMON_METRICS = ("bayes_vs_oracle_l1", "posterior_mass_true_task", "bayes_oracle_agreement")
KERNEL_METRICS = ("kernel_vs_bayes_l1", "kernel_vs_oracle_l1", "argmax_agreement", "negative_weight_frac")
#: Metrics against the prompt's label (GINC's test label; a sampled y_test for the matched law) and the
#: zero-probability indicator; NaN entries (Bayes where P(prompt | p_pre) = 0) are left out of means.
LABEL_METRICS = ("zero_probability", "bayes_accuracy", "oracle_accuracy")
KERNEL_LABEL_METRICS = ("accuracy",)


def zero_mask(ev: Evaluation) -> np.ndarray:
    """``[P, G]`` bool: P(prompt_n | p_pre) = 0 (the evaluation's mask, else log evidence = -inf)."""
    if ev.zero is not None:
        return np.asarray(ev.zero, bool)
    return np.isneginf(np.asarray(ev.log_evidence, float))


def _accuracy(pred, label):
    """1.0 where argmax over the last axis equals ``label [P]``, NaN where ``pred`` is not finite."""
    pred = np.asarray(pred, float)
    lab = np.asarray(label).reshape(label.shape + (1,) * (pred.ndim - 1 - np.ndim(label)))
    ok = np.isfinite(pred).all(-1)
    return np.where(ok, (np.argmax(np.nan_to_num(pred, nan=-np.inf), -1) == lab).astype(float), np.nan)


def prompt_metrics(ev: Evaluation, label=None, label_tokens=None) -> PromptMetrics:
    """L1 distances and argmax agreement per prompt and grid point (``[P, G]`` each; kernels at n ≥ 1).

    With ``label [P]`` (token ids) and ``label_tokens`` (the token of each vector entry) also the
    label metrics (:data:`LABEL_METRICS`, :data:`KERNEL_LABEL_METRICS`). Bayes is NaN (and left out)
    where the prompt has probability 0 under p_pre.
    """
    bayes = np.asarray(ev.bayes, float)
    oracle = np.broadcast_to(np.asarray(ev.oracle, float)[:, None], bayes.shape)
    common = dict(bayes_vs_oracle_l1=l1(bayes, oracle),
                  posterior_mass_true_task=np.asarray(ev.task_mass, float),
                  bayes_oracle_agreement=argmax_agree(bayes, oracle))
    kcols = None
    if ev.kernels and np.asarray(ev.kernels[0].yhat).shape[1] != bayes.shape[1]:
        kcols = np.arange(bayes.shape[1] - np.asarray(ev.kernels[0].yhat).shape[1], bayes.shape[1])  # n ≥ 1
    if label is not None:
        # the label as an index into the vectors' entries
        tok = np.asarray(label_tokens)
        lab = np.asarray(label)
        idx = np.argmax(lab[:, None] == tok[None, :], axis=1)
        idx = np.where((lab[:, None] == tok[None, :]).any(1), idx, -1)
        common["zero_probability"] = zero_mask(ev).astype(float)
        common["bayes_accuracy"] = _accuracy(bayes, idx)
        common["oracle_accuracy"] = np.broadcast_to(_accuracy(np.asarray(ev.oracle, float), idx)[:, None],
                                                    bayes.shape[:2]).copy()
    kernels = []
    for k in ev.kernels:
        yhat = np.asarray(k.yhat, float)
        b_k = bayes if kcols is None else bayes[:, kcols]
        o_k = oracle if kcols is None else oracle[:, kcols]
        km = dict(kernel_vs_bayes_l1=l1(yhat, b_k), kernel_vs_oracle_l1=l1(yhat, o_k),
                  argmax_agreement=argmax_agree(yhat, b_k),
                  negative_weight_frac=np.asarray(k.negative_weight_frac, float))
        if label is not None:
            km["accuracy"] = _accuracy(yhat, idx)
        kernels.append(km)
    return PromptMetrics(common, kernels)
