r"""Exact-rational references (sympy) for tiny HMMs: predictive, Gram matrix, kernel identity.

Everything here is computed in exact rational arithmetic, so an identity either holds with a
residual of exactly zero or it does not; float code is compared against these to ~1e-12.
Only for tiny models: d ≤ 4 states, m ≤ 4 tokens, short sequences (costs grow like m^l and d^S).

Conventions follow :mod:`theory.hmm`: ``M_o = diag(B[:, o]) T`` (o ≠ δ), ``M_δ = diag(w_δ) R``,
``T_x = M_{x_0} ⋯ M_{x_{l-1}}``; row vectors for distributions; row-major ``vec``.
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import sympy as sp

from theory.hmm import HMM, make_hmm


class RationalHMM(NamedTuple):
    """An HMM with sympy Rational entries (immutable matrices).

    Attributes:
        T, B, R: ``d×d``, ``d×m``, ``d×d`` matrices.
        delim_weight: ``d×1`` column.
        p0: ``1×d`` row.
        task_start: ``K×d`` (row k is task k's start distribution).
        task_of_state: tuple of d ints.
        delim: the delimiter token id.
    """

    T: sp.ImmutableMatrix
    B: sp.ImmutableMatrix
    R: sp.ImmutableMatrix
    delim_weight: sp.ImmutableMatrix
    p0: sp.ImmutableMatrix
    task_start: sp.ImmutableMatrix
    task_of_state: tuple
    delim: int

    @property
    def num_states(self) -> int:
        return self.T.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.B.shape[1]

    def input_tokens(self) -> list[int]:
        return [o for o in range(self.num_tokens) if o != self.delim]


def _rat_matrix(a, max_denominator=None) -> sp.ImmutableMatrix:
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))

    def q(v):
        r = sp.Rational(float(v))  # exact value of the binary fraction
        return r.limit_denominator(max_denominator) if max_denominator else r

    return sp.ImmutableMatrix([[q(v) for v in row] for row in a])


def rational_hmm(hmm: HMM, max_denominator: int | None = None) -> RationalHMM:
    """The float HMM as exact rationals.

    ``max_denominator=None`` converts every float64 entry to the exact binary fraction it stores
    (so rows may sum to 1 only up to rounding); with ``max_denominator`` each entry is replaced by
    the closest fraction with at most that denominator (recovers e.g. 1/3 from 0.333…).
    """
    md = max_denominator
    return RationalHMM(_rat_matrix(hmm.T, md), _rat_matrix(hmm.B, md), _rat_matrix(hmm.R, md),
                       _rat_matrix(hmm.delim_weight, md).T, _rat_matrix(hmm.p0, md), _rat_matrix(hmm.task_start, md),
                       tuple(int(k) for k in np.asarray(hmm.task_of_state)), int(np.asarray(hmm.delim)))


def hmm_from_integer_weights(T_w, B_w, task_of_state, *, start_states=None, p0_w=None,
                             delim: int = 0) -> tuple[HMM, RationalHMM]:
    """A float :class:`HMM` and its exact :class:`RationalHMM` from integer weights.

    Rows are normalised exactly (``Rational(w, rowsum)``). ``T_w [d, d]`` is masked to the task
    blocks (block-diagonal T); ``B_w [d, m]``; the delimiter is emitted (``w_δ = B[:, delim]``).
    Task k starts at the point mass on ``start_states[k]`` (default: its lowest-index state); the
    restart ``R`` sends every state of block k to that start; ``p0`` puts weight ``p0_w[k]``
    (default 1) on task k's start. Raises ``ValueError`` on an empty row or task.
    """
    T_w = np.asarray(T_w, dtype=np.int64)
    B_w = np.asarray(B_w, dtype=np.int64)
    tos = np.asarray(task_of_state, dtype=np.int64)
    d, m = B_w.shape
    if T_w.shape != (d, d) or tos.shape != (d,):
        raise ValueError(f"shapes T_w {T_w.shape}, B_w {B_w.shape}, task_of_state {tos.shape} disagree")
    if np.any(T_w < 0) or np.any(B_w < 0):
        raise ValueError("weights must be non-negative integers")
    K = int(tos.max()) + 1
    if sorted(set(tos.tolist())) != list(range(K)):
        raise ValueError(f"task_of_state {tos.tolist()} must use every task 0..{K - 1}")
    if start_states is None:
        start_states = [int(np.flatnonzero(tos == k)[0]) for k in range(K)]
    start_states = [int(s) for s in start_states]
    if len(start_states) != K or any(tos[s] != k for k, s in enumerate(start_states)):
        raise ValueError(f"start_states {start_states} must name one state of each task block")
    p0_w = np.ones(K, np.int64) if p0_w is None else np.asarray(p0_w, np.int64)
    if p0_w.shape != (K,) or np.any(p0_w < 0) or p0_w.sum() == 0:
        raise ValueError(f"p0_w {p0_w.tolist()} must be K={K} non-negative integers, not all zero")

    T_w = np.where(tos[:, None] == tos[None, :], T_w, 0)

    def normalise(W, what):
        rows = []
        for i, r in enumerate(W):
            s = int(r.sum())
            if s == 0:
                raise ValueError(f"{what} row {i} has zero total weight")
            rows.append([sp.Rational(int(v), s) for v in r])
        return sp.ImmutableMatrix(rows)

    T = normalise(T_w, "T_w")
    B = normalise(B_w, "B_w")
    R = sp.ImmutableMatrix(d, d, lambda i, j: sp.Integer(int(j == start_states[tos[i]])))
    task_start = sp.ImmutableMatrix(K, d, lambda k, j: sp.Integer(int(j == start_states[k])))
    tot = int(p0_w.sum())
    p0 = sp.ImmutableMatrix(1, d, lambda _, j: sum((sp.Rational(int(p0_w[k]), tot) for k in range(K)
                                                    if start_states[k] == j), sp.Integer(0)))
    dw = B[:, delim]
    rh = RationalHMM(T, B, R, sp.ImmutableMatrix(dw), p0, task_start, tuple(int(k) for k in tos), int(delim))
    f = lambda M: np.array(M.tolist(), dtype=np.float64)  # noqa: E731
    hmm = make_hmm(f(T), f(B), f(R), f(p0)[0], f(task_start), tos.astype(np.int32), delim)
    return hmm, rh


# ---------------------------------------------------------------- operators and the predictive


def operator_exact(rh: RationalHMM, o: int) -> sp.Matrix:
    """``M_o`` in exact arithmetic."""
    if int(o) == rh.delim:
        return sp.diag(*rh.delim_weight) * rh.R
    return sp.diag(*rh.B[:, int(o)]) * rh.T


def operator_product_exact(rh: RationalHMM, x) -> sp.Matrix:
    """``T_x = M_{x_0} ⋯ M_{x_{l-1}}``."""
    out = sp.eye(rh.num_states)
    for o in x:
        out = out * operator_exact(rh, o)
    return out


def _start_row(rh: RationalHMM, start) -> sp.Matrix:
    """``start`` as a ``1×d`` Rational row (None: p0; floats are converted exactly)."""
    if start is None:
        return sp.Matrix(rh.p0)

    def q(v):
        if isinstance(v, sp.Basic):
            return v
        if isinstance(v, (int, np.integer)):
            return sp.Integer(int(v))
        return sp.Rational(float(v))

    vals = [q(v) for v in (list(start) if isinstance(start, sp.MatrixBase) else np.asarray(start).ravel().tolist())]
    if len(vals) != rh.num_states:
        raise ValueError(f"start has {len(vals)} entries, expected d={rh.num_states}")
    return sp.Matrix(1, rh.num_states, vals)


def _normalised(joint: list) -> sp.Matrix:
    Z = sum(joint, sp.Integer(0))
    if Z == 0:
        raise ZeroDivisionError("the prefix followed by any label has probability zero")
    return sp.Matrix([j / Z for j in joint])


def forward_exact(rh: RationalHMM, tokens, labels, start=None) -> sp.Matrix:
    """P(next = y | tokens) for y in ``labels``, renormalised over the labels (``|Y|×1`` Rationals).

    Forward recursion α ← α M_o from ``start`` (a length-d sequence; default p0), then
    P(tokens, next = y) = α b_y. Raises ``ZeroDivisionError`` if every joint is zero.
    """
    alpha = _start_row(rh, start)
    for o in tokens:
        alpha = alpha * operator_exact(rh, o)
    return _normalised([(alpha * rh.B[:, int(y)])[0, 0] for y in labels])


def evidence_exact(rh: RationalHMM, tokens, start=None) -> sp.Rational:
    """P(tokens | start) = startᵀ T_tokens 1 by the forward recursion."""
    alpha = _start_row(rh, start)
    for o in tokens:
        alpha = alpha * operator_exact(rh, o)
    return sum(alpha, sp.Integer(0))


def predictive_by_paths_exact(rh: RationalHMM, tokens, labels, start=None) -> sp.Matrix:
    """The same predictive as :func:`forward_exact`, by summing over every hidden path.

    Path s_0..s_S: s_0 ~ start, s_t emits tokens[t] (weight B[s, o], or w_δ[s] for δ) and moves with
    T (R after δ); the label is emitted by s_S. Depth-first over paths, pruning zero weights; no
    sums over states are shared between paths (independent of the recursion).
    """
    p = list(_start_row(rh, start))
    tokens = [int(o) for o in tokens]
    labels = [int(y) for y in labels]
    d, S = rh.num_states, len(tokens)
    joint = [sp.Integer(0)] * len(labels)

    def walk(t, s, w):
        if t == S:
            for i, y in enumerate(labels):
                joint[i] += w * rh.B[s, y]
            return
        o = tokens[t]
        emit, move = (rh.delim_weight[s, 0], rh.R) if o == rh.delim else (rh.B[s, o], rh.T)
        for s2 in range(d):
            w2 = w * emit * move[s, s2]
            if w2 != 0:
                walk(t + 1, s2, w2)

    for s0 in range(d):
        if p[s0] != 0:
            walk(0, s0, p[s0])
    return _normalised(joint)


# ---------------------------------------------------------------- Gram matrix and the kernel identity


def _inputs(rh: RationalHMM, l: int):
    return itertools.product(rh.input_tokens(), repeat=l)


def _vec(M: sp.MatrixBase) -> sp.Matrix:
    """Row-major vec as a column (vec(A)[i d + j] = A[i, j])."""
    return sp.Matrix(list(M))  # sympy lists entries row by row


def gram_exact(rh: RationalHMM, l: int, weight_start=None) -> sp.Matrix:
    """G_l = Σ_{x ∈ (O∖δ)^l} φ(x)φ(x)ᵀ, φ(x) = vec(T_x) row-major (full ``d²×d²``), by enumeration.

    With ``weight_start`` (a length-d start), the weighted Σ = Σ_x P(x | start) φφᵀ instead.
    """
    d = rh.num_states
    G = sp.zeros(d * d, d * d)
    s = None if weight_start is None else _start_row(rh, weight_start)
    for x in _inputs(rh, l):
        Tx = operator_product_exact(rh, x)
        v = _vec(Tx)
        w = sp.Integer(1) if s is None else sum(s * Tx, sp.Integer(0))
        G += w * (v * v.T)
    return G


def pinv_exact(G: sp.MatrixBase) -> sp.Matrix:
    """Exact Moore–Penrose pseudo-inverse of a symmetric matrix, computed on its non-zero support.

    Rows/columns that are identically zero (entries of T_x off the task blocks) are dropped before
    ``Matrix.pinv`` and put back as zeros: the pinv of ``P diag(G', 0) Pᵀ`` is ``P diag(G'⁺, 0) Pᵀ``.
    """
    n = G.shape[0]
    keep = [i for i in range(n) if any(G[i, j] != 0 for j in range(n))]
    out = sp.zeros(n, n)
    if keep:
        sub = sp.Matrix(G.extract(keep, keep))
        P = sub.inv() if sub.rank() == len(keep) else sub.pinv()
        for a, i in enumerate(keep):
            for b, j in enumerate(keep):
                out[i, j] = P[a, b]
    return out


def _kernel_means(rh: RationalHMM, l: int, x_test, task: int, labels, weight_start=None):
    """(LHS per label, RHS per label) of the kernel identity for ``G`` (or Σ_{weight_start})."""
    x_test = [int(o) for o in x_test]
    if len(x_test) != l or rh.delim in x_test:
        raise ValueError(f"x_test {x_test} must be {l} non-delimiter tokens")
    labels = [int(y) for y in labels]
    s = sp.Matrix(rh.task_start[int(task), :])
    G = gram_exact(rh, l, weight_start)
    u = pinv_exact(G) * _vec(operator_product_exact(rh, x_test))  # G⁺ φ(x_test) (G⁺ symmetric)
    Bl = [rh.B[:, y] for y in labels]
    lhs = [sp.Integer(0)] * len(labels)
    Z = sp.Integer(0)
    for x in _inputs(rh, l):
        Tx = operator_product_exact(rh, x)
        a = s * Tx
        k = (_vec(Tx).T * u)[0, 0]  # K(x_test, x)
        for i, b in enumerate(Bl):
            p = (a * b)[0, 0]  # unnormalised P(x, y | θ)
            Z += p
            lhs[i] += p * k
    if Z == 0:
        raise ZeroDivisionError(f"task {task} emits none of the labels {labels} after inputs of length {l}")
    at = s * operator_product_exact(rh, x_test)
    rhs = [(at * b)[0, 0] / Z for b in Bl]
    return sp.Matrix([v / Z for v in lhs]), sp.Matrix(rhs)


def kernel_identity_residual(rh: RationalHMM, l: int, x_test, task: int, labels, weight_start=None) -> sp.Matrix:
    r"""LHS − RHS of the kernel identity per label (``|Y|×1``), exactly.

    LHS(y) = Σ_{x, y'∈Y} (sᵀT_x b_{y'} / Z) 1[y'=y] K(x_test, x), K = φ(x_test)ᵀ G_l⁺ φ(x);
    RHS(y) = sᵀT_{x_test} b_y / Z, with s = task_start[task] and Z = Σ_{x, y∈Y} sᵀT_x b_y.
    Zero for the Gram G_l; ``weight_start`` swaps G_l for Σ = Σ_x P(x | weight_start) φφᵀ
    (a negative control: the identity is not expected to hold then).
    """
    lhs, rhs = _kernel_means(rh, l, x_test, task, labels, weight_start)
    return lhs - rhs


def gram_kernel_limit_exact(rh: RationalHMM, l: int, x_test, task: int, labels) -> sp.Matrix:
    """The n → ∞ limit of Gram-kernel regression: E[1[y'=y] K] / E[K] per label (``|Y|×1``).

    By the identity this is P(y | x_test, θ, Y), i.e. :func:`forward_exact` from the task start.
    """
    lhs, _ = _kernel_means(rh, l, x_test, task, labels)
    return _normalised(list(lhs))
