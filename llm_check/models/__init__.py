"""Flax NNX GPT-J and Llama models with attention capture.

Public API::

    model(input_ids, attention_mask=None, *, capture_positions=None, capture=None, all_logits=None,
          impl="chunked", k_block=None, scan=True) -> ForwardOutput
        the forward of every model (GPTJModel, LlamaModel; shared base CausalLM in models/base.py),
        used by training (capture=None), evaluation and capture
    forward(model, input_ids, attention_mask=None, capture_positions=None,
            capture=CaptureConfig(hook_pattern=True)) -> ForwardOutput
        validated, jit-compiled call of the model's forward (layers scanned, K_BLOCK matmuls)
    as_transformerlens_cache(out) -> dict
    pad_batch(token_lists, pad_id=0, multiple=64, min_batch=1) -> (ids, mask, last_positions)

Loading checkpoints (``load_model``) lives in :mod:`llm_check.loading`.
"""
from __future__ import annotations

from llm_check.models.forward import forward, last_positions, pad_batch
from llm_check.models.output import CaptureConfig, ForwardOutput, as_transformerlens_cache

__all__ = ["CaptureConfig", "forward", "last_positions", "ForwardOutput", "as_transformerlens_cache", "pad_batch"]
