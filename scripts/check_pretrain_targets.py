"""Issue 11's numbers for a pretrain run and its transformer-check run, each with pass/fail.

    .venv/bin/python scripts/check_pretrain_targets.py runs/pt-han4-tiny runs/tc-han4-tiny

Targets: held-out excess loss <= 0.02 nats/token; the transformer's L1 to the Oracle at n = 16 at
most half its value at n = 1; accuracy vs the Oracle rising with n; L1 to Bayes <= 0.05 at every
n >= 4; and the setting needs the demonstrations (posterior mass on θ* at n = 0 below 0.7).
"""
from __future__ import annotations

import sys

import numpy as np

from icl_kernel.runfolder import open_existing


def main(pretrain_dir: str, check_dir: str) -> int:
    import jax
    import jax.numpy as jnp

    from simulate.forward import hmm_arrays, sweep_bayes
    from simulate.sweep import load_prompts, load_run_hmm

    pt = open_existing(pretrain_dir, "pretrain").read_json("summary.json")
    tc = open_existing(check_dir, "transformer-check").read_json("summary.json")
    cfg = tc["config"]
    grid = np.asarray(cfg["grid"])
    t = tc["curves"]["transformer"]
    sw = open_existing(cfg["sweep_run"], "sweep")
    hmm = load_run_hmm(sw)
    masses = []
    with jax.enable_x64(True):
        for s in cfg["seeds"]:
            pr = load_prompts(sw, s)
            sb = sweep_bayes(hmm_arrays(hmm, jnp.float64), jnp.asarray(pr.demos_x), jnp.asarray(pr.demos_y),
                             jnp.asarray(pr.x_test), jnp.asarray(pr.task), jnp.asarray(cfg["labels"]), (0,))
            masses.append(np.asarray(sb.task_mass)[0])
    mass0 = float(np.concatenate(masses).mean())
    l1o, acc, l1b = (np.asarray(t[k]) for k in ("l1_oracle", "acc_oracle", "l1_bayes"))
    i1, i16 = int(np.argmax(grid == 1)), int(np.argmax(grid == 16))
    rows = [
        ("posterior mass on θ* at n = 0 < 0.7", mass0, mass0 < 0.7),
        ("held-out excess loss <= 0.02 nats/token", pt["final_excess_loss"], pt["final_excess_loss"] <= 0.02),
        ("L1 to Oracle: n=16 / n=1 <= 0.5", l1o[i16] / l1o[i1], l1o[i16] <= 0.5 * l1o[i1]),
        ("accuracy vs Oracle rises with n (n=1 -> 16)", f"{acc[i1]:.3f} -> {acc[i16]:.3f}",
         bool(np.all(np.diff(acc) >= -0.01)) and acc[i16] > acc[i1]),
        ("max L1 to Bayes over n >= 4 <= 0.05", float(l1b[grid >= 4].max()), bool(l1b[grid >= 4].max() <= 0.05)),
    ]
    print(f"model: {pretrain_dir} ({pt['parameters']:,} parameters, {pt['tokens']:,} tokens); "
          f"prompts: {tc['num_prompts']} from {cfg['sweep_run']}")
    for name, value, ok in rows:
        v = f"{value:.4f}" if isinstance(value, float) else value
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {v}")
    print("  L1 to Bayes by n: " + ", ".join(f"n={n}: {v:.3f}" for n, v in zip(grid, l1b)))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
