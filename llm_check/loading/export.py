"""Write our models back out as Hugging Face folders or GGUF files.

Used by tests (torch-free round trips and bad-checkpoint fixtures) and by the reference-file
script. Names come from the same tables the loaders use, inverted.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
from flax import nnx

from llm_check.loading import tables


def hf_config_dict(cfg) -> dict:
    """transformers ``config.json`` content for a LlamaConfig / GPTJConfig."""
    if cfg.architecture == "gptj":
        d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("architecture", "rope_theta")}
        return {"model_type": "gptj", "architectures": ["GPTJForCausalLM"], "tie_word_embeddings": False, **d}
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("architecture", "rope_scaling")}
    out = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu", **d}
    if cfg.rope_scaling is not None:
        _, f, lo, hi, old = cfg.rope_scaling
        out["rope_scaling"] = {"rope_type": "llama3", "factor": f, "low_freq_factor": lo,
                               "high_freq_factor": hi, "original_max_position_embeddings": int(old)}
    return out


def _flat_params(model) -> dict:
    return {path: np.asarray(var.get_value(), dtype=np.float32)
            for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def hf_state_dict(model) -> dict[str, np.ndarray]:
    """transformers state-dict names -> float32 arrays in torch layout (``[out, in]``)."""
    cfg = model.config
    table = tables.hf_gptj(cfg) if cfg.architecture == "gptj" else tables.hf_llama(cfg)
    params = _flat_params(model)
    out = {}
    for name, entry in table.items():
        if entry is None:
            continue
        path, transform = entry
        arr = params[path]
        out[name] = np.ascontiguousarray(arr.T if transform is tables.linear else arr)
    return out


def save_hf_folder(model, folder, n_shards: int = 1) -> pathlib.Path:
    """config.json + safetensors weights (sharded with an index when ``n_shards > 1``)."""
    from safetensors.numpy import save_file

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config_dict(model.config), indent=1))
    state = hf_state_dict(model)
    if n_shards == 1:
        save_file(state, str(folder / "model.safetensors"))
        return folder
    names = list(state)
    weight_map = {}
    for i in range(n_shards):
        shard = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = names[i::n_shards]
        save_file({k: state[k] for k in part}, str(folder / shard))
        weight_map.update({k: shard for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf q/k permutation of a torch-layout ``[out, in]`` weight."""
    hd = w.shape[0] // n_head
    return w.reshape(n_head, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def save_gguf(model, path, extra_tensors: dict | None = None) -> pathlib.Path:
    """A float32 GGUF of a LlamaModel with llama.cpp's tensor names and q/k permutation."""
    import gguf

    cfg = model.config
    path = pathlib.Path(path)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(cfg.head_dim)
    params = _flat_params(model)
    for name, (p, transform) in tables.gguf_llama(cfg).items():
        arr = params[p]
        if transform is not tables.as_is:
            arr = arr.T
            if name.endswith("attn_q.weight"):
                arr = llama_cpp_permute(arr, cfg.num_attention_heads)
            elif name.endswith("attn_k.weight"):
                arr = llama_cpp_permute(arr, cfg.num_key_value_heads)
        w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
    for name, (arr, qtype) in (extra_tensors or {}).items():
        w.add_tensor(name, arr, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
