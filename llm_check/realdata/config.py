"""The one configuration of an ``llm-check`` run: a frozen dataclass, validated before anything runs.

The fields are the run's identity (``config.json`` of its run folder); the CLI builds its options
from the field metadata (:func:`add_config_arguments`), so no option is listed twice.
"""
from __future__ import annotations

import argparse
import codecs
import dataclasses
import math
from dataclasses import dataclass, field

from llm_check.realdata.data_errors import PromptError
from llm_check.errors import LLMCheckError
from llm_check.realdata.prompts import PromptFormat

SELECTIONS = ("random", "balanced", "retrieved")
ORDERS = ("as-selected", "reversed", "shuffled")
EVAL_ORDERS = ("shuffled", "file")
MULTI_TOKEN_RULES = ("first", "error")
SIM_CONTEXTS = ("template", "raw")
DTYPES = ("float32", "bfloat16")
BUCKET = 32          # prompts are padded to a multiple of this many tokens (fewer compilations)
SPLIT_SEED = 0       # seeds the evaluation order; independent of --seed so redraws keep the items


class ConfigValueError(LLMCheckError):
    """An ``llm-check`` option value out of its range."""


def _opt(default, group: str, help: str, *, flag: str | None = None, choices=None, action: str | None = None,
         metavar: str | None = None):
    return field(default=default, metadata=dict(group=group, help=help, flag=flag, choices=choices,
                                                action=action, metavar=metavar))


@dataclass(frozen=True)
class LLMCheckConfig:
    """Everything that determines an llm-check run's numbers. See docs/llm_check.md for each choice."""

    # data
    task: str = _opt("sst2", "data", "sst2, rotten_tomatoes, tweet_eval_{hate,irony,offensive,emotion}, mnli, subj, "
                                     "cr, trec, ag_news, or custom (default sst2)")
    data_dir: str = _opt("../shared/data", "data", "folder with sst2/, mnli/, … (default ../shared/data)")
    train_file: str | None = _opt(None, "data", "custom task: demonstration pool (.csv, .tsv with header, or .jsonl)")
    eval_file: str | None = _opt(None, "data", "custom task: evaluation file (default: a seeded split of --train-file)")
    text_column: str = _opt("text", "data", "custom files: text column (default text)")
    label_column: str = _opt("label", "data", "custom files: label column (default label)")
    encoding: str = _opt("utf-8", "data", "custom files' encoding (e.g. latin-1)")
    label_words: str | None = _opt(None, "data", "comma-separated label words in label order (default: the task's)")
    multi_token_labels: str = _opt("first", "data", "a label word of several tokens: ŷ and the kernel weight use its "
                                   "first token (warns) or refuse", choices=MULTI_TOKEN_RULES)
    start: int = _opt(0, "data", "skip the first START evaluation items (in --eval-order), e.g. to run on items "
                                 "disjoint from another run's head-selection split (default 0)")
    limit: int | None = _opt(None, "data", "use only LIMIT evaluation items (after --start)")
    eval_order: str = _opt("shuffled", "data", "visit the evaluation split in a fixed seeded permutation (default; "
                           "some files are sorted by class) or in file order", choices=EVAL_ORDERS)
    # prompts
    n: int = _opt(8, "prompts", "demonstrations per prompt (default 8)")
    selection: str = _opt("random", "prompts", "random (the paper), class-balanced, or retrieved by MiniLM cosine "
                          "similarity (nearest last)", choices=SELECTIONS)
    order: str = _opt("as-selected", "prompts", "order of the selected demonstrations: as selected (default), "
                      "reversed, or shuffled per item (retrieved + shuffled puts the nearest at a random position)",
                      choices=ORDERS)
    retrieval_pool: int = _opt(4000, "prompts", "retrieved: seeded subsample of the pool searched (default 4000)")
    seed: int = _opt(0, "prompts", "seed of the demonstration draws (default 0)")
    typos: float = _opt(0.0, "prompts", "probability in [0, 1] that each test-input word gets a typo (default 0)")
    max_tokens: int | None = _opt(None, "prompts", "refuse prompts longer than this (default: model context)")
    shorten: bool = _opt(False, "prompts", "drop whole demonstrations from over-long prompts", action="store_true")
    input_prefix: str = _opt("Input: ", "prompts", "template before x (default 'Input: ')")
    output_prefix: str = _opt(" Output: ", "prompts", "template between x and y (default ' Output: ')")
    separator: str = _opt("\n", "prompts", "between demonstrations (default newline)")
    # analysis
    n_select: int = _opt(700, "analysis", "items for head selection (default 700)")
    n_heldout: int = _opt(300, "analysis", "held-out items (default 300)")
    probe_items: int = _opt(100, "analysis", "held-out prompts whose keys/values feed the Fig. 5 probes "
                                             "(default 100; 0 = skip)")
    sim_context: str = _opt("template", "analysis", "P(o|x) for Fig. 4 from 'Input: x Output:' (template) or "
                            "from x alone (raw)", choices=SIM_CONTEXTS)
    tau: float = _opt(0.1, "analysis", "KR baselines: softmax temperature on cosine, > 0 (default 0.1)")
    singles: bool = _opt(True, "analysis", "skip the per-text passes (Figs. 4, 5, KR baselines, similarity "
                                           "with position removed)", flag="--no-singles", action="store_false")
    # model
    model: str = _opt("smollm2", "run", "'smollm2', a .gguf file or a Hugging Face checkpoint folder")
    dtype: str = _opt("float32", "run", "parameter and activation dtype", choices=DTYPES)
    batch_size: int = _opt(16, "run", "prompts per forward pass (default 16)")

    # -- derived
    @property
    def words(self) -> tuple[str, ...] | None:
        return tuple(w.strip() for w in self.label_words.split(",")) if self.label_words is not None else None

    @property
    def fmt(self) -> PromptFormat:
        return PromptFormat(self.input_prefix, self.output_prefix, self.separator)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "LLMCheckConfig":
        """Refuse out-of-range or inconsistent values (one line naming the value); returns self."""
        for f in dataclasses.fields(self):
            ch = f.metadata.get("choices")
            v = getattr(self, f.name)
            if ch and v not in ch:
                raise ConfigValueError(f"{_flag(f)} {v!r}; expected one of {', '.join(ch)}")
        _int_at_least(self, "n", 1)
        _int_at_least(self, "seed", 0)
        _int_at_least(self, "start", 0)
        _int_at_least(self, "retrieval_pool", 1)
        _int_at_least(self, "n_select", 1)
        _int_at_least(self, "n_heldout", 1)
        _int_at_least(self, "probe_items", 0)
        _int_at_least(self, "batch_size", 1)
        if self.limit is not None:
            _int_at_least(self, "limit", 2, "at least 2 evaluation items")
        if self.max_tokens is not None:
            _int_at_least(self, "max_tokens", 1)
        if not isinstance(self.typos, (int, float)) or not (0.0 <= float(self.typos) <= 1.0):
            raise ConfigValueError(f"--typos {self.typos!r}; expected a probability in [0, 1]")
        if not isinstance(self.tau, (int, float)) or not (math.isfinite(self.tau) and self.tau > 0):
            raise ConfigValueError(f"--tau {self.tau!r}; expected a finite temperature > 0")
        try:
            codecs.lookup(self.encoding)
        except (LookupError, TypeError):
            raise ConfigValueError(f"--encoding {self.encoding!r} is not a known text encoding; "
                                   "expected e.g. utf-8 or latin-1") from None
        if self.task == "custom" and not self.train_file:
            raise ConfigValueError("--task custom needs --train-file (and optionally --eval-file)")
        if self.task != "custom" and (self.train_file or self.eval_file):
            raise ConfigValueError(f"--train-file/--eval-file are for --task custom, not --task {self.task!r}")
        if self.words is not None and (len(self.words) < 2 or any(not w for w in self.words)):
            raise ConfigValueError(f"--label-words {self.label_words!r}; expected at least two non-empty "
                                   "comma-separated words")
        if self.words is not None and len(set(self.words)) != len(self.words):
            raise ConfigValueError(f"--label-words {self.label_words!r} repeats a word; expected distinct words")
        if self.selection == "retrieved" and self.retrieval_pool < self.n:
            raise ConfigValueError(f"--retrieval-pool {self.retrieval_pool} is smaller than --n {self.n}")
        if not self.output_prefix.strip():
            raise PromptError(f"--output-prefix {self.output_prefix!r}; expected visible text before the label word")
        return self


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _int_at_least(cfg, name: str, low: int, what: str | None = None) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigValueError(f"--{name.replace('_', '-')} {v!r}; expected {what or f'an integer >= {low}'}")


def _type_of(f: dataclasses.Field):
    t = str(f.type)
    return int if t.startswith("int") else float if t.startswith("float") else str


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One argparse option per :class:`LLMCheckConfig` field, grouped, defaults from the dataclass."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(LLMCheckConfig):
        m = f.metadata
        g = groups.setdefault(m["group"], parser.add_argument_group(m["group"]))
        kw = dict(dest=f.name, help=m["help"], default=f.default)
        if m.get("action"):
            kw["action"] = m["action"]
        else:
            kw["type"] = _type_of(f)
            if m.get("choices"):
                kw["choices"] = m["choices"]
        g.add_argument(_flag(f), **kw)


def config_from_args(args: argparse.Namespace) -> LLMCheckConfig:
    """The (unvalidated) config the parsed options describe."""
    return LLMCheckConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(LLMCheckConfig)})


def config_from_dict(d: dict) -> LLMCheckConfig:
    """A config read back from a run folder's config.json (unknown keys refused)."""
    names = {f.name for f in dataclasses.fields(LLMCheckConfig)}
    extra = sorted(set(d) - names)
    if extra:
        raise ConfigValueError(f"config.json has unknown keys {extra}; expected an llm-check config")
    return LLMCheckConfig(**d)
