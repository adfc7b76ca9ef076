"""The ICL run: build prompts, run the LM once per batch, keep what every number needs.

Run folder (``runs/<name>/``), every file written through :class:`icl_kernel.runfolder.RunFolder`
(atomic, checksummed):

* ``config.json`` — the :class:`~llm_check.realdata.config.LLMCheckConfig` (the run's identity).
* ``run_info.json`` — label words and ids, warnings, the split note, timings.
* ``prompts.jsonl`` — per test point: index, source ``file:line``, prompt text, token ids, spans of
  every x_i, y_i, the demonstration blocks and x_test, query position, demonstration pool indices
  and labels, gold label.
* ``chunks/chunk_XXXXX.npz`` — per batch: item indices, the captured last-token attention rows
  ``rows[b, L, H, S]`` (float32, zero beyond each item's length), ``lengths``, label-word logits
  ``label_logits[b, C]``, the unconstrained top next token ``top_token[b]``. Intact chunks are
  reused (resume); corrupted ones are recomputed.
* ``singles.npz`` — for the held-out test points and their demonstrations, each text run alone:
  prediction similarity sim(x_test, x_i), argmax_o P(o|x_i), MiniLM and LM mean-pooled embeddings,
  and the cosine of the LM's mean-pooled residual stream after every layer ``lm_layer_cos[N, L, n]``.
* ``probes.json`` — ridge-probe accuracies (keys / values at positions −1…3).
"""
from __future__ import annotations

import time
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from icl_kernel.runfolder import RunFolder
from llm_check.realdata import analysis as A
from llm_check.realdata import prompts as P
from llm_check.realdata.config import SPLIT_SEED, LLMCheckConfig
from llm_check.realdata.data import TaskData
from llm_check.realdata.data_errors import PromptError
from llm_check.models import CaptureConfig, forward, pad_batch
from llm_check.realdata.sentence_encoder import encode, load_minilm

CAPTURE_ICL = CaptureConfig(hook_pattern=True)
CAPTURE_PROBES = CaptureConfig(hook_pattern=True, hook_k=True, hook_v=True)
CAPTURE_SINGLES = CaptureConfig(hook_pattern=False, hook_resid_post=True, hook_normalized=True)

PROBE_OFFSETS = (-1, 0, 1, 2, 3)

# The ICL pass pads each prompt to a multiple of this many tokens: prompts whose lengths round up to
# the same multiple share a batch (and a compiled shape), so padding is under PAD_MULTIPLE tokens per
# prompt (about 2% on SST-2 with n = 8, mean 167 tokens) and no batch carries all-padding rows.
PAD_MULTIPLE = 8


# ----------------------------------------------------------------------------------------------
# Prompts.

def test_texts(task: TaskData, cfg: LLMCheckConfig) -> tuple[list[str], np.ndarray, list[str]]:
    """Evaluation texts (typos injected if asked, seeded per item), gold labels and sources.

    ``eval_order="shuffled"`` (default) visits the evaluation split in a permutation seeded by
    ``SPLIT_SEED`` (not by ``seed``, so the items stay fixed when the demonstrations are redrawn):
    some files are sorted by class (Rotten Tomatoes: all positives first), and both ``--limit`` and
    the 700/300 selection/held-out split take items in this order. ``"file"`` keeps the file order.
    ``start`` skips that many items of the order first (``limit`` counts after it).
    """
    order = np.arange(len(task.evaluation))
    if cfg.eval_order == "shuffled":
        order = np.random.default_rng([SPLIT_SEED, 1]).permutation(len(task.evaluation))
    elif cfg.eval_order != "file":
        raise PromptError(f"evaluation order {cfg.eval_order!r}; expected 'shuffled' or 'file'")
    # An empty test input cannot be classified: such rows are skipped.
    order = np.array([j for j in order if task.evaluation[j].text.strip()], dtype=np.int64)
    if cfg.start >= len(order):
        raise PromptError(f"--start {cfg.start} but task {task.name!r} has only {len(order)} non-empty "
                          "evaluation items")
    order = order[cfg.start:]
    if cfg.limit is not None:
        order = order[: cfg.limit]
    if len(order) < 2:
        raise PromptError(f"{len(order)} evaluation items after --start {cfg.start}; expected at least 2")
    items = [task.evaluation[j] for j in order]
    texts = []
    for i, e in enumerate(items):
        t = e.text
        if cfg.typos > 0:
            # seeded by the item's position in the evaluation order (so --start keeps the same typos)
            t = P.add_typos(t, cfg.typos, np.random.default_rng([cfg.seed, cfg.start + i, 7]))
        texts.append(t)
    return texts, np.array([e.label for e in items]), [e.source for e in items]


def retrieval_similarities(task: TaskData, texts: Sequence[str], cfg: LLMCheckConfig, usable: np.ndarray):
    """Candidates (a seeded subsample of ``retrieval_pool`` of the ``usable`` pool rows) and cosine
    similarities ``[N, M]`` of MiniLM embeddings, for ``selection="retrieved"``."""
    m = min(cfg.retrieval_pool, len(usable))
    cand = np.sort(usable[np.random.default_rng([cfg.seed, 99]).choice(len(usable), size=m, replace=False)])
    enc = load_minilm()
    ec = encode(enc, [task.pool[i].text for i in cand])
    et = encode(enc, list(texts))
    return cand, et @ ec.T


def demo_order(idx: np.ndarray, order: str, rng: np.random.Generator) -> np.ndarray:
    """The selected demonstrations ``idx[n]`` in prompt order: as selected, reversed, or shuffled by ``rng``."""
    if order == "as-selected":
        return idx
    if order == "reversed":
        return idx[::-1]
    if order == "shuffled":
        return rng.permutation(idx)
    raise PromptError(f"demonstration order {order!r}; expected as-selected, reversed or shuffled")


def build_all(task: TaskData, tokenizer, cfg: LLMCheckConfig, max_tokens: int):
    """Prompts, gold labels ``[N]``, sources and, for retrieved selection, each demonstration's cosine
    similarity to x_test ``[N, n]`` (None otherwise). The order rng is independent of the selection rng."""
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
    words = task.label_words
    out, demo_sims = [], []
    for i, x in enumerate(texts):
        rng = P.item_rng(cfg.seed, cfg.start + i)
        if cfg.selection == "retrieved":
            idx = P.select_demonstrations(pool_labels, cfg.n, rng, cfg.selection, similarity=sims[i], candidates=cand)
        else:
            idx = usable[P.select_demonstrations(pool_labels[usable], cfg.n, rng, cfg.selection)]
        idx = demo_order(idx, cfg.order, np.random.default_rng([cfg.seed, cfg.start + i, 11]))
        if sims is not None:
            pos = {int(c): k for k, c in enumerate(cand)}
            demo_sims.append(sims[i][[pos[int(j)] for j in idx]])
        demos = [(task.pool[j].text, words[task.pool[j].label]) for j in idx]
        out.append(P.build_prompt(tokenizer, demos, x, pool_labels[idx], idx, cfg.fmt, max_tokens, cfg.shorten))
    return out, gold, sources, (np.stack(demo_sims) if sims is not None else None)


def prompt_record(i: int, p: P.Prompt, gold: int, source: str, demo_similarity=None) -> dict:
    """One line of prompts.jsonl (``demo_similarity[n]``: retrieved runs' cosine of each demonstration)."""
    extra = {} if demo_similarity is None else {"demo_similarity": [float(v) for v in demo_similarity]}
    return extra | {"index": i, "source": source, "gold": int(gold), "text": p.text, "ids": p.ids.tolist(),
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


class BatchPlan(NamedTuple):
    """The ICL pass's batches: ``batches[b]`` item indices ``[B_b]`` (B_b <= batch size), each padded
    to ``padded_lengths[b]`` tokens; token counts over the whole pass."""
    batches: list
    padded_lengths: list
    real_tokens: int
    padded_tokens: int  # sum over batches of B_b * S_b: every token the forward processes

    @property
    def padding_fraction(self) -> float:
        """Share of the processed tokens that are padding."""
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0

    @property
    def shapes(self) -> int:
        """Distinct (batch, sequence) shapes, i.e. compilations of the forward."""
        return len({(len(b), s) for b, s in zip(self.batches, self.padded_lengths)})

    def info(self) -> dict:
        """The plan's numbers for run_info.json."""
        return {"batches": len(self.batches), "shapes": self.shapes, "pad_multiple": PAD_MULTIPLE,
                "real_tokens": self.real_tokens, "padded_tokens": self.padded_tokens,
                "padding_fraction": self.padding_fraction}


def plan_batches(lengths: np.ndarray, batch_size: int, first: Sequence[int] = (),
                 multiple: int = PAD_MULTIPLE) -> BatchPlan:
    """Length buckets: items grouped by their length rounded up to ``multiple``, each group split in
    length order into batches of at most ``batch_size``; the items in ``first`` get their own leading
    batches (bucketed the same way). Every item is in exactly one batch, padded by < ``multiple``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    first = np.asarray(sorted(set(int(i) for i in first)), dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(lengths)), first)
    padded = -(-lengths // multiple) * multiple
    batches, sizes = [], []
    for group in (first, rest):
        order = group[np.argsort(lengths[group], kind="stable")]
        for s in np.unique(padded[order]):
            same = order[padded[order] == s]
            for a in range(0, len(same), batch_size):
                batches.append(same[a:a + batch_size])
                sizes.append(int(s))
    return BatchPlan(batches, sizes, int(lengths.sum()), int(sum(len(b) * s for b, s in zip(batches, sizes))))


# ----------------------------------------------------------------------------------------------
# The ICL pass.

def icl_pass(lm, prompts: list[P.Prompt], label_ids: Sequence[int], cfg: LLMCheckConfig, rf: RunFolder,
             probe_set: Sequence[int] = (), quiet: bool = False):
    """Run every prompt once, in the length buckets of :func:`plan_batches`; save
    ``chunks/chunk_XXXXX.npz``; return ``(feats, timings, plan)``: probe features for ``probe_set``
    items ``{item: (keys[L, H, n, 5, hd], values[L, H, n, 5, hd])}`` (only for chunks run now),
    ``(items, seconds)`` per forward run now, and the :class:`BatchPlan`.

    A chunk is reused when it is intact (its checksum matches, ``rf.is_done``) and holds the same
    items; a missing or corrupted chunk is recomputed, and chunks beyond the plan (left by a run
    batched otherwise) are removed. Probe features are not stored: while ``probes.json`` is missing,
    the chunks holding probe items (the leading batches) are rerun."""
    lengths = np.array([len(p.ids) for p in prompts])
    plan = plan_batches(lengths, cfg.batch_size, probe_set)
    batches = plan.batches
    probe_set = set(int(i) for i in probe_set)
    need_feats = bool(probe_set) and not rf.is_done("probes.json")
    H = lm.config.num_attention_heads
    rep = H // lm.config.num_key_value_heads
    label_ids = np.asarray(label_ids)
    feats = {}
    timings = []
    bar = tqdm(total=len(prompts), desc=f"ICL {cfg.task}", unit="pt", disable=quiet)
    for b, items in enumerate(batches):
        rel = f"chunks/chunk_{b:05d}.npz"
        want_kv = any(int(i) in probe_set for i in items)
        if rf.is_done(rel) and not (want_kv and need_feats):
            if np.array_equal(rf.load_npz(rel)["items"], items):
                bar.update(len(items))
                continue
        ids, mask, last = pad_batch([prompts[i].ids for i in items], multiple=PAD_MULTIPLE)
        assert ids.shape == (len(items), plan.padded_lengths[b])
        t0 = time.perf_counter()
        out = forward(lm.model, ids, mask, last, capture=CAPTURE_PROBES if want_kv else CAPTURE_ICL)
        pat = np.asarray(out.hook_pattern[:, :, :, 0, :])  # [L, B, H, S]
        logits = np.asarray(out.logits[:, 0, :])  # [B, V]
        timings.append((len(items), time.perf_counter() - t0))
        nb = len(items)
        rows = np.zeros((nb, pat.shape[0], pat.shape[2], int(lengths[items].max())), np.float32)
        for r, i in enumerate(items):
            rows[r, :, :, :lengths[i]] = pat[:, r, :, :lengths[i]]
        if want_kv:
            k_all, v_all = np.asarray(out.hook_k), np.asarray(out.hook_v)  # [L, B, KVH, S, hd]
            for r, i in enumerate(items):
                if int(i) in probe_set:
                    feats[int(i)] = probe_features(pat[:, r], k_all[:, r], v_all[:, r], prompts[i], rep)
        rf.savez(rel, items=np.asarray(items), rows=rows, lengths=lengths[items],
                 label_logits=logits[:nb][:, label_ids], top_token=np.argmax(logits[:nb], axis=-1))
        bar.update(nb)
    bar.close()
    cdir = rf.path / "chunks"
    for f in sorted(cdir.glob("chunk_*.npz")) if cdir.is_dir() else []:
        if f.stem[6:].isdigit() and int(f.stem[6:]) >= len(batches):
            rf.remove(f"chunks/{f.name}")
    return feats, timings, plan


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


def load_chunks(rf: RunFolder, n_items: int):
    """Rows per item (list of ``[L, H, S_i]``), label logits ``[N, C]``, top tokens ``[N]``.

    A corrupted chunk is a one-line :class:`~icl_kernel.runfolder.RunFolderError` naming the file
    (rerunning the run recomputes it)."""
    cdir = rf.path / "chunks"
    names = sorted(f.name for f in cdir.iterdir() if f.name.endswith(".npz")) if cdir.is_dir() else []
    rows = [None] * n_items
    logits = top = None
    for f in names:
        z = rf.load_npz(f"chunks/{f}")
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
        raise PromptError(f"{len(missing)} test points of {rf.path} have no saved attention (first: {missing[0]}); "
                          "rerun the same command to resume")
    return rows, logits, top


# ----------------------------------------------------------------------------------------------
# Each text alone: P(o|x), mean-pooled hidden states.

def singles_pass(lm, texts: Sequence[str], cfg: LLMCheckConfig, quiet: bool = False, batch_size: int = 64):
    """For each distinct text run alone: full next-token distribution ``P[N, V]`` (float32), its
    argmax ``[N]``, the mean over x's tokens of the final (normalised) hidden states ``[N, D]``, and
    the mean over x's tokens of the residual stream after every layer ``[N, L, D]``.

    ``sim_context="template"`` runs ``Input: x Output:`` (P is the distribution over the answer
    slot); ``"raw"`` runs x alone (P is the next token after x)."""
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
    V, D, L = lm.config.vocab_size, lm.config.hidden_size, lm.config.num_hidden_layers
    probs = np.zeros((len(texts), V), np.float32)
    hid = np.zeros((len(texts), D), np.float32)
    layers = np.zeros((len(texts), L, D), np.float32)
    bar = tqdm(total=len(texts), desc="texts alone", unit="text", disable=quiet)
    for items in make_batches(lengths, batch_size):
        ids, mask, last = pad_batch([seqs[i] for i in items], multiple=16, min_batch=batch_size)
        out = forward(lm.model, ids, mask, last, capture=CAPTURE_SINGLES)
        span = np.zeros(ids.shape, np.float32)
        for r, i in enumerate(items):
            a, b = spans[i]
            span[r, a:b] = 1.0 / (b - a)
        pr = np.asarray(jax.nn.softmax(out.logits[:, 0, :].astype(jnp.float32), axis=-1))
        h = np.asarray(jnp.einsum("bs,bsd->bd", span, out.hook_normalized.astype(jnp.float32)))
        hl = np.asarray(jnp.einsum("bs,lbsd->bld", span, out.hook_resid_post.astype(jnp.float32)))
        for r, i in enumerate(items):
            probs[i], hid[i], layers[i] = pr[r], h[r], hl[r]
        bar.update(len(items))
    bar.close()
    return probs, probs.argmax(-1), hid, layers


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
