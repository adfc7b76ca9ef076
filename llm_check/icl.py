"""The ICL run: build prompts, run the LM once per batch, keep what every number needs.

Run folder (``runs/<name>/``), every file written atomically (temp file + ``os.replace``):

* ``config.json`` — the options, label words and ids, the split note.
* ``prompts.jsonl`` — per test point: index, source ``file:line``, prompt text, token ids, spans of
  every x_i, y_i, the demonstration blocks and x_test, query position, demonstration pool indices
  and labels, gold label.
* ``chunks/chunk_XXXXX.npz`` — per batch: item indices, the captured last-token attention rows
  ``rows[b, L, H, S]`` (float32, zero beyond each item's length), ``lengths``, label-word logits
  ``label_logits[b, C]``, the unconstrained top next token ``top_token[b]``. Existing chunks are
  reused (resume).
* ``singles.npz`` — for the held-out test points and their demonstrations, each text run alone:
  prediction similarity sim(x_test, x_i), argmax_o P(o|x_i), MiniLM and LM mean-pooled embeddings.
* ``probes.json`` — ridge-probe accuracies (keys / values at positions −1…3).
"""
from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from llm_check import analysis as A
from llm_check import prompts as P
from llm_check.data import TaskData
from llm_check.data_errors import PromptError

PROBE_OFFSETS = (-1, 0, 1, 2, 3)


@dataclass
class RunConfig:
    task: str = "sst2"
    n: int = 8
    seed: int = 0
    selection: str = "random"
    retrieval_pool: int = 4000
    limit: int | None = None
    batch_size: int = 16
    bucket: int = 32
    max_tokens: int | None = None
    shorten: bool = False
    typos: float = 0.0
    multi_token_labels: str = "first"
    sim_context: str = "template"
    probe_items: int = 100
    n_select: int = 700
    n_heldout: int = 300
    tau: float = 0.1
    model: str = "smollm2"
    dtype: str = "float32"
    input_prefix: str = "Input: "
    output_prefix: str = " Output: "
    separator: str = "\n"
    label_words: tuple[str, ...] = ()
    eval_order: str = "shuffled"
    split_seed: int = 0

    @property
    def fmt(self) -> P.PromptFormat:
        return P.PromptFormat(self.input_prefix, self.output_prefix, self.separator)


# ----------------------------------------------------------------------------------------------
# Atomic writes.

def write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1, default=_json_default).encode())


def write_npz(path: str, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


# ----------------------------------------------------------------------------------------------
# Prompts.

def test_texts(task: TaskData, cfg: RunConfig) -> tuple[list[str], np.ndarray, list[str]]:
    """Evaluation texts (typos injected if asked, seeded per item), gold labels and sources.

    ``eval_order="shuffled"`` (default) visits the evaluation split in a permutation seeded by
    ``split_seed`` (not by ``seed``, so the items stay fixed when the demonstrations are redrawn):
    some files are sorted by class (Rotten Tomatoes: all positives first), and both ``--limit`` and
    the 700/300 selection/held-out split take items in this order. ``"file"`` keeps the file order.
    """
    order = np.arange(len(task.evaluation))
    if cfg.eval_order == "shuffled":
        order = np.random.default_rng([cfg.split_seed, 1]).permutation(len(task.evaluation))
    elif cfg.eval_order != "file":
        raise PromptError(f"evaluation order {cfg.eval_order!r}; expected 'shuffled' or 'file'")
    # An empty test input cannot be classified: such rows are skipped (counted by ``empty_texts``).
    order = np.array([j for j in order if task.evaluation[j].text.strip()], dtype=np.int64)
    if cfg.limit is not None:
        order = order[: cfg.limit]
    items = [task.evaluation[j] for j in order]
    texts = []
    for i, e in enumerate(items):
        t = e.text
        if cfg.typos > 0:
            t = P.add_typos(t, cfg.typos, np.random.default_rng([cfg.seed, i, 7]))
        texts.append(t)
    return texts, np.array([e.label for e in items]), [e.source for e in items]


def retrieval_similarities(task: TaskData, texts: Sequence[str], cfg: RunConfig, usable: np.ndarray):
    """Candidates (a seeded subsample of ``retrieval_pool`` of the ``usable`` pool rows) and cosine
    similarities ``[N, M]`` of MiniLM embeddings, for ``selection="retrieved"``."""
    from llm_check.sentence_encoder import encode, load_minilm

    m = min(cfg.retrieval_pool, len(usable))
    cand = np.sort(usable[np.random.default_rng([cfg.seed, 99]).choice(len(usable), size=m, replace=False)])
    enc = load_minilm()
    ec = encode(enc, [task.pool[i].text for i in cand])
    et = encode(enc, list(texts))
    return cand, et @ ec.T


def build_all(task: TaskData, tokenizer, cfg: RunConfig, max_tokens: int) -> tuple[list[P.Prompt], np.ndarray, list[str]]:
    texts, gold, sources = test_texts(task, cfg)
    # Demonstrations come from the non-empty pool rows only (tweet_eval hate has 7 empty tweets).
    usable = np.array([j for j, e in enumerate(task.pool) if e.text.strip()], dtype=np.int64)
    if cfg.n > len(usable):
        raise PromptError(f"n = {cfg.n} demonstrations but the pool of task {task.name!r} has only {len(usable)} "
                          f"non-empty examples")
    pool_labels = np.array([e.label for e in task.pool])
    cand = sims = None
    if cfg.selection == "retrieved":
        cand, sims = retrieval_similarities(task, texts, cfg, usable)
    words = cfg.label_words or task.label_words
    out = []
    for i, x in enumerate(texts):
        rng = P.item_rng(cfg.seed, i)
        if cfg.selection == "retrieved":
            idx = P.select_demonstrations(pool_labels, cfg.n, rng, cfg.selection, similarity=sims[i], candidates=cand)
        else:
            idx = usable[P.select_demonstrations(pool_labels[usable], cfg.n, rng, cfg.selection)]
        demos = [(task.pool[j].text, words[task.pool[j].label]) for j in idx]
        out.append(P.build_prompt(tokenizer, demos, x, pool_labels[idx], idx, cfg.fmt, max_tokens, cfg.shorten))
    return out, gold, sources


def prompt_record(i: int, p: P.Prompt, gold: int, source: str) -> dict:
    return {"index": i, "source": source, "gold": int(gold), "text": p.text, "ids": p.ids.tolist(),
            "x_spans": p.x_spans.tolist(), "y_spans": p.y_spans.tolist(), "block_spans": p.block_spans.tolist(),
            "test_span": p.test_span.tolist(), "query_pos": int(p.query_pos),
            "demo_indices": p.demo_indices.tolist(), "demo_labels": p.demo_labels.tolist(),
            "n_dropped": int(p.n_dropped)}


def prompt_from_record(r: dict) -> P.Prompt:
    a = lambda k: np.asarray(r[k], dtype=np.int64).reshape(-1, 2)  # noqa: E731
    z = np.zeros((0, 2), np.int64)
    return P.Prompt(r["text"], np.asarray(r["ids"], np.int32), a("x_spans"), a("y_spans"), a("block_spans"),
                    np.asarray(r["test_span"], np.int64), int(r["query_pos"]), np.asarray(r["demo_labels"], np.int64),
                    np.asarray(r["demo_indices"], np.int64), z, z, np.zeros(2, np.int64), int(r["n_dropped"]))


# ----------------------------------------------------------------------------------------------
# Batching.

def make_batches(lengths: np.ndarray, batch_size: int, first: Sequence[int] = ()) -> list[np.ndarray]:
    """Item batches sorted by length (less padding); the items in ``first`` get their own leading batches."""
    first = np.asarray(sorted(set(int(i) for i in first)), dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(lengths)), first)
    out = []
    for group in (first, rest):
        order = group[np.argsort(lengths[group], kind="stable")]
        out += [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    return out


# ----------------------------------------------------------------------------------------------
# The ICL pass.

def icl_pass(lm, prompts: list[P.Prompt], label_ids: Sequence[int], cfg: RunConfig, run_dir: str,
             probe_set: Sequence[int] = (), quiet: bool = False):
    """Run every prompt once; save chunks; return probe features for ``probe_set`` items
    ``{item: (keys[L, H, n, 5, hd], values[L, H, n, 5, hd])}`` (only computed for chunks run now).

    Probe features are not stored: while ``probes.json`` is missing, the chunks holding probe
    items (the leading batches) are rerun even if saved; every other saved chunk is reused."""
    from tqdm import tqdm

    from llm_check.models import forward, pad_batch

    cdir = os.path.join(run_dir, "chunks")
    os.makedirs(cdir, exist_ok=True)
    lengths = np.array([len(p.ids) for p in prompts])
    batches = make_batches(lengths, cfg.batch_size, probe_set)
    probe_set = set(int(i) for i in probe_set)
    need_feats = bool(probe_set) and not os.path.exists(os.path.join(run_dir, "probes.json"))
    H = lm.config.num_attention_heads
    rep = H // lm.config.num_key_value_heads
    label_ids = np.asarray(label_ids)
    feats = {}
    timings = []
    bar = tqdm(total=len(prompts), desc=f"ICL {cfg.task}", unit="pt", disable=quiet)
    for b, items in enumerate(batches):
        path = os.path.join(cdir, f"chunk_{b:05d}.npz")
        want_kv = any(int(i) in probe_set for i in items)
        if os.path.exists(path) and not (want_kv and need_feats):
            with np.load(path) as z:
                if np.array_equal(z["items"], items):
                    bar.update(len(items))
                    continue
        ids, mask, last = pad_batch([prompts[i].ids for i in items], multiple=cfg.bucket, min_batch=cfg.batch_size)
        t0 = time.perf_counter()
        out = forward(lm.model, ids, mask, last, capture_kv_all=want_kv)
        pat = np.asarray(out.patterns[:, :, :, 0, :])  # [L, B, H, S]
        logits = np.asarray(out.logits[:, 0, :])  # [B, V]
        timings.append((len(items), time.perf_counter() - t0))
        nb = len(items)
        rows = np.zeros((nb, pat.shape[0], pat.shape[2], int(lengths[items].max())), np.float32)
        for r, i in enumerate(items):
            rows[r, :, :, :lengths[i]] = pat[:, r, :, :lengths[i]]
        if want_kv:
            k_all, v_all = np.asarray(out.k_all), np.asarray(out.v_all)  # [L, B, KVH, S, hd]
            for r, i in enumerate(items):
                if int(i) in probe_set:
                    feats[int(i)] = probe_features(pat[:, r], k_all[:, r], v_all[:, r], prompts[i], rep)
        write_npz(path, items=np.asarray(items), rows=rows, lengths=lengths[items],
                  label_logits=logits[:nb][:, label_ids], top_token=np.argmax(logits[:nb], axis=-1))
        bar.update(nb)
    bar.close()
    return feats, timings


def probe_features(rows: np.ndarray, k_all: np.ndarray, v_all: np.ndarray, p: P.Prompt, rep: int):
    """Per-head key and value vectors at offsets −1…3 around each demonstration's high-attention
    position (argmax of the head's attention over [x_i, y_i]); positions are clipped to the prompt.

    ``rows[L, H, S]``, ``k_all/v_all[L, KVH, S, hd]`` -> ``keys, values [L, H, n, 5, hd]`` float16.
    """
    L, H, _ = rows.shape
    n = len(p.x_spans)
    hd = k_all.shape[-1]
    keys = np.zeros((L, H, n, len(PROBE_OFFSETS), hd), np.float16)
    vals = np.zeros_like(keys)
    last = len(p.ids) - 1
    kvh = np.arange(H) // rep
    for i in range(n):
        a, b = p.x_spans[i, 0], p.y_spans[i, 1]
        peak = a + np.argmax(rows[:, :, a:b], axis=-1)  # [L, H]
        for j, off in enumerate(PROBE_OFFSETS):
            pos = np.clip(peak + off, 0, last)
            keys[:, :, i, j] = k_all[np.arange(L)[:, None], kvh[None, :], pos]
            vals[:, :, i, j] = v_all[np.arange(L)[:, None], kvh[None, :], pos]
    return keys, vals


def load_chunks(run_dir: str, n_items: int):
    """Rows per item (list of ``[L, H, S_i]``), label logits ``[N, C]``, top tokens ``[N]``."""
    cdir = os.path.join(run_dir, "chunks")
    rows = [None] * n_items
    logits = top = None
    for f in sorted(os.listdir(cdir)):
        if not f.endswith(".npz"):
            continue
        with np.load(os.path.join(cdir, f)) as z:
            items, r, lens = z["items"], z["rows"], z["lengths"]
            if logits is None:
                logits = np.zeros((n_items, z["label_logits"].shape[1]), np.float32)
                top = np.zeros(n_items, np.int64)
            for k, i in enumerate(items):
                if i < n_items:
                    rows[i] = r[k, :, :, :lens[k]]
            ok = items < n_items
            logits[items[ok]] = z["label_logits"][ok]
            top[items[ok]] = z["top_token"][ok]
    missing = [i for i, r in enumerate(rows) if r is None]
    if missing:
        raise PromptError(f"{len(missing)} test points have no saved attention (first: {missing[0]}); rerun to resume")
    return rows, logits, top


# ----------------------------------------------------------------------------------------------
# Each text alone: P(o|x), mean-pooled hidden states.

def singles_pass(lm, texts: Sequence[str], cfg: RunConfig, quiet: bool = False, batch_size: int = 64):
    """For each distinct text run alone: full next-token distribution ``P[N, V]`` (float32), its
    argmax, and the mean over x's tokens of the final hidden states ``[N, D]``.

    ``sim_context="template"`` runs ``Input: x Output:`` (P is the distribution over the answer
    slot); ``"raw"`` runs x alone (P is the next token after x)."""
    import jax
    from tqdm import tqdm

    from llm_check.models import forward, pad_batch

    tok = lm.tokenizer
    seqs, spans = [], []
    for t in texts:
        if cfg.sim_context == "template":
            p = P.build_prompt(tok, [], t, [], [], cfg.fmt)
            seqs.append(p.ids)
            spans.append(tuple(p.test_span))
        else:
            ids = np.asarray(tok.encode(t, add_special_tokens=False).ids, np.int32)
            seqs.append(ids)
            spans.append((0, len(ids)))
    lengths = np.array([len(s) for s in seqs])
    V = lm.config.vocab_size
    probs = np.zeros((len(texts), V), np.float32)
    hid = np.zeros((len(texts), lm.config.hidden_size), np.float32)
    bar = tqdm(total=len(texts), desc="texts alone", unit="text", disable=quiet)
    for items in make_batches(lengths, batch_size):
        ids, mask, last = pad_batch([seqs[i] for i in items], multiple=16, min_batch=batch_size)
        out = forward(lm.model, ids, mask, last, return_hidden=True)
        pr = np.asarray(jax.nn.softmax(out.logits[:, 0, :].astype(np.float32), axis=-1))
        h = np.asarray(out.hidden)
        for r, i in enumerate(items):
            probs[i] = pr[r]
            a, b = spans[i]
            hid[i] = h[r, a:b].mean(0)
        bar.update(len(items))
    bar.close()
    return probs, probs.argmax(-1), hid


def fit_probes(feats: dict, prompts: list[P.Prompt], top_demo: dict, lam: float = 0.01,
               train_frac: float = 0.7) -> dict:
    """Ridge probes per (layer, head, offset): keys -> argmax_o P(o|x_i), values -> y_i.

    ``feats[item] = (keys, values)`` each ``[L, H, n, O, hd]``; ``top_demo[item] = [n]`` token ids.
    Train / test split by test point (the first ``train_frac`` of the items, in index order), so a
    prompt's demonstrations never sit on both sides.
    """
    items = sorted(feats)
    if len(items) < 4:
        raise PromptError(f"{len(items)} probe items; expected at least 4 for a train/test split")
    ntr = max(2, int(round(train_frac * len(items))))
    tr, te = items[:ntr], items[ntr:]
    out = {"n_items": len(items), "n_train_items": len(tr), "accuracy": {}, "chance": {}, "titles": {}}
    targets = {"keys": lambda i: np.asarray(top_demo[i]), "values": lambda i: prompts[i].demo_labels}
    titles = {"keys": "(a) keys -> argmax_o P(o | x_i) (LM's top token on x_i alone)",
              "values": "(b) values -> demonstration label y_i"}
    for kind, k in (("keys", 0), ("values", 1)):
        Xtr = np.concatenate([feats[i][k].astype(np.float32) for i in tr], axis=2)  # [L, H, Ntr*n, O, hd]
        Xte = np.concatenate([feats[i][k].astype(np.float32) for i in te], axis=2)
        ytr = np.concatenate([targets[kind](i) for i in tr])
        yte = np.concatenate([targets[kind](i) for i in te])
        L, H, _, O, _ = Xtr.shape
        acc = np.zeros((L, H, O))
        for l in range(L):
            for h in range(H):
                for o in range(O):
                    acc[l, h, o] = A.ridge_probe(Xtr[l, h, :, o], ytr, Xte[l, h, :, o], yte, lam)
        vals, counts = np.unique(ytr, return_counts=True)
        out["accuracy"][kind] = acc.tolist()
        out["chance"][kind] = float(np.mean(yte == vals[np.argmax(counts)]))
        out["titles"][kind] = titles[kind]
    return out
