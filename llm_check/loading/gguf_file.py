"""Llama-family models from GGUF files via the ``gguf`` package (no llama.cpp, no torch)."""
from __future__ import annotations

import pathlib

import numpy as np

from llm_check.errors import ConfigError, ModelLoadError, UnsupportedModelError
from llm_check.loading import tables
from llm_check.loading.assemble import abstract_model, fill_model

SUPPORTED_ARCHITECTURES = ("llama",)


def _field(reader, key, default=None, required=False, source=""):
    field = reader.fields.get(key)
    if field is None:
        if required:
            raise ConfigError(f"GGUF metadata key {key!r} missing from {source}; expected it for a llama model")
        return default
    return field.contents()


def open_gguf(path):
    import gguf

    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelLoadError(f"GGUF file {path} does not exist")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as exc:  # gguf raises ValueError / struct errors on bad magic
        raise ModelLoadError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc})") from None


def config_from_gguf(reader, source: str):
    """LlamaConfig from ``general.architecture`` and ``llama.*`` metadata."""
    from llm_check.models.llama import LlamaConfig

    arch = _field(reader, "general.architecture", source=source)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"GGUF architecture {arch!r} in {source}; expected one of {list(SUPPORTED_ARCHITECTURES)}")
    a = arch
    n_head = int(_field(reader, f"{a}.attention.head_count", required=True, source=source))
    d = int(_field(reader, f"{a}.embedding_length", required=True, source=source))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab = _field(reader, f"{a}.vocab_size") or (len(tokens) if tokens else None)
    if vocab is None:
        raise ConfigError(f"{source} has neither {a}.vocab_size nor tokenizer.ggml.tokens; cannot size the vocabulary")
    names = {t.name for t in reader.tensors}
    head_dim = int(_field(reader, f"{a}.attention.key_length", default=d // n_head))
    rope_dim = int(_field(reader, f"{a}.rope.dimension_count", default=head_dim))
    if rope_dim != head_dim:
        raise UnsupportedModelError(f"{a}.rope.dimension_count={rope_dim} in {source}; expected head_dim={head_dim} (partial rotary)")
    scaling = _field(reader, f"{a}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise UnsupportedModelError(f"{a}.rope.scaling.type={scaling!r} in {source}; expected none")
    return LlamaConfig(
        vocab_size=int(vocab),
        hidden_size=d,
        intermediate_size=int(_field(reader, f"{a}.feed_forward_length", required=True, source=source)),
        num_hidden_layers=int(_field(reader, f"{a}.block_count", required=True, source=source)),
        num_attention_heads=n_head,
        num_key_value_heads=int(_field(reader, f"{a}.attention.head_count_kv", default=n_head)),
        head_dim=head_dim,
        max_position_embeddings=int(_field(reader, f"{a}.context_length", required=True, source=source)),
        rope_theta=float(_field(reader, f"{a}.rope.freq_base", default=10000.0)),
        rms_norm_eps=float(_field(reader, f"{a}.attention.layer_norm_rms_epsilon", default=1e-5)),
        tie_word_embeddings="output.weight" not in names,
    )


def dequantized_tensors(reader, source: str):
    """Yield ``(name, float32 array [out, in])`` for each GGUF tensor, dequantising lazily."""
    import gguf

    for t in reader.tensors:
        try:
            arr = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError:
            raise UnsupportedModelError(
                f"tensor {t.name!r} in {source} has quantisation type {t.tensor_type.name}, "
                "which the gguf package cannot dequantise; expected F32/F16/BF16/Q4_0/Q4_1/Q8_0/K-quants") from None
        expected = tuple(int(s) for s in reversed(t.shape))
        if arr.shape != expected:
            arr = arr.reshape(expected)
        yield t.name, np.asarray(arr, dtype=np.float32)


def gguf_tokenizer(reader, path: pathlib.Path):
    """Byte-level BPE from the metadata; otherwise a tokenizer.json beside the file; None if the
    file has no tokenizer metadata at all."""
    from llm_check.errors import TokenizerError
    from llm_check.loading.tokenizer import tokenizer_from_reader, tokenizer_from_file

    kind = _field(reader, "tokenizer.ggml.model")
    if kind == "gpt2":
        return tokenizer_from_reader(reader, str(path))
    beside = path.parent / "tokenizer.json"
    if beside.is_file():
        return tokenizer_from_file(beside)
    if kind is None:
        return None
    raise TokenizerError(
        f"GGUF tokenizer model {kind!r} in {path} is not byte-level BPE; expected 'gpt2' or a tokenizer.json beside the file")


def load_gguf(path, dtype):
    """(model, config, tokenizer) from a GGUF file; tokenizer from its metadata."""
    from llm_check.models.llama import LlamaModel

    source = str(path)
    reader = open_gguf(path)
    cfg = config_from_gguf(reader, source)
    model = fill_model(abstract_model(LlamaModel, cfg, dtype), tables.gguf_llama(cfg),
                       dequantized_tensors(reader, source), dtype, source, "GGUF llama")
    tokenizer = gguf_tokenizer(reader, pathlib.Path(path))
    return model, cfg, tokenizer
