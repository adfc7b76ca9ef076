r"""Theorem 1 as this project states it: every constant, the assumptions, and the bound.

See ``docs/theory.md`` for the statement and derivations. In short, for a prompt with test task
θ*, test input x_test and n demonstrations (x_i, y_i) drawn i.i.d. from the demonstration law
q*(x, y) = s*ᵀ T_x b_y / Z*, with probability at least 1 − δ_K − δ_B:

.. math::
    \|\hat y_n - \mathrm{Bayes}_n\|_1 \le
      \underbrace{\frac{(|Y|+1)\,t}{|\mu_K| - t}}_{\text{deviation}}
    + \underbrace{\|\bar y_K - o\|_1}_{\text{bias}}
    + \underbrace{2 \sum_{θ \ne θ^*} \frac{π_θ}{π_*} \frac{P(x_{test}, Y | θ)}{P(x_{test}, Y | θ^*)}
        e^{-(n D_θ - r_θ \sqrt{n \log((K-1)/δ_B)/2})}}_{\text{Bayes} \to \text{Oracle}},
    \qquad t = r_K \sqrt{\log(2(|Y|+1)/δ_K) / (2n)},

where ȳ_K = ν_K / μ_K is the kernel's population limit (ν_K(y) = E_{q*}[1[y'=y] K(x_test, x)],
μ_K = Σ_y ν_K(y)), o the Oracle, r_K the range of the kernel's terms, D_θ the expected per-
demonstration log-likelihood ratio of θ* against θ, and r_θ its range. For the Gram kernel the
bias is exactly zero; for a Σ-kernel it is at most 2η²ε/(|μ_K| − η²ε), with η = sup_x ‖T_x‖_F
and ε = min_c ρ(c Σ⁺ − G_l⁺) (the paper's η²ε_θ, with G_l in place of Σ_{s_θ}).

Everything here is numpy, on a *demonstration set*: the support of q* enumerated with its exact
probabilities (tiny HMMs), or Monte Carlo draws with equal weights (then every "exact" constant
is an estimate, and is labelled so).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from theory.errors import AssumptionError
from theory.hmm import HMM, input_tokens
from theory import kernels as tk
from theory.kernels import all_inputs


# ------------------------------------------------------------------ assumptions


class Assumptions(NamedTuple):
    """The constants of the assumptions (all checked by :func:`check_assumptions`).

    Attributes:
        eps_r: min over states of the delimiter weight w_δ(s) (the delimiter lower bound).
        eps_d: min over tasks of the prior mass π_θ of the task's start (the start lower bound).
        prior: ``[K]`` π_θ, with p0 = Σ_θ π_θ s_θ.
        restart_leak: max over states of the restart mass R sends outside the state's own task start.
        cross_task: total transition mass T moves between task blocks.
    """

    eps_r: float
    eps_d: float
    prior: np.ndarray
    restart_leak: float
    cross_task: float


def check_assumptions(hmm: HMM, tol: float = 1e-9) -> Assumptions:
    """Check Assumption 1 (restart), the lower bounds and the block structure; raise on violation.

    Raises :class:`AssumptionError` naming the assumption and the offending value.
    """
    T, R = np.asarray(hmm.T, float), np.asarray(hmm.R, float)
    dw = np.asarray(hmm.delim_weight, float)
    starts = np.asarray(hmm.task_start, float)
    tos = np.asarray(hmm.task_of_state)
    K, d = starts.shape
    cross = tos[:, None] != tos[None, :]
    cross_mass = float(T[cross].sum())
    if cross_mass > tol:
        i, j = np.unravel_index(np.argmax(np.where(cross, T, 0)), T.shape)
        raise AssumptionError(f"block structure: T moves between tasks (T[{i},{j}] = {T[i, j]:.3g} from task "
                              f"{tos[i]} to task {tos[j]}); demonstrations would not be i.i.d. given the task")
    for k in range(K):
        outside = starts[k][tos != k].sum()
        if outside > tol:
            raise AssumptionError(f"task {k}'s start puts mass {outside:.3g} on other tasks' states; "
                                  "expected each start inside its own task block")
    # Restart: every state of task k is sent exactly to s_k (no leak, no memory).
    target = starts[tos]  # [d, K→d]
    leak = np.abs(R - target).sum(axis=1) / 2
    if leak.max() > tol:
        s = int(np.argmax(leak))
        raise AssumptionError(f"restart (Assumption 1): the delimiter does not restart state {s} to task "
                              f"{tos[s]}'s start (total-variation gap {leak[s]:.3g}; leak or no restart); "
                              "expected R[s] = s_task(s)")
    eps_r = float(dw.min())
    if eps_r <= 0:
        s = int(np.argmin(dw))
        raise AssumptionError(f"delimiter lower bound eps_r = {eps_r:.3g} at state {s}; expected every state to "
                              "emit the delimiter with positive probability")
    # p0 must be a mixture of the task starts: π_θ = p0 mass on block θ, and p0|block ∝ s_θ.
    p0 = np.asarray(hmm.p0, float)
    prior = np.array([p0[tos == k].sum() for k in range(K)])
    resid = np.abs(p0 - prior @ starts).sum()
    if resid > 1e-7:
        raise AssumptionError(f"start (Assumption 1): p0 is not a mixture of the task starts (L1 residual "
                              f"{resid:.3g}), so the first demonstration would not start where the restarts do; "
                              "expected p0 = sum_k prior_k s_k")
    eps_d = float(prior.min())
    if eps_d <= 0:
        raise AssumptionError(f"start lower bound eps_d = {eps_d:.3g} (task {int(np.argmin(prior))} has zero "
                              "prior mass in p0); expected every task to be possible")
    return Assumptions(eps_r, eps_d, prior, float(leak.max()), cross_mass)


# ------------------------------------------------------------------ demonstration sets


class DemoSet(NamedTuple):
    """Demonstrations of one task with weights summing to 1 (exact law or Monte Carlo).

    Attributes:
        xs: ``[S, l]`` int inputs.
        ys: ``[S]`` int label *indices* into the label set (0..|Y|-1).
        w: ``[S]`` probabilities (exact q*(x, y)) or 1/S (Monte Carlo).
        exact: True when ``w`` is the exact law on its whole support.
    """

    xs: np.ndarray
    ys: np.ndarray
    w: np.ndarray
    exact: bool


def joint_table(hmm: HMM, xs, labels, starts=None, phi=None) -> np.ndarray:
    """s_θᵀ T_x b_y for every start, input and label: ``[K, S, |Y|]`` (unnormalised demo law).

    ``phi`` (the inputs' :func:`theory.kernels.operator_features`) may be passed precomputed.
    """
    phi = tk.operator_features(hmm, np.asarray(xs)) if phi is None else phi
    starts = np.asarray(hmm.task_start if starts is None else starts, float)
    return tk.operator_form(hmm, phi, starts, np.asarray(hmm.B, float)[:, np.asarray(labels)])


def exact_demo_set(hmm: HMM, task: int, length: int, labels, limit: int = 200000) -> DemoSet:
    """The demonstration law q_θ(x, y) = s_θᵀ T_x b_y / Z_θ on its whole support (enumeration)."""
    xs = all_inputs(hmm, length, limit)
    if xs is None:
        raise AssumptionError(f"(m-1)^l = {len(input_tokens(hmm))}^{length} inputs exceed the enumeration "
                              f"limit {limit}; use a Monte Carlo demonstration set")
    J = joint_table(hmm, xs, labels, np.asarray(hmm.task_start)[task:task + 1])[0]  # [S, |Y|]
    s_idx, y_idx = np.nonzero(J > 0)
    w = J[s_idx, y_idx]
    return DemoSet(xs[s_idx], y_idx.astype(np.int32), w / w.sum(), True)


# ------------------------------------------------------------------ constants


class Eta(NamedTuple):
    """η = sup_x ‖T_x‖_F over x ∈ (O∖δ)^l; ``kind`` is "exact" (enumerated) or "bound"."""

    value: float
    kind: str


def eta(hmm: HMM, length: int, limit: int = 200000) -> Eta:
    """η exactly by enumeration when (m−1)^l ≤ ``limit``, else an upper bound.

    The bound: row i of T_x is non-negative and sums to P(x | s_0 = i) ≤ B[i, x_0], so
    ‖T_x‖_F² ≤ Σ_i max_{o≠δ} B[i, o]²; also ‖T_x‖_F ≤ max_o ‖M_o‖_F · max_o ‖M_o‖₂^{l−1}.
    """
    xs = all_inputs(hmm, length, limit)
    if xs is not None:  # ‖T_x‖_F = ‖φ(x)‖: T_x is zero off the task blocks
        phi = tk.operator_features(hmm, xs)
        return Eta(float(np.sqrt((phi ** 2).sum(axis=1).max())), "exact")
    B = np.asarray(hmm.B, float)[:, input_tokens(hmm)]
    b1 = float(np.sqrt((B.max(axis=1) ** 2).sum()))
    Ms = [B[:, j][:, None] * np.asarray(hmm.T, float) for j in range(B.shape[1])]
    b2 = max(np.linalg.norm(M) for M in Ms) * max(np.linalg.norm(M, 2) for M in Ms) ** (length - 1)
    return Eta(min(b1, float(b2)), "bound")


def spectral_radius_sym(S: np.ndarray) -> float:
    """ρ(S) for a symmetric matrix (max |eigenvalue|)."""
    lam = np.linalg.eigvalsh(0.5 * (S + S.T))
    return float(np.abs(lam).max())


def paper_epsilon(Sigma_pre: np.ndarray, Sigma_theta: np.ndarray, rtol: float = 1e-10) -> float:
    """The paper's ε_θ = ρ(Σ_pre⁺ − Σ_θ⁺) at one length l (pinv with relative tolerance ``rtol``)."""
    A, _ = tk.psd_pinv(Sigma_pre, rtol, 0.0, "Sigma_pre")
    C, _ = tk.psd_pinv(Sigma_theta, rtol, 0.0, "Sigma_theta")
    return spectral_radius_sym(A - C)


class GramEpsilon(NamedTuple):
    """ε = min_c ρ(c A − G⁺) (this project's ε_θ) and the minimising scale c."""

    value: float
    scale: float


def gram_epsilon(A: np.ndarray, G_pinv: np.ndarray, iters: int = 40) -> GramEpsilon:
    """min_{c ≥ 0} ρ(c A − G⁺): ρ of an affine matrix function is convex in c (golden-section search).

    Kernel regression is invariant to scaling A, so the bias bound may use the best scale.
    """
    A = 0.5 * (A + A.T)
    Gp = 0.5 * (G_pinv + G_pinv.T)
    f = lambda c: spectral_radius_sym(c * A - Gp)  # noqa: E731
    rho_a = spectral_radius_sym(A)
    if rho_a == 0:
        return GramEpsilon(f(0.0), 0.0)
    lo, hi = 0.0, 2.0 * spectral_radius_sym(Gp) / rho_a
    while f(hi) < f(hi / 2):  # make sure the minimum is bracketed
        hi *= 2
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(iters):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = f(b)
    c = a if fa <= fb else b
    return GramEpsilon(min(fa, fb), c)


# ------------------------------------------------------------------ population limits


class Limit(NamedTuple):
    """A kernel's population limit for one prompt (over one demonstration set).

    Attributes:
        nu: ``[|Y|]`` ν(y) = E[1[y'=y] K(x_test, x)].
        mu: Σ_y ν(y) = E[K(x_test, x)].
        ybar: ``[|Y|]`` ν / μ, where ŷ_n converges.
        k_min, k_max: min and max of K(x_test, x) over the set (the range of each term).
        var_nu: ``[|Y|]`` Var(1[y'=y] K(x_test, x)) per label.
        var_mu: Var(K(x_test, x)).
    """

    nu: np.ndarray
    mu: float
    ybar: np.ndarray
    k_min: float
    k_max: float
    var_nu: np.ndarray | None = None
    var_mu: float | None = None


def population_limit(kvals, demos: DemoSet, num_labels: int) -> Limit:
    """ν, μ and ȳ from kernel values ``kvals [S]`` = K(x_test, x_s) on a demonstration set."""
    kvals = np.asarray(kvals, float)
    nu = np.bincount(demos.ys, weights=demos.w * kvals, minlength=num_labels)
    mu = float(nu.sum())
    sq = np.bincount(demos.ys, weights=demos.w * kvals ** 2, minlength=num_labels)
    var_nu = np.maximum(sq - nu ** 2, 0.0)
    var_mu = max(float(sq.sum()) - mu ** 2, 0.0)
    return Limit(nu, mu, nu / mu if mu != 0 else np.full(num_labels, np.nan), float(kvals.min()), float(kvals.max()),
                 var_nu, var_mu)


def oracle(hmm: HMM, task: int, x_test, labels) -> np.ndarray:
    """P(y | x_test, θ) renormalised over the label set (``[|Y|]``)."""
    j = joint_table(hmm, np.asarray(x_test)[None], labels, np.asarray(hmm.task_start)[task:task + 1])[0, 0]
    return j / j.sum()


def _mean_deviation(n, r: float, var, log_term: float):
    """Half-width t of a two-sided confidence interval for a mean of n terms in an interval of length r.

    The smaller of Hoeffding's r √(ℓ/(2n)) and Bernstein's (2rℓ/3 + √((2rℓ/3)² + 8nσ²ℓ))/(2n)
    (the root of n t² = ℓ(2σ² + 2rt/3)), where ℓ = ``log_term`` and σ² = ``var``; the choice depends
    only on n and population constants, so the interval holds with the chosen level either way.
    """
    hoeffding = r * np.sqrt(log_term / (2 * n))
    if var is None:
        return hoeffding
    a = 2 * r * log_term / 3
    bernstein = (a + np.sqrt(a * a + 8 * n * var * log_term)) / (2 * n)
    return np.minimum(hoeffding, bernstein)


def deviation_bound(n, delta: float, k_min: float, k_max: float, mu: float, num_labels: int,
                    ybar_l1: float = 1.0, var_nu=None, var_mu: float | None = None) -> np.ndarray:
    r"""High-probability bound on ‖ŷ_n − ȳ‖₁ (|Y|+1 concentration inequalities, union bound, ratio).

    Each term 1[y_i=y] K_i and K_i lies in an interval of length r = max(k_max, 0) − min(k_min, 0).
    With probability ≥ 1 − δ every mean is within its half-width t_j of its expectation, where t_j
    is Hoeffding's, or Bernstein's when the variances ``var_nu`` (per label) and ``var_mu`` are given
    and it is smaller (:func:`_mean_deviation`), at level δ/(|Y|+1) each. Since
    N/D − ν/μ = ((N − ν) − ȳ (D − μ))/D, then ‖ŷ_n − ȳ‖₁ ≤ (Σ_y t_y + ‖ȳ‖₁ t_D) / (|μ| − t_D);
    ‖ȳ‖₁ = 1 for a positive kernel and may exceed 1 for a signed one. Infinite when t_D ≥ |μ|.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta}, expected a probability in (0, 1)")
    n = np.asarray(n, float)
    r = max(k_max, 0.0) - min(k_min, 0.0)
    log_term = np.log(2 * (num_labels + 1) / delta)
    if var_nu is None or var_mu is None:
        t_num = num_labels * _mean_deviation(n, r, None, log_term)
        t_den = _mean_deviation(n, r, None, log_term)
    else:
        t_num = sum(_mean_deviation(n, r, float(v), log_term) for v in np.asarray(var_nu, float))
        t_den = _mean_deviation(n, r, float(var_mu), log_term)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (t_num + ybar_l1 * t_den) / (abs(mu) - t_den)
    return np.where(t_den < abs(mu), out, np.inf)


def sigma_bias_bound(eta_value: float, eps: float, mu_exact: float) -> float:
    r"""Bound on the Σ-kernel's bias ‖ȳ_Σ − o‖₁ ≤ 2η²ε / (μ − η²ε) (infinite when η²ε ≥ μ).

    μ is the exact (Gram) denominator P(x_test, Y | θ*)/Z*; derivation in docs/theory.md.
    """
    e = eta_value ** 2 * eps
    return 2 * e / (mu_exact - e) if e < mu_exact else math.inf


# ------------------------------------------------------------------ Bayes → Oracle


def demo_likelihoods(hmm: HMM, xs, ys_tokens, phi=None) -> np.ndarray:
    """ℓ_θ(x, y) = s_θᵀ T_x diag(b_y) T w_δ: the probability of the segment x y δ from θ's start.

    ``[K, S]``. Under the restart assumption the prompt's likelihood given θ is the product of these.
    ``phi`` (the inputs' operator features) may be passed precomputed.
    """
    phi = tk.operator_features(hmm, np.asarray(xs)) if phi is None else phi
    after = np.asarray(hmm.T, float) @ np.asarray(hmm.delim_weight, float)  # [d]
    v = np.asarray(hmm.B, float)[:, np.asarray(ys_tokens)].T * after[None]  # [S, d]
    return tk.operator_form(hmm, phi, hmm.task_start, v, per_input=True)


class Distinguishability(NamedTuple):
    """Per pair (θ*, θ): D = E_{q_θ*}[log ℓ_θ*/ℓ_θ], clipped at the largest finite value, and its range.

    Attributes:
        D: ``[K, K]`` (zero diagonal). D[a, b] > 0 is what makes the posterior leave b given a's demos.
        r: ``[K, K]`` the range (max − min) of the clipped log ratio over the set.
        kl: ``[K, K]`` KL(q_a ‖ q_b) between the demonstration laws (inf where supports differ).
        exact: whether the sets were exact laws.
        lambdas: ``[J]`` the grid of Chernoff parameters λ.
        log_mgf: ``[K, K, J]`` log E_{q_a}[exp(−λ log ℓ_a/ℓ_b)] (unclipped; −inf where ℓ_b = 0 always).
    """

    D: np.ndarray
    r: np.ndarray
    kl: np.ndarray
    exact: bool
    lambdas: np.ndarray | None = None
    log_mgf: np.ndarray | None = None


CHERNOFF_LAMBDAS = np.geomspace(1e-4, 1e3, 281)


def distinguishability(hmm: HMM, demo_sets, labels, phis=None) -> Distinguishability:
    """D, its range and the KL from one demonstration set per task (``demo_sets[k]`` for task k).

    ``phis[k]`` (the operator features of ``demo_sets[k].xs``) may be passed precomputed.
    """
    labels = np.asarray(labels)
    K = hmm.num_tasks
    D, r, kl = np.zeros((K, K)), np.zeros((K, K)), np.zeros((K, K))
    lam = CHERNOFF_LAMBDAS
    log_mgf = np.zeros((K, K, len(lam)))
    for a, ds in enumerate(demo_sets):
        phi = tk.operator_features(hmm, ds.xs) if phis is None else phis[a]
        ell = demo_likelihoods(hmm, ds.xs, labels[ds.ys], phi)  # [K, S]
        J = joint_table(hmm, ds.xs, labels, phi=phi)  # [K, S, |Y|]
        q = J[:, np.arange(len(ds.ys)), ds.ys]  # [K, S]
        Z = J.sum(axis=(1, 2)) if ds.exact else None
        with np.errstate(divide="ignore"):
            L = np.log(ell[a])[None] - np.log(ell)  # [K, S]
        for b in range(K):
            if b == a:
                continue
            finite = np.isfinite(L[b])
            cap = L[b][finite].max() if finite.any() else 50.0
            Lc = np.minimum(L[b], cap)
            D[a, b] = float(ds.w @ Lc)
            r[a, b] = float(Lc.max() - Lc.min())
            with np.errstate(invalid="ignore", over="ignore"):
                e = np.log(ds.w)[None, :] - lam[:, None] * L[b][None, :]  # [J, S]; −inf where ℓ_b = 0
                emax = e.max(axis=1, keepdims=True)
                log_mgf[a, b] = np.where(np.isfinite(emax[:, 0]),
                                         emax[:, 0] + np.log(np.exp(e - np.where(np.isfinite(emax), emax, 0)).sum(1)),
                                         -np.inf)
            if Z is not None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    lr = np.log(q[a] / Z[a]) - np.log(q[b] / Z[b])
                kl[a, b] = float(ds.w @ lr) if np.all(np.isfinite(lr)) else math.inf
            else:
                kl[a, b] = math.nan
    return Distinguishability(D, r, kl, all(ds.exact for ds in demo_sets), lam, log_mgf)


def check_distinguishable(dist: Distinguishability, tol: float = 1e-12) -> None:
    """Assumption 2 made concrete: D[θ*, θ] > 0 for every pair; raise naming the worst pair."""
    K = dist.D.shape[0]
    off = np.where(np.eye(K, dtype=bool), np.inf, dist.D)
    a, b = np.unravel_index(np.argmin(off), off.shape)
    if K > 1 and off[a, b] <= tol:
        raise AssumptionError(f"task distinguishability (Assumption 2): D[{a},{b}] = {off[a, b]:.3g} "
                              f"(KL {dist.kl[a, b]:.3g}) <= 0: task {a}'s demonstrations are on average at least as likely "
                              f"under task {b}, so Bayes need not converge to the Oracle")


def log_ratio_lower_bound(n, delta: float, dist: Distinguishability, a: int, b: int) -> np.ndarray:
    r"""A lower bound on S = Σ_{i≤n} log ℓ_a/ℓ_b(demo_i) that holds with probability ≥ 1 − δ (``[len(n)]``).

    The larger of Hoeffding's n D − r √(n log(1/δ)/2) (clipped log ratios) and Chernoff's
    max_λ (−n log E[e^{−λ L}] − log(1/δ))/λ with the exact moment generating function on the grid
    ``dist.lambdas``. Either is a deterministic function of n and the law, so choosing the larger
    keeps the level δ.
    """
    n = np.asarray(n, float)
    log_inv = np.log(1 / delta)
    hoeff = n * dist.D[a, b] - dist.r[a, b] * np.sqrt(n * log_inv / 2)
    if dist.log_mgf is None:
        return hoeff
    lm = dist.log_mgf[a, b]  # [J]
    with np.errstate(invalid="ignore"):
        cher = (-(n[:, None] * lm[None, :]) - log_inv) / dist.lambdas[None, :]  # [len(n), J]
    cher = np.where(np.isnan(cher), -np.inf, cher).max(axis=1)
    return np.maximum(hoeff, cher)


def bayes_oracle_bound(n, delta: float, task: int, prior, dist: Distinguishability, test_mass) -> np.ndarray:
    r"""High-probability bound on ‖Bayes_n − o‖₁ for a prompt of task ``task`` (θ*).

    ‖Bayes_n − o‖₁ ≤ 2(1 − π'_n(θ*)) ≤ 2 Σ_{θ≠θ*} (π_θ/π_*) ρ_θ exp(−S_θ), where
    S_θ = Σ_i log ℓ_*/ℓ_θ(demo_i) ≥ :func:`log_ratio_lower_bound` at level δ/(K−1) for each θ (union
    bound), and ρ_θ = P(x_test, Y | θ)/P(x_test, Y | θ*) comes from ``test_mass`` = P(x_test, Y | θ)
    for each θ (:func:`x_test_mass`). Capped at 2.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta}, expected a probability in (0, 1)")
    n = np.asarray(n, float)
    K = len(prior)
    if K == 1:
        return np.zeros_like(n)
    prior = np.asarray(prior, float)
    test_mass = np.asarray(test_mass, float)
    total = np.zeros_like(n)
    for b in range(K):
        if b == task:
            continue
        expo = log_ratio_lower_bound(n, delta / (K - 1), dist, task, b)
        with np.errstate(over="ignore"):
            total = total + prior[b] / prior[task] * test_mass[b] / test_mass[task] * np.exp(-expo)
    return np.minimum(2 * total, 2.0)


def x_test_mass(hmm: HMM, x_test, labels) -> np.ndarray:
    """P(x_test, next ∈ Y | θ) = s_θᵀ T_{x_test} b_Y for each task θ (``[K]``)."""
    return joint_table(hmm, np.asarray(x_test)[None], labels)[:, 0].sum(-1)


def demo_normaliser(hmm: HMM, length: int, labels) -> np.ndarray:
    """Z_θ = Σ_{x ∈ (O∖δ)^l, y ∈ Y} s_θᵀ T_x b_y = s_θᵀ (diag(1 − b_δ) T)^l b_Y, in closed form (``[K]``)."""
    B = np.asarray(hmm.B, float)
    M = (1.0 - B[:, int(hmm.delim)])[:, None] * np.asarray(hmm.T, float)
    v = B[:, np.asarray(labels)].sum(axis=1)
    for _ in range(length):
        v = M @ v
    return np.asarray(hmm.task_start, float) @ v


# ------------------------------------------------------------------ kernels on demonstration sets


def kernel_features(hmm: HMM, spec: tk.KernelSpec, xs) -> np.ndarray:
    """The features a kernel compares: restricted vec(T_x) (Σ kernels), beliefs or predictives ``[S, F]``."""
    xs = np.asarray(xs)
    if spec.name in tk.MATRIX_KERNELS:
        return tk.operator_features(hmm, xs, tk.block_structure(hmm))
    fn = tk.belief_features if spec.name == "belief" else tk.predictive_features
    return fn(hmm, xs)


def kernel_values_from_features(spec: tk.KernelSpec, f_test, f_demos, A=None, task=None) -> np.ndarray:
    """K(x_test, x) from features: ``f_test [F]``, ``f_demos [S, F]`` → ``[S]``.

    ``A`` is the stack of Σ⁺ matrices in the restricted basis for the matrix kernels (``[1 or K, F, F]``;
    the task kernel uses ``A[task]``); the vector kernels ignore it.
    """
    if spec.name in tk.MATRIX_KERNELS:
        if A is None:
            raise ValueError(f"kernel {spec.label} needs its Sigma-inverse matrix A")
        return f_demos @ (A[task if spec.name == "task" else 0] @ f_test)
    return tk.kernel_values_vector(f_test, f_demos, spec.beta)


def kernel_values(hmm: HMM, spec: tk.KernelSpec, x_test, xs, A=None, task=None) -> np.ndarray:
    """K(x_test, x) for one test input ``[l]`` and inputs ``xs [S, l]`` (``[S]``)."""
    f_test = kernel_features(hmm, spec, np.asarray(x_test)[None])[0]
    return kernel_values_from_features(spec, f_test, kernel_features(hmm, spec, xs), A, task)


def oracle_per_input(hmm: HMM, task: int, xs, labels, phi=None) -> np.ndarray:
    """o_x = P(y | x, θ) renormalised over the label set, for each x (``[S, |Y|]``)."""
    J = joint_table(hmm, xs, labels, np.asarray(hmm.task_start)[task:task + 1], phi)[0]
    return J / J.sum(axis=1, keepdims=True)


class PromptBound(NamedTuple):
    """Theorem-1 bound for one prompt (x_test, θ*) as a function of n (arrays ``[len(n)]``).

    Attributes:
        n: demonstration counts.
        deviation: bound on ‖ŷ_n − ȳ‖₁ at level δ_K.
        bias: ‖ȳ − o‖₁ computed from the population limit (exact on an exact set).
        bias_bound: the Nadaraya–Watson bound Σ_x q(x,Y) |K(x_test,x)| ‖o_x − o‖₁ / |μ_K| ≥ bias
            (o_x the Oracle at x); it holds for every kernel, signed or not.
        bias_bound_paper: the paper-form bound 2η²ε/(μ − η²ε) for Σ kernels (0 for gram, nan for
            vector kernels, inf when η²ε ≥ μ).
        bayes: bound on ‖Bayes_n − o‖₁ at level δ_B.
        total: deviation + bias + bayes: bound on ‖ŷ_n − Bayes_n‖₁ w.p. ≥ 1 − δ_K − δ_B.
        limit: the kernel's :class:`Limit`.
    """

    n: np.ndarray
    deviation: np.ndarray
    bias: float
    bias_bound: float
    bias_bound_paper: float
    bayes: np.ndarray
    total: np.ndarray
    limit: Limit


def prompt_bound(hmm: HMM, spec: tk.KernelSpec, x_test, task: int, labels, demos: DemoSet,
                 dist: Distinguishability, prior, n, delta_k: float = 0.05, delta_b: float = 0.05,
                 A=None, eta_value: float | None = None, eps: float | None = None,
                 Z: float | None = None, kv=None, o_x=None) -> PromptBound:
    """The bound on ‖ŷ_n − Bayes_n‖₁ for one prompt, split into its three terms.

    ``demos`` is task θ*'s demonstration set (exact or Monte Carlo); ``eta_value`` and ``eps`` are
    needed for the Σ kernels' bias bound, ``Z`` (= Z_θ*, :func:`demo_normaliser`) for its μ.
    ``kv`` (kernel values on the set) and ``o_x`` (:func:`oracle_per_input` on the set) may be
    passed precomputed.
    """
    labels = np.asarray(labels)
    n = np.atleast_1d(np.asarray(n, float))
    if kv is None:
        kv = kernel_values(hmm, spec, x_test, demos.xs, A, task)
    lim = population_limit(kv, demos, len(labels))
    o = oracle(hmm, task, x_test, labels)
    test_mass = x_test_mass(hmm, x_test, labels)
    bias = float(np.abs(lim.ybar - o).sum())
    if o_x is None:
        o_x = oracle_per_input(hmm, task, demos.xs, labels)
    nw = float(demos.w @ (np.abs(kv) * np.abs(o_x - o).sum(axis=1)) / abs(lim.mu))
    dev = deviation_bound(n, delta_k, lim.k_min, lim.k_max, lim.mu, len(labels), float(np.abs(lim.ybar).sum()),
                          lim.var_nu, lim.var_mu)
    if spec.name == "gram":
        paper = 0.0
    elif spec.name in tk.MATRIX_KERNELS and eta_value is not None and eps is not None and Z is not None:
        mu_exact = float(test_mass[task] / Z)
        paper = sigma_bias_bound(eta_value, eps, mu_exact)
    else:
        paper = math.nan
    bay = bayes_oracle_bound(n, delta_b, task, prior, dist, test_mass)
    return PromptBound(n, dev, bias, nw, paper, bay, dev + bias + bay, lim)
