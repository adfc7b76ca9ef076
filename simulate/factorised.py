r"""Exact Bayes at every n from per-demonstration likelihoods: the restart factorisation.

When T never moves between task blocks and the delimiter restarts every state of task θ exactly
to θ's start s_θ (Assumption 1 with no leak), the prompt x_1 y_1 δ … x_n y_n δ x_test factorises
over the tasks. With p0|θ = p0 restricted to θ's block (not normalised: its mass is the prior π_θ)
and M_y w_δ = diag(b_y) T w_δ, every term is a product of per-demonstration likelihoods:

.. math::
    P(\text{prompt}_n, y) = \sum_θ \ell^{(1)}_θ(x_1, y_1) \prod_{2 \le i \le n} \ell_θ(x_i, y_i)
                            \; s_θ^\top T_{x_{test}} b_y,
    \qquad \ell_θ(x, y) = s_θ^\top T_x \operatorname{diag}(b_y) T w_δ,

where ℓ⁽¹⁾_θ is the same with p0|θ in place of s_θ (the first demonstration is scored from p0,
exactly as the general forward does). So log ℓ for every (prompt, demonstration, task) comes from
one batched scan of l steps over b×b blocks, log Π_{i≤n} ℓ is a cumulative sum over
demonstrations, and Bayes, the evidence and the posterior over tasks follow for **every** n at
once (:func:`bayes_curve`); :func:`sweep_bayes_factorised` is the gather at a grid and returns
the same :class:`simulate.forward.SweepBayes` as :func:`simulate.forward.sweep_bayes`.

Numerics: every message is renormalised per (demonstration, task) after each token and the log
normalisers are accumulated, so nothing underflows in a demonstration; the cumulative sums are
taken of log ℓ minus its per-demonstration maximum over tasks (the true task's term stays near 0),
and the posterior is a softmax, so n = 10⁴ demonstrations are as stable as n = 1.
Token id ``-1`` in x is padding (the identity step), as in :mod:`simulate.forward`.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from icl_kernel.errors import UserError
from simulate.forward import SweepBayes
from theory.hmm import HMM


class FactorisationError(UserError):
    """The restart factorisation does not hold for this HMM (the reason names the failed check)."""


# ------------------------------------------------------------------ when it applies


def _refusal(hmm: HMM, labels=None, length: int | None = None, tol: float = 0.0) -> str:
    """The first failed check as a one-line reason, or "" when the factorisation applies."""
    T, R = np.asarray(hmm.T, float), np.asarray(hmm.R, float)
    starts = np.asarray(hmm.task_start, float)
    tos = np.asarray(hmm.task_of_state)
    K = starts.shape[0]
    # 1. block structure: T never moves between task blocks (demonstrations stay in θ's block).
    cross = tos[:, None] != tos[None, :]
    if np.any(np.where(cross, T, 0.0) > tol):
        i, j = np.unravel_index(np.argmax(np.where(cross, T, 0)), T.shape)
        return (f"block structure: T moves between tasks (T[{i},{j}] = {T[i, j]:.3g} from task {tos[i]} "
                f"to task {tos[j]})")
    # 2. each task's start lies inside its own block.
    for k in range(K):
        outside = starts[k][tos != k].sum()
        if outside > tol:
            return f"task {k}'s start puts mass {outside:.3g} on other tasks' states"
    # 3. restart (Assumption 1, no leak): R[s] = s_task(s) for every state s.
    gap = np.abs(R - starts[tos]).sum(axis=1) / 2
    if gap.max() > tol:
        s = int(np.argmax(gap))
        return (f"restart: the delimiter does not send state {s} exactly to task {tos[s]}'s start "
                f"(total-variation gap {gap[s]:.3g}: a leak or no restart)")
    if labels is None or length is None:
        return ""
    # 4. every task produces every label after a delimiter-free x of length l (else its ℓ, its
    #    Oracle and its prompts are undefined): Z_θ,y = s_θᵀ (diag(1 − b_δ) T)^l b_y > 0.
    B = np.asarray(hmm.B, float)
    lab = np.asarray(labels, int).ravel()
    for k in range(K):
        for y in lab:
            if not np.any(B[tos == k, y] > 0):
                return f"task {k} cannot emit label {int(y)} (B[:, {int(y)}] is zero on all its states)"
    M = (1.0 - B[:, int(hmm.delim)])[:, None] * T
    v = B[:, lab]
    for _ in range(int(length)):
        v = M @ v
    Z = starts @ v
    bad = np.argwhere(Z <= 0)
    if bad.size:
        k, j = (int(i) for i in bad[0])
        return (f"task {k} cannot produce a delimiter-free x of length {int(length)} followed by label "
                f"{int(lab[j])} (probability 0)")
    return ""


def restart_factorisation_applies(hmm: HMM, labels=None, length: int | None = None,
                                  tol: float = 0.0) -> tuple[bool, str]:
    """Whether Bayes factorises over per-demonstration likelihoods, and if not, why.

    The checks are theory/bounds.check_assumptions' block-structure, start and restart rows with
    tolerance ``tol`` (default 0: exactly, so the factorised numbers equal the general forward's to
    rounding), plus, when ``labels`` and ``length`` are given, that every task can produce every
    label after a delimiter-free x of length l. p0 need not be a mixture of the task starts: the
    first demonstration is scored from p0|θ. Returns ``(True, "")`` or ``(False, reason)``.
    """
    reason = _refusal(hmm, labels, length, tol)
    return (not reason, reason)


def check_restart_factorisation(hmm: HMM, labels=None, length: int | None = None, tol: float = 0.0) -> None:
    """:func:`restart_factorisation_applies`, raising :class:`FactorisationError` with the reason."""
    reason = _refusal(hmm, labels, length, tol)
    if reason:
        raise FactorisationError(f"the restart factorisation does not apply: {reason}")


# ------------------------------------------------------------------ arrays

TABLE_BUDGET = 1 << 22  # entries per precomputed table (left or right end of a demonstration)


class FactorisedArrays(NamedTuple):
    """The HMM cut into its K task blocks (each padded to b states) and the tables of a demonstration's ends.

    A pytree of device arrays. Padded states have zero start, emission and transition, so they
    carry no mass. With G_o = diag(b_o) T (one token) a demonstration's likelihood is
    ℓ = vᵀ G_{x_0} ⋯ G_{x_{l−1}} (b_y ⊙ T w_δ), v = s_θ or p0|θ. The first ``a`` tokens are a
    lookup in ``left``, the last ``c`` tokens and y a lookup in ``right`` (which also holds the T of
    the token before them), the token in between (the junction) is a product with its emission
    column, and any further middle token is one step; a and c are read from the tables' ranks.
    Every table vector is normalised to sum 1 and its log mass kept beside it.

    Attributes:
        T: ``[K, b, b]`` transitions inside each block.
        Bt: ``[m, b, K]`` emission of token o by each state of each block.
        start: ``[b, K]`` s_θ on its block.
        first: ``[b, K]`` p0 (normalised) restricted to θ's block; its mass is the prior π_θ.
        labels: ``[|Y|]`` int32 the label tokens (the right table is indexed by label position).
        left: ``[2, m (a times), b + 1, K]``: ``[..., :b, :]`` is vᵀ G_{x_0} ⋯ G_{x_{a−1}}
            normalised, ``[..., b, :]`` its log mass; index 0: v = s_θ, 1: v = p0|θ (the first
            demonstration).
        right: ``[m (c times), |Y|, b + 1, K]``: T G_{x_{l−c}} ⋯ G_{x_{l−1}} (b_y ⊙ T w_δ)
            normalised, and its log mass.

    Messages are stored state-major, task-minor (``[..., b, K]``): the sums over states are then
    adds of K-vectors. The log mass rides as an extra state row so that one row gather per table
    serves a demonstration.
    """

    T: jax.Array
    Bt: jax.Array
    start: jax.Array
    first: jax.Array
    labels: jax.Array
    left: jax.Array
    right: jax.Array

    @property
    def ends(self) -> tuple[int, int]:
        """(a, c): the tokens covered by the left and the right table (static)."""
        return self.left.ndim - 3, self.right.ndim - 3


def _with_log_mass(v: np.ndarray) -> np.ndarray:
    """Vectors ``[..., b]`` → ``[..., b + 1]``: normalised to sum 1, then the log mass.

    A vector of zero mass stays zero and gets log mass 0, not −inf: every table entry is finite, so
    a product over all b + 1 rows with a zero in row b is exactly the sum over the b states (no
    −inf · 0), and a zero vector still gives ℓ = 0, log ℓ = −inf, downstream.
    """
    c = v.sum(-1)
    pos = c > 0
    return np.concatenate([v / np.where(pos, c, 1.0)[..., None],
                           np.log(np.where(pos, c, 1.0))[..., None]], axis=-1)


def table_ends(length: int, num_tokens: int, num_labels: int, K: int, b: int,
               budget: int = TABLE_BUDGET) -> tuple[int, int]:
    """(a, c) for inputs of ``length``: at most 2 tokens each, a + c ≤ l − 1, each table ≤ ``budget``."""
    a = 0
    while a < 2 and a + 1 <= length - 1 and 2 * num_tokens ** (a + 1) * K * b <= budget:
        a += 1
    c = 0
    while c < 2 and a + c + 1 <= length - 1 and num_tokens ** (c + 1) * num_labels * K * b <= budget:
        c += 1
    return a, c


def factorised_arrays(hmm: HMM, labels, length: int, dtype=jnp.float32,
                      budget: int = TABLE_BUDGET) -> FactorisedArrays:
    """Block arrays and end tables for demonstrations of ``length`` tokens with label set ``labels``.

    Raises :class:`FactorisationError` when the factorisation does not apply (see
    :func:`restart_factorisation_applies`). The tables are computed in float64 and cast to ``dtype``.
    The arrays serve any input length ≥ a + c + 1 (so ``length`` and longer).
    """
    check_restart_factorisation(hmm, labels, length)
    lab = np.asarray(labels, int).ravel()
    tos = np.asarray(hmm.task_of_state)
    K = hmm.num_tasks
    members = [np.flatnonzero(tos == k) for k in range(K)]
    b = max(1, max(len(s) for s in members))
    idx = np.zeros((K, b), int)
    mask = np.zeros((K, b), bool)
    for k, s in enumerate(members):
        idx[k, :len(s)], mask[k, :len(s)] = s, True
    T = np.asarray(hmm.T, float)
    B = np.asarray(hmm.B, float)
    p0 = np.asarray(hmm.p0, float)
    m = B.shape[1]
    Tb = np.where(mask[:, :, None] & mask[:, None, :], T[idx[:, :, None], idx[:, None, :]], 0.0)  # [K, b, b]
    Bt = np.where(mask[None], np.moveaxis(B[idx], -1, 0), 0.0)  # [m, K, b]
    start = np.where(mask, np.asarray(hmm.task_start, float)[np.arange(K)[:, None], idx], 0.0)
    first = np.where(mask, (p0 / p0.sum())[idx], 0.0)
    after = np.where(mask, (T @ np.asarray(hmm.delim_weight, float))[idx], 0.0)  # T w_δ

    a, c = table_ends(int(length), m, len(lab), K, b, budget)
    # left: row vectors v G_{x_0} ⋯ G_{x_{a-1}}, built token by token: [2, m.., K, b]
    left = np.stack([start, first])  # [2, K, b]
    for _ in range(a):
        left = np.einsum("...kb,okb,kbc->...okc", left, Bt, Tb)
    # right: column vectors G ⋯ G (b_y ⊙ T w_δ), then T in front: [m.., |Y|, K, b]
    right = Bt[lab] * after[None]  # [|Y|, K, b]
    for _ in range(c):
        right = Bt.reshape((m,) + (1,) * (right.ndim - 2) + (K, b)) * np.einsum("kbc,...kc->...kb", Tb, right)[None]
    right = np.einsum("kbc,...kc->...kb", Tb, right)
    arr = lambda x: jnp.asarray(np.swapaxes(x, -1, -2), dtype)  # [..., K, b] -> [..., b, K]  # noqa: E731
    return FactorisedArrays(jnp.asarray(Tb, dtype), arr(Bt), arr(start), arr(first), jnp.asarray(lab, jnp.int32),
                            arr(_with_log_mass(left)), arr(_with_log_mass(right)))


# ------------------------------------------------------------------ per-demonstration likelihoods


def _block_filter(F: FactorisedArrays, alpha, logz, tokens):
    """Filter ``tokens [..., S]`` from ``alpha [..., b, K]`` block by block, renormalising.

    Returns the normalised message ``[..., b, K]`` and the accumulated log normaliser ``[..., K]``
    (−inf, with a zero message, where a block cannot produce the tokens).
    """
    def step(carry, tok):
        al, lz = carry
        new = jnp.einsum("...ik,kij->...jk", al * F.Bt[tok], F.T)
        c = new.sum(-2)
        return (new / jnp.where(c > 0, c, 1)[..., None, :], lz + jnp.log(c)), None

    (alpha, logz), _ = jax.lax.scan(step, (alpha, logz), jnp.moveaxis(tokens, -1, 0))
    return alpha, logz


CHUNK_ELEMENTS = 1 << 18  # gathered floats per scan step, P·C·K·(b+1): cache-sized, not the whole batch


def _rows(table, index):
    """Rows of ``table [rows, ...]`` at ``index`` (all in range by construction)."""
    return table.at[index].get(mode="promise_in_bounds")


def _junction_table(F: FactorisedArrays):
    """The emission columns ``[m, b + 1, K]`` with a zero in the log-mass row (see :func:`_ends_log_likelihood`)."""
    return jnp.concatenate([F.Bt, jnp.zeros_like(F.Bt[:, :1])], axis=1)


def _ends_log_likelihood(F: FactorisedArrays, x, y, first, junction):
    """log ℓ ``[..., K]`` for inputs ``x [..., l]`` and label tokens ``y [...]`` (NaN where invalid).

    ``first [...]`` is 1 for a prompt's first demonstration (scored from p0|θ), else 0. A token
    outside 0..m−1 (e.g. padding) or a label not in ``F.labels`` gives NaN for that demonstration.
    ``junction``: :func:`_junction_table` (built once per call, outside the scan over chunks).
    """
    a, c = F.ends
    l = x.shape[-1]
    m = F.Bt.shape[0]
    b, K = F.start.shape
    eq = y[..., None] == F.labels
    ok = jnp.all((x >= 0) & (x < m), axis=-1) & jnp.any(eq, axis=-1)
    x = jnp.clip(x, 0, m - 1)
    li = jnp.broadcast_to(first, x.shape[:-1])
    for t in range(a):
        li = li * m + x[..., t]
    L = _rows(F.left.reshape(-1, b + 1, K), li)  # one gather: vectors and log masses
    ri = jnp.zeros_like(li)
    for t in range(l - c, l):
        ri = ri * m + x[..., t]
    R = _rows(F.right.reshape(-1, b + 1, K), ri * F.labels.shape[0] + jnp.argmax(eq, axis=-1).astype(li.dtype))
    # The junction's emission column has a zero in the log-mass row (``junction``, from
    # :func:`_junction_table`): the product runs over whole gathered rows (XLA:CPU fuses that with
    # the gathers; slicing the rows first costs ~3.5x).
    if l - c - 1 > a:  # middle tokens, one step each
        row, lz = _block_filter(F, L[..., :b, :], L[..., b, :], x[..., a:l - c - 1])
        # a block that cannot produce the tokens has a zero row and lz = −inf: store 0 (ℓ is 0 anyway)
        L = jnp.concatenate([row, jnp.where(jnp.isfinite(lz), lz, 0.0)[..., None, :]], axis=-2)
    ell = (L * _rows(junction, x[..., l - c - 1]) * R).sum(-2)
    return jnp.where(ok[..., None], (L + R)[..., b, :] + jnp.log(ell), jnp.nan)


@partial(jax.jit, static_argnames=("chunk",))
def demo_log_likelihoods(F: FactorisedArrays, demos_x, demos_y, chunk: int | None = None):
    """log ℓ_θ(x_i, y_i) for every prompt, demonstration and task: ``[P, N, K]``.

    Demonstration 0 is scored from p0|θ (its value includes log π_θ), the others from s_θ:
    ℓ = vᵀ T_x diag(b_y) T w_δ, the probability of the segment x y δ. ``demos_x [P, N, l]``
    (no padding: a demonstration with a token < 0 gets NaN), ``demos_y [P, N]`` label tokens (one
    that is not in ``F.labels`` gets NaN). l must be at least a + c + 1 (:attr:`FactorisedArrays.ends`).
    Per demonstration this is three row lookups and a b-term product per task. The demonstrations
    are scanned in chunks of ``chunk`` (default: P·chunk·K·(b+1) ≈ 2¹⁸ floats, a power of two) so
    that what is gathered stays in cache.
    """
    a, c = F.ends
    P, N, l = demos_x.shape
    b, K = F.start.shape
    if l < a + c + 1:
        raise ValueError(f"inputs of length {l} are shorter than the tables' a + c + 1 = {a + c + 1}")
    fit = max(1, CHUNK_ELEMENTS // max(1, P * K * (b + 1)))
    C = int(chunk or min(N, 1 << (fit.bit_length() - 1)))
    S = -(-N // C)
    x, y = demos_x, demos_y
    if S * C > N:  # pad with copies of demonstration 0; their values are cut off below
        x = jnp.concatenate([x, jnp.broadcast_to(x[:, :1], (P, S * C - N, l))], axis=1)
        y = jnp.concatenate([y, jnp.broadcast_to(y[:, :1], (P, S * C - N))], axis=1)
    junction = _junction_table(F)
    if S == 1:
        return _ends_log_likelihood(F, x, y, (jnp.arange(N) == 0).astype(x.dtype), junction)

    def body(_, inp):
        xc, yc, s = inp
        return None, _ends_log_likelihood(F, xc, yc, (jnp.arange(C) + s * C == 0).astype(xc.dtype), junction)

    _, out = jax.lax.scan(body, None, (jnp.moveaxis(x.reshape(P, S, C, l), 1, 0),
                                       jnp.moveaxis(y.reshape(P, S, C), 1, 0), jnp.arange(S)))
    return jnp.moveaxis(out, 0, 1).reshape(P, S * C, K)[:, :N]


class XTest(NamedTuple):
    """x_test under each task, from s_θ (after n ≥ 1 demonstrations) and from p0|θ (n = 0).

    Attributes:
        log_mass: ``[P, 2, K]`` log startᵀ T_{x_test} 1 (index 0: from s_θ; 1: from p0|θ).
        label_probs: ``[P, 2, K, |Y|]`` P(next = y | x_test, start), not renormalised over Y.
    """

    log_mass: jax.Array
    label_probs: jax.Array


def _x_test(F: FactorisedArrays, x_test) -> XTest:
    P = x_test.shape[0]
    v = jnp.stack([F.start, F.first])  # [2, b, K]
    c = v.sum(-2)
    a0 = jnp.broadcast_to(v / jnp.where(c > 0, c, 1)[..., None, :], (P,) + v.shape)
    lz0 = jnp.broadcast_to(jnp.log(c), (P,) + c.shape)
    m = F.Bt.shape[0]
    toks = jnp.broadcast_to(jnp.clip(x_test, 0, m - 1)[:, None], (P, 2, x_test.shape[-1]))
    alpha, logz = _block_filter(F, a0, lz0, toks)  # [P, 2, b, K]
    q = jnp.einsum("psbk,ybk->psky", alpha, F.Bt[F.labels])
    ok = jnp.all((x_test >= 0) & (x_test < m), axis=-1)[:, None, None]
    return XTest(jnp.where(ok, logz, jnp.nan), jnp.where(ok[..., None], q, jnp.nan))


# ------------------------------------------------------------------ the curve


class BayesCurve(NamedTuple):
    """Bayes and the task posterior for every n = 0..N, prompt axis first (index n = n demonstrations).

    Attributes:
        bayes: ``[P, N+1, |Y|]`` P(y | x_1 y_1 δ … x_n y_n δ x_test; p_pre), renormalised over Y
            (n = 0: P(y | x_test; p_pre)).
        log_evidence: ``[P, N+1]`` log P(prompt_n) under p_pre (prompt_n ends with x_test).
        posterior: ``[P, N+1, K]`` P(θ | prompt_n).
        task_mass: ``[P, N+1]`` the posterior's mass on the prompt's test task θ*.
        oracle: ``[P, |Y|]`` P(y | x_test; θ*), renormalised over Y.
    """

    bayes: jax.Array
    log_evidence: jax.Array
    posterior: jax.Array
    task_mass: jax.Array
    oracle: jax.Array


def _cumulative(log_ell):
    """Σ_{i≤n} log ℓ for n = 0..N, ``[P, N+1, K]``, summing per-demonstration shifts apart.

    The per-demonstration maximum over tasks is taken out before the cumulative sum (and added
    back as its own cumulative sum), so the terms summed per task are ≤ 0 and small for the tasks
    that matter: no cancellation between large sums at large n.
    """
    m = jnp.max(log_ell, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    both = jnp.concatenate([log_ell - m, m], axis=-1)  # [P, N, K + 1]
    # a sequential scan over demonstrations (jnp.cumsum lowers to a windowed reduction on CPU,
    # 3-4x slower), starting from the n = 0 row of zeros
    zero = jnp.zeros_like(both[:, 0])
    _, acc = jax.lax.scan(lambda c, v: (c + v, c + v), zero, jnp.moveaxis(both, 1, 0))
    acc = jnp.concatenate([zero[:, None], jnp.moveaxis(acc, 0, 1)], axis=1)  # [P, N + 1, K + 1]
    return acc[..., :-1], acc[..., -1:]


def _bayes_at(rel, base, n, xt: XTest, task):
    """Bayes, evidence, posterior and θ*'s mass at the demonstration counts ``n`` (static ints; the rows of ``rel``).

    ``rel [P, G, K]``, ``base [P, G, 1]``: cumulative log-likelihoods (:func:`_cumulative`) at ``n``.
    After n ≥ 1 demonstrations x_test starts from s_θ; at n = 0 from p0|θ, whose log mass carries
    the prior π_θ (for n ≥ 1, π_θ sits in demonstration 1's ℓ). Every row is one fused pass; the
    (few, static) n = 0 rows swap in their start's x_test terms.
    """
    n = np.asarray(n)
    nz = np.flatnonzero(n == 0)
    lx = xt.log_mass[:, None, 0]  # [P, 1, K]
    if nz.size:
        lx = jnp.where(jnp.asarray(n == 0)[None, :, None], xt.log_mass[:, None, 1], lx)
    total = rel + lx
    mx = jnp.max(total, axis=-1, keepdims=True)
    e = jnp.exp(total - jnp.where(jnp.isfinite(mx), mx, 0.0))
    z = e.sum(-1)
    post = e / z[..., None]
    joint = jnp.einsum("pgk,pky->pgy", post, xt.label_probs[:, 0])
    if nz.size:
        joint = joint.at[:, nz].set(jnp.einsum("pgk,pky->pgy", post[:, nz], xt.label_probs[:, 1]))
    bayes = joint / joint.sum(-1, keepdims=True)
    mine = task[:, None, None] == jnp.arange(post.shape[-1], dtype=task.dtype)  # [P, 1, K]
    mass = jnp.where(mine, post, 0.0).sum(-1)
    return bayes, mx[..., 0] + jnp.log(z) + base[..., 0], post, mass


def _oracle(xt: XTest, task):
    o = jnp.take_along_axis(xt.label_probs[:, 0], task[:, None, None].astype(jnp.int32), axis=1)[:, 0]
    return o / o.sum(-1, keepdims=True)


@jax.jit
def bayes_curve(F: FactorisedArrays, demos_x, demos_y, x_test, task) -> BayesCurve:
    """Bayes(n), the evidence and the posterior over tasks for every n = 0..N in one pass.

    Shapes: ``demos_x [P, N, l]``, ``demos_y [P, N]`` (tokens of ``F.labels``), ``x_test [P, l]``,
    ``task [P]``. Equal to :func:`simulate.forward.sweep_bayes` at every n (tested).
    """
    rel, base = _cumulative(demo_log_likelihoods(F, demos_x, demos_y))
    xt = _x_test(F, x_test)
    bayes, lz, post, mass = _bayes_at(rel, base, np.arange(rel.shape[1]), xt, task)
    return BayesCurve(bayes, lz, post, mass, _oracle(xt, task))


@partial(jax.jit, static_argnames=("grid",))
def sweep_bayes_factorised(F: FactorisedArrays, demos_x, demos_y, x_test, task, grid) -> SweepBayes:
    """:func:`simulate.forward.sweep_bayes` by the factorisation: the curve's rows at ``grid``.

    ``grid`` is a static tuple of n (0 ≤ n ≤ N). Returns :class:`SweepBayes` with the same fields
    and shapes (``bayes [G, P, |Y|]``, ``log_evidence [G, P]``, ``task_mass [G, P]``,
    ``oracle [P, |Y|]``); only the grid's rows are turned into predictives.
    """
    rel, base = _cumulative(demo_log_likelihoods(F, demos_x, demos_y))
    idx = np.asarray(grid, int)
    if idx.min() < 0 or idx.max() > demos_x.shape[1]:
        raise ValueError(f"grid {list(grid)} must lie in 0..N = {demos_x.shape[1]}")
    xt = _x_test(F, x_test)
    bayes, lz, _, mass = _bayes_at(rel[:, idx], base[:, idx], idx, xt, task)
    return SweepBayes(jnp.moveaxis(bayes, 1, 0), lz.T, mass.T, _oracle(xt, task))
