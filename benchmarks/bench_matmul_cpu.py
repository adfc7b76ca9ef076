"""float32 matmul rate of XLA:CPU (jnp) and torch on SmolLM2-135M's layer shapes, in the same run.

Why the LLM harness's 1.5x target against transformers (issue 10 item 6) is out of reach on this
machine: both sides spend their time in these matmuls. A batch of 16 SST-2 prompts of 168 tokens
(2688 rows) through each of the layer's weight shapes (576 x 576 q/o, 576 x 192 k/v, 576 x 1536
up/gate, 1536 x 576 down); best of ``--repeats`` calls each, at ``--threads`` torch threads (XLA:CPU
uses all cores). Prints GFLOP/s per shape and the FLOP-weighted rate of each side, and their ratio.

Usage: .venv/bin/python benchmarks/bench_matmul_cpu.py [--rows 2688] [--threads 2] [--repeats 30]
"""
from __future__ import annotations

import argparse
import os
import time

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_forward import best_of  # noqa: E402  (best of n timed calls after a warm-up)

SHAPES = {"q/o proj": (576, 576), "k/v proj": (576, 192), "up/gate": (576, 1536), "down": (1536, 576)}
PER_LAYER = {"q/o proj": 2, "k/v proj": 2, "up/gate": 2, "down": 1}  # matmuls per layer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2688, help="tokens in a batch (16 prompts x 168)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args()
    import jax
    import jax.numpy as jnp
    import torch

    torch.set_num_threads(a.threads)
    f = jax.jit(lambda x, y: x @ y)
    rng = np.random.default_rng(0)
    tj = tt = flops = 0.0
    print(f"load average at start: {os.getloadavg()[0]:.2f}; torch threads {a.threads}; rows {a.rows}")
    for name, (k, n) in SHAPES.items():
        x = rng.standard_normal((a.rows, k), dtype=np.float32)
        w = rng.standard_normal((k, n), dtype=np.float32)
        jx, jw, px, pw = jnp.asarray(x), jnp.asarray(w), torch.from_numpy(x), torch.from_numpy(w)
        np.testing.assert_allclose(np.asarray(f(jx, jw)), (px @ pw).numpy(), rtol=1e-4, atol=1e-3)
        t_j = best_of(lambda: f(jx, jw), a.repeats)
        t_t = best_of(lambda: px @ pw, a.repeats)
        fl = 2 * a.rows * k * n
        print(f"  {name:9s} [{a.rows} x {k}] @ [{k} x {n}]: jnp {fl / t_j / 1e9:6.1f} GFLOP/s, "
              f"torch {fl / t_t / 1e9:6.1f} GFLOP/s")
        m = PER_LAYER[name]
        tj, tt, flops = tj + m * t_j, tt + m * t_t, flops + m * fl
    print(f"one layer's matmuls: jnp {flops / tj / 1e9:.1f} GFLOP/s, torch {flops / tt / 1e9:.1f} GFLOP/s, "
          f"jnp / torch {tt / tj:.2f}x; load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
