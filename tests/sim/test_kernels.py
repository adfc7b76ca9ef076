"""Kernel family: Kronecker-power Gram vs enumeration, the exact demonstration distribution, the
kernel identity, Σ estimates, and kernel regression prefix sums."""
import itertools

import jax
import numpy as np
import pytest

from conftest import tiny_hmm
from simulate.sampling import sample_inputs
from theory import kernels as tk
from theory.errors import KernelError
from theory.hmm import input_tokens
from theory.reference import gram_by_enumeration, operator_product

LABELS = [1, 2, 3]


@pytest.mark.parametrize("leak,length", [(0.0, 2), (0.1, 3)])
def test_block_gram_equals_enumeration(leak, length):
    hmm = tiny_hmm(1, num_tasks=2, num_states=4, num_tokens=4, leak=leak)
    blocks = tk.block_structure(hmm)
    assert blocks.K == 2
    G = tk.gram_matrix(hmm, length, blocks)
    Ge = gram_by_enumeration(hmm, length, alphabet=input_tokens(hmm))
    full = tk.restricted_to_full(blocks, hmm.num_states)
    np.testing.assert_allclose(G, Ge[np.ix_(full, full)], rtol=1e-12, atol=1e-15)
    off = np.setdiff1d(np.arange(Ge.shape[0]), full)
    assert np.abs(Ge[off]).max() == 0  # nothing lost by restricting to the blocks


def test_kronecker_power_formula_of_theory_notes():
    """G_l is an index reshuffle of Q^l, Q = Σ_o M_o ⊗ M_o (theory-notes), here on a dense HMM."""
    hmm = tiny_hmm(2, num_tasks=1, num_states=3, num_tokens=4, leak=0.0)
    d = 3
    from theory.hmm import operator

    Q = sum(np.kron(operator(hmm, o), operator(hmm, o)) for o in input_tokens(hmm))
    Ql = np.linalg.matrix_power(Q, 3)
    G = Ql.reshape(d, d, d, d).transpose(0, 2, 1, 3).reshape(d * d, d * d)
    np.testing.assert_allclose(G, gram_by_enumeration(hmm, 3, alphabet=input_tokens(hmm)), rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(tk.gram_matrix(hmm, 3), G, rtol=1e-12, atol=1e-16)


def exact_demo_distribution(hmm, task, length):
    """P(x, y | θ, Y) over (O∖δ)^l × Y by enumeration of operator products."""
    start = np.asarray(hmm.task_start[task])
    out = {}
    for x in itertools.product(input_tokens(hmm).tolist(), repeat=length):
        v = start @ operator_product(hmm, x)
        for y in LABELS:
            out[(x, y)] = float(v @ np.asarray(hmm.B)[:, y])
    Z = sum(out.values())
    return {k: v / Z for k, v in out.items()}


def test_sampler_matches_exact_demo_distribution():
    hmm = tiny_hmm(3, num_tasks=2, num_states=4, num_tokens=4)
    length, task, S = 2, 1, 40000
    exact = exact_demo_distribution(hmm, task, length)
    keys = jax.random.split(jax.random.PRNGKey(0), S)
    xs, ys = jax.jit(jax.vmap(lambda k: sample_inputs(k, hmm, hmm.task_start[task], length, np.asarray(LABELS))))(keys)
    xs, ys = np.asarray(xs), np.asarray(ys)
    counts = {}
    for x, y in zip(map(tuple, xs.tolist()), ys.tolist()):
        counts[(x, y)] = counts.get((x, y), 0) + 1
    assert set(counts) <= set(exact)
    # Pearson chi-square over cells with expected count >= 5; df ~ number of cells.
    keys_ = [k for k in exact if exact[k] * S >= 5]
    chi2 = sum((counts.get(k, 0) - exact[k] * S) ** 2 / (exact[k] * S) for k in keys_)
    df = len(keys_) - 1
    assert chi2 < df + 5 * np.sqrt(2 * df), (chi2, df)


def test_gram_kernel_identity_exact():
    """E_{(x,y')~θ*}[1[y'=y] K(x_test, x)] = P(x_test, y | θ*) / P(Y | θ*) exactly, for every x_test."""
    hmm = tiny_hmm(4, num_tasks=2, num_states=4, num_tokens=4)
    length, task = 2, 0
    blocks = tk.block_structure(hmm)
    Ginv, _ = tk.psd_pinv(tk.gram_matrix(hmm, length, blocks), rtol=1e-12, ridge=0.0)
    dist = exact_demo_distribution(hmm, task, length)
    xs = np.array([k[0] for k in dist])
    phi = tk.operator_features(hmm, xs, blocks)
    start = np.asarray(hmm.task_start[task])
    Z = sum(float(start @ operator_product(hmm, x) @ np.asarray(hmm.B)[:, LABELS].sum(1))
            for x in itertools.product(input_tokens(hmm).tolist(), repeat=length))
    for x_test in [(1, 2), (3, 3), (2, 1)]:
        phi_t = tk.operator_features(hmm, np.array([x_test]), blocks)[0]
        Kv = phi @ Ginv @ phi_t
        v = start @ operator_product(hmm, x_test)
        for y in LABELS:
            lhs = sum(p * Kv[i] for i, ((x, yy), p) in enumerate(dist.items()) if yy == y)
            rhs = float(v @ np.asarray(hmm.B)[:, y]) / Z
            np.testing.assert_allclose(lhs, rhs, rtol=1e-8)


def test_monte_carlo_sigma_converges_to_exact():
    from simulate.evaluator import mc_features

    hmm = tiny_hmm(5, num_tasks=2, num_states=4, num_tokens=4)
    blocks = tk.block_structure(hmm)
    exact = tk.second_moment_exact(hmm, hmm.p0, 2, blocks)
    exact = exact / np.trace(exact)
    errs = []
    for S in (500, 20000):
        est, rel = tk.second_moment_from_samples(mc_features(jax.random.PRNGKey(1), hmm, hmm.p0, 2, S, blocks))
        est = est / np.trace(est)
        errs.append(np.linalg.norm(est - exact) / np.linalg.norm(exact))
        assert rel > 0
    assert errs[1] < errs[0] / 3 and errs[1] < 0.05


def test_singular_sigma_needs_a_tolerance():
    S = np.diag([1.0, 0.5, 0.0])
    with pytest.raises(KernelError, match="singular"):
        tk.psd_pinv(S, rtol=0.0, ridge=0.0)
    inv, info = tk.psd_pinv(S, rtol=1e-10, ridge=0.0)
    assert info["rank"] == 2
    np.testing.assert_allclose(inv, np.diag([1.0, 2.0, 0.0]))
    inv, info = tk.psd_pinv(S, rtol=0.0, ridge=0.1)
    np.testing.assert_allclose(np.diag(inv), 1 / (np.array([1.0, 0.5, 0.0]) + 0.1))


def test_kernel_regression_prefix_sums_and_negative_weights():
    rng = np.random.default_rng(0)
    Kv = rng.normal(size=(3, 10))
    lab = rng.integers(0, 3, size=(3, 10))
    grid = (1, 4, 10)
    yhat, den = tk.kernel_regression(Kv, lab, 3, grid)
    for g, n in enumerate(grid):
        for p in range(3):
            num = np.array([Kv[p, :n][lab[p, :n] == y].sum() for y in range(3)])
            np.testing.assert_allclose(yhat[g, p], num / Kv[p, :n].sum())
            np.testing.assert_allclose(den[g, p], Kv[p, :n].sum())
    assert np.any(yhat < 0)  # signed kernels are reported as they are, not clipped


def test_sharpened_kernel_is_scale_free_and_bandwidth_orders():
    rng = np.random.default_rng(1)
    ft, fd = rng.random(5), rng.random((7, 5))
    k1 = tk.kernel_values_vector(ft, fd, beta=5.0)
    k2 = tk.kernel_values_vector(3 * ft, 2 * fd, beta=5.0)
    np.testing.assert_allclose(k1, k2)
    cos = fd @ ft / np.linalg.norm(fd, axis=1) / np.linalg.norm(ft)
    # larger β puts relatively more weight on the most similar demonstration
    w = [tk.kernel_values_vector(ft, fd, beta=b) for b in (1.0, 20.0)]
    share = [x[np.argmax(cos)] / x.sum() for x in w]
    assert share[1] > share[0]


@pytest.mark.parametrize("text,msg", [("nope", "unknown kernel"), ("gram:beta=2", "beta"),
                                      ("belief:beta=x", "not a number"), ("pretrain:foo=1", "bad kernel option"),
                                      ("gram:rtol=-1", ">= 0")])
def test_kernel_spec_errors(text, msg):
    with pytest.raises(KernelError, match=msg):
        tk.parse_kernel(text)


# ---------------------------------------------------------------- exact Σ by the third-moment recursion


@pytest.mark.parametrize("num_tasks,num_states,leak,length", [(2, 4, 0.0, 1), (2, 4, 0.1, 3), (3, 6, 0.0, 2),
                                                               (1, 3, 0.0, 3)])
def test_recursive_second_moment_equals_enumeration(num_tasks, num_states, leak, length):
    """Σ_{p,l} by the recursion vs enumeration of every x, for p0, every task start and a random
    start (all in one call), with and without block structure (one task: K = 1, b = d); and the
    start-weighted Gram of theory/reference (operator products, no shared code) as a second reference."""
    hmm = tiny_hmm(num_tasks + length, num_tasks=num_tasks, num_states=num_states, num_tokens=4, leak=leak)
    blocks = tk.block_structure(hmm)
    assert blocks.K == num_tasks
    rnd = np.random.default_rng(length).dirichlet(np.ones(hmm.num_states))
    starts = np.vstack([hmm.p0, hmm.task_start, rnd])
    S = tk.second_moment_recursive(hmm, starts, length, blocks)
    full = tk.restricted_to_full(blocks, hmm.num_states)
    for s, start in enumerate(starts):
        E = tk.second_moment_exact(hmm, start, length, blocks)
        np.testing.assert_allclose(S[s], E, rtol=1e-12, atol=1e-12 * np.abs(E).max())
        G = gram_by_enumeration(hmm, length, alphabet=input_tokens(hmm), weights_start=start)
        np.testing.assert_allclose(S[s], G[np.ix_(full, full)], rtol=1e-12, atol=1e-12 * np.abs(E).max())
    np.testing.assert_allclose(tk.second_moment_recursive(hmm, hmm.p0, length, blocks), S[0], rtol=1e-14)


def test_recursive_second_moment_refuses_a_state_too_large(monkeypatch):
    hmm = tiny_hmm(0, num_tasks=2, num_states=4, num_tokens=4)
    monkeypatch.setattr(tk, "RECURSION_LIMIT", 10)
    with pytest.raises(KernelError, match="Monte Carlo"):
        tk.second_moment_recursive(hmm, hmm.p0, 2)
