"""Flax NNX GPT-J and Llama models with attention capture.

Public API::

    GPTJModel(cfg, rngs)(input_ids, ...) / LlamaModel(cfg, rngs)(input_ids, ...)
    forward(model, input_ids, attention_mask=None, capture_positions=None,
            capture=CaptureConfig(hook_pattern=True)) -> ForwardOutput
    as_transformerlens_cache(out) -> dict
    pad_batch(token_lists, pad_id=0, multiple=64, min_batch=1) -> (ids, mask, last_positions)

Loading checkpoints (``load_model``) lives in :mod:`llm_check.loading`.
"""
from __future__ import annotations

from llm_check.models.forward import forward, last_positions, pad_batch
from llm_check.models.output import CaptureConfig, ForwardOutput, as_transformerlens_cache

__all__ = ["CaptureConfig", "forward", "last_positions", "ForwardOutput", "as_transformerlens_cache", "pad_batch"]
