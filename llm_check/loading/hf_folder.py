"""Hugging Face checkpoint folders: ``config.json`` + safetensors or PyTorch ``.bin`` weights,
one file or sharded with an index. Tensors stream one at a time (safetensors through a
read-only memory map, ``.bin`` through ``torch.load(mmap=True)``), so a 6B model loads in bf16
without a second full copy in host memory.
"""
from __future__ import annotations

import json
import math
import pathlib
import struct

import numpy as np

from llm_check.errors import CheckpointError, ConfigError, UnsupportedModelError
from llm_check.loading import tables
from llm_check.loading.assemble import abstract_model, fill_model

SUPPORTED_MODEL_TYPES = ("llama", "gptj")


def _json_kind(value) -> str:
    """JSON type name of a decoded value ("array", "string", ...) for error messages."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return {list: "array", str: "string", int: "number", float: "number"}.get(type(value), type(value).__name__)


def read_json_object(path: pathlib.Path, error=ConfigError) -> dict:
    """The JSON object stored in ``path``; raises ``error`` (one line naming the file) when the file
    is not UTF-8 JSON or holds anything other than an object (an array, a string, a number...)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); expected a JSON object") from None
    except UnicodeDecodeError:
        raise error(f"{path} is not UTF-8 text; expected a JSON object") from None
    if not isinstance(value, dict):
        raise error(f"{path} holds a JSON {_json_kind(value)}; expected a JSON object")
    return value


def read_config(folder: pathlib.Path) -> dict:
    """The ``config.json`` of a checkpoint folder as a dict (ConfigError when absent or not an object)."""
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"folder {folder} has no config.json; expected a Hugging Face checkpoint folder")
    return read_json_object(path, ConfigError)


def _need(raw: dict, key: str, source):
    if key not in raw:
        raise ConfigError(f"{source} lacks {key!r}; expected it for model_type {raw.get('model_type')!r}")
    return raw[key]


_MISSING = object()


def _int(raw: dict, key: str, source, default=_MISSING, low: int = 1) -> int:
    """A config value that must be an integer >= ``low`` (JSON numbers only; 32.0 is accepted)."""
    v = _need(raw, key, source) if default is _MISSING else raw.get(key, default)
    if v is None and default is not _MISSING:
        v = default
    ok = (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and math.isfinite(v) and v == int(v))
    if not ok or int(v) < low:
        raise ConfigError(f"{key}={_show(v)} in {source}; expected an integer >= {low}")
    return int(v)


def _float(raw, key: str, source, default, positive: bool = True) -> float:
    v = raw.get(key, default) if isinstance(raw, dict) else default
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
    if not ok:
        raise ConfigError(f"{key}={_show(v)} in {source}; expected a finite number"
                          + (" > 0" if positive else ""))
    return float(v)


def _show(v) -> str:
    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return repr(v)


def config_from_hf(raw: dict, source):
    """LlamaConfig or GPTJConfig from a transformers ``config.json`` dict."""
    if raw.get("quantization_config"):
        quant = raw["quantization_config"]
        method = quant.get("quant_method", "?") if isinstance(quant, dict) else _show(quant)[:40]
        raise UnsupportedModelError(f"{source} is quantised ({method}); expected unquantised float weights")
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(f"model_type {model_type!r} in {source}; expected one of {list(SUPPORTED_MODEL_TYPES)}")
    if model_type == "gptj":
        from llm_check.models.gptj import GPTJConfig

        rope = raw.get("rope_parameters") or {}
        if not isinstance(rope, dict):
            raise ConfigError(f"rope_parameters={_show(rope)[:40]} in {source}; expected a JSON object")
        return GPTJConfig(
            vocab_size=_int(raw, "vocab_size", source),
            n_positions=_int(raw, "n_positions", source, 2048),
            n_embd=_int(raw, "n_embd", source),
            n_layer=_int(raw, "n_layer", source),
            n_head=_int(raw, "n_head", source),
            rotary_dim=_int(raw, "rotary_dim", source, 64),
            n_inner=None if raw.get("n_inner") is None else _int(raw, "n_inner", source),
            activation_function=raw.get("activation_function", "gelu_new"),
            layer_norm_epsilon=_float(raw, "layer_norm_epsilon", source, 1e-5),
            rope_theta=_float(rope, "rope_theta", source, 10000.0),
        )
    from llm_check.models.llama import LlamaConfig

    n_head = _int(raw, "num_attention_heads", source)
    d = _int(raw, "hidden_size", source)
    kvh = _int(raw, "num_key_value_heads", source, n_head)
    if n_head % kvh:
        raise ConfigError(f"num_attention_heads={n_head} in {source} is not a multiple of num_key_value_heads={kvh}")
    if raw.get("head_dim") is None and d % n_head:
        raise ConfigError(f"hidden_size={d} in {source} is not a multiple of num_attention_heads={n_head} "
                          "(and no head_dim is given)")
    if not isinstance(raw.get("rope_parameters") or {}, dict) or not isinstance(raw.get("rope_scaling") or {}, dict):
        raise ConfigError(f"rope_parameters/rope_scaling in {source}; expected a JSON object")
    rope = dict(raw.get("rope_parameters") or {})
    scaling = raw.get("rope_scaling") or rope
    theta = rope.get("rope_theta", raw.get("rope_theta", 10000.0))
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type in (None, "default"):
        rope_scaling = None
    elif rope_type == "llama3":
        rope_scaling = ("llama3",) + tuple(_float(scaling, k, source, None) for k in (
            "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"))
    else:
        raise UnsupportedModelError(f"rope type {rope_type!r} in {source}; expected 'default' or 'llama3'")
    if raw.get("hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"hidden_act {raw['hidden_act']!r} in {source}; expected 'silu' (SwiGLU)")
    if raw.get("partial_rotary_factor", 1.0) != 1.0:
        raise UnsupportedModelError(f"partial_rotary_factor={raw['partial_rotary_factor']} in {source}; expected 1.0")
    return LlamaConfig(
        vocab_size=_int(raw, "vocab_size", source),
        hidden_size=d,
        intermediate_size=_int(raw, "intermediate_size", source),
        num_hidden_layers=_int(raw, "num_hidden_layers", source),
        num_attention_heads=n_head,
        num_key_value_heads=kvh,
        head_dim=_int(raw, "head_dim", source, d // n_head),
        max_position_embeddings=_int(raw, "max_position_embeddings", source, 2048),
        rope_theta=_float({"rope_theta": theta}, "rope_theta", source, 10000.0),
        rms_norm_eps=_float(raw, "rms_norm_eps", source, 1e-6),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        attention_bias=bool(raw.get("attention_bias", False)),
        mlp_bias=bool(raw.get("mlp_bias", False)),
        rope_scaling=rope_scaling,
    )


def weight_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """Weight files in load order: a sharded index wins over a single file; safetensors over .bin."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = folder / index_name
        if index.is_file():
            weight_map = read_json_object(index, CheckpointError).get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
                raise CheckpointError(f"{index} has no 'weight_map' object of tensor name -> file name; "
                                      "expected a sharded checkpoint index")
            files = [folder / f for f in dict.fromkeys(weight_map.values())]
            for f in files:
                if not f.is_file():
                    raise CheckpointError(f"shard {f.name} listed in {index_name} is missing from {folder}")
            return files
        if (folder / single).is_file():
            return [folder / single]
    raise CheckpointError(f"folder {folder} has no model.safetensors or pytorch_model.bin (single or sharded)")


_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def safetensors_tensors(path: pathlib.Path):
    """Yield ``(name, array)`` from a .safetensors file as read-only memmap views (BF16 via ml_dtypes)."""
    import ml_dtypes

    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError, MemoryError, OverflowError):
            raise CheckpointError(f"{path} has an unreadable safetensors header") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a safetensors header holding a JSON {_json_kind(header)}; "
                              "expected a JSON object")
    header.pop("__metadata__", None)
    for name, info in header.items():
        if not (isinstance(info, dict) and {"dtype", "shape", "data_offsets"} <= info.keys()):
            raise CheckpointError(f"tensor {name!r} in {path.name} has header entry {_show(info)[:80]}; "
                                  "expected an object with dtype, shape and data_offsets")
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    for name, info in header.items():
        kind = info["dtype"]
        dt = ml_dtypes.bfloat16 if kind == "BF16" else _ST_DTYPES.get(kind)
        if dt is None:
            raise UnsupportedModelError(f"tensor {name!r} in {path.name} has dtype {kind}; expected F32/F16/BF16")
        start, end = info["data_offsets"]
        if end > data.size or end - start != np.dtype(dt).itemsize * int(np.prod(info["shape"])):
            raise CheckpointError(f"tensor {name!r} in {path.name} lies outside the file or has the wrong byte size; "
                                  "expected a complete safetensors file")
        yield name, data[start:end].view(dt).reshape(info["shape"])


def torch_bin_tensors(path: pathlib.Path):
    """Yield ``(name, numpy array)`` from a PyTorch .bin file (needs the torch extra)."""
    try:
        import torch
    except ImportError:
        raise UnsupportedModelError(
            f"{path.name} is a PyTorch checkpoint and torch is not installed; install torch==2.13.0 "
            "or convert the folder to safetensors") from None
    import ml_dtypes

    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError / UnpicklingError with long messages
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path.name} is not a loadable PyTorch checkpoint ({type(exc).__name__}: {first})") from None
    for name in list(state):
        t = state.pop(name)
        if t.dtype == torch.bfloat16:
            yield name, t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            yield name, t.numpy()
        del t


def stream_tensors(files):
    for f in files:
        reader = safetensors_tensors if f.suffix == ".safetensors" else torch_bin_tensors
        yield from reader(f)


def load_hf_folder(folder, dtype):
    """(model, config, tokenizer or None) from a Hugging Face checkpoint folder."""
    folder = pathlib.Path(folder)
    raw = read_config(folder)
    source = str(folder / "config.json")
    cfg = config_from_hf(raw, source)
    files = weight_files(folder)
    if cfg.architecture == "gptj":
        from llm_check.models.gptj import GPTJModel as cls
        table = tables.hf_gptj(cfg)
    else:
        from llm_check.models.llama import LlamaModel as cls
        table = tables.hf_llama(cfg)
    model = fill_model(abstract_model(cls, cfg, dtype), table, stream_tensors(files), dtype,
                       f"{folder}", "GPT-J" if cfg.architecture == "gptj" else "Llama")
    return model, cfg, folder_tokenizer(folder)


def folder_tokenizer(folder: pathlib.Path):
    """tokenizer.json if present; else GPT-2-style vocab.json + merges.txt (GPT-J); else None."""
    from llm_check.loading.tokenizer import tokenizer_from_file, tokenizer_from_vocab_merges

    if (folder / "tokenizer.json").is_file():
        return tokenizer_from_file(folder / "tokenizer.json")
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return tokenizer_from_vocab_merges(folder / "vocab.json", folder / "merges.txt")
    return None
