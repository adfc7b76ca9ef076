"""The llm-check pipeline as a library call: ``run_llm_check(config, run_dir)``.

Order of work: validate the config, load the data, the model and its tokenizer, check
the label words and build every prompt — all before anything is written. Only then is the run
folder opened (:class:`icl_kernel.runfolder.RunFolder`: marker, lock, config.json; a folder with
another config is refused, or cleared with ``overwrite``), and the passes run, resuming from intact
chunks. Every number, table and figure is then computed from the folder by
:func:`llm_check.realdata.report.compute`.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from icl_kernel.runfolder import RunFolder, RunFolderError, open_existing
from llm_check.realdata import analysis as A
from llm_check.realdata import icl
from llm_check.realdata import report
from llm_check.realdata import prompts as P
from llm_check.realdata.config import LLMCheckConfig
from llm_check.realdata.data import TaskData, load_custom, load_task
from llm_check.realdata.data_errors import DataError, PromptError
from llm_check.loading import load_model
from llm_check.realdata.sentence_encoder import encode, load_minilm

COMMAND = "llm-check"


class Prepared(NamedTuple):
    """Everything validated and built before the run folder is touched (prompt axis first)."""

    task: TaskData
    lm: object                      # loading.LoadedModel
    label_ids: list[int]
    label_warnings: list[str]
    prompts: list[P.Prompt]         # [N]
    gold: np.ndarray                # [N]
    sources: list[str]              # [N] file:line
    texts: list[str]                # [N] test inputs (typos applied)
    demo_similarity: np.ndarray | None   # [N, n] retrieved runs only
    max_tokens: int
    prompt_build_s: float


def load_task_data(cfg: LLMCheckConfig) -> TaskData:
    if cfg.task == "custom":
        task = load_custom(cfg.train_file, cfg.eval_file, cfg.words, cfg.text_column, cfg.label_column, cfg.encoding)
    else:
        task = load_task(cfg.task, cfg.data_dir, cfg.words)
    if cfg.n > len(task.pool):
        raise PromptError(f"--n {cfg.n} demonstrations but the pool of {task.name!r} has only {len(task.pool)}")
    return task


def check_writable(run_dir: Path | str) -> None:
    """Refuse early (before any work) a run folder that cannot be created or written."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path} exists and is not a folder; pick another --name or --runs-dir")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise RunFolderError(f"cannot create {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunFolderError(f"cannot write {path}: {probe} is not writable")


def prepare(cfg: LLMCheckConfig, log: Callable[[str], None] = lambda s: None) -> Prepared:
    """Validate ``cfg``, load data and model, build every prompt. Writes nothing."""
    cfg.validate()
    task = load_task_data(cfg)
    texts, _, _ = icl.test_texts(task, cfg)          # refuses --start beyond the items before the model loads
    lm = load_model(cfg.model, dtype=cfg.dtype)
    log(f"loaded {cfg.model} in {lm.load_seconds:.1f} s")
    if lm.tokenizer is None:
        raise DataError(f"model {cfg.model!r} has no tokenizer; expected one in the checkpoint")
    label_ids, warnings = P.label_token_ids(lm.tokenizer, task.label_words, cfg.multi_token_labels)
    for w in warnings:
        log(f"warning: {w}")
    ctx = lm.config.max_position_embeddings
    if cfg.max_tokens is not None and cfg.max_tokens > ctx:
        raise PromptError(f"--max-tokens {cfg.max_tokens}; expected at most the model context {ctx}")
    max_tokens = cfg.max_tokens or ctx
    t = time.perf_counter()
    prompts, gold, sources, dsim = icl.build_all(task, lm.tokenizer, cfg, max_tokens)
    dropped = sum(p.n_dropped > 0 for p in prompts)
    if dropped:
        log(f"--shorten: {dropped} prompts lost demonstrations to fit {max_tokens} tokens")
    return Prepared(task, lm, label_ids, warnings, prompts, gold, sources, texts, dsim, max_tokens,
                    time.perf_counter() - t)


def run_llm_check(cfg: LLMCheckConfig, run_dir: Path | str, *, overwrite: bool = False, quiet: bool = True,
                  log: Callable[[str], None] = lambda s: None) -> dict:
    """Run (or resume) an llm-check into ``run_dir`` and return its results (``results.json``)."""
    t0 = time.perf_counter()
    cfg.validate()
    check_writable(run_dir)
    prep = prepare(cfg, log)
    with RunFolder.create(run_dir, command=COMMAND, config=cfg.to_dict(), overwrite=overwrite, log=log) as rf:
        _run_passes(cfg, prep, rf, quiet, t0)
        return report.compute(rf)


def _run_passes(cfg: LLMCheckConfig, prep: Prepared, rf: RunFolder, quiet: bool, t0: float) -> None:
    task, lm, prompts = prep.task, prep.lm, prep.prompts
    recs = [icl.prompt_record(i, p, g, s, None if prep.demo_similarity is None else prep.demo_similarity[i])
            for i, (p, g, s) in enumerate(zip(prompts, prep.gold, prep.sources))]
    rf.write_text("prompts.jsonl", "".join(report.json_line(r) for r in recs))
    # Timings of earlier invocations of this run (a resumed run keeps them: the CPU time of a run
    # is the sum over every invocation that computed part of it).
    history = list(rf.read_json("run_info.json").get("timing_history", [])) if rf.is_done("run_info.json") else []
    info = {"task": task.name, "label_words": list(task.label_words), "label_names": list(task.label_names),
            "label_ids": prep.label_ids, "label_warnings": prep.label_warnings, "split_note": task.split_note,
            "probe_offsets": list(icl.PROBE_OFFSETS), "max_tokens": prep.max_tokens,
            "mean_prompt_tokens": float(np.mean([len(p.ids) for p in prompts])), "timing_history": history}
    rf.write_json("run_info.json", info)

    sel, held = A.selection_split(len(prompts), cfg.n_select, cfg.n_heldout)
    held_full = [int(i) for i in held if prompts[i].n_dropped == 0 and len(prompts[i].x_spans) == cfg.n]
    probe_set = held_full[: cfg.probe_items] if (cfg.probe_items and cfg.singles) else []
    t_icl = time.perf_counter()
    feats, timings, plan = icl.icl_pass(lm, prompts, prep.label_ids, cfg, rf, probe_set, quiet=quiet)
    info["icl_batching"] = plan.info()  # length buckets: batches, compiled shapes, padding fraction
    t_icl = time.perf_counter() - t_icl
    ran = sum(n for n, _ in timings)

    t_single = 0.0
    if cfg.singles and held_full and not rf.is_done("singles.npz"):
        t_single = time.perf_counter()
        rf.savez("singles.npz", **singles_arrays(lm, task, prompts, prep.texts, held_full, cfg, quiet))
        t_single = time.perf_counter() - t_single
    if probe_set and feats and not rf.is_done("probes.json"):
        z = rf.load_npz("singles.npz")
        top_demo = dict(zip(z["items"].tolist(), z["top_demo"]))
        rf.write_json("probes.json", icl.fit_probes(feats, prompts, top_demo))

    info["timings"] = {"model_load_s": lm.load_seconds, "prompt_build_s": prep.prompt_build_s, "icl_pass_s": t_icl,
                       "points_run_now": ran, "forward_s": sum(t for _, t in timings),
                       "points_per_s": (ran / t_icl) if ran else None, "singles_s": t_single,
                       "total_s": time.perf_counter() - t0}
    info["timing_history"] = history + [info["timings"]]
    rf.write_json("run_info.json", info)


def singles_arrays(lm, task: TaskData, prompts, texts, items: list[int], cfg: LLMCheckConfig, quiet: bool) -> dict:
    """Each distinct test input and demonstration of ``items`` run alone (Fig. 4, KR baselines,
    similarity with position removed). Arrays have the item axis first: ``[Nh, ...]``."""
    uniq: dict[str, int] = {}
    for i in items:
        uniq.setdefault(texts[i], len(uniq))
        for j in prompts[i].demo_indices:
            uniq.setdefault(task.pool[j].text, len(uniq))
    ulist = list(uniq)
    probs, top, hid, layers = icl.singles_pass(lm, ulist, cfg, quiet=quiet)
    emb = encode(load_minilm(), ulist)
    ti = np.array([uniq[texts[i]] for i in items])
    di = np.array([[uniq[task.pool[j].text] for j in prompts[i].demo_indices] for i in items])
    unit = layers / np.maximum(np.linalg.norm(layers, axis=-1, keepdims=True), 1e-12)   # [U, L, D]
    layer_cos = np.einsum("nld,nild->nli", unit[ti], unit[di])                          # [Nh, L, n]
    return dict(items=np.array(items), sim=A.prediction_similarity(probs[ti], probs[di]), top_test=top[ti],
                top_demo=top[di], minilm_test=emb[ti], minilm_demo=emb[di], lmh_test=hid[ti], lmh_demo=hid[di],
                lm_layer_cos=layer_cos.astype(np.float32))


def analyze_run(run_dir: Path | str) -> dict:
    """Recompute numbers, figures and the report of an existing llm-check run folder (no model)."""
    with open_existing(run_dir, COMMAND, write=True) as rf:
        return report.compute(rf)
