#!/usr/bin/env python
"""GPT-J-6B shape, random bf16 weights, on one accelerator: tokens/s and peak memory of our
Flax forward with last-position attention capture vs transformers' eager GPTJ with
``output_attentions=True``, at batch 4 x 1024. Both are measured in this run, each in its own
child process (so JAX's and PyTorch's allocators do not share the card); the parent prints the
ratio and the card name.

Target (issue 4): ours >= 1.3x transformers' tokens/s, with lower peak memory.
Needs the torch extra (torch==2.13.0, a CUDA build on the GPU machine) and jax with CUDA.
`--preset tiny` runs the same code at a tiny shape (also on CPU) to check the script itself.

Usage: python benchmarks/bench_llm_gptj_gpu.py [--batch 4] [--seq 1024] [--repeats 5] [--preset 6b|tiny]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRESETS = {
    # EleutherAI/gpt-j-6b
    "6b": dict(vocab_size=50400, n_positions=2048, n_embd=4096, n_layer=28, n_head=16, rotary_dim=64),
    "tiny": dict(vocab_size=512, n_positions=256, n_embd=128, n_layer=2, n_head=4, rotary_dim=16),
}


def _time(fn, repeats):
    fn()  # warm-up (compile / cuDNN autotune)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def child_jax(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    sys.path.insert(0, str(ROOT))
    from llm_check.models import forward
    from llm_check.models.gptj import GPTJConfig, GPTJModel

    cfg = GPTJConfig(**PRESETS[args.preset])
    model = GPTJModel(cfg, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, cfg.vocab_size, (args.batch, args.seq)), jnp.int32)
    mask = jnp.ones((args.batch, args.seq), bool)
    cap = jnp.full((args.batch, 1), args.seq - 1, jnp.int32)

    def run():
        out = forward(model, ids, mask, capture_positions=cap, attention_impl=args.impl)
        jax.block_until_ready((out.logits, out.hook_pattern))

    med = _time(run, args.repeats)
    dev = jax.devices()[0]
    stats = dev.memory_stats() or {}
    return {"impl": f"ours (Flax/JAX, last-position capture, attention_impl={args.impl})",
            "device": f"{dev.device_kind} ({dev.platform})",
            "seconds": med, "tokens_per_s": args.batch * args.seq / med,
            "peak_bytes": stats.get("peak_bytes_in_use")}


def child_torch(args) -> dict:
    import torch
    import transformers

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = transformers.GPTJConfig(**PRESETS[args.preset], attn_implementation="eager")
    with torch.device(dev):
        model = transformers.GPTJForCausalLM._from_config(cfg, dtype=torch.bfloat16).eval()
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=dev)
    mask = torch.ones_like(ids)

    def run():
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_attentions=True, use_cache=False,
                        logits_to_keep=args.logits_to_keep)
        if dev == "cuda":
            torch.cuda.synchronize()
        return out

    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    med = _time(run, args.repeats)
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    keep = "all logits" if args.logits_to_keep == 0 else f"logits_to_keep={args.logits_to_keep}"
    return {"impl": f"transformers eager GPTJ, output_attentions=True, {keep}", "device": name,
            "seconds": med, "tokens_per_s": args.batch * args.seq / med,
            "peak_bytes": torch.cuda.max_memory_allocated() if dev == "cuda" else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="6b")
    parser.add_argument("--logits-to-keep", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=["jax", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="chunked", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        res = child_jax(args) if args.child == "jax" else child_torch(args)
        print("RESULT " + json.dumps(res))
        return 0

    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    base = [sys.executable, __file__, "--batch", str(args.batch), "--seq", str(args.seq),
            "--repeats", str(args.repeats), "--preset", args.preset]
    runs = {"ours": ["--child", "jax", "--impl", "chunked"],      # forward()'s default
            "ours_einsum": ["--child", "jax", "--impl", "einsum"],
            "ours_cudnn": ["--child", "jax", "--impl", "cudnn"],
            "hf_all": ["--child", "torch"],
            "hf_1": ["--child", "torch", "--logits-to-keep", "1"]}
    results = {}
    for key, extra in runs.items():
        proc = subprocess.run(base + extra, env=env, capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or not lines:
            errs = [l for l in proc.stderr.splitlines() if "Error" in l] or proc.stderr.splitlines() or ["?"]
            tail = errs[-1]
            print(f"[{key}] {' '.join(extra)} failed (exit {proc.returncode}): {tail[:300]}", file=sys.stderr)
            if key in ("ours", "hf_all"):
                return 1
            continue
        results[key] = json.loads(lines[-1][7:])
    print(f"GPT-J preset {args.preset}, batch {args.batch} x {args.seq}, bf16 random weights, median of {args.repeats}")
    for r in results.values():
        peak = f"{r['peak_bytes'] / 2**30:.2f} GiB" if r["peak_bytes"] else "n/a"
        print(f"  {r['impl']:<72} {r['tokens_per_s']:>10.0f} tok/s  peak {peak:>10}  on {r['device']}")
    for mine in ("ours", "ours_einsum", "ours_cudnn"):
        if mine not in results:
            continue
        o = results[mine]
        for ref in ("hf_all", "hf_1"):
            if ref not in results:
                continue
            h = results[ref]
            mem = (f", peak memory ratio {o['peak_bytes'] / h['peak_bytes']:.2f} (target < 1)"
                   if o["peak_bytes"] and h["peak_bytes"] else "")
            print(f"{mine} vs {ref}: speed ratio {o['tokens_per_s'] / h['tokens_per_s']:.2f}x (target >= 1.3x){mem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
