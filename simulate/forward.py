r"""Exact Bayesian predictive by the scaled forward algorithm, with the n-sweep in one pass.

The filtered message after a prefix is kept normalised, α_t = p^T M_{o_0} ⋯ M_{o_{t-1}} / c_t,
and log c_t is accumulated, so log P(prompt) = Σ log normalisers (no underflow at any length); a
prefix of probability exactly 0 gives log P = -inf (its message stays 0; Bayes is then 0/0 = NaN,
which the sweep reports as a zero-probability prompt).
Because demonstrations restart at the delimiter, the prompt for n demonstrations is a prefix of
the prompt for N: one scan over x_1 y_1 δ … x_N y_N δ keeps the message after every δ, and each n
of the grid branches that message through x_test (O(N(l+2) + |grid| l) steps per prompt).
Token id ``-1`` is padding: the identity step, so prompts of different lengths batch together.
The step itself (condition, predict, renormalise) is :func:`theory.filtering.step`.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from theory.filtering import step as filter_step
from theory.hmm import HMM


class HMMArrays(NamedTuple):
    """Device arrays the forward pass needs (a pytree). ``Bt`` is ``B`` transposed, ``[m, d]``."""

    T: jax.Array
    R: jax.Array
    Bt: jax.Array
    delim_weight: jax.Array
    p0: jax.Array
    task_start: jax.Array
    task_of_state: jax.Array


def hmm_arrays(hmm: HMM, dtype=jnp.float32) -> HMMArrays:
    return HMMArrays(jnp.asarray(hmm.T, dtype), jnp.asarray(hmm.R, dtype), jnp.asarray(hmm.B, dtype).T,
                     jnp.asarray(hmm.delim_weight, dtype), jnp.asarray(hmm.p0, dtype),
                     jnp.asarray(hmm.task_start, dtype), jnp.asarray(hmm.task_of_state, jnp.int32))


def token_step(A: HMMArrays, alpha, logz, tok):
    """One ordinary token: α ← α diag(B[:, o]) T, renormalised. ``tok == -1`` leaves α unchanged.

    Shapes: ``alpha [..., d]``, ``logz [...]``, ``tok [...]`` int.
    """
    return filter_step(alpha, logz, A.Bt[jnp.maximum(tok, 0)], A.T, skip=tok < 0)


def delim_step(A: HMMArrays, alpha, logz):
    """The delimiter: α ← α diag(w_δ) R, renormalised."""
    return filter_step(alpha, logz, A.delim_weight, A.R)


def filter_tokens(A: HMMArrays, alpha, logz, tokens):
    """Run ordinary tokens ``[..., S]`` (no delimiters; -1 = padding) from ``alpha``."""
    def f(carry, tok):
        return token_step(A, *carry, tok), None

    (alpha, logz), _ = jax.lax.scan(f, (alpha, logz), jnp.moveaxis(tokens, -1, 0))
    return alpha, logz


def filter_sequence(A: HMMArrays, alpha, logz, tokens, delim: int):
    """General token sequence ``[..., S]`` that may contain the delimiter (both branches computed)."""
    def f(carry, tok):
        a1, l1 = token_step(A, *carry, tok)
        a2, l2 = delim_step(A, *carry)
        is_d = tok == delim
        return (jnp.where(is_d[..., None], a2, a1), jnp.where(is_d, l2, l1)), None

    (alpha, logz), _ = jax.lax.scan(f, (alpha, logz), jnp.moveaxis(tokens, -1, 0))
    return alpha, logz


def next_token_probs(A: HMMArrays, alpha, labels):
    """P(next token = y | prefix) for y in ``labels`` renormalised over the label set. ``[..., |Y|]``."""
    s = alpha @ A.Bt[labels].T
    return s / s.sum(-1, keepdims=True)


class SweepBayes(NamedTuple):
    """Bayes predictives for every n of the grid, from one pass.

    Attributes:
        bayes: ``[G, P, |Y|]`` P(y | x_1 y_1 δ … x_n y_n δ x_test; p_pre), renormalised over Y.
        log_evidence: ``[G, P]`` log P(prompt_n) under p_pre (prompt_n = the n-demo prompt with x_test).
        task_mass: ``[G, P]`` posterior mass of the test task's block after the prompt.
        oracle: ``[P, |Y|]`` P(y | x_test; θ*), renormalised over Y.
    """

    bayes: jax.Array
    log_evidence: jax.Array
    task_mass: jax.Array
    oracle: jax.Array


def demo_messages(A: HMMArrays, demos_x, demos_y):
    """Normalised messages after 0..N demonstrations: ``([N+1, P, d], [N+1, P])``."""
    P = demos_x.shape[0]
    alpha0 = jnp.broadcast_to(A.p0 / A.p0.sum(), (P, A.p0.shape[0]))
    logz0 = jnp.zeros((P,), A.p0.dtype)
    toks = jnp.concatenate([demos_x, demos_y[..., None]], axis=-1)  # [P, N, l+1]

    def demo(carry, tok_i):
        alpha, logz = filter_tokens(A, *carry, tok_i)
        alpha, logz = delim_step(A, alpha, logz)
        return (alpha, logz), (alpha, logz)

    _, (alphas, logzs) = jax.lax.scan(demo, (alpha0, logz0), jnp.moveaxis(toks, 1, 0))
    return jnp.concatenate([alpha0[None], alphas]), jnp.concatenate([logz0[None], logzs])


def sweep_bayes(A: HMMArrays, demos_x, demos_y, x_test, task, labels, grid) -> SweepBayes:
    """Bayes(n) for each n in ``grid`` (a static tuple), the Oracle and the task posterior mass.

    Shapes: ``demos_x [P, N, l]``, ``demos_y [P, N]``, ``x_test [P, l]``, ``task [P]``.
    """
    alphas, logzs = demo_messages(A, demos_x, demos_y)
    idx = jnp.asarray(grid)
    a_n, lz_n = alphas[idx], logzs[idx]  # [G, P, d]
    xt = jnp.broadcast_to(x_test, (len(grid),) + x_test.shape)
    a_t, lz_t = filter_tokens(A, a_n, lz_n, xt)
    bayes = next_token_probs(A, a_t, labels)
    in_task = (A.task_of_state[None, :] == task[:, None]).astype(a_t.dtype)  # [P, d]
    task_mass = (a_t * in_task).sum(-1)
    start = A.task_start[task]
    a_o, _ = filter_tokens(A, start, jnp.zeros(task.shape, start.dtype), x_test)
    return SweepBayes(bayes, lz_t, task_mass, next_token_probs(A, a_o, labels))


def prompt_tokens(demos_x, demos_y, x_test, n: int, delim: int):
    """The flat token sequence of the n-demo prompt ``[P, n(l+2) + l]`` (numpy or jnp)."""
    P, _, l = demos_x.shape
    d = jnp.full((P, n, 1), delim, jnp.int32)
    body = jnp.concatenate([demos_x[:, :n], demos_y[:, :n, None], d], axis=-1).reshape(P, -1)
    return jnp.concatenate([body, x_test], axis=-1)


def bayes_direct(A: HMMArrays, tokens, delim: int, labels):
    """Bayes predictive from a flat prompt ``[P, S]`` (general scan; for checks and baselines)."""
    P = tokens.shape[0]
    alpha0 = jnp.broadcast_to(A.p0 / A.p0.sum(), (P, A.p0.shape[0]))
    alpha, logz = filter_sequence(A, alpha0, jnp.zeros((P,), A.p0.dtype), tokens, delim)
    return next_token_probs(A, alpha, labels), logz
