#!/usr/bin/env python
"""Write the reference files that the torch-free LLM tests compare against.

Runs the real reference implementation (transformers 5.24 PyTorch, eager attention, float32;
needs the torch extra: torch==2.13.0) and stores its outputs in tests/data/llm_ref/:

- tiny_llama/, tiny_gptj/: config.json + model.safetensors of tiny random transformers models
  (saved with save_pretrained) and reference.npz with their logits, attention rows and
  pre-rotary q/k/v on a right-padded batch.
- smollm2.npz: transformers' GGUF-loader outputs for SmolLM2-135M-Instruct on a few prompts:
  token ids (transformers' tokenizer), the top-20 logits at every position and the
  last-position attention rows of every layer and head.

Usage: .venv/bin/python scripts/make_llm_reference.py [--out tests/data/llm_ref]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "llm"))

TINY = {
    "llama": dict(vocab_size=64, hidden_size=32, intermediate_size=56, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  max_position_embeddings=48, rope_theta=5000.0, rms_norm_eps=1e-5,
                  tie_word_embeddings=True, initializer_range=0.3),
    "gptj": dict(vocab_size=64, n_positions=48, n_embd=32, n_layer=2, n_head=4, rotary_dim=4,
                 layer_norm_epsilon=1e-5, initializer_range=0.3, tie_word_embeddings=False),
}
LENGTHS = [21, 13, 6]
CAPTURE = [[20, 3, 0], [12, 7, 12], [5, 5, 2]]
SMOLLM2_PROMPTS = [
    "Input: moving and important. Output: Positive.\nInput: excruciatingly unfunny. Output: Negative.\nInput: intelligent and moving Output:",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "naïve café: 3.14159 × 2 = 6.28318\t tabs and  spaces",
]
TOPK = 20


def tiny_reference(kind: str, out: pathlib.Path, seed: int) -> None:
    from llm_helpers import hf_run, padded_batch, tiny_hf_model

    # the tests' tiny random model (non-trivial norms and biases) at this script's sizes
    model = tiny_hf_model(kind, seed=seed, **TINY[kind])
    folder = out / f"tiny_{kind}"
    model.save_pretrained(folder)
    for extra in ("generation_config.json",):
        (folder / extra).unlink(missing_ok=True)

    ids, mask = padded_batch(seed, LENGTHS, vocab=TINY[kind]["vocab_size"])
    logits, attentions, captured = hf_run(model, ids, mask)
    n_layers = len(attentions)
    cap = np.array(CAPTURE)
    b_idx = np.arange(len(LENGTHS))[:, None]
    att = np.stack(attentions)                                               # [L, B, H, S, S]
    np.savez_compressed(
        folder / "reference.npz",
        input_ids=ids.astype(np.int32), attention_mask=mask.astype(bool), capture_positions=cap.astype(np.int32),
        logits=logits[b_idx, cap],                                           # [B, Q, V]
        patterns=att.transpose(0, 1, 3, 2, 4)[:, b_idx, cap].transpose(0, 1, 3, 2, 4),  # [L, B, H, Q, S]
        q=np.stack([captured[(i, "q_proj")] for i in range(n_layers)]),     # [L, B, S, H*hd]
        k=np.stack([captured[(i, "k_proj")] for i in range(n_layers)]),
        v=np.stack([captured[(i, "v_proj")] for i in range(n_layers)]),
    )


def smollm2_reference(out: pathlib.Path) -> None:
    import torch
    import transformers

    from llm_check.loading.tokenizer import smollm2_gguf_path

    path = smollm2_gguf_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, attn_implementation="eager", dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    arrays = {}
    for i, text in enumerate(SMOLLM2_PROMPTS):
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            res = model(input_ids=torch.tensor([ids]), output_attentions=True)
        logits = res.logits[0].numpy()
        top = np.argsort(-logits, axis=-1)[:, :TOPK]
        arrays[f"ids_{i}"] = np.array(ids, dtype=np.int32)
        arrays[f"top_ids_{i}"] = top.astype(np.int32)                       # [n, K]
        arrays[f"top_logits_{i}"] = np.take_along_axis(logits, top, -1)      # [n, K]
        arrays[f"last_patterns_{i}"] = np.stack([a[0, :, -1, :].numpy() for a in res.attentions])  # [L, H, n]
    np.savez_compressed(out / "smollm2.npz", **arrays)
    (out / "smollm2_prompts.json").write_text(json.dumps(SMOLLM2_PROMPTS, ensure_ascii=False, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "tests" / "data" / "llm_ref")
    parser.add_argument("--skip-smollm2", action="store_true")
    args = parser.parse_args()
    import torch
    import transformers

    args.out.mkdir(parents=True, exist_ok=True)
    tiny_reference("llama", args.out, seed=11)
    tiny_reference("gptj", args.out, seed=12)
    if not args.skip_smollm2:
        smollm2_reference(args.out)
    (args.out / "VERSIONS.json").write_text(json.dumps(
        {"transformers": transformers.__version__, "torch": torch.__version__,
         "script": "scripts/make_llm_reference.py"}, indent=1))
    print(f"wrote reference files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
