r"""The kernel family: features, second-moment matrices Σ, and kernel regression.

One call signature for every estimator: a kernel maps the test input's features and the
demonstrations' features to weights K(x_test, x_i), and

.. math:: \hat y_n(y) = \frac{\sum_{i \le n} 1[y_i = y]\, K(x_{test}, x_i)}{\sum_{i \le n} K(x_{test}, x_i)}

(prefix sums over i, so every n comes from one pass). Kernels:

* ``gram``       φ(x) = vec(T_x), K = φᵀ G_l⁺ φ', G_l = Σ_{x ∈ (O∖δ)^l} φφᵀ (exact, unbiased).
* ``pretrain``   K = φᵀ Σ_{p_pre,l}⁺ φ', Σ_{p,l} = Σ_x P(x | p) φφᵀ (the paper's Σ; exact by
                 enumeration when the alphabet is tiny, else Monte Carlo).
* ``task``       the same with p = the test task's start (Σ_{θ*,l}).
* ``belief``     K = ⟨b(x), b(x')⟩, b(x) = p_preᵀ T_x / p_preᵀ T_x 1 (normalised belief).
* ``predictive`` K = ⟨P(o|x), P(o|x')⟩, P(o|x) = b(x) B (the paper's Eq. 9).
* ``belief``/``predictive`` with ``beta``: K = exp(β cos(f(x), f(x'))), β the inverse bandwidth.

Signed kernels (the Σ family) can give negative weights and near-zero denominators: both are
reported, never clipped. Row-major vec throughout: vec(A)[i d + j] = A[i, j].
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, asdict
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from theory import filtering
from theory.errors import KernelError
from theory.hmm import HMM, input_tokens

KERNEL_NAMES = ("gram", "pretrain", "task", "belief", "predictive")
MATRIX_KERNELS = ("gram", "pretrain", "task")


@dataclass(frozen=True)
class KernelSpec:
    """A member of the kernel family. ``label`` names it in tables (e.g. ``belief:beta=20``)."""

    name: str
    beta: float | None = None
    rtol: float = 1e-10
    ridge: float = 0.0
    mc_samples: int = 20000
    enum_limit: int = 200000

    @property
    def label(self) -> str:
        out = self.name
        extras = []
        if self.beta is not None:
            extras.append(f"beta={self.beta:g}")
        if self.name in MATRIX_KERNELS:
            d = KernelSpec(self.name)
            if self.rtol != d.rtol:
                extras.append(f"rtol={self.rtol:g}")
            if self.ridge != d.ridge:
                extras.append(f"ridge={self.ridge:g}")
            if self.name != "gram" and self.mc_samples != d.mc_samples:
                extras.append(f"mc_samples={self.mc_samples}")
        return out + (":" + ",".join(extras) if extras else "")

    def to_dict(self) -> dict:
        return asdict(self)


def parse_kernel(text: str) -> KernelSpec:
    """``name[:key=value,...]``, e.g. ``belief:beta=20`` or ``pretrain:ridge=1e-6,mc_samples=50000``."""
    name, _, rest = text.strip().partition(":")
    if name not in KERNEL_NAMES:
        raise KernelError(f"unknown kernel {name!r}; expected one of {', '.join(KERNEL_NAMES)}")
    kw = {}
    for item in filter(None, rest.split(",")):
        k, eq, v = item.partition("=")
        if not eq or k not in ("beta", "rtol", "ridge", "mc_samples", "enum_limit"):
            raise KernelError(f"bad kernel option {item!r} in {text!r}; expected beta=, rtol=, ridge=, mc_samples=")
        try:
            kw[k] = int(v) if k in ("mc_samples", "enum_limit") else float(v)
        except ValueError:
            raise KernelError(f"kernel option {k}={v!r} is not a number") from None
    if "beta" in kw and name in MATRIX_KERNELS:
        raise KernelError(f"beta (sharpening) applies to belief/predictive, not to {name!r}")
    for k in ("beta", "rtol", "ridge"):
        if k in kw and not (np.isfinite(kw[k]) and kw[k] >= 0):
            raise KernelError(f"kernel option {k}={kw[k]!r} in {text!r}; expected a finite number >= 0")
    if kw.get("mc_samples", 1) < 1 or kw.get("enum_limit", 1) < 1:
        raise KernelError(f"mc_samples and enum_limit must be >= 1 in {text!r}")
    return KernelSpec(name, **kw)


# ---------------------------------------------------------------- block structure of T_x


class Blocks(NamedTuple):
    """States grouped into K equal task blocks of size b such that T is block diagonal.

    ``order`` lists states block by block (``[K * b]``). With no such structure, K = 1, b = d.
    """

    order: np.ndarray
    K: int
    b: int


def block_structure(hmm: HMM) -> Blocks:
    T = np.asarray(hmm.T)
    tos = np.asarray(hmm.task_of_state)
    d = T.shape[0]
    K = hmm.num_tasks
    sizes = np.bincount(tos, minlength=K)
    cross = tos[:, None] != tos[None, :]
    if K > 1 and np.all(sizes == sizes[0]) and not np.any(T[cross] != 0):
        return Blocks(np.argsort(tos, kind="stable"), K, int(sizes[0]))
    return Blocks(np.arange(d), 1, d)


def feature_dim(blocks: Blocks) -> int:
    return blocks.K * blocks.b * blocks.b


def restricted_to_full(blocks: Blocks, d: int) -> np.ndarray:
    """Index map: restricted feature f -> position in the full row-major vec(T_x) (``[K b²]``)."""
    o = blocks.order.reshape(blocks.K, blocks.b)
    idx = o[:, :, None] * d + o[:, None, :]
    return idx.reshape(-1)


def operator_features(hmm: HMM, xs, blocks: Blocks | None = None, xp=np):
    """φ(x) = vec(T_x) restricted to the block-diagonal support: ``[..., K b²]``.

    Entries of vec(T_x) outside the task blocks are zero for x without delimiters (T is block
    diagonal), so the restriction loses nothing. ``xp`` is numpy or jax.numpy. Padding (-1)
    tokens act as the identity.
    """
    blocks = block_structure(hmm) if blocks is None else blocks
    K, b = blocks.K, blocks.b
    o = blocks.order.reshape(K, b)
    T = xp.asarray(hmm.T)[o[:, :, None], o[:, None, :]]  # [K, b, b]
    B = xp.asarray(hmm.B)[o]  # [K, b, m]
    xs = xp.asarray(xs)
    X = xp.broadcast_to(xp.eye(b, dtype=T.dtype), xs.shape[:-1] + (K, b, b))
    for t in range(xs.shape[-1]):
        tok = xs[..., t]
        w = xp.moveaxis(B[..., xp.maximum(tok, 0)], (0, 1), (-2, -1))  # [..., K, b]
        new = xp.einsum("...kij,...kj,kjl->...kil", X, w, T)
        X = xp.where((tok >= 0)[..., None, None, None], new, X)
    return X.reshape(xs.shape[:-1] + (K * b * b,))


def belief_features(hmm: HMM, xs, xp=np):
    """b(x) = p_preᵀ T_x / p_preᵀ T_x 1: the normalised next-state belief after x, ``[..., d]``.

    The filter of :func:`theory.filtering.step` (padding ``-1`` skipped). For an x of probability 0
    under p_pre the belief is undefined: every entry is NaN.
    """
    T = xp.asarray(hmm.T)
    Bt = xp.asarray(hmm.B).T
    xs = xp.asarray(xs)
    a = xp.broadcast_to(xp.asarray(hmm.p0), xs.shape[:-1] + (T.shape[0],))
    logz = xp.zeros(xs.shape[:-1], a.dtype)
    for t in range(xs.shape[-1]):
        tok = xs[..., t]
        a, logz = filtering.step(a, logz, Bt[xp.maximum(tok, 0)], T, skip=tok < 0, xp=xp)
    return xp.where(xp.isneginf(logz)[..., None], xp.nan, a)


def predictive_features(hmm: HMM, xs, xp=np):
    """P(o | x) = b(x) B, the pretraining next-token distribution after x, ``[..., m]``."""
    return belief_features(hmm, xs, xp) @ xp.asarray(hmm.B)


# ---------------------------------------------------------------- Σ matrices


def gram_matrix(hmm: HMM, length: int, blocks: Blocks | None = None) -> np.ndarray:
    r"""G_l = Σ_{x ∈ (O∖δ)^l} φ(x) φ(x)ᵀ exactly, in the restricted basis (``[K b², K b²]``).

    By the mixed-product rule, with g[a,c,i,j,k,l] = Σ_x T^a_x[i,j] T^c_x[k,l]:
    g ← Σ_{j,l} (g ⊙ C^{ac})[…, j, …, l] T^a[j, J] T^c[l, L], where C^{ac}[j,l] = Σ_{o≠δ} B^a[j,o] B^c[l,o].
    That is Q^l with Q = Σ_o M_o ⊗ M_o, computed block by block in O(l K² b⁵).
    """
    blocks = block_structure(hmm) if blocks is None else blocks
    K, b = blocks.K, blocks.b
    o = blocks.order.reshape(K, b)
    T = np.asarray(hmm.T, float)[o[:, :, None], o[:, None, :]]
    B = np.asarray(hmm.B, float)[o][..., input_tokens(hmm)]  # [K, b, m-1]
    C = np.einsum("ajo,clo->acjl", B, B)
    eye = np.eye(b)
    g = np.broadcast_to(np.einsum("ij,kl->ijkl", eye, eye), (K, K, b, b, b, b)).copy()
    for _ in range(length):
        h = g * C[:, :, None, :, None, :]
        g = np.einsum("acijkl,ajJ,clL->aciJkL".replace(" ", ""), h, T, T)
    # (a,i,j) x (c,k,l)
    return g.transpose(0, 2, 3, 1, 4, 5).reshape(K * b * b, K * b * b)


def second_moment_from_samples(features: np.ndarray) -> tuple[np.ndarray, float]:
    """Monte Carlo Σ = mean φφᵀ from ``[S, F]`` sampled features, and its relative standard error.

    The error is ‖SE‖_F / ‖Σ‖_F with SE the per-entry standard error of the mean.
    """
    F = np.asarray(features, float)
    S = F.shape[0]
    Sigma = F.T @ F / S
    # Var of each entry φ_a φ_b: E[(φ_a φ_b)^2] - Σ_ab^2
    sq = (F * F).T @ (F * F) / S
    var = np.maximum(sq - Sigma ** 2, 0.0)
    rel = float(np.sqrt(var.sum() / max(S - 1, 1)) / max(np.linalg.norm(Sigma), 1e-300))
    return Sigma, rel


def all_inputs(hmm: HMM, length: int, limit: float = 200000) -> np.ndarray | None:
    """Every x ∈ (O∖δ)^l as ``[S, l]`` int32, or None when there are more than ``limit``."""

    alphabet = input_tokens(hmm).tolist()
    if len(alphabet) ** length > limit:
        return None
    return np.array(list(itertools.product(alphabet, repeat=length)), dtype=np.int32).reshape(-1, length)


def operator_form(hmm: HMM, phi, left, right, blocks: Blocks | None = None, per_input: bool = False) -> np.ndarray:
    """leftᵀ T_x right from restricted features ``phi [S, K b²]`` (:func:`operator_features`).

    ``left [T, d]``. With ``right [d, Y]`` the result is ``[T, S, Y]``; with ``per_input`` and
    ``right [S, d]`` (one vector per input) it is ``[T, S]``. T_x is zero off the task blocks, so
    this never forms the d×d matrices.
    """
    blocks = block_structure(hmm) if blocks is None else blocks
    K, b = blocks.K, blocks.b
    o = blocks.order.reshape(K, b)
    X = np.asarray(phi, float).reshape(-1, K, b, b)
    L = np.asarray(left, float)[:, o]  # [T, K, b]
    R = np.asarray(right, float)
    if per_input:
        return np.einsum("tki,skij,skj->ts", L, X, R[:, o])
    return np.einsum("tki,skij,kjy->tsy", L, X, R[o])


def second_moment_exact(hmm: HMM, start, length: int, blocks: Blocks | None = None) -> np.ndarray:
    """Σ_{p,l} = Σ_{x ∈ (O∖δ)^l} P(x | p) φ(x) φ(x)ᵀ by enumeration (tiny alphabets only)."""
    blocks = block_structure(hmm) if blocks is None else blocks
    xs = all_inputs(hmm, length, limit=np.inf)
    phi = operator_features(hmm, xs, blocks)
    # P(x | p) = pᵀ T_x 1
    w = operator_form(hmm, phi, np.asarray(start, float)[None], np.ones((hmm.num_states, 1)), blocks)[0, :, 0]
    return (phi * w[:, None]).T @ phi


RECURSION_LIMIT = 1 << 26  # floats held by second_moment_recursive's state (512 MiB in float64)


@partial(jax.jit, static_argnames=("length",))
def _third_moment_block(V, Te, Ta, Tc, C, length: int):
    """Σ_x (vᵀ T^e_x 1) T^a_x ⊗ T^c_x for each start v (rows of ``V [r, b]``) and pair (a, c).

    ``Ta, Tc [Q, b, b]``: the pairs' blocks; ``C [Q, u, j, l]`` = Σ_{o≠δ} B^e[u,o] B^a[j,o] B^c[l,o].
    Returns ``[Q, r, i, k, j, l]``. State Z[q, u, (t, i, k), (j, l)], one token per step; the j and l
    chains move together by T^a ⊗ T^c (a b²×b² matrix: more flops than two b×b products, but
    two plain batched GEMMs per token and no transposes, which is faster on CPU).
    """
    Q, b = Ta.shape[0], Te.shape[0]
    r = V.shape[0]
    kron = jnp.einsum("qjJ,qlL->qjlJL", Ta, Tc).reshape(Q, b * b, b * b)
    TeT = jnp.broadcast_to(Te.T, (Q, b, b))
    Cf = C.reshape(Q, b, 1, b * b)
    # token 1 in closed form: Z[q, u', (t,i,k), (j',l')] = Σ_u V[t,u] C[q,u,i,k] T^e[u,u'] T^a[i,j'] T^c[k,l']
    Z = jnp.einsum("tu,quik,uv,qij,qkl->qvtikjl", V, C, Te, Ta, Tc).reshape(Q, b, r * b * b, b * b)
    for _ in range(length - 2):
        Z = jnp.matmul(TeT, (Z * Cf).reshape(Q, b, -1)).reshape(Z.shape)  # ×_u T^e
        Z = jnp.matmul(Z.reshape(Q, -1, b * b), kron).reshape(Z.shape)  # ×_(j,l) T^a ⊗ T^c
    # last token: the e-chain's right end is summed (T^e 1), so its index goes at once
    Y = jnp.einsum("qumx,u->qmx", Z * Cf, Te.sum(1))
    return jnp.matmul(Y, kron).reshape(Q, r, b, b, b, b)


def second_moment_recursive(hmm: HMM, start, length: int, blocks: Blocks | None = None) -> np.ndarray:
    r"""Σ_{p,l} = Σ_{x ∈ (O∖δ)^l} P(x | p) φ(x) φ(x)ᵀ exactly, by a third-moment Kronecker recursion.

    ``start``: ``[d]`` (returns ``[K b², K b²]``) or ``[S, d]`` (returns ``[S, K b², K b²]``).
    Equal to :func:`second_moment_exact` (tested to 1e-12) without enumerating the (m−1)^l inputs;
    computed in float64 whatever JAX's global precision setting.

    P(x | p) = Σ_e p_eᵀ T^e_x 1 sums over the task blocks e (p_e: p on block e), and T_x is block
    diagonal, so block (a, c) of Σ is Σ_e Σ_x (p_eᵀ T^e_x 1) T^a_x ⊗ T^c_x: a sum over x of a
    product of three chains that read the same tokens. Carried token by token, the state
    Z[i, k, u, j, l] = Σ_{x'} (p_eᵀ T^e_{x'})_u T^a_{x'}[i, j] T^c_{x'}[k, l] over prefixes x' moves as

        Z ← ((Z ⊙ C) ×_u T^e) ×_j T^a ×_l T^c,   C[u, j, l] = Σ_{o≠δ} B^e[u, o] B^a[j, o] B^c[l, o],

    (M_o = diag(b_o) T, so the sum over tokens is the contraction with C), and Σ's block is Σ_u Z
    after l tokens (the first and the last token cost O(b⁵) per pair, the others O(b⁶)). Blocks where every
    start is zero are skipped; starts that are proportional on a block (p0 and the task starts of
    the han preset) share one run there, so Σ for p0 and for all K task starts together cost K
    runs of K(K+1)/2 pairs a ≤ c (the pairs c < a are transposes).
    """
    blocks = block_structure(hmm) if blocks is None else blocks
    K, b = blocks.K, blocks.b
    o = blocks.order.reshape(K, b)
    P = np.atleast_2d(np.asarray(start, float))
    S = P.shape[0]
    if P.ndim != 2 or P.shape[1] != hmm.num_states:
        raise KernelError(f"start has shape {np.shape(start)}, expected [d={hmm.num_states}] or [S, d]")
    if int(length) < 1:
        raise KernelError(f"input length {length}, expected l >= 1")
    T = np.asarray(hmm.T, float)[o[:, :, None], o[:, None, :]]  # [K, b, b]
    B = np.asarray(hmm.B, float)[o][..., input_tokens(hmm)]  # [K, b, m-1]
    pairs = [(a, c) for a in range(K) for c in range(a, K)]
    qa = np.array([a for a, _ in pairs])
    qc = np.array([c for _, c in pairs])
    out = np.zeros((S, K, b, b, K, b, b))  # [s, a, i, j, c, k, l]
    F = K * b * b
    for e in range(K):
        Pe = P[:, o[e]]  # [S, b]
        if not np.any(Pe):
            continue
        # one run per direction of Pe's row space (rank 1 when the starts are proportional here)
        _, sv, Vt = np.linalg.svd(Pe, full_matrices=False)
        V = Vt[: int(np.sum(sv > sv[0] * 1e-13))]  # [r, b] orthonormal rows
        coef = Pe @ V.T  # [S, r]
        size = len(pairs) * V.shape[0] * b ** 5
        if size > RECURSION_LIMIT:
            raise KernelError(f"exact Sigma by recursion needs {size} floats of state ({K} blocks of {b} states); "
                              f"more than {RECURSION_LIMIT}: use Monte Carlo (mc_samples=)")
        C = np.einsum("uo,qjo,qlo->qujl", B[e], B[qa], B[qc])
        with jax.enable_x64(True):
            if length == 1:
                Z = np.einsum("tu,quik,u,qij,qkl->qtikjl", V, C, T[e].sum(1), T[qa], T[qc], optimize=True)
            else:
                Z = np.asarray(_third_moment_block(*(jnp.asarray(x, jnp.float64) for x in (V, T[e], T[qa], T[qc], C)),
                                                   length=int(length)))
        blk = np.einsum("st,qtikjl->sqijkl", coef, Z)  # [S, Q, i, j, k, l]
        for q, (a, c) in enumerate(pairs):
            out[:, a, :, :, c] += blk[:, q]
            if a != c:
                out[:, c, :, :, a] += blk[:, q].transpose(0, 3, 4, 1, 2)
    Sig = out.reshape(S, F, F)
    return Sig[0] if np.ndim(start) == 1 else Sig


def psd_pinv(S: np.ndarray, rtol: float, ridge: float, what: str = "Sigma") -> tuple[np.ndarray, dict]:
    """(S + ridge·λ_max·I)⁺ with eigenvalues below ``rtol``·λ_max dropped; info on conditioning.

    Raises :class:`KernelError` when S is singular and neither a tolerance nor a ridge is set.
    """
    S = 0.5 * (S + S.T)
    lam, V = np.linalg.eigh(S)
    lmax = float(max(lam.max(), 0.0))
    if lmax <= 0:
        raise KernelError(f"{what} is zero; no kernel can be built from it")
    eps_rank = lmax * S.shape[0] * np.finfo(float).eps
    singular = bool(lam.min() <= eps_rank)
    if singular and rtol == 0 and ridge == 0:
        raise KernelError(f"{what} is singular (smallest eigenvalue {lam.min():.3g}, largest {lmax:.3g}); "
                          "set a pinv tolerance (rtol=) or a ridge (ridge=)")
    lam_r = lam + ridge * lmax
    keep = lam_r > max(rtol * lmax, eps_rank if ridge == 0 else 0.0)
    inv = (V[:, keep] / lam_r[keep]) @ V[:, keep].T
    info = dict(rank=int(keep.sum()), dim=int(S.shape[0]), lambda_max=lmax, lambda_min=float(lam.min()),
                pinv_norm=float(1.0 / lam_r[keep].min()), singular=singular)
    return inv, info


# ---------------------------------------------------------------- kernel regression


def kernel_values_vector(f_test, f_demo, beta=None, xp=np):
    """K(x_test, x_i) for vector features: ``f_test [..., F]``, ``f_demo [..., N, F]`` → ``[..., N]``."""
    if beta is None:
        return xp.einsum("...f,...nf->...n", f_test, f_demo)
    nt = f_test / xp.linalg.norm(f_test, axis=-1, keepdims=True)
    nd = f_demo / xp.linalg.norm(f_demo, axis=-1, keepdims=True)
    cos = xp.einsum("...f,...nf->...n", nt, nd)
    return xp.exp(beta * (cos - 1.0))  # = exp(β cos) / exp(β): the constant cancels in ŷ


def kernel_regression(Kvals, label_idx, num_labels: int, grid, xp=np):
    """ŷ_n for each n in ``grid``: ``Kvals [P, N]``, ``label_idx [P, N]`` (0..|Y|-1) → ``[G, P, |Y|]``.

    Also returns the denominators ``[G, P]`` (Σ_{i≤n} K), so near-zero ones can be reported.
    """
    onehot = (label_idx[..., None] == xp.arange(num_labels)).astype(Kvals.dtype)
    num = xp.cumsum(Kvals[..., None] * onehot, axis=1)  # [P, N, |Y|]
    den = xp.cumsum(Kvals, axis=1)
    idx = xp.asarray(grid) - 1
    num_g = xp.moveaxis(num[:, idx], 1, 0)
    den_g = xp.moveaxis(den[:, idx], 1, 0)
    return num_g / den_g[..., None], den_g
