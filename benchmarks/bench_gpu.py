"""Every accelerator measurement the open issues name, in one prepared script (issues 10 and 11).

1. **Bayes throughput at d = 80, 256, 1024 states** (issue 10): han HMMs of K tasks x b states
   (8 x 10, the default preset; 16 x 16; 32 x 32), 100 tokens, labels 1..4, l = 5, ``--prompts``
   prompts of n = 128 demonstrations, float32, the batch sharded over all local devices. For each d:
   the restart factorisation (Bayes at the whole grid 1, 2, 4, ..., 128 in one pass) and the general
   forward scan (the same grid); prompts/s and demonstrations/s; the general step's FLOP rate
   (2 P d^2 per token) against the device's float32 matmul rate measured in the same run. Before any
   timing, float64 factorised vs general on a few prompts: the largest relative difference is
   printed beside the 1e-12 the CPU tests assert (a FAIL is printed, not raised, so one device run
   still returns every number).
2. **Training the ``base`` GPT-J** (issue 11; width 256, 6 layers, 8 heads): ``icl-kernel
   pretrain``'s compiled step (bf16 compute on an accelerator, float32 on CPU) on the han4 setting of
   docs/pretrain.md, for each attention implementation that runs (einsum, cudnn); tokens/s as the
   training loop runs it (documents drawn each step) and for the step alone, and the model-FLOP
   utilisation against (a) the bf16 matmul rate measured in this run and (b) the card's nominal dense
   bf16 peak where the card is known (target >= 40 % of peak).

Part 1 enables float64 (its check) and part 2 runs as ``icl-kernel pretrain`` does (float64 off), so
``--skip-bayes`` / ``--skip-train`` select the part of one invocation; ``scripts/gpu_checks.sh``
runs the two. ``--smoke`` runs both parts at tiny sizes (seconds, on CPU too; the test suite runs it) so the
script is known to work before device time is spent on it. ``--json PATH`` writes every
measurement. The one command for the device machine is ``bash scripts/gpu_checks.sh``.

Usage: python benchmarks/bench_gpu.py [--prompts 4096] [--repeats 10] [--batch 256] [--context 256]
                                      [--steps 10] [--smoke] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

# Nominal dense (no sparsity) bf16 tensor-core peak, FLOP/s, by a substring of the device kind.
NOMINAL_BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}
# (K tasks, b states per task) for d = 80, 256, 1024
SIZES = ((8, 10), (16, 16), (32, 32))
SMOKE_SIZES = ((2, 3), (4, 4))

from bench_forward import best_of  # noqa: E402  (best of n timed calls after a warm-up)
from bench_train import matmul_rate  # noqa: E402


def nominal_peak(kind: str) -> float | None:
    return next((v for k, v in NOMINAL_BF16_PEAK.items() if k.lower() in kind.lower()), None)


def bayes_throughput(K: int, b: int, P: int, N: int, repeats: int, check_prompts: int, f32_rate: float) -> dict:
    """Part 1 at one size: the factorised and the general forward on the grid 1..N (powers of two)."""
    import jax
    import jax.numpy as jnp

    from simulate.factorised import factorised_arrays, sweep_bayes_factorised
    from simulate.forward import hmm_arrays, sweep_bayes
    from simulate.presets import HanConfig, han_hmm
    from simulate.runtime import batch_sharding, replicate
    from simulate.sampling import sample_prompts

    hmm = han_hmm(HanConfig(num_tasks=K, num_states=K * b, num_tokens=100 if K * b >= 20 else 10))
    labels = jnp.asarray([1, 2, 3, 4])
    l, d = 5, K * b
    grid = tuple(2 ** i for i in range(int(np.log2(N)) + 1))
    t0 = time.perf_counter()
    pr = sample_prompts(jax.random.PRNGKey(0), hmm, labels, P, N, l)
    t_sample = time.perf_counter() - t0
    sh, ndev = batch_sharding()
    put = lambda x: jax.device_put(np.asarray(x), sh)  # noqa: E731
    dx, dy, xt, th = map(put, (pr.demos_x, pr.demos_y, pr.x_test, pr.task))

    # correctness first, in float64, on the first few prompts (one device)
    c = slice(0, check_prompts)
    g64 = sweep_bayes(hmm_arrays(hmm, jnp.float64), pr.demos_x[c], pr.demos_y[c], pr.x_test[c], pr.task[c],
                      labels, grid)
    f64 = sweep_bayes_factorised(factorised_arrays(hmm, labels, l, jnp.float64), pr.demos_x[c], pr.demos_y[c],
                                 pr.x_test[c], pr.task[c], grid)
    worst = max(float(np.max(np.abs(np.asarray(getattr(f64, k)) - np.asarray(getattr(g64, k)))
                             / np.maximum(np.abs(np.asarray(getattr(g64, k))), 1e-300))) for k in g64._fields)

    A = replicate(hmm_arrays(hmm, jnp.float32), sh)
    F = replicate(factorised_arrays(hmm, labels, l, jnp.float32), sh)
    general = jax.jit(lambda *z: sweep_bayes(A, *z, labels, grid).bayes)
    t_fact = best_of(lambda: sweep_bayes_factorised(F, dx, dy, xt, th, grid).bayes, repeats)
    t_gen = best_of(lambda: general(dx, dy, xt, th), repeats)
    steps = P * (N * (l + 2) + l)  # tokens the general scan filters
    return dict(d=d, tasks=K, states_per_task=b, prompts=P, n=N, length=l, devices=ndev, sample_s=t_sample,
                float64_max_rel_diff=worst, float64_ok=bool(worst <= 1e-12),
                factorised_s=t_fact, general_s=t_gen,
                factorised_prompts_per_s=P / t_fact, general_prompts_per_s=P / t_gen,
                factorised_demos_per_s=P * N / t_fact, general_demos_per_s=P * N / t_gen,
                general_flops_per_s=2 * d * d * steps / t_gen,
                general_fraction_of_f32_matmul=2 * d * d * steps / t_gen / f32_rate)


def training_throughput(size: str, batch: int, context: int, steps: int, impl: str, bf16_rate: float,
                        peak: float | None) -> dict:
    """Part 2 for one attention implementation: bench_train's JaxStep (pretrain's step) at ``size``."""
    import jax
    import jax.numpy as jnp

    from bench_train import JaxStep, model_flops_per_token
    from llm_check.synthetic import train

    cfg = train.PretrainConfig(preset_params=dict(num_tasks=4, num_states=8, num_tokens=10, emit_conc=1.0,
                                                  delim_rate=0.2), size=size, batch_size=batch,
                               context=context, steps=1000, attention_impl=impl)
    t0 = time.perf_counter()
    js = JaxStep(cfg)
    t_compile = time.perf_counter() - t0
    loop = js.run(steps)  # as the training loop runs it: documents drawn and placed each step
    docs = jax.device_put(js.corpus.documents(js.key, js.hmm, 0, batch, context, js.cdfs), js.sharding)

    def step_only():
        js.params, js.opt_state, loss, _ = js.train.train_step(js.graphdef, js.params, js.opt_state, docs, **js.kw)
        return loss

    t_step = best_of(step_only, steps)
    tokens = batch * context
    fpt = model_flops_per_token(js.n_params, js.mcfg, context)
    out = dict(size=size, impl=impl, parameters=js.n_params, batch=batch, context=context,
               compute_dtype=jnp.dtype(js.kw["dtype"]).name,
               devices=js.ndev, compile_and_warmup_s=t_compile, flops_per_token=fpt,
               loop_tokens_per_s=tokens / float(np.median(loop)), step_tokens_per_s=tokens / t_step)
    out["mfu_vs_measured_bf16"] = out["step_tokens_per_s"] * fpt / bf16_rate
    out["mfu_vs_nominal_peak"] = out["step_tokens_per_s"] * fpt / peak if peak else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--prompts", type=int, default=4096, help="prompts per Bayes batch (part 1)")
    ap.add_argument("--n", type=int, default=128, help="demonstrations per prompt; grid 1, 2, 4, ..., n")
    ap.add_argument("--check-prompts", type=int, default=8, help="prompts of the float64 check")
    ap.add_argument("--repeats", type=int, default=10, help="best of this many timed runs")
    ap.add_argument("--size", default="base", help="model size of part 2 (tiny, small, base)")
    ap.add_argument("--batch", type=int, default=256, help="documents per training step")
    ap.add_argument("--context", type=int, default=256, help="tokens per document")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps")
    ap.add_argument("--impls", default="einsum,cudnn", help="attention implementations to try in part 2")
    ap.add_argument("--matmul-n", type=int, default=8192, help="side of the matmuls that measure the peak rate")
    ap.add_argument("--skip-bayes", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script itself in seconds")
    ap.add_argument("--json", default=None, help="also write the measurements to this file")
    a = ap.parse_args()
    for name in ("prompts", "n", "check_prompts", "repeats", "batch", "context", "steps", "matmul_n"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} {getattr(a, name)}, expected an integer >= 1")
    sizes = SIZES
    if a.smoke:
        a.prompts, a.n, a.check_prompts, a.repeats = 8, 8, 4, 2
        a.size, a.batch, a.context, a.steps, a.matmul_n = "tiny", 4, 16, 2, 256
        sizes = SMOKE_SIZES

    from simulate.runtime import setup

    # float64 only for part 1's exactness check; part 2 runs as `icl-kernel pretrain` does (x64 off,
    # so integer indices are int32 as cuDNN attention needs): run the parts in two invocations.
    setup(enable_x64=not a.skip_bayes)
    import jax

    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    peak = nominal_peak(kind) if dev.platform != "cpu" else None
    f32 = matmul_rate(a.matmul_n, reps=5, dtype="float32")
    bf16 = matmul_rate(a.matmul_n, reps=5, dtype="bfloat16")
    res = dict(backend=jax.default_backend(), device_kind=kind, local_devices=len(jax.local_devices()),
               jax=jax.__version__, matmul_n=a.matmul_n, f32_matmul_flops_per_s=f32,
               bf16_matmul_flops_per_s=bf16, nominal_bf16_peak=peak, smoke=a.smoke, bayes=[], train=[])
    print(f"{len(jax.local_devices())} x {kind} ({jax.default_backend()}), jax {jax.__version__}; matmul "
          f"{a.matmul_n}^3: float32 {f32 / 1e12:.2f} TFLOP/s, bf16 {bf16 / 1e12:.2f} TFLOP/s"
          + (f"; nominal bf16 peak {peak / 1e12:.0f} TFLOP/s" if peak else ""), flush=True)

    if not a.skip_bayes:
        print(f"\n1. Bayes, {a.prompts} prompts x n = {a.n} (grid 1..{a.n}), l = 5, float32 (issue 10)")
        for K, b in sizes:
            r = bayes_throughput(K, b, a.prompts, a.n, a.repeats, a.check_prompts, f32)
            res["bayes"].append(r)
            print(f"  d = {r['d']:4d} ({K} x {b}): factorised {r['factorised_s'] * 1e3:9.2f} ms "
                  f"({r['factorised_prompts_per_s']:,.0f} prompts/s, {r['factorised_demos_per_s'] / 1e6:,.2f} M demos/s)"
                  f"   general {r['general_s'] * 1e3:9.2f} ms ({r['general_prompts_per_s']:,.0f} prompts/s, "
                  f"{r['general_flops_per_s'] / 1e12:.2f} TFLOP/s = {r['general_fraction_of_f32_matmul']:.1%} of "
                  f"the f32 matmul)   float64 factorised vs general {r['float64_max_rel_diff']:.1e} "
                  f"({'ok' if r['float64_ok'] else 'FAIL'}: <= 1e-12)", flush=True)

    if not a.skip_train:
        print(f"\n2. Training {a.size}, {a.batch} x {a.context} tokens per step (issue 11)")
        for impl in [s for s in a.impls.split(",") if s]:
            try:
                r = training_throughput(a.size, a.batch, a.context, a.steps, impl, bf16, peak)
            except Exception as exc:  # e.g. cudnn attention on a CPU or an unsupported card: report, go on
                print(f"  attention {impl}: unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
                res["train"].append(dict(impl=impl, error=f"{type(exc).__name__}: {exc}"[:500]))
                continue
            res["train"].append(r)
            print(f"  attention {impl}: {r['parameters']:,} parameters, {r['compute_dtype']}; step alone "
                  f"{r['step_tokens_per_s']:,.0f} tokens/s, training loop {r['loop_tokens_per_s']:,.0f} tokens/s; "
                  f"MFU {r['mfu_vs_measured_bf16']:.1%} of the measured bf16 matmul"
                  + (f", {r['mfu_vs_nominal_peak']:.1%} of the nominal peak (target >= 40%)" if peak else "")
                  + f"; compile {r['compile_and_warmup_s']:.1f} s", flush=True)

    if a.json:
        tmp = Path(a.json + ".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        os.replace(tmp, a.json)
        print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
