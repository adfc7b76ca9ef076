"""ICL prompts with exact token-span bookkeeping.

Layout (the paper's Fig. 1 template; separator and spacing are our choice, A5)::

    Input: x_1 Output: y_1\\n Input: x_2 Output: y_2\\n … Input: x_test Output:

(no space after the newline). The model's next token after the final ``Output:`` is the label
word with its leading space (`` Positive``), which is why label words are tokenized as
``" " + word``.

Spans are derived from **character** spans of each piece (known while the text is assembled) and
the tokenizer's ``offsets`` of the whole prompt: a token belongs to a piece when its character
range overlaps the piece's. Token ids are never searched for.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from llm_check.realdata.data_errors import LabelWordError, PromptError


@dataclass(frozen=True)
class PromptFormat:
    """The template. ``input_prefix`` + x + ``output_prefix`` + y, demonstrations joined by ``separator``."""

    input_prefix: str = "Input: "
    output_prefix: str = " Output: "
    separator: str = "\n"

    @property
    def query_suffix(self) -> str:
        # The query ends right before the label word's leading space.
        return self.output_prefix.rstrip(" ")


class Prompt(NamedTuple):
    """One ICL prompt. Token spans are half-open ``[start, end)`` into ``ids``; shapes in brackets.

    ``x_spans[n, 2]``, ``y_spans[n, 2]``: the demonstration inputs and label words;
    ``block_spans[n, 2]``: each whole demonstration (``Input:`` … label word, no separator);
    ``test_span[2]``: x_test; ``query_pos``: the last token (it predicts the label);
    ``demo_labels[n]``, ``demo_indices[n]``: labels and pool indices of the demonstrations;
    ``char_x[n, 2]``, ``char_y[n, 2]``, ``char_test[2]``: the same pieces as character spans.
    """

    text: str
    ids: np.ndarray
    x_spans: np.ndarray
    y_spans: np.ndarray
    block_spans: np.ndarray
    test_span: np.ndarray
    query_pos: int
    demo_labels: np.ndarray
    demo_indices: np.ndarray
    char_x: np.ndarray
    char_y: np.ndarray
    char_test: np.ndarray
    n_dropped: int = 0


def label_token_ids(tokenizer, label_words: Sequence[str], multi_token: str = "first") -> tuple[list[int], list[str]]:
    """First token id of ``" " + word`` for each label word, and warnings for multi-token words.

    ``multi_token="first"``: a word that tokenizes to several tokens is allowed (demonstrations show
    the whole word, the prediction uses its first token) and a warning names it; ``"error"`` refuses
    it. Two words with the same first token are always refused, since ŷ could not tell them apart.
    """
    ids, warnings = [], []
    for w in label_words:
        if not w or w != w.strip():
            raise LabelWordError(f"label word {w!r} must be non-empty without surrounding spaces")
        enc = tokenizer.encode(" " + w, add_special_tokens=False)
        if len(enc.ids) == 0:
            raise LabelWordError(f"label word {w!r} tokenizes to nothing")
        if len(enc.ids) > 1:
            msg = (f"label word {w!r} is {len(enc.ids)} tokens {enc.tokens}; the prediction uses its first "
                   f"token {enc.tokens[0]!r}")
            if multi_token == "error":
                raise LabelWordError(msg.split(";")[0] + "; expected a single token (choose another word with "
                                     "--label-words, or allow it with --multi-token-labels first)")
            warnings.append(msg)
        ids.append(enc.ids[0])
    if len(set(ids)) != len(ids):
        dup = [w for w, i in zip(label_words, ids) if ids.count(i) > 1]
        raise LabelWordError(f"label words {dup} share their first token; expected distinct first tokens")
    return ids, warnings


def _token_span(offsets: np.ndarray, cs: int, ce: int, what: str) -> tuple[int, int]:
    """Tokens whose character range overlaps [cs, ce)."""
    hit = np.nonzero((offsets[:, 0] < ce) & (offsets[:, 1] > cs) & (offsets[:, 1] > offsets[:, 0]))[0]
    if hit.size == 0:
        raise PromptError(f"{what} (characters {cs}..{ce}) covers no token; is the text empty?")
    if hit[-1] - hit[0] + 1 != hit.size:
        raise PromptError(f"{what}: overlapping tokens are not contiguous")
    return int(hit[0]), int(hit[-1]) + 1


def assemble(demos: Sequence[tuple[str, str]], x_test: str, fmt: PromptFormat = PromptFormat()):
    """Prompt text and character spans: ``(text, char_x[n,2], char_y[n,2], char_block[n,2], char_test[2])``."""
    parts, pos = [], 0
    cx, cy, cb = [], [], []
    for x, y in demos:
        start = pos
        for piece, store in ((fmt.input_prefix, None), (x, cx), (fmt.output_prefix, None), (y, cy)):
            if store is not None:
                store.append((pos, pos + len(piece)))
            parts.append(piece)
            pos += len(piece)
        cb.append((start, pos))
        parts.append(fmt.separator)
        pos += len(fmt.separator)
    parts.append(fmt.input_prefix)
    pos += len(fmt.input_prefix)
    ct = (pos, pos + len(x_test))
    parts += [x_test, fmt.query_suffix]
    text = "".join(parts)
    as_arr = lambda v: np.asarray(v, dtype=np.int64).reshape(-1, 2)  # noqa: E731
    return text, as_arr(cx), as_arr(cy), as_arr(cb), np.asarray(ct, dtype=np.int64)


def build_prompt(tokenizer, demos: Sequence[tuple[str, str]], x_test: str, demo_labels: Sequence[int],
                 demo_indices: Sequence[int], fmt: PromptFormat = PromptFormat(), max_tokens: int | None = None,
                 shorten: bool = False) -> Prompt:
    """Tokenize one prompt and map every piece to its token span.

    Longer than ``max_tokens``: :class:`PromptError`, or with ``shorten`` whole demonstrations are
    dropped from the front (farthest from the query) until it fits.
    """
    for i, (x, _) in enumerate(demos):
        if not x.strip():
            raise PromptError(f"demonstration {i} (pool index {demo_indices[i]}) has an empty input text")
    if not x_test.strip():
        raise PromptError("the test input text is empty")
    demos = list(demos)
    demo_labels, demo_indices = list(demo_labels), list(demo_indices)
    dropped = 0
    while True:
        text, cx, cy, cb, ct = assemble(demos, x_test, fmt)
        enc = tokenizer.encode(text, add_special_tokens=False)
        if max_tokens is None or len(enc.ids) <= max_tokens:
            break
        if not shorten:
            raise PromptError(
                f"prompt is {len(enc.ids)} tokens with {len(demos)} demonstrations, longer than the model's "
                f"context of {max_tokens}; use fewer demonstrations or --shorten to drop whole demonstrations")
        if not demos:
            raise PromptError(f"the test input alone is {len(enc.ids)} tokens, longer than the context of {max_tokens}")
        demos, demo_labels, demo_indices = demos[1:], demo_labels[1:], demo_indices[1:]
        dropped += 1
    off = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
    if off.shape[0] == 0 or off[-1, 1] != len(text):
        raise PromptError("the tokenizer's offsets do not reach the end of the prompt text")
    xs = np.asarray([_token_span(off, s, e, f"demonstration {i} input") for i, (s, e) in enumerate(cx)],
                    dtype=np.int64).reshape(-1, 2)
    ys = np.asarray([_token_span(off, s, e, f"demonstration {i} label") for i, (s, e) in enumerate(cy)],
                    dtype=np.int64).reshape(-1, 2)
    bs = np.asarray([_token_span(off, s, e, f"demonstration {i}") for i, (s, e) in enumerate(cb)],
                    dtype=np.int64).reshape(-1, 2)
    ts = np.asarray(_token_span(off, ct[0], ct[1], "test input"), dtype=np.int64)
    # A token shared by x_i and y_i would make "attention at y_i" ambiguous.
    if len(xs) and np.any(xs[:, 1] > ys[:, 0]):
        raise PromptError("a token straddles a demonstration input and its label; change the template")
    return Prompt(text, np.asarray(enc.ids, dtype=np.int32), xs, ys, bs, ts, len(enc.ids) - 1,
                  np.asarray(demo_labels, dtype=np.int64), np.asarray(demo_indices, dtype=np.int64),
                  cx, cy, ct, dropped)


# ----------------------------------------------------------------------------------------------
# Demonstration selection.

SELECTION_MODES = ("random", "balanced", "retrieved")


def item_rng(seed: int, index: int) -> np.random.Generator:
    """Per-test-point generator: the draw for item ``index`` does not depend on other items (resumable)."""
    return np.random.default_rng([seed, index])


def select_demonstrations(pool_labels: np.ndarray, n: int, rng: np.random.Generator, mode: str = "random",
                          similarity: np.ndarray | None = None, candidates: np.ndarray | None = None) -> np.ndarray:
    """Pool indices of ``n`` demonstrations, in prompt order.

    * ``random``: uniformly without replacement, random order (the paper's "we sample one ICL prompt").
    * ``balanced``: ``n // C`` per class, the ``n % C`` extra ones from distinct random classes; shuffled.
    * ``retrieved``: the ``n`` candidates most similar to x_test (``similarity[len(candidates)]``, e.g.
      cosine of sentence embeddings), ordered least to most similar so the nearest sits next to the query.
    """
    pool_labels = np.asarray(pool_labels)
    m = len(pool_labels)
    if n < 0:
        raise PromptError(f"n = {n}; expected n >= 0 demonstrations")
    if mode == "random":
        if n > m:
            raise PromptError(f"n = {n} demonstrations but the pool has only {m} examples")
        return rng.choice(m, size=n, replace=False)
    if mode == "balanced":
        classes = np.unique(pool_labels)
        per = np.full(len(classes), n // len(classes))
        per[rng.choice(len(classes), size=n % len(classes), replace=False)] += 1
        out = []
        for c, k in zip(classes, per):
            idx = np.nonzero(pool_labels == c)[0]
            if k > idx.size:
                raise PromptError(f"balanced selection needs {k} examples of class {c} but the pool has {idx.size}")
            out.append(rng.choice(idx, size=k, replace=False))
        out = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
        return rng.permutation(out)
    if mode == "retrieved":
        if similarity is None or candidates is None:
            raise PromptError("retrieved demonstrations need similarities to the candidate pool")
        if n > len(candidates):
            raise PromptError(f"n = {n} demonstrations but the retrieval pool has only {len(candidates)} examples")
        top = np.argsort(-np.asarray(similarity), kind="stable")[:n]
        return np.asarray(candidates)[top[::-1]]
    raise PromptError(f"unknown demonstration selection {mode!r}; expected one of {', '.join(SELECTION_MODES)}")


# ----------------------------------------------------------------------------------------------
# Perturbations for the phenomena runs.

def add_typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """Inject typos: each word of 3+ letters is hit with probability ``rate`` by one of swap of two
    adjacent inner letters, deletion, duplication or substitution of one letter (a keyboard-free,
    seeded stand-in for the paper's GPT-3.5 "typo" rewrite, A10)."""
    words = text.split(" ")
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = []
    for w in words:
        if len(w) >= 3 and w.isalpha() and rng.random() < rate:
            i = int(rng.integers(1, len(w) - 1)) if len(w) > 3 else 1
            op = int(rng.integers(4))
            if op == 0:
                w = w[:i] + w[i + 1] + w[i] + w[i + 2:] if i + 1 < len(w) else w[:i] + w[i] + w[i:]
            elif op == 1:
                w = w[:i] + w[i + 1:]
            elif op == 2:
                w = w[:i] + w[i] + w[i:]
            else:
                c = letters[int(rng.integers(26))]
                if c == w[i].lower():
                    c = letters[(letters.index(c) + 1) % 26]
                w = w[:i] + c + w[i + 1:]
        out.append(w)
    return " ".join(out)


def with_format(fmt: PromptFormat, **kw) -> PromptFormat:
    return dataclasses.replace(fmt, **kw)
