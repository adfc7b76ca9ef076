"""Where a sweep's wall time goes: HMM, each kernel's Σ, sampling, compile, Bayes, each kernel's
features, metrics and I/O — then the whole sweep, cold (empty JAX cache) and warm.

Usage::

    .venv/bin/python benchmarks/profile_sweep.py                # the default `make demo` sweep
    .venv/bin/python benchmarks/profile_sweep.py --forward general   # the prompt-long scan instead
    .venv/bin/python benchmarks/profile_sweep.py -P num_tasks=4 --kernels "predictive gram"

Each stage is timed on its own with the library's pieces (``block_until_ready`` after every device
call); the device stages are measured on one seed's prompts after a warm-up call, so compile time
is reported separately (XLA's ``lower().compile()``). The split is an estimate of the fused
evaluator's cost: Bayes alone, then each kernel alone on top of it. The last lines time
``run_sweep`` itself into a temporary folder: once with an empty compilation cache (a new user's
first run) and once warm.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--forward", default="auto", choices=["auto", "factorised", "general"])
    ap.add_argument("-P", "--param", action="append", default=[], help="preset parameter KEY=VALUE")
    ap.add_argument("--kernels", default=None, help="kernels (default: the sweep's default list)")
    ap.add_argument("--no-whole", action="store_true", help="skip timing run_sweep itself")
    args = ap.parse_args()

    cache = tempfile.mkdtemp(prefix="icl-kernel-jax-cache-")
    os.environ["ICL_KERNEL_JAX_CACHE"] = cache  # an empty cache: compile times are a new user's
    from simulate.runtime import setup

    setup()
    import jax
    import numpy as np

    from icl_kernel.argtypes import key_value
    from icl_kernel.runfolder import RunFolder
    from simulate.evaluator import (PreparedKernels, evaluate_prompts, make_evaluator, prepare_kernels,
                                    prompt_metrics)
    from simulate.sampling import sample_prompts
    from simulate.sweep import DEFAULT_KERNELS, SweepConfig, cell_arrays, prompt_key, resolve, run_sweep, summarise
    from theory import kernels as tk

    kernels = tuple(args.kernels.split()) if args.kernels else DEFAULT_KERNELS
    cfg = SweepConfig(preset_params=dict(key_value(p) for p in args.param), kernels=kernels, forward=args.forward)
    rows = []

    def stage(name, seconds, note=""):
        rows.append((name, seconds, note))
        print(f"{name:<46s} {seconds:8.3f} s  {note}", flush=True)

    t = time.perf_counter()
    resolved, hmm = resolve(cfg)
    stage("resolve (HMM, checks)", time.perf_counter() - t, f"forward = {resolved.forward}")
    specs = [tk.parse_kernel(k) for k in resolved.kernels]
    preps = {}
    for s in specs:
        t = time.perf_counter()
        preps[s.label] = prepare_kernels(hmm, [s], resolved.length)
        info = preps[s.label].infos[0].get("per_start", [{}])[0]
        note = "" if s.name not in tk.MATRIX_KERNELS else ("exact" if info.get("exact") else "Monte Carlo")
        stage(f"  prepare {s.label} (Σ)", time.perf_counter() - t, note)
    prepared = PreparedKernels(tuple(p.kernels[0] for p in preps.values()),
                               [p.infos[0] for p in preps.values()], next(iter(preps.values())).blocks)
    P, N, ns = resolved.prompts_per_seed, max(resolved.grid), resolved.grid
    key = prompt_key(0)
    t = time.perf_counter()
    pr = sample_prompts(key, hmm, resolved.labels, P, N, resolved.length)
    stage("sample one seed (first call, compiles)", time.perf_counter() - t)
    t = time.perf_counter()
    pr = sample_prompts(key, hmm, resolved.labels, P, N, resolved.length)
    sample_warm = time.perf_counter() - t
    stage("sample one seed (warm)", sample_warm, f"{P} prompts x {N} demos")
    arrays = (pr.demos_x, pr.demos_y, pr.x_test, pr.task)

    def timed_eval(prep, label):
        ev = make_evaluator(hmm, prep, resolved.labels, ns, resolved.dtype, length=resolved.length,
                            forward=resolved.forward)
        from simulate.runtime import batch_sharding

        sh, _ = batch_sharding()
        dev = [jax.device_put(np.asarray(a), sh) for a in arrays]
        t0 = time.perf_counter()
        ev.lower(*dev).compile()
        comp = time.perf_counter() - t0
        evaluate_prompts(ev, *arrays)  # warm-up (also fills the cache)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            out = evaluate_prompts(ev, *arrays)
            jax.block_until_ready(out)
            best = min(best, time.perf_counter() - t0)
        return comp, best, out

    comp_b, bayes_t, _ = timed_eval(PreparedKernels((), [], prepared.blocks), "bayes")
    stage("compile: Bayes alone", comp_b)
    stage("Bayes alone, one seed (best of 3)", bayes_t)
    for k in prepared.kernels:
        comp, tk_, _ = timed_eval(PreparedKernels((k,), [], prepared.blocks), k.label)
        stage(f"  {k.label}: features + regression (over Bayes)", max(tk_ - bayes_t, 0.0), f"compile {comp:.2f} s")
    comp_all, all_t, ev_out = timed_eval(prepared, "all")
    stage("compile: the whole evaluator", comp_all)
    stage("the whole evaluator, one seed (best of 3)", all_t)
    t = time.perf_counter()
    arrays_out = cell_arrays(ev_out, resolved.kernels, 0)
    prompt_metrics(ev_out)
    stage("metrics of one seed", time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        with RunFolder.create(Path(d) / "r", command="sweep", config=resolved.to_dict()) as rf:
            rf.savez("prompts/seed_0.npz", **pr._asdict())
            rf.savez("cells/seed_0.npz", **arrays_out)
            summarise(rf, resolved.replace(seeds=(0,)))
        stage("I/O: prompts + cell + summary of one seed", time.perf_counter() - t)
    seeds = len(resolved.seeds)
    est = sum(r[1] for r in rows if r[0].startswith("  prepare")) + seeds * (sample_warm + all_t)
    print(f"estimated warm sweep ({seeds} seeds, compile excluded): {est:.1f} s")
    if args.no_whole:
        return
    # The whole command as a user runs it (`make demo`): a fresh process, first with an empty JAX
    # compilation cache (cold), then again with the cache it filled (warm).
    import subprocess

    exe = Path(sys.executable).with_name("icl-kernel")
    extra = [a for p in args.param for a in ("-P", p)] + ["--forward", args.forward]
    if args.kernels:
        extra += ["--kernels", args.kernels]
    env = dict(os.environ, ICL_KERNEL_JAX_CACHE=tempfile.mkdtemp(prefix="icl-kernel-jax-cache-"))
    for label in ("cold (empty compile cache)", "warm (cache filled)"):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            subprocess.run([str(exe), "sweep", "--name", "demo", "--runs-dir", d, "-q", *extra], env=env,
                           check=True, stdout=subprocess.DEVNULL)
            stage(f"icl-kernel sweep (default), {label}", time.perf_counter() - t)


if __name__ == "__main__":
    main()
