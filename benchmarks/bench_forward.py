"""Bayes predictives for every n of the grid: our one-pass sweep vs dynamax's vmapped hmm_filter.

Measured in the same run, on the default sweep's prompts (han preset, 200 prompts of seed 0,
N = 128 demonstrations, l = 5, labels 1..4, float32, the batch sharded over all local devices):

1. the whole grid 1, 2, 4, …, 128: ours (one pass + branch per n) vs dynamax used the
   straightforward way (each n a separate batch of full prompts);                     target ≥ 5×
2. one batch of full prompts (n = 128): sequence-steps per second, ours vs dynamax;   target ≥ 1×
3. the FLOP rate of our forward step (2 P d² per step) against this machine's matmul rate.

Usage: .venv/bin/python benchmarks/bench_forward.py [--prompts 200] [--repeats 20]
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
    a = ap.parse_args()
    from simulate.runtime import setup, batch_sharding

    setup()
    import jax
    import jax.numpy as jnp
    from dynamax.hidden_markov_model.inference import hmm_filter
    from simulate.forward import hmm_arrays, prompt_tokens, sweep_bayes
    from simulate.presets import han_hmm
    from simulate.sampling import sample_prompts
    from simulate.sweep import DEFAULT_GRID

    hmm = han_hmm()
    labels = jnp.asarray([1, 2, 3, 4])
    grid = DEFAULT_GRID
    N, l, P = max(grid), 5, a.prompts
    pr = sample_prompts(jax.random.fold_in(jax.random.PRNGKey(0), 0x50524F4D), hmm, labels, P, N, l)
    sh, ndev = batch_sharding()
    put = lambda x: jax.device_put(np.asarray(x), sh)
    dx, dy, xt, th = map(put, (pr.demos_x, pr.demos_y, pr.x_test, pr.task))
    A = hmm_arrays(hmm, jnp.float32)
    d = hmm.num_states

    ours_grid = jax.jit(lambda *z: sweep_bayes(A, *z, labels, grid).bayes)
    ours_one = jax.jit(lambda *z: sweep_bayes(A, *z, labels, (N,)).bayes)

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

    # correctness first: the two agree
    ref = np.stack([np.asarray(dyn(toks_n[n])) for n in grid])
    np.testing.assert_allclose(np.asarray(ours_grid(dx, dy, xt, th)), ref, atol=2e-4)

    t_ours_grid = best_of(lambda: ours_grid(dx, dy, xt, th), a.repeats)
    t_dyn_grid = sum(best_of(lambda n=n: dyn(toks_n[n]), a.repeats) for n in grid)
    t_ours_one = best_of(lambda: ours_one(dx, dy, xt, th), a.repeats)
    t_dyn_one = best_of(lambda: dyn(toks_n[N]), a.repeats)
    steps_one = P * (N * (l + 2) + l)

    # machine matmul rate (float32) and our forward-step FLOP rate
    M = jnp.ones((2048, 2048), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    t_mm = best_of(lambda: mm(M), a.repeats)
    peak = 2 * 2048 ** 3 / t_mm
    ours_flops = 2 * P * d * d * steps_one / P / t_ours_one

    print(f"devices: {ndev} x {jax.devices()[0].platform}; prompts {P}, N {N}, l {l}, d {d}, grid {list(grid)}")
    print(f"whole grid     ours {t_ours_grid * 1e3:8.1f} ms   dynamax (each n) {t_dyn_grid * 1e3:8.1f} ms   "
          f"ratio {t_dyn_grid / t_ours_grid:6.2f}x  (target >= 5)")
    print(f"one batch n=N  ours {steps_one / t_ours_one / 1e6:8.2f} M seq-steps/s   dynamax {steps_one / t_dyn_one / 1e6:8.2f} "
          f"M seq-steps/s   ratio {t_dyn_one / t_ours_one:6.2f}x  (target >= 1)")
    print(f"forward step   {ours_flops / 1e9:8.2f} GFLOP/s   machine f32 matmul {peak / 1e9:8.1f} GFLOP/s   "
          f"fraction {ours_flops / peak:6.1%}")


if __name__ == "__main__":
    main()
