"""Greedy decoding by repeated full forwards at one padded shape (compiled once; no KV cache:
meant for short sanity-check continuations, not for throughput)."""
from __future__ import annotations

import numpy as np

from llm_check.models.forward import forward


def greedy_generate(model, prompt_ids: list[list[int]], max_new_tokens: int, pad_id: int = 0,
                    eos_id: int | None = None) -> list[list[int]]:
    """Greedy continuation ids of each prompt (a list per prompt, at most ``max_new_tokens``)."""
    B = len(prompt_ids)
    S = max(map(len, prompt_ids)) + max_new_tokens
    ids = np.full((B, S), pad_id, dtype=np.int32)
    lengths = np.array([len(p) for p in prompt_ids])
    for b, p in enumerate(prompt_ids):
        ids[b, :len(p)] = p
    new = [[] for _ in range(B)]
    done = np.zeros(B, bool)
    for _ in range(max_new_tokens):
        mask = np.arange(S)[None, :] < lengths[:, None]
        out = forward(model, ids, mask, capture_positions=(lengths - 1)[:, None])
        nxt = np.asarray(out.logits[:, 0].argmax(-1))
        for b in range(B):
            if done[b]:
                continue
            new[b].append(int(nxt[b]))
            ids[b, lengths[b]] = nxt[b]
            lengths[b] += 1
            done[b] = eos_id is not None and int(nxt[b]) == eos_id
        if done.all():
            break
    return new
