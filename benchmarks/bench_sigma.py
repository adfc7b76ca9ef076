"""Exact Σ_{p,l} by the third-moment recursion at the paper's scale, and what Monte Carlo gave instead.

The han preset (8 tasks x 10 states, 100 tokens, l = 5): (m-1)^l = 99^5 ≈ 9.5e9 inputs, so Σ
cannot be enumerated; the sweep used 20 000 Monte Carlo samples per start. Measured in one run:

0. correctness first: the recursion equals enumeration (theory.kernels.second_moment_exact) to
   1e-12 on a small preset (asserted);
1. wall time of theory.kernels.second_moment_recursive for start = p0 (the ``pretrain`` kernel),
   for the 8 task starts (the ``task`` kernel), and for all 9 in one call (first call includes
   compilation, reported separately);
2. with ``--mc N``: the relative Frobenius error of an N-sample Monte Carlo Σ (the sweep's
   estimator, simulate.evaluator.mc_features) against the exact one, and its time.

Usage: .venv/bin/python benchmarks/bench_sigma.py [--mc 20000]
"""
import argparse
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mc", type=int, default=0, help="also time and score an N-sample Monte Carlo Σ for p0")
    a = ap.parse_args()
    from simulate.runtime import setup

    setup()
    import jax
    from simulate.evaluator import mc_features
    from simulate.presets import HanConfig, han_hmm
    from theory import kernels as tk

    small = han_hmm(HanConfig(num_tasks=3, num_states=6, num_tokens=5, seed=1))
    starts = np.vstack([small.p0, small.task_start])
    R = tk.second_moment_recursive(small, starts, 4)
    for s, p in enumerate(starts):
        E = tk.second_moment_exact(small, p, 4)
        np.testing.assert_allclose(R[s], E, rtol=1e-12, atol=1e-12 * np.abs(E).max())

    hmm = han_hmm()
    l = 5
    blocks = tk.block_structure(hmm)
    timings = {}
    t = time.perf_counter()
    tk.second_moment_recursive(hmm, hmm.task_start[0], l, blocks)
    timings["first call (one task start, with compilation)"] = time.perf_counter() - t
    for name, start in [("p0 (pretrain)", hmm.p0), ("8 task starts (task)", hmm.task_start),
                        ("p0 and the 8 task starts in one call", np.vstack([hmm.p0, hmm.task_start]))]:
        t = time.perf_counter()
        S = tk.second_moment_recursive(hmm, start, l, blocks)
        timings[name] = time.perf_counter() - t
        if name.startswith("p0 ("):
            S_p0 = S
    F = tk.feature_dim(blocks)
    print(f"han preset: {hmm.num_tasks} tasks x {blocks.b} states, {hmm.num_tokens} tokens, l = {l}; "
          f"Σ is {F} x {F}; recursion == enumeration to 1e-12 on a 3 x 2-state preset (asserted)")
    for name, sec in timings.items():
        print(f"  {name:48s} {sec:7.2f} s")
    if a.mc:
        t = time.perf_counter()
        feats = mc_features(jax.random.PRNGKey(0), hmm, hmm.p0, l, a.mc, blocks)
        S_mc, rel_se = tk.second_moment_from_samples(feats)
        t_mc = time.perf_counter() - t
        err = np.linalg.norm(S_mc - S_p0) / np.linalg.norm(S_p0)
        print(f"  Monte Carlo, {a.mc} samples, p0: {t_mc:.2f} s; relative Frobenius error vs exact {err:.3f} "
              f"(its own standard-error estimate {rel_se:.3f})")


if __name__ == "__main__":
    main()
