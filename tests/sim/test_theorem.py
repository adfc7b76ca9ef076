"""Property-based checks of Theorem 1 as stated in docs/theory.md (theory/bounds.py).

Random small HMMs that satisfy the assumptions (restart without leak, positive lower bounds,
distinguishable tasks); demonstrations drawn from the exact demonstration law, enumerated.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from conftest import tiny_hmm
from simulate.forward import hmm_arrays, sweep_bayes
from simulate.sampling import sample_prompts
from simulate.evaluator import MatrixKernel, make_evaluator, prepare_kernels
from theory import bounds as tb
from theory import kernels as tk
from theory.errors import AssumptionError
from theory.hmm import make_hmm

KERNELS = ("gram", "pretrain", "belief", "predictive", "predictive:beta=5")


def _hmm(seed, K, b, m, emit_conc=1.0):
    return tiny_hmm(seed=seed, num_tasks=K, num_states=K * b, num_tokens=m, leak=0.0, emit_conc=emit_conc)


def _setup(hmm, length, labels):
    sets = [tb.exact_demo_set(hmm, k, length, labels) for k in range(hmm.num_tasks)]
    dist = tb.distinguishability(hmm, sets, labels)
    return sets, dist


def _matrix(hmm, spec, length):
    if spec.name not in tk.MATRIX_KERNELS:
        return None
    return prepare_kernels(hmm, [spec], length).kernels[0].inverses


def _yhat(kv, ys, idx, num_labels):
    """Kernel regression on demonstrations idx [R, n] of a set: ŷ [R, |Y|]."""
    K = kv[idx]
    onehot = ys[idx][..., None] == np.arange(num_labels)
    return (K[..., None] * onehot).sum(1) / K.sum(1)[:, None]


hmm_params = dict(seed=st.integers(0, 10 ** 6), K=st.sampled_from([1, 2, 3]), b=st.sampled_from([1, 2]),
                  m=st.sampled_from([4, 5]), length=st.sampled_from([1, 2]))
# Tests that run the JAX forward pass compile once per shape: keep to few shapes.
jax_hmm_params = dict(seed=st.integers(0, 10 ** 6), K=st.just(2), b=st.sampled_from([1, 2]), m=st.just(4),
                      length=st.sampled_from([1, 2]))


@given(**hmm_params, kernel=st.sampled_from(KERNELS), data=st.data())
def test_deviation_bound_violation_frequency(seed, K, b, m, length, kernel, data):
    """‖ŷ_n − ȳ‖₁ exceeds the deviation bound in at most a δ fraction of draws (binomial tolerance)."""
    hmm = _hmm(seed, K, b, m)
    labels = [1, 2]
    spec = tk.parse_kernel(kernel)
    sets, _ = _setup(hmm, length, labels)
    task = data.draw(st.integers(0, K - 1))
    ds = sets[task]
    x_test = ds.xs[data.draw(st.integers(0, len(ds.w) - 1))]
    kv = tb.kernel_values(hmm, spec, x_test, ds.xs, _matrix(hmm, spec, length), task)
    lim = tb.population_limit(kv, ds, len(labels))
    assume(abs(lim.mu) > 1e-9)
    rng = np.random.default_rng(seed)
    R = 400
    for n in (16, 512, 8192):
        idx = rng.choice(len(ds.w), size=(R, n), p=ds.w)
        err = np.abs(_yhat(kv, ds.ys, idx, len(labels)) - lim.ybar).sum(1)
        for delta in (0.1, 0.5):
            hoeffding = tb.deviation_bound(n, delta, lim.k_min, lim.k_max, lim.mu, len(labels), np.abs(lim.ybar).sum())
            bernstein = tb.deviation_bound(n, delta, lim.k_min, lim.k_max, lim.mu, len(labels), np.abs(lim.ybar).sum(),
                                           lim.var_nu, lim.var_mu)
            assert bernstein <= hoeffding * (1 + 1e-12)
            for bound in (hoeffding, bernstein):
                freq = np.mean(~(err <= bound))
                assert freq <= delta + 3 * math.sqrt(delta * (1 - delta) / R), (n, delta, freq, bound)


@given(**hmm_params, kernel=st.sampled_from(KERNELS), data=st.data())
def test_floor_equals_exact_bias_and_is_below_its_bound(seed, K, b, m, length, kernel, data):
    """At large n, ‖ŷ_n − o‖₁ sits at the exactly computed bias ‖ȳ − o‖₁ (within the deviation bound);
    the bias is below the Nadaraya–Watson bound; the Gram kernel's bias is zero (the kernel identity)."""
    hmm = _hmm(seed, K, b, m)
    labels = [1, 2, 3]
    spec = tk.parse_kernel(kernel)
    sets, dist = _setup(hmm, length, labels)
    task = data.draw(st.integers(0, K - 1))
    ds = sets[task]
    x_test = ds.xs[data.draw(st.integers(0, len(ds.w) - 1))]
    pb = tb.prompt_bound(hmm, spec, x_test, task, labels, ds, dist, np.full(K, 1 / K), [65536],
                         A=_matrix(hmm, spec, length))
    assume(abs(pb.limit.mu) > 1e-9)
    assert pb.bias <= pb.bias_bound + 1e-9
    if spec.name == "gram":
        assert pb.bias < 1e-8
    kv = tb.kernel_values(hmm, spec, x_test, ds.xs, _matrix(hmm, spec, length), task)
    idx = np.random.default_rng(seed).choice(len(ds.w), size=(64, 65536), p=ds.w)
    floor = np.abs(_yhat(kv, ds.ys, idx, len(labels)) - tb.oracle(hmm, task, x_test, labels)).sum(1)
    half = tb.deviation_bound(65536, 0.5, pb.limit.k_min, pb.limit.k_max, pb.limit.mu, len(labels),
                              np.abs(pb.limit.ybar).sum(), pb.limit.var_nu, pb.limit.var_mu)
    assert np.median(np.abs(floor - pb.bias)) <= half


def test_sweep_floor_matches_bias_per_prompt():
    """The sweep engine's measured floor (kernel vs Oracle at n = 4096) against each prompt's exact bias."""
    hmm = _hmm(3, 2, 2, 5)
    labels, length, N = [1, 2], 2, 4096
    specs = [tk.parse_kernel(k) for k in ("pretrain", "belief", "predictive:beta=20")]
    prepared = prepare_kernels(hmm, specs, length)
    pr = sample_prompts(jax.random.PRNGKey(7), hmm, labels, 32, N, length)
    evaluate = make_evaluator(hmm, prepared, labels, (N,), "float64")
    ev = evaluate(pr.demos_x, pr.demos_y, pr.x_test, pr.task)
    sets, dist = _setup(hmm, length, labels)
    for spec, p, est in zip(specs, prepared.kernels, ev.kernels):
        ok = []
        for i in range(32):
            th = int(pr.task[i])
            pb = tb.prompt_bound(hmm, spec, pr.x_test[i], th, labels, sets[th], dist, [0.5, 0.5], [N],
                                 delta_k=0.05, A=p.inverses if isinstance(p, MatrixKernel) else None)
            measured = np.abs(np.asarray(est.yhat)[i, 0] - np.asarray(ev.oracle)[i]).sum()
            ok.append(abs(measured - pb.bias) <= pb.deviation[0])
        assert np.mean(ok) >= 0.9, (spec.label, np.mean(ok))


def test_bayes_converges_to_oracle_within_its_bound():
    """Posterior mass on θ* → 1 and ‖Bayes_n − o‖₁ → 0; the high-probability bound holds in ≥ 1 − δ of prompts;
    the posterior equals the product of the per-demonstration likelihoods ℓ_θ (exactly)."""
    hmm = _hmm(10, 3, 2, 5, emit_conc=0.5)
    labels, length, grid = [1, 2], 2, (1, 4, 16, 64, 256)
    sets, dist = _setup(hmm, length, labels)
    tb.check_distinguishable(dist)
    pr = sample_prompts(jax.random.PRNGKey(3), hmm, labels, 200, max(grid), length)
    sb = sweep_bayes(hmm_arrays(hmm, jnp.float64), pr.demos_x, pr.demos_y, pr.x_test, pr.task,
                     jnp.asarray(labels), grid)
    err = np.abs(np.asarray(sb.bayes) - np.asarray(sb.oracle)[None]).sum(-1)  # [G, P]
    mean = err.mean(1)
    assert np.all(np.diff(mean) < 0) and mean[-1] < 0.02, mean
    assert np.asarray(sb.task_mass)[-1].mean() > 0.99
    prior = tb.check_assumptions(hmm).prior
    delta = 0.1
    viol = np.zeros(len(grid))
    for i in range(200):
        th = int(pr.task[i])
        bound = tb.bayes_oracle_bound(np.asarray(grid), delta, th, prior, dist, tb.x_test_mass(hmm, pr.x_test[i], labels))
        viol += err[:, i] > bound + 1e-12
    assert np.all(viol / 200 <= delta + 3 * math.sqrt(delta * (1 - delta) / 200)), viol
    # The posterior from ℓ_θ products equals the forward algorithm's task mass after x_test.
    for i in range(8):
        for g, n in enumerate(grid[:2]):  # small n: the posterior is not yet saturated
            ell = tb.demo_likelihoods(hmm, pr.demos_x[i, :n], np.asarray(pr.demos_y[i, :n]))  # [K, n]
            x_mass = tb.joint_table(hmm, pr.x_test[i][None], np.arange(hmm.num_tokens))[:, 0].sum(-1)  # s_θᵀ T_x 1
            logp = np.log(prior) + np.log(ell).sum(1) + np.log(x_mass)
            post = np.exp(logp - logp.max())
            post /= post.sum()
            mass = np.asarray(sb.task_mass)[g, i]
            np.testing.assert_allclose(post[int(pr.task[i])], mass, rtol=1e-9)
            np.testing.assert_allclose(1 - post[int(pr.task[i])], 1 - mass, rtol=1e-6, atol=1e-15)
    # The Oracle of theory.bounds equals the forward algorithm's.
    for i in range(8):
        np.testing.assert_allclose(tb.oracle(hmm, int(pr.task[i]), pr.x_test[i], labels), np.asarray(sb.oracle)[i],
                                   rtol=1e-10)


@pytest.mark.parametrize("length", [2, 3])  # (at l = 1 a point-mass start makes the Oracle constant in x)
def test_gram_limit_is_the_oracle_and_sigma_kernels_are_biased(length):
    """Over every x_test of a fixed HMM: the Gram kernel's limit is the Oracle (the kernel identity, through
    theory.bounds), the Σ_pre kernel's is not, and every bias is below its Nadaraya–Watson bound."""
    hmm = _hmm(5, 2, 2, 5)
    labels = [1, 2, 3]
    sets, dist = _setup(hmm, length, labels)
    biases = {}
    for kernel in ("gram", "pretrain", "belief"):
        spec = tk.parse_kernel(kernel)
        A = _matrix(hmm, spec, length)
        for task in range(2):
            for x_test in np.unique(sets[task].xs, axis=0):
                pb = tb.prompt_bound(hmm, spec, x_test, task, labels, sets[task], dist, [0.5, 0.5], [10], A=A)
                assert pb.bias <= pb.bias_bound + 1e-12, (kernel, x_test)
                biases.setdefault(kernel, []).append(pb.bias)
    assert max(biases["gram"]) < 1e-9
    assert max(biases["belief"]) > 1e-4 and max(biases["pretrain"]) > 1e-4


@pytest.mark.slow
@given(**jax_hmm_params, data=st.data())
@settings(max_examples=6)
def test_invariance_under_relabelling_hidden_states(seed, K, b, m, length, data):
    """Permuting hidden-state labels changes no kernel value, no Bayes/Oracle number and no constant."""
    hmm = _hmm(seed, K, b, m)
    d = hmm.num_states
    perm = np.asarray(data.draw(st.permutations(range(d))))
    inv = np.argsort(perm)
    h2 = make_hmm(hmm.T[np.ix_(perm, perm)], hmm.B[perm], hmm.R[np.ix_(perm, perm)], hmm.p0[perm],
                  hmm.task_start[:, perm], hmm.task_of_state[perm], int(hmm.delim))
    assert np.array_equal(h2.p0[inv], hmm.p0)
    labels = [1, 2]
    xs = tb.all_inputs(hmm, length)
    x_test = xs[data.draw(st.integers(0, len(xs) - 1))]
    for kernel in KERNELS:
        spec = tk.parse_kernel(kernel)
        k1 = tb.kernel_values(hmm, spec, x_test, xs, _matrix(hmm, spec, length), 0)
        k2 = tb.kernel_values(h2, spec, x_test, xs, _matrix(h2, spec, length), 0)
        np.testing.assert_allclose(k1, k2, rtol=1e-6, atol=1e-9 * np.abs(k1).max())
    assert tb.eta(hmm, length).value == pytest.approx(tb.eta(h2, length).value, rel=1e-12)
    s1, d1 = _setup(hmm, length, labels)
    s2, d2 = _setup(h2, length, labels)
    np.testing.assert_allclose(d1.D, d2.D, atol=1e-10)
    pr = sample_prompts(jax.random.PRNGKey(seed % 1000), hmm, labels, 8, 6, length)
    args = (pr.demos_x, pr.demos_y, pr.x_test, pr.task, jnp.asarray(labels), (1, 6))
    b1 = sweep_bayes(hmm_arrays(hmm, jnp.float64), *args)
    b2 = sweep_bayes(hmm_arrays(h2, jnp.float64), *args)
    np.testing.assert_allclose(b1.bayes, b2.bayes, rtol=1e-10)
    np.testing.assert_allclose(b1.oracle, b2.oracle, rtol=1e-10)


@pytest.mark.slow
@given(**jax_hmm_params, kernel=st.sampled_from(KERNELS), scale=st.sampled_from([1e-3, 7.0]), data=st.data())
@settings(max_examples=8)
def test_invariance_under_reordering_demos_and_scaling_sigma(seed, K, b, m, length, kernel, scale, data):
    """Reordering demonstrations leaves ŷ_N and Bayes_N unchanged; scaling Σ⁺ leaves ŷ and the bound unchanged."""
    hmm = _hmm(seed, K, b, m)
    labels = [1, 2]
    spec = tk.parse_kernel(kernel)
    A = _matrix(hmm, spec, length)
    N = 7
    pr = sample_prompts(jax.random.PRNGKey(seed % 1000 + 1), hmm, labels, 4, N, length)
    perm = np.asarray(data.draw(st.permutations(range(N))))
    lab_idx = np.argmax(pr.demos_y[..., None] == np.asarray(labels), -1)
    for i in range(4):
        kv = tb.kernel_values(hmm, spec, pr.x_test[i], pr.demos_x[i], A, int(pr.task[i]))
        k_self = abs(tb.kernel_values(hmm, spec, pr.x_test[i], pr.x_test[i][None], A, int(pr.task[i]))[0])
        if abs(kv.sum()) < 1e-6 * max(np.abs(kv).sum(), N * k_self):
            continue  # a signed kernel whose denominator cancels (or is all rounding noise): ŷ is noise
        y1, _ = tk.kernel_regression(kv[None], lab_idx[i][None], 2, [N])
        y2, _ = tk.kernel_regression(kv[perm][None], lab_idx[i][perm][None], 2, [N])
        np.testing.assert_allclose(y1, y2, rtol=1e-9, atol=1e-12)
        if A is not None:
            kv_s = tb.kernel_values(hmm, spec, pr.x_test[i], pr.demos_x[i], scale * A, int(pr.task[i]))
            y3, _ = tk.kernel_regression(kv_s[None], lab_idx[i][None], 2, [N])
            np.testing.assert_allclose(y1, y3, rtol=1e-8, atol=1e-12)
    px = pr.demos_x[:, perm]
    py = pr.demos_y[:, perm]
    A_ = hmm_arrays(hmm, jnp.float64)
    b1 = sweep_bayes(A_, pr.demos_x, pr.demos_y, pr.x_test, pr.task, jnp.asarray(labels), (N,))
    b2 = sweep_bayes(A_, px, py, pr.x_test, pr.task, jnp.asarray(labels), (N,))
    np.testing.assert_allclose(b1.bayes, b2.bayes, rtol=1e-10)
    if A is not None:
        sets, dist = _setup(hmm, length, labels)
        th = int(pr.task[0])
        args = (hmm, spec, sets[th].xs[0], th, labels, sets[th], dist, np.full(K, 1 / K), [64, 4096])
        p1, p2 = tb.prompt_bound(*args, A=A), tb.prompt_bound(*args, A=scale * A)
        np.testing.assert_allclose(p1.deviation, p2.deviation, rtol=1e-8)
        assert p1.bias == pytest.approx(p2.bias, abs=1e-9)
        assert p1.bias_bound == pytest.approx(p2.bias_bound, rel=1e-8, abs=1e-12)


@given(**hmm_params)
@settings(max_examples=8)
def test_constants_eta_bound_and_normaliser(seed, K, b, m, length):
    """η's fallback bound is ≥ the exact η; Z_θ in closed form equals the enumerated sum; bounds are monotone."""
    hmm = _hmm(seed, K, b, m)
    labels = [1, 2, 3]
    e_exact, e_bound = tb.eta(hmm, length), tb.eta(hmm, length, limit=1)
    assert e_exact.kind == "exact" and e_bound.kind == "bound"
    assert e_exact.value <= e_bound.value * (1 + 1e-12)
    Z = tb.joint_table(hmm, tb.all_inputs(hmm, length), labels).sum(axis=(1, 2))
    np.testing.assert_allclose(tb.demo_normaliser(hmm, length, labels), Z, rtol=1e-12)
    dev = tb.deviation_bound(np.array([10, 100, 1000]), 0.1, -1.0, 2.0, 5.0, 3)
    assert np.all(np.diff(dev) < 0)
    assert tb.deviation_bound(1000, 0.01, -1.0, 2.0, 5.0, 3) > dev[-1]


def test_gram_epsilon_is_the_minimum_over_scales():
    hmm = _hmm(5, 2, 2, 4)
    G = tk.gram_matrix(hmm, 2)
    Gp, _ = tk.psd_pinv(G, 1e-10, 0.0)
    A = _matrix(hmm, tk.parse_kernel("pretrain"), 2)[0]
    e = tb.gram_epsilon(A, Gp)
    for c in np.geomspace(e.scale / 10, e.scale * 10, 41):
        assert tb.spectral_radius_sym(c * A - Gp) >= e.value * (1 - 1e-6)
    assert tb.gram_epsilon(Gp, Gp).value < 1e-6 * tb.spectral_radius_sym(Gp)


# ------------------------------------------------------------------ assumptions refused by name


def _violations():
    base = _hmm(2, 2, 2, 5)
    out = {}
    T, B, R = np.array(base.T), np.array(base.B), np.array(base.R)
    p0, ts, tos = np.array(base.p0), np.array(base.task_start), np.array(base.task_of_state)
    leaky = R.copy()
    leaky[:, [0, 2]] = 0.5
    out["restart"] = make_hmm(T, B, leaky, p0, ts, tos, 0)
    B0 = B.copy()
    B0[1, 1:] += B0[1, 0] / (B.shape[1] - 1)
    B0[1, 0] = 0.0
    out["eps_r"] = make_hmm(T, B0, R, p0, ts, tos, 0)
    out["eps_d"] = make_hmm(T, B, R, ts[0], ts, tos, 0)
    Tc = T.copy()
    Tc[0] = 0.25
    out["block structure"] = make_hmm(Tc, B, R, p0, ts, tos, 0)
    return out


@pytest.mark.parametrize("name", ["restart", "eps_r", "eps_d", "block structure"])
def test_violated_assumptions_are_refused_by_name(name):
    hmm = _violations()[name]
    with pytest.raises(AssumptionError, match=name):
        tb.check_assumptions(hmm)


def test_indistinguishable_tasks_are_refused():
    h = _hmm(4, 2, 2, 5)
    T, B = np.array(h.T), np.array(h.B)
    T[2:, 2:] = T[:2, :2]
    B[2:] = B[:2]
    twin = make_hmm(T, B, h.R, h.p0, h.task_start, h.task_of_state, 0)
    sets, dist = _setup(twin, 2, [1, 2])
    with pytest.raises(AssumptionError, match="distinguishability.*D\\[0,1\\] = 0"):
        tb.check_distinguishable(dist)


def test_bound_cli_refuses_a_violated_assumption(tmp_path, capsys):
    from icl_kernel.cli import main

    out = tmp_path / "b.json"
    rc = main(["bound", "-P", "num_tasks=2", "-P", "num_states=4", "-P", "num_tokens=5", "-P", "leak=0.1",
               "-l", "2", "--num-labels", "2", "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "restart" in err[0] and "0.1" in err[0]
    assert not out.exists()


def test_bound_cli_on_a_run_folder(tmp_path, capsys):
    from icl_kernel.cli import main

    runs = tmp_path / "runs"
    common = ["-P", "num_tasks=2", "-P", "num_states=4", "-P", "num_tokens=5", "-l", "2", "--num-labels", "2"]
    assert main(["sweep", *common, "--kernels", "gram belief", "--seeds", "0", "--prompts", "16", "--n", "1,8,64",
                 "--dtype", "float64", "--runs-dir", str(runs), "--name", "t", "-q"]) == 0
    assert main(["bound", str(runs / "t"), "--prompts", "16", "--n", "1,1024", "-q"]) == 0
    text = capsys.readouterr().out
    assert "run prompts within the bound" in text
    import json

    b = json.loads((runs / "t" / "bound.json").read_text())
    assert b["grid"] == [1, 8, 64, 1024] and set(b["kernels"]) == {"gram", "belief"}
    assert b["constants"]["demo_sets"] == "exact"
    for name, r in b["run_check"].items():
        assert all(w["within"] >= 0.9 for w in r["within_bound"]), (name, r)


@pytest.mark.parametrize("argv", [["bound", "{d}/missing", "-q"], ["plot", "{d}/missing"], ["bound", "--delta-k", "2", "-q"],
                                  ["bound", "--preset", "ginc", "--kernels", "belief", "-q"]])
def test_bound_and_plot_bad_input_is_one_line(tmp_path, capsys, argv):
    from icl_kernel.cli import main

    rc = main([a.format(d=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "error" in err[0]


def test_chernoff_log_ratio_bound():
    """The Chernoff lower bound on S = Σ log ℓ_a/ℓ_b: its MGF is the direct expectation, it is at least as tight
    as Hoeffding's (strictly, somewhere), and S falls below it in at most a δ fraction of draws."""
    hmm = _hmm(10, 3, 2, 5, emit_conc=0.5)
    labels, length = [1, 2], 2
    sets, dist = _setup(hmm, length, labels)
    rng = np.random.default_rng(0)
    ns = np.array([1, 4, 16, 64])
    for a, b in [(0, 1), (1, 2), (2, 0)]:
        ds = sets[a]
        ell = tb.demo_likelihoods(hmm, ds.xs, np.asarray(labels)[ds.ys])
        j = int(np.argmin(np.abs(dist.lambdas - 1.0)))
        lam = dist.lambdas[j]
        direct = np.log(ds.w @ (ell[b] / ell[a]) ** lam)
        assert dist.log_mgf[a, b, j] == pytest.approx(direct, rel=1e-9, abs=1e-12)
        hoeff = ns * dist.D[a, b] - dist.r[a, b] * np.sqrt(ns * np.log(1 / 0.05) / 2)
        bound = tb.log_ratio_lower_bound(ns, 0.05, dist, a, b)
        assert np.all(bound >= hoeff - 1e-9) and np.any(bound > hoeff + 1e-6)
        with np.errstate(divide="ignore"):
            L = np.log(ell[a]) - np.log(ell[b])
        R = 4000
        for delta in (0.05, 0.3):
            for n in (1, 4, 16):
                S = L[rng.choice(len(ds.w), size=(R, n), p=ds.w)].sum(1)
                freq = np.mean(S < tb.log_ratio_lower_bound(np.array([n]), delta, dist, a, b)[0])
                assert freq <= delta + 3 * math.sqrt(delta * (1 - delta) / R), (a, b, delta, n, freq)
