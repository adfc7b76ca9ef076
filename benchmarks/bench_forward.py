"""Bayes for every n: the restart factorisation vs today's general forward vs dynamax's vmapped hmm_filter.

Measured in the same run, on the default sweep's prompts (han preset, 200 prompts of seed 0,
l = 5, labels 1..4, float32, the batch sharded over all local devices):

0. correctness first: in float64 the factorised path (simulate/factorised.py) and the general
   forward (simulate/forward.sweep_bayes) agree to 1e-12 at every grid point, and in float32 both
   agree with dynamax to 2e-4 (asserted before any timing);
1. Bayes for the whole grid 1, 2, 4, …, 128: factorised vs dynamax used the straightforward way
   (each n a separate batch of full prompts);                                      target ≥ 50×
   (and today's general one-pass forward vs dynamax, the previous target ≥ 5×);
2. the full curve n = 1..1024 by the factorisation vs the grid by today's general forward;
                                                                          target: within 2×
3. one batch of full prompts (n = 128): sequence-steps per second, general forward vs dynamax,
   and the FLOP rate of the general forward step (2 P d² per step) against the machine's matmul.

Times are the best of ``--repeats`` runs after a warm-up (compilation excluded).
Usage: .venv/bin/python benchmarks/bench_forward.py [--prompts 200] [--repeats 20] [--curve 1024]
"""
import argparse
import time

import numpy as np


def best_of(f, repeats):
    import jax

    jax.block_until_ready(f())  # compile + warm
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f())
        ts.append(time.perf_counter() - t)
    return min(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=20, help="best of this many timed runs for each side")
    ap.add_argument("--curve", type=int, default=1024, help="N for the full curve n = 1..N")
    a = ap.parse_args()
    from simulate.runtime import setup, batch_sharding, replicate

    setup()
    import jax
    import jax.numpy as jnp
    from dynamax.hidden_markov_model.inference import hmm_filter
    from simulate.factorised import bayes_curve, factorised_arrays, sweep_bayes_factorised
    from simulate.forward import hmm_arrays, prompt_tokens, sweep_bayes
    from simulate.presets import han_hmm
    from simulate.sampling import sample_prompts
    from simulate.sweep import DEFAULT_GRID

    hmm = han_hmm()
    labels = jnp.asarray([1, 2, 3, 4])
    grid = DEFAULT_GRID
    N, l, P = max(grid), 5, a.prompts
    NC = max(a.curve, N)
    t0 = time.perf_counter()
    pr = sample_prompts(jax.random.fold_in(jax.random.PRNGKey(0), 0x50524F4D), hmm, labels, P, NC, l)
    t_sample = time.perf_counter() - t0
    sh, ndev = batch_sharding()
    put = lambda x: jax.device_put(np.asarray(x), sh)  # noqa: E731
    dx, dy, xt, th = map(put, (pr.demos_x[:, :N], pr.demos_y[:, :N], pr.x_test, pr.task))
    dxc, dyc = put(pr.demos_x), put(pr.demos_y)
    A = hmm_arrays(hmm, jnp.float32)
    F = replicate(factorised_arrays(hmm, labels, l, jnp.float32), sh)  # placed once, as the sweep does
    d = hmm.num_states

    general_grid = jax.jit(lambda *z: sweep_bayes(A, *z, labels, grid).bayes)
    general_one = jax.jit(lambda *z: sweep_bayes(A, *z, labels, (N,)).bayes)
    fact_grid = lambda: sweep_bayes_factorised(F, dx, dy, xt, th, grid).bayes  # noqa: E731
    fact_curve = lambda: bayes_curve(F, dxc, dyc, xt, th).bayes  # noqa: E731

    T, R, B = A.T, A.R, A.Bt.T
    logB = jnp.log(jnp.concatenate([A.delim_weight[:, None], B[:, 1:]], axis=1))

    def dyn_batch(toks):
        is_d = toks[0] == 0

        def one(tk):
            post = hmm_filter(A.p0, None, logB[:, tk].T, transition_fn=lambda t: jnp.where(is_d[t], R, T))
            s = (post.filtered_probs[-1] @ T) @ B[:, labels]
            return s / s.sum()

        return jax.vmap(one)(toks)

    dyn = jax.jit(dyn_batch)
    toks_n = {n: put(prompt_tokens(pr.demos_x, pr.demos_y, pr.x_test, n, 0)) for n in grid}

    # 0. correctness first: float64 factorised == general to 1e-12; float32 all three agree with dynamax
    A64, F64 = hmm_arrays(hmm, jnp.float64), factorised_arrays(hmm, labels, l, jnp.float64)
    g64 = sweep_bayes(A64, dx, dy, xt, th, labels, grid)
    f64 = sweep_bayes_factorised(F64, dx, dy, xt, th, grid)
    worst = {}
    for name in g64._fields:
        ref, got = np.asarray(getattr(g64, name)), np.asarray(getattr(f64, name))
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12, err_msg=name)
        worst[name] = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-300)))
    c64 = bayes_curve(F64, dx, dy, xt, th)
    np.testing.assert_allclose(np.moveaxis(np.asarray(c64.bayes)[:, list(grid)], 1, 0), np.asarray(g64.bayes),
                               rtol=1e-12, atol=1e-12)
    ref = np.stack([np.asarray(dyn(toks_n[n])) for n in grid])
    np.testing.assert_allclose(np.asarray(general_grid(dx, dy, xt, th)), ref, atol=2e-4)
    np.testing.assert_allclose(np.asarray(fact_grid()), ref, atol=2e-4)
    curve32 = np.asarray(fact_curve())
    assert np.all(np.isfinite(curve32)), "non-finite Bayes on the curve"

    t_general = best_of(lambda: general_grid(dx, dy, xt, th), a.repeats)
    t_fact = best_of(fact_grid, a.repeats)
    t_dyn = sum(best_of(lambda n=n: dyn(toks_n[n]), a.repeats) for n in grid)
    t_curve = best_of(fact_curve, max(3, a.repeats // 2))
    t_general_one = best_of(lambda: general_one(dx, dy, xt, th), a.repeats)
    t_dyn_one = best_of(lambda: dyn(toks_n[N]), a.repeats)
    steps_one = P * (N * (l + 2) + l)
    M = jnp.ones((2048, 2048), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    peak = 2 * 2048 ** 3 / best_of(lambda: mm(M), a.repeats)
    general_flops = 2 * d * d * steps_one / t_general_one

    print(f"devices: {ndev} x {jax.devices()[0].platform}; prompts {P}, l {l}, d {d} ({hmm.num_tasks} tasks x "
          f"{F.T.shape[1]} states), grid {list(grid)}, curve N {NC}; sampling {t_sample:.1f} s")
    print("float64 factorised vs general, max relative difference: "
          + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()) + "  (asserted <= 1e-12)")
    print(f"whole grid     factorised {t_fact * 1e3:8.2f} ms   general {t_general * 1e3:8.2f} ms   "
          f"dynamax (each n) {t_dyn * 1e3:8.1f} ms")
    print(f"               factorised vs dynamax {t_dyn / t_fact:7.1f}x (target >= 50)   "
          f"general vs dynamax {t_dyn / t_general:5.2f}x (target >= 5)   "
          f"factorised vs general {t_general / t_fact:5.2f}x")
    print(f"full curve     n = 1..{NC} factorised {t_curve * 1e3:8.1f} ms = {t_curve / t_general:5.2f}x the general "
          f"grid (target <= 2)")
    print(f"one batch n=N  general {steps_one / t_general_one / 1e6:8.2f} M seq-steps/s   dynamax "
          f"{steps_one / t_dyn_one / 1e6:8.2f} M seq-steps/s   ratio {t_dyn_one / t_general_one:6.2f}x  (target >= 1)")
    print(f"forward step   {general_flops / 1e9:8.2f} GFLOP/s   machine f32 matmul {peak / 1e9:8.1f} GFLOP/s   "
          f"fraction {general_flops / peak:6.1%}")


if __name__ == "__main__":
    main()
