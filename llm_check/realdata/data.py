"""Loaders for the offline ICL classification data in ``../shared/data`` and for user files.

Reading rules (from the data README): split lines on ``\\n`` only (several latin-1 files contain
byte 0x85, which ``str.splitlines`` would treat as a line break); ``rotten_tomatoes/*``,
``subj/subj.subjective`` and ``trec/TREC.train`` are latin-1, everything else UTF-8.

A task is a :class:`TaskData`: a demonstration ``pool`` (the train split where there is one), an
``evaluation`` split, the label names and the label words used in prompts. Every example is an
:class:`Example` (``text``, integer ``label``, and where it came from: ``source`` = ``file:line``).

Splits chosen here where the data has no official one (recorded in ``TaskData.split_note``):

* ``mnli``: only dev-matched is shipped; evaluation = its first 1000 rows, pool = the other 8815.
* ``subj``, ``cr``: a seeded permutation (seed 0); evaluation = 1000 rows, pool = the rest.
* ``ag_news``: only the test CSV is shipped; evaluation = its first 1000 rows, pool = the rest.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np

from llm_check.realdata.data_errors import DataError, DecodeError, EmptySplitError, UnknownTaskError


class Example(NamedTuple):
    """One labelled text. ``label`` indexes ``TaskData.label_names``; ``source`` is ``file:line``."""

    text: str
    label: int
    source: str


@dataclass(frozen=True)
class TaskData:
    name: str
    label_names: tuple[str, ...]
    label_words: tuple[str, ...]
    pool: list[Example]
    evaluation: list[Example]
    split_note: str = ""
    pool_name: str = "train"
    evaluation_name: str = "validation"

    def __post_init__(self):
        if not self.pool:
            raise EmptySplitError(f"task {self.name!r}: the demonstration pool ({self.pool_name}) is empty")
        if not self.evaluation:
            raise EmptySplitError(f"task {self.name!r}: the evaluation split ({self.evaluation_name}) is empty")
        if len(self.label_words) != len(self.label_names):
            raise DataError(
                f"task {self.name!r}: {len(self.label_words)} label words for {len(self.label_names)} labels "
                f"{list(self.label_names)}")


# ----------------------------------------------------------------------------------------------
# Low-level readers: exact line numbers in every error.

def _read_lines(path: str, encoding: str = "utf-8") -> list[str]:
    """Lines of ``path`` split on ``\\n`` only, decoded line by line (so errors name the line).

    A final empty element (the file ends with ``\\n``) is dropped; ``\\r`` is kept (none of the
    shipped files have one) except that a trailing ``\\r`` of a CRLF file is removed.
    """
    if not os.path.exists(path):
        raise DataError(f"data file not found: {path}")
    if os.path.isdir(path):
        raise DataError(f"expected a file, got a directory: {path}")
    with open(path, "rb") as fh:
        raw = fh.read()
    parts = raw.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    out = []
    for i, b in enumerate(parts, start=1):
        if b.endswith(b"\r"):
            b = b[:-1]
        try:
            out.append(b.decode(encoding))
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"{path}:{i}: byte 0x{b[exc.start]:02x} at column {exc.start + 1} is not valid {encoding}"
                f" (the data README lists which files are latin-1; pass --encoding latin-1 for such a file)"
            ) from None
    return out


def _label_ints(path: str, lines: Sequence[str], n_labels: int) -> list[int]:
    out = []
    for i, s in enumerate(lines, start=1):
        try:
            v = int(s.strip())
        except ValueError:
            raise DataError(f"{path}:{i}: label {s.strip()!r} is not an integer") from None
        if not 0 <= v < n_labels:
            raise DataError(f"{path}:{i}: label {v} out of range 0..{n_labels - 1}")
        out.append(v)
    return out


def _check_dir(data_dir: str, sub: str) -> str:
    d = os.path.join(data_dir, sub)
    if not os.path.isdir(d):
        raise DataError(f"data folder not found: {d} (is --data-dir pointing at the shared data folder?)")
    return d


# ----------------------------------------------------------------------------------------------
# Per-dataset loaders. Each returns (pool, evaluation, label_names, split_note, pool_name, eval_name).

def _load_glue_tsv(path: str) -> list[Example]:
    lines = _read_lines(path)
    if not lines:
        raise EmptySplitError(f"{path}: file is empty")
    header = lines[0].split("\t")
    if len(header) != 2 or header[1] != "label":
        raise DataError(f"{path}:1: expected a header 'text<TAB>label', got {lines[0]!r}")
    out = []
    for i, s in enumerate(lines[1:], start=2):
        parts = s.split("\t")
        if len(parts) != 2:
            raise DataError(f"{path}:{i}: expected 2 TAB-separated fields, got {len(parts)}")
        if parts[1] not in ("0", "1"):
            raise DataError(f"{path}:{i}: label {parts[1]!r} is not 0 or 1")
        out.append(Example(parts[0].strip(), int(parts[1]), f"{path}:{i}"))
    return out


def _sst2(data_dir):
    d = _check_dir(data_dir, "sst2")
    return (_load_glue_tsv(os.path.join(d, "train.tsv")), _load_glue_tsv(os.path.join(d, "validation.tsv")),
            ("negative", "positive"), "GLUE train as pool, GLUE validation (872) as evaluation", "train", "validation")


def _load_stsa(path: str) -> list[Example]:
    """Kim (2014) ``stsa.binary.*``: one ``<label><SPACE><sentence>`` per line, label 0 or 1."""
    out = []
    for i, s in enumerate(_read_lines(path), start=1):
        lab, sep, text = s.partition(" ")
        if not sep or lab not in ("0", "1"):
            raise DataError(f"{path}:{i}: expected '<0|1> <sentence>', got {s[:40]!r}")
        out.append(Example(text.strip(), int(lab), f"{path}:{i}"))
    return out


def _sst2_kim(data_dir):
    d = _check_dir(data_dir, "sst2")
    return (_load_stsa(os.path.join(d, "stsa.binary.train")), _load_stsa(os.path.join(d, "stsa.binary.test")),
            ("negative", "positive"), "Kim (2014) SST-2: stsa train (6920) as pool, the labelled test set (1821) "
            "as evaluation; lower-cased, PTB-tokenised", "stsa.binary.train", "stsa.binary.test")


def _one_per_line(path: str, label: int, encoding: str) -> list[Example]:
    return [Example(s.strip(), label, f"{path}:{i}") for i, s in enumerate(_read_lines(path, encoding), start=1)]


def _rotten_tomatoes(data_dir):
    d = _check_dir(data_dir, "rotten_tomatoes")
    pos = _one_per_line(os.path.join(d, "rt-polarity.pos"), 1, "latin-1")
    neg = _one_per_line(os.path.join(d, "rt-polarity.neg"), 0, "latin-1")
    # The Hugging Face builder's split: 80/10/10 by position, positives first.
    i1, i2 = int(len(pos) * 0.8 + 0.5), int(len(pos) * 0.9 + 0.5)
    train = pos[:i1] + neg[:i1]
    val = pos[i1:i2] + neg[i1:i2]
    return train, val, ("negative", "positive"), "HF rotten_tomatoes splits (train 8530, validation 1066)", \
        "train", "validation"


def _tweet_eval(subset):
    def load(data_dir):
        d = _check_dir(data_dir, os.path.join("tweet_eval", subset))
        mapping = _read_lines(os.path.join(d, "mapping.txt"))
        names = []
        for i, s in enumerate(mapping, start=1):
            parts = s.split("\t")
            if len(parts) != 2 or parts[0] != str(i - 1):
                raise DataError(f"{os.path.join(d, 'mapping.txt')}:{i}: expected '{i - 1}<TAB>name', got {s!r}")
            names.append(parts[1])

        def split(name):
            tp, lp = os.path.join(d, f"{name}_text.txt"), os.path.join(d, f"{name}_labels.txt")
            texts, labels = _read_lines(tp), _read_lines(lp)
            if len(texts) != len(labels):
                raise DataError(f"{tp} has {len(texts)} lines but {lp} has {len(labels)}")
            ys = _label_ints(lp, labels, len(names))
            return [Example(t.strip(), y, f"{tp}:{i}") for i, (t, y) in enumerate(zip(texts, ys), start=1)]

        return split("train"), split("val"), tuple(names), "official TweetEval train / val", "train", "val"
    return load


def _mnli(data_dir):
    d = _check_dir(data_dir, "mnli")
    path = os.path.join(d, "validation_matched.jsonl")
    names = ("entailment", "neutral", "contradiction")
    rows = []
    for i, s in enumerate(_read_lines(path), start=1):
        try:
            obj = json.loads(s)
            premise, hypothesis, label = obj["premise"], obj["hypothesis"], obj["label"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{i}: expected a JSON object with premise, hypothesis, label ({exc})") from None
        if label not in names:
            raise DataError(f"{path}:{i}: label {label!r} is not one of {list(names)}")
        rows.append(Example(mnli_text(premise, hypothesis), names.index(label), f"{path}:{i}"))
    return rows[1000:], rows[:1000], names, \
        "only dev-matched is shipped: evaluation = its first 1000 rows, pool = the other 8815", \
        "validation_matched[1000:]", "validation_matched[:1000]"


def mnli_text(premise: str, hypothesis: str) -> str:
    """The x of an MNLI pair inside the ``Input: … Output: …`` template."""
    return f"{premise.strip()} Question: {hypothesis.strip()}"


def _seeded_split(examples: list[Example], n_eval: int, seed: int = 0):
    perm = np.random.default_rng(seed).permutation(len(examples))
    ev = [examples[i] for i in perm[:n_eval]]
    pool = [examples[i] for i in perm[n_eval:]]
    return pool, ev


def _two_files(sub, neg_name, pos_name, neg_enc, pos_enc, names):
    def load(data_dir):
        d = _check_dir(data_dir, sub)
        neg = _one_per_line(os.path.join(d, neg_name), 0, neg_enc)
        pos = _one_per_line(os.path.join(d, pos_name), 1, pos_enc)
        pool, ev = _seeded_split(neg + pos, 1000)
        return pool, ev, names, "no official split: seeded permutation (seed 0), 1000 evaluation rows", \
            "pool", "evaluation"
    return load


def _trec(data_dir):
    d = _check_dir(data_dir, "trec")
    names = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")

    def read(fname, enc):
        path = os.path.join(d, fname)
        out = []
        for i, s in enumerate(_read_lines(path, enc), start=1):
            head, _, text = s.partition(" ")
            coarse = head.split(":")[0]
            if coarse not in names or not text:
                raise DataError(f"{path}:{i}: expected '<COARSE>:<fine> <question>', got {s[:40]!r}")
            out.append(Example(text.strip(), names.index(coarse), f"{path}:{i}"))
        return out

    return read("TREC.train", "latin-1"), read("TREC.test", "utf-8"), names, "train 5452 / test 500", \
        "train", "test"


def _ag_news(data_dir):
    d = _check_dir(data_dir, "ag_news")
    path = os.path.join(d, "test.csv")
    lines = _read_lines(path)
    rows = []
    for i, s in enumerate(lines, start=1):
        try:
            rec = next(csv.reader(io.StringIO(s), quotechar='"', skipinitialspace=True))
        except (csv.Error, StopIteration) as exc:
            raise DataError(f"{path}:{i}: malformed CSV line ({exc})") from None
        if len(rec) != 3 or rec[0] not in ("1", "2", "3", "4"):
            raise DataError(f"{path}:{i}: expected 3 fields \"class\",\"title\",\"description\" with class 1-4")
        text = " ".join((rec[1], rec[2])).replace("\\n", " ").strip()
        rows.append(Example(text, int(rec[0]) - 1, f"{path}:{i}"))
    return rows[1000:], rows[:1000], ("World", "Sports", "Business", "Sci/Tech"), \
        "only test.csv is shipped: evaluation = its first 1000 rows, pool = the rest", "test[1000:]", "test[:1000]"


@dataclass(frozen=True)
class _Builtin:
    loader: object
    label_words: tuple[str, ...]
    note: str = ""


# Label words: SST-2's are the paper's; the others are ours (A5). Each must be a single token after
# the template's space for the model used; ``prompts.label_token_ids`` checks that and says which.
BUILTIN_TASKS: dict[str, _Builtin] = {
    "sst2": _Builtin(_sst2, ("Negative", "Positive")),
    "sst2_kim": _Builtin(_sst2_kim, ("Negative", "Positive")),
    "rotten_tomatoes": _Builtin(_rotten_tomatoes, ("Negative", "Positive")),
    "tweet_eval_hate": _Builtin(_tweet_eval("hate"), ("Neutral", "Hate")),
    "tweet_eval_irony": _Builtin(_tweet_eval("irony"), ("No", "Yes")),
    "tweet_eval_offensive": _Builtin(_tweet_eval("offensive"), ("Neutral", "Offensive")),
    "tweet_eval_emotion": _Builtin(_tweet_eval("emotion"), ("Anger", "Joy", "Optimism", "Sadness")),
    "mnli": _Builtin(_mnli, ("Yes", "Maybe", "No")),
    "subj": _Builtin(_two_files("subj", "subj.objective", "subj.subjective", "utf-8", "latin-1",
                                ("objective", "subjective")), ("Objective", "Subjective")),
    "cr": _Builtin(_two_files("cr", "custrev.neg", "custrev.pos", "utf-8", "utf-8", ("negative", "positive")),
                   ("Negative", "Positive")),
    "trec": _Builtin(_trec, ("Abbreviation", "Description", "Entity", "Person", "Location", "Number")),
    "ag_news": _Builtin(_ag_news, ("World", "Sports", "Business", "Technology")),
}

TASK_ALIASES = {"sst-2": "sst2", "sst2-kim": "sst2_kim", "stsa": "sst2_kim",
                "rt": "rotten_tomatoes", "rotten-tomatoes": "rotten_tomatoes",
                "hate": "tweet_eval_hate", "irony": "tweet_eval_irony", "offensive": "tweet_eval_offensive",
                "emotion": "tweet_eval_emotion", "mnli_matched": "mnli"}


def task_names() -> list[str]:
    return sorted(BUILTIN_TASKS)


def load_task(name: str, data_dir: str, label_words: Sequence[str] | None = None) -> TaskData:
    """Load a built-in task from ``data_dir`` (the folder holding ``sst2/``, ``mnli/``, …)."""
    key = TASK_ALIASES.get(name.lower(), name.lower())
    if key not in BUILTIN_TASKS:
        raise UnknownTaskError(f"unknown task {name!r}; expected one of {', '.join(task_names())} or 'custom'")
    if not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir!r} is not a folder")
    spec = BUILTIN_TASKS[key]
    pool, ev, names, note, pool_name, ev_name = spec.loader(data_dir)
    words = tuple(label_words) if label_words else spec.label_words
    return TaskData(key, tuple(names), words, pool, ev, note, pool_name, ev_name)


# ----------------------------------------------------------------------------------------------
# User files: CSV, TSV or JSONL with a text and a label column.

def read_table(path: str, text_column: str = "text", label_column: str = "label",
               encoding: str = "utf-8") -> list[tuple[str, str, str]]:
    """Rows ``(text, raw_label, "file:line")`` of a CSV/TSV (with header) or JSONL file.

    The format comes from the extension (``.csv``, ``.tsv``, ``.jsonl``/``.json``). CSV fields may be
    quoted (RFC 4180) but must not contain raw newlines (split on ``\\n`` only, as the data README asks).
    """
    ext = os.path.splitext(path)[1].lower()
    lines = _read_lines(path, encoding)
    rows = []
    if ext in (".jsonl", ".json"):
        for i, s in enumerate(lines, start=1):
            if not s.strip():
                continue
            try:
                obj = json.loads(s)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{i}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict) or text_column not in obj or label_column not in obj:
                raise DataError(f"{path}:{i}: expected an object with keys {text_column!r} and {label_column!r}")
            rows.append((str(obj[text_column]), str(obj[label_column]), f"{path}:{i}"))
    elif ext in (".csv", ".tsv"):
        delim = "," if ext == ".csv" else "\t"
        if not lines:
            raise EmptySplitError(f"{path}: file is empty (expected a header line)")
        header = _csv_fields(lines[0], delim, path, 1)
        for col in (text_column, label_column):
            if col not in header:
                raise DataError(f"{path}:1: header {header} has no column {col!r}")
        ti, li = header.index(text_column), header.index(label_column)
        for i, s in enumerate(lines[1:], start=2):
            if not s.strip():
                continue
            rec = _csv_fields(s, delim, path, i)
            if len(rec) != len(header):
                raise DataError(f"{path}:{i}: expected {len(header)} fields like the header, got {len(rec)}")
            rows.append((rec[ti], rec[li], f"{path}:{i}"))
    else:
        raise DataError(f"{path}: unknown file type {ext!r}; expected .csv, .tsv or .jsonl")
    if not rows:
        raise EmptySplitError(f"{path}: no data rows")
    return rows


def _csv_fields(line: str, delim: str, path: str, i: int) -> list[str]:
    try:
        return next(csv.reader(io.StringIO(line), delimiter=delim, quotechar='"', strict=True))
    except (csv.Error, StopIteration) as exc:
        raise DataError(f"{path}:{i}: malformed {'CSV' if delim == ',' else 'TSV'} line ({exc})") from None


def load_custom(train_path: str, eval_path: str | None, label_words: Sequence[str] | None = None,
                text_column: str = "text", label_column: str = "label", encoding: str = "utf-8",
                n_eval: int = 1000, seed: int = 0, name: str = "custom") -> TaskData:
    """A task from the user's own files. Labels are the distinct raw label strings of the pool,
    sorted (numerically if all are integers). ``label_words`` default to the label strings, in that
    order. Without ``eval_path`` a seeded split keeps ``n_eval`` rows for evaluation."""
    train = read_table(train_path, text_column, label_column, encoding)
    ev_rows = read_table(eval_path, text_column, label_column, encoding) if eval_path else None
    raw = sorted({r[1].strip() for r in train})
    if all(v.lstrip("-").isdigit() for v in raw):
        raw = sorted(raw, key=int)
    if len(raw) < 2:
        raise DataError(f"{train_path}: needs at least 2 distinct labels, found {raw}")

    def conv(rows):
        out = []
        for text, lab, src in rows:
            lab = lab.strip()
            if lab not in raw:
                raise DataError(f"{src}: label {lab!r} does not occur in the pool {train_path} (labels {raw})")
            out.append(Example(text.strip(), raw.index(lab), src))
        return out

    pool = conv(train)
    if ev_rows is None:
        if len(pool) < 2:
            raise EmptySplitError(f"{train_path}: too few rows to split into pool and evaluation")
        pool, ev = _seeded_split(pool, min(n_eval, len(pool) // 2), seed)
        note = f"seeded split of {train_path} (seed {seed})"
    else:
        ev = conv(ev_rows)
        note = f"pool {train_path}, evaluation {eval_path}"
    words = tuple(label_words) if label_words else tuple(raw)
    return TaskData(name, tuple(raw), words, pool, ev, note, "pool", "evaluation")
