"""Test points per second of the llm-check ICL pass (SST-2, SmolLM2-135M-Instruct).

Builds the same prompts as ``icl-kernel llm-check --task sst2 --n 8`` for the first ``--points``
validation items, compiles every batch shape once (warm-up, not timed), then times the batched
forward with last-token attention capture plus the copy of the attention rows to host memory,
which is what the run does per batch. Prints one JSON line.

    .venv/bin/python benchmarks/bench_llm_check.py --points 96 --batch-size 16
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    ap.add_argument("--points", type=int, default=96)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()

    import jax

    from llm_check import icl
    from llm_check.config import BUCKET, LLMCheckConfig
    from llm_check.data import load_task
    from llm_check.models import forward, load_model, pad_batch

    lm = load_model("smollm2", dtype=a.dtype)
    task = load_task("sst2", a.data_dir)
    cfg = LLMCheckConfig(task="sst2", n=a.n, limit=a.points, batch_size=a.batch_size).validate()
    prompts, _, _, _ = icl.build_all(task, lm.tokenizer, cfg, lm.config.max_position_embeddings)
    lengths = np.array([len(p.ids) for p in prompts])
    batches = [pad_batch([prompts[i].ids for i in b], multiple=BUCKET, min_batch=a.batch_size)
               for b in icl.make_batches(lengths, a.batch_size)]

    def one_pass():
        for ids, mask, last in batches:
            out = forward(lm.model, ids, mask, last)
            np.asarray(out.hook_pattern)
            np.asarray(out.logits)

    t = time.perf_counter()
    one_pass()  # compiles each shape
    warm = time.perf_counter() - t
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - t)
    best = min(times)
    print(json.dumps({
        "benchmark": "llm-check ICL pass, SST-2 validation prompts", "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantised)",
        "dtype": a.dtype, "device": str(jax.devices()[0]), "platform": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "n_demonstrations": a.n, "points": len(prompts), "batch_size": a.batch_size,
        "mean_prompt_tokens": float(lengths.mean()), "padded_tokens": int(sum(ids.size for ids, _, _ in batches)),
        "first_pass_s_incl_compile": round(warm, 2), "best_pass_s": round(best, 2),
        "points_per_s": round(len(prompts) / best, 3),
        "real_tokens_per_s": round(float(lengths.sum()) / best, 1),
        "projected_s_for_872_points": round(872 / (len(prompts) / best), 1),
    }))


if __name__ == "__main__":
    main()
