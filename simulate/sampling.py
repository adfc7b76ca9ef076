r"""Sampling pretraining documents and ICL prompts with explicit PRNG keys.

A demonstration for task θ is a triple x y δ: x ∈ (O \ {δ})^l, a label y ∈ Y and the delimiter
that follows it, drawn from its exact law

.. math:: P(x, y \mid θ, Y) = \frac{s_θ^\top T_x \operatorname{diag}(b_y) T w_δ}
          {\sum_{x' \in (O\setminus δ)^l,\, y' \in Y} s_θ^\top T_{x'} \operatorname{diag}(b_{y'}) T w_δ},

i.e. a stretch of the task's chain conditioned on containing no delimiter, on being followed by a
label word and then by the delimiter. It is sampled exactly, state by state, with backward
weights β_l = B[:, Y] 1 ⊙ T w_δ, β_t = diag(1 - B[:, δ]) T β_{t+1}. When the delimiter weight
w_δ is the same for every state, T w_δ is that constant and is left out (the law is the same).
With ``label_mode="argmax"`` the label is instead argmax_y P(y | x, θ). Every demonstration,
prompt and seed has its own key from ``fold_in``, so prompts are reproducible one by one.

This is the ``matched`` prompt law (a prompt drawn from p_pre's own format, for the han and
custom presets); GINC's prompt laws are :func:`simulate.ginc.sample_prompts`.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from theory.filtering import step as filter_step
from theory.hmm import HMM, demo_end_weight


class Prompts(NamedTuple):
    """A batch of ICL prompts sharing one demonstration count N and input length l.

    Attributes:
        demos_x: ``[P, N, l]`` int32 demonstration inputs (``-1`` = padding, skipped).
        demos_y: ``[P, N]`` int32 demonstration labels (token ids in the label set).
        x_test: ``[P, l]`` int32 query inputs.
        y_test: ``[P]`` int32 a label for x_test drawn like the demonstrations' (not used by estimators).
        task: ``[P]`` int32 the test task θ* of each prompt.
    """

    demos_x: np.ndarray
    demos_y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: np.ndarray


def _backward_weights(hmm: HMM, labels, length: int, dtype, delim_end: bool = False):
    """β_0..β_l (``[l+1, d]``); β_l = P(next token ∈ Y | state) (or ones if labels is None), times
    ``T w_δ`` (the delimiter after the label) when ``delim_end``."""
    B = jnp.asarray(hmm.B, dtype)
    T = jnp.asarray(hmm.T, dtype)
    keep = 1.0 - B[:, hmm.delim]
    beta = B[:, labels].sum(-1) if labels is not None else jnp.ones(B.shape[0], dtype)
    if delim_end:
        beta = beta * (T @ jnp.asarray(hmm.delim_weight, dtype))
    out = [beta]
    for _ in range(length):
        beta = keep * (T @ beta)
        beta = beta / beta.max()  # scale-free: only ratios matter
        out.append(beta)
    return jnp.stack(out[::-1])


def _categorical(weights, u):
    """Index i with probability weights[i] / sum(weights), by inverse CDF of the uniform ``u``."""
    c = jnp.cumsum(weights)
    return jnp.minimum(jnp.sum(c < u * c[-1]), weights.shape[0] - 1).astype(jnp.int32)


def sample_inputs(key, hmm: HMM, start, length: int, labels=None, label_mode: str = "sample", dtype=jnp.float64,
                  delim_end: bool = False):
    """One demonstration (x, y) from start distribution ``start`` (``[d]``).

    Returns ``(x [length] int32, y [] int32)``; ``y`` indexes into the token vocabulary (or -1 if
    ``labels`` is None). With ``delim_end`` the law includes the delimiter after y (x y δ ∝
    startᵀ T_x diag(b_y) T w_δ; see :func:`theory.hmm.demo_end_weight`). Pure and vmappable over
    keys and starts.
    """
    u = jax.random.uniform(key, (2 * length + 2,), dtype)
    return sample_inputs_from_uniforms(u, hmm, start, length, labels, label_mode, dtype, delim_end)


def sample_inputs_from_uniforms(u, hmm: HMM, start, length: int, labels=None, label_mode: str = "sample",
                                dtype=jnp.float64, delim_end: bool = False):
    """:func:`sample_inputs` driven by ``u [2 l + 2]`` uniforms (one per categorical draw).

    Inverse-CDF draws keep the compiled graph small under nested vmaps (each threefry instance
    costs about a second of XLA compile time on CPU).
    """
    B = jnp.asarray(hmm.B, dtype)
    T = jnp.asarray(hmm.T, dtype)
    betas = _backward_weights(hmm, labels, length, dtype, delim_end)
    emit_in = B.at[:, hmm.delim].set(0.0)
    s0 = _categorical(jnp.asarray(start, dtype) * betas[0], u[0])

    def step(s, inp):
        ue, ut, beta_next = inp
        o = _categorical(emit_in[s], ue)
        s_next = _categorical(T[s] * beta_next, ut)
        return s_next, o

    s_last, x = jax.lax.scan(step, s0, (u[1:1 + length], u[1 + length:1 + 2 * length], betas[1:]))
    if labels is None:
        return x.astype(jnp.int32), jnp.int32(-1)
    lab = jnp.asarray(labels)
    if label_mode == "argmax":
        # argmax_y P(y | x, θ): filter x from the start distribution, then next-token scores.
        alpha = jnp.asarray(start, dtype)

        def f(a, o):
            return filter_step(a, jnp.zeros((), dtype), B[:, o], T)[0], None

        alpha, _ = jax.lax.scan(f, alpha, x)
        y = lab[jnp.argmax(alpha @ B[:, lab])]
    else:
        y = lab[_categorical(B[s_last, lab], u[-1])]
    return x.astype(jnp.int32), y.astype(jnp.int32)


def sample_prompts(key, hmm: HMM, labels, num_prompts: int, num_demos: int, length: int,
                   task=None, label_mode: str = "sample", start: int = 0) -> Prompts:
    """``num_prompts`` prompts with ``num_demos`` demonstrations each, plus x_test.

    Prompt ``i`` (global index ``start + i``) uses ``fold_in(key, start + i)``; its task is
    uniform over tasks unless ``task`` is given. Returns numpy arrays (see :class:`Prompts`).
    """
    if num_demos < 0:
        raise ValueError(f"number of demonstrations {num_demos}, expected n >= 0")
    if length < 1:
        raise ValueError(f"input length {length}, expected l >= 1")
    if label_mode not in ("sample", "argmax"):
        raise ValueError(f"label mode {label_mode!r}, expected 'sample' or 'argmax'")
    labels = jnp.asarray(labels, jnp.int32)
    task_arr = jnp.int32(-1 if task is None else task)
    law = prompt_law(hmm)
    xs, ys, th = _sample_prompts_jit(key, hmm, labels, task_arr, jnp.arange(start, start + num_prompts),
                                     jnp.asarray(law.prior_cdf), jnp.asarray(law.first_starts),
                                     num_demos, length, label_mode, law.uniform_prior, law.first_is_start,
                                     demo_end_weight(hmm) is not None)
    xs, ys = np.asarray(xs), np.asarray(ys)
    return Prompts(xs[:, :-1], ys[:, :-1], xs[:, -1], ys[:, -1], np.asarray(th, np.int32))


class PromptLaw(NamedTuple):
    """How a prompt's task and first demonstration are drawn, so that sampling and scoring agree.

    Bayes scores the prompt under p_pre: the first demonstration from p0, later ones (after a
    delimiter) from the restart. So θ* is drawn from the prior π_θ = p0's mass on θ's block, the
    first demonstration starts from p0 conditioned on θ*'s block, and every later demonstration and
    x_test from θ*'s start. For the han preset (p0 the mean of one-hot starts) this is the uniform
    prior and the task start, exactly as before.
    """

    prior_cdf: np.ndarray      # [K] cumulative π_θ
    first_starts: np.ndarray   # [K, d] p0 restricted to block θ, normalised
    uniform_prior: bool        # π is uniform: θ* = floor(u K) (the historical formula, bit for bit)
    first_is_start: bool       # p0 | θ equals θ's start for every θ


def task_prior(hmm: HMM) -> np.ndarray:
    """π_θ: the mass p0 puts on each task's block of states ``[K]``."""
    tos = np.asarray(hmm.task_of_state)
    return np.bincount(tos, weights=np.asarray(hmm.p0, float), minlength=hmm.num_tasks)


def prompt_law(hmm: HMM) -> PromptLaw:
    K = hmm.num_tasks
    prior = task_prior(hmm)
    starts = np.asarray(hmm.task_start, float)
    tos = np.asarray(hmm.task_of_state)
    first = np.where(tos[None, :] == np.arange(K)[:, None], np.asarray(hmm.p0, float)[None, :], 0.0)
    mass = first.sum(1, keepdims=True)
    first = np.where(mass > 0, first / np.where(mass > 0, mass, 1.0), starts)
    same = bool(np.allclose(first, starts, rtol=0, atol=1e-15))
    return PromptLaw(np.cumsum(prior), starts if same else first,
                     bool(np.allclose(prior, 1.0 / K, rtol=0, atol=1e-12)), same)


@partial(jax.jit, static_argnums=(7, 8, 9, 10, 11, 12))
def _sample_prompts_jit(key, hmm, labels, task, idx, prior_cdf, first_starts, num_demos, length, label_mode,
                        uniform_prior, first_is_start, delim_end):
    K = hmm.task_start.shape[0]
    starts = hmm.task_start

    def one_prompt(i):
        # One key per prompt (fold_in of its global index); row j of u drives demonstration j.
        u = jax.random.uniform(jax.random.fold_in(key, i), (num_demos + 2, 2 * length + 2), jnp.float64)
        if uniform_prior:
            drawn = jnp.minimum((u[-1, 0] * K).astype(jnp.int32), K - 1)
        else:
            drawn = jnp.minimum(jnp.searchsorted(prior_cdf, u[-1, 0] * prior_cdf[-1], side="right"), K - 1)
        th = jnp.where(task < 0, drawn.astype(jnp.int32), task)
        rows = jnp.broadcast_to(starts[th], (num_demos + 1, starts.shape[1]))
        if not first_is_start:
            rows = rows.at[0].set(first_starts[th])
        xs, ys = jax.vmap(lambda uj, sj: sample_inputs_from_uniforms(uj, hmm, sj, length, labels, label_mode,
                                                                   delim_end=delim_end))(
            u[:-1], rows)
        return xs, ys, th

    return jax.vmap(one_prompt)(idx)


def sample_documents(key, hmm: HMM, num_docs: int, length: int) -> np.ndarray:
    """Pretraining documents ``[num_docs, length]``: start at p0, emit, move (R after δ, else T)."""
    B = jnp.asarray(hmm.B)
    T = jnp.asarray(hmm.T)
    R = jnp.asarray(hmm.R)

    def one(k):
        k0, ks = jax.random.split(k)
        s0 = jax.random.categorical(k0, jnp.log(jnp.asarray(hmm.p0)))

        def step(s, kk):
            ke, kt = jax.random.split(kk)
            o = jax.random.categorical(ke, jnp.log(B[s]))
            A = jnp.where(o == hmm.delim, R[s], T[s])
            return jax.random.categorical(kt, jnp.log(A)), o

        _, toks = jax.lax.scan(step, s0, jax.random.split(ks, length))
        return toks

    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_docs))
    return np.asarray(jax.jit(jax.vmap(one))(keys), np.int32)
