"""`icl-kernel llm-check`: attention as kernel weights on a real LM and real ICL data (Han et al. §5).

Example::

    icl-kernel llm-check --task sst2 --n 8 --name sst2-n8
    icl-kernel llm-check --task custom --train-file my.csv --eval-file dev.jsonl --label-words Bad,Good
    icl-kernel llm-check --name sst2-n8 --analyze-only      # rebuild figures and report from the run folder
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time


class RunFolderError(ValueError):
    """The run folder exists with other options."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--task", default="sst2",
                   help="sst2, rotten_tomatoes, tweet_eval_{hate,irony,offensive,emotion}, mnli, subj, cr, trec, "
                        "ag_news, or custom (default sst2)")
    g.add_argument("--data-dir", default="../shared/data", help="folder with sst2/, mnli/, … (default ../shared/data)")
    g.add_argument("--train-file", help="custom task: demonstration pool (.csv, .tsv with header, or .jsonl)")
    g.add_argument("--eval-file", help="custom task: evaluation file (default: a seeded split of --train-file)")
    g.add_argument("--text-column", default="text")
    g.add_argument("--label-column", default="label")
    g.add_argument("--encoding", default="utf-8", help="custom files' encoding (e.g. latin-1)")
    g.add_argument("--label-words", help="comma-separated label words in label order (default: the task's)")
    g.add_argument("--multi-token-labels", choices=("first", "error"), default="first",
                   help="a label word of several tokens: use its first token for ŷ (warns) or refuse")
    g.add_argument("--limit", type=int, help="use only the first LIMIT evaluation items (in --eval-order)")
    g.add_argument("--eval-order", choices=("shuffled", "file"), default="shuffled",
                   help="visit the evaluation split in a fixed seeded permutation (default; some files are "
                        "sorted by class) or in file order")
    g = p.add_argument_group("prompts")
    g.add_argument("--n", type=int, default=8, help="demonstrations per prompt (default 8)")
    g.add_argument("--selection", choices=("random", "balanced", "retrieved"), default="random",
                   help="random (the paper), class-balanced, or retrieved by MiniLM cosine similarity")
    g.add_argument("--retrieval-pool", type=int, default=4000,
                   help="retrieved: seeded subsample of the pool searched (default 4000)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--typos", type=float, default=0.0,
                   help="probability that each test-input word gets a typo (test inputs only; default 0)")
    g.add_argument("--max-tokens", type=int, help="refuse prompts longer than this (default: model context)")
    g.add_argument("--shorten", action="store_true", help="drop whole demonstrations from over-long prompts")
    g.add_argument("--input-prefix", default="Input: ")
    g.add_argument("--output-prefix", default=" Output: ")
    g.add_argument("--separator", default="\n", help="between demonstrations (default newline)")
    g = p.add_argument_group("analysis")
    g.add_argument("--n-select", type=int, default=700, help="items for head selection (default 700)")
    g.add_argument("--n-heldout", type=int, default=300, help="held-out items (default 300)")
    g.add_argument("--probe-items", type=int, default=100,
                   help="held-out prompts whose keys/values feed the Fig. 5 probes (default 100; 0 = skip)")
    g.add_argument("--sim-context", choices=("template", "raw"), default="template",
                   help="P(o|x) for Fig. 4 from 'Input: x Output:' (template) or from x alone (raw)")
    g.add_argument("--tau", type=float, default=0.1, help="KR baselines: softmax temperature on cosine (default 0.1)")
    g.add_argument("--no-singles", action="store_true", help="skip the per-text passes (Figs. 4, 5, KR baselines)")
    g = p.add_argument_group("run")
    g.add_argument("--model", default="smollm2")
    g.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--name", help="run folder name under --runs-dir (default <task>-n<n>)")
    g.add_argument("--runs-dir", default="runs")
    g.add_argument("--overwrite", action="store_true", help="delete an existing run folder first")
    g.add_argument("--analyze-only", action="store_true", help="rebuild numbers, figures and report from the folder")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--summarize", help="comma-separated run names: write a cross-run table and bar figure "
                                       "(with --summary-dir, default the runs dir) instead of running")
    g.add_argument("--summary-dir", help="where --summarize writes <prefix>-summary.md/png")
    g.add_argument("--summary-prefix", default="llm")
    g.add_argument("--summary-title", help="title of the --summarize bar figure")
    g.add_argument("--fixed-head", help="with --summarize: also score every run at this head, 'LAYER,HEAD' (0-based)")


def _options(args) -> dict:
    keys = ["task", "train_file", "eval_file", "text_column", "label_column", "encoding", "label_words",
            "multi_token_labels", "limit", "n", "selection", "retrieval_pool", "seed", "typos", "max_tokens",
            "shorten", "input_prefix", "output_prefix", "separator", "n_select", "n_heldout", "probe_items",
            "sim_context", "tau", "model", "dtype", "eval_order"]
    return {k: getattr(args, k) for k in keys}


def run(args) -> int:
    from llm_check import report

    if args.summarize:
        fixed = None
        if args.fixed_head:
            try:
                fixed = tuple(int(v) for v in args.fixed_head.split(","))
                assert len(fixed) == 2
            except (ValueError, AssertionError):
                raise RunFolderError(f"--fixed-head {args.fixed_head!r}; expected 'LAYER,HEAD'") from None
        dirs = [os.path.join(args.runs_dir, n.strip()) for n in args.summarize.split(",")]
        for d in dirs:
            if not os.path.exists(os.path.join(d, "results.json")):
                raise RunFolderError(f"{d} has no results.json; expected a finished llm-check run")
        print(report.summarize(dirs, args.summary_dir or args.runs_dir, fixed, args.summary_prefix,
                                **({"title": args.summary_title} if args.summary_title else {})))
        return 0
    name = args.name or f"{args.task}-n{args.n}"
    run_dir = os.path.join(args.runs_dir, name)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    if args.analyze_only:
        if not os.path.exists(os.path.join(run_dir, "config.json")):
            raise RunFolderError(f"{run_dir} has no config.json; expected a finished llm-check run folder")
        res = report.compute(run_dir)
        print(_summary(res, run_dir))
        return 0
    if args.overwrite and os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    opts = _options(args)
    cpath = os.path.join(run_dir, "config.json")
    if os.path.exists(cpath):
        old = json.load(open(cpath)).get("options", {})
        diff = [k for k in opts if old.get(k) != opts[k]]
        if diff:
            raise RunFolderError(f"{run_dir} was made with other options ({', '.join(diff)}); use --overwrite or another --name")
    os.makedirs(run_dir, exist_ok=True)

    import numpy as np

    from llm_check import analysis as A
    from llm_check import data, icl
    from llm_check import prompts as P

    words = tuple(w.strip() for w in args.label_words.split(",")) if args.label_words else None
    if args.task == "custom":
        if not args.train_file:
            raise data.DataError("--task custom needs --train-file (and optionally --eval-file)")
        task = data.load_custom(args.train_file, args.eval_file, words, args.text_column, args.label_column,
                                args.encoding)
    else:
        task = data.load_task(args.task, args.data_dir, words)
    if args.n < 0:
        raise P.PromptError(f"--n {args.n}; expected n >= 0")
    if args.n > len(task.pool):
        raise P.PromptError(f"--n {args.n} demonstrations but the pool of {task.name!r} has only {len(task.pool)}")
    if args.limit is not None and args.limit < 2:
        raise data.EmptySplitError(f"--limit {args.limit}; expected at least 2 evaluation items")

    from llm_check.models import load_model

    t0 = time.perf_counter()
    lm = load_model(args.model, dtype=args.dtype)
    log(f"loaded {args.model} in {lm.load_seconds:.1f} s")
    if lm.tokenizer is None:
        raise data.DataError(f"model {args.model!r} has no tokenizer; expected one in the checkpoint")
    label_ids, warnings = P.label_token_ids(lm.tokenizer, task.label_words, args.multi_token_labels)
    for w in warnings:
        log(f"warning: {w}")
    cfg = icl.RunConfig(task=task.name, n=args.n, seed=args.seed, selection=args.selection,
                        retrieval_pool=args.retrieval_pool, limit=args.limit, batch_size=args.batch_size,
                        max_tokens=args.max_tokens, shorten=args.shorten, typos=args.typos,
                        multi_token_labels=args.multi_token_labels, sim_context=args.sim_context,
                        probe_items=args.probe_items, n_select=args.n_select, n_heldout=args.n_heldout,
                        tau=args.tau, model=args.model, dtype=args.dtype, input_prefix=args.input_prefix,
                        output_prefix=args.output_prefix, separator=args.separator, label_words=task.label_words,
                        eval_order=args.eval_order)
    max_tokens = args.max_tokens or lm.config.max_position_embeddings
    t_build = time.perf_counter()
    prompts, gold, sources = icl.build_all(task, lm.tokenizer, cfg, max_tokens)
    texts, _, _ = icl.test_texts(task, cfg)
    t_build = time.perf_counter() - t_build
    dropped = sum(p.n_dropped > 0 for p in prompts)
    if dropped:
        log(f"--shorten: {dropped} prompts lost demonstrations to fit {max_tokens} tokens")
    recs = [icl.prompt_record(i, p, g, s) for i, (p, g, s) in enumerate(zip(prompts, gold, sources))]
    icl.write_atomic(os.path.join(run_dir, "prompts.jsonl"),
                     "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode("utf-8"))
    conf = {"options": opts, "task": task.name, "model": args.model, "n": args.n, "seed": args.seed,
            "selection": args.selection, "typos": args.typos, "label_words": list(task.label_words),
            "label_names": list(task.label_names), "label_ids": label_ids, "label_warnings": warnings,
            "split_note": task.split_note, "eval_order": args.eval_order,
            "n_select": args.n_select, "n_heldout": args.n_heldout,
            "tau": args.tau, "probe_offsets": list(icl.PROBE_OFFSETS), "sim_context": args.sim_context,
            "max_tokens": max_tokens, "mean_prompt_tokens": float(np.mean([len(p.ids) for p in prompts]))}
    icl.write_json(cpath, conf)

    sel, held = A.selection_split(len(prompts), args.n_select, args.n_heldout)
    held_full = [int(i) for i in held if prompts[i].n_dropped == 0 and len(prompts[i].x_spans) == args.n]
    probe_set = held_full[: args.probe_items] if (args.probe_items and not args.no_singles and args.n > 0) else []
    ppath = os.path.join(run_dir, "probes.json")
    t_icl = time.perf_counter()
    feats, timings = icl.icl_pass(lm, prompts, label_ids, cfg, run_dir, probe_set, quiet=args.quiet)
    t_icl = time.perf_counter() - t_icl
    ran = sum(n for n, _ in timings)
    fwd = sum(t for _, t in timings)

    t_single = 0.0
    spath = os.path.join(run_dir, "singles.npz")
    if not args.no_singles and args.n > 0 and held_full and not os.path.exists(spath):
        t_single = time.perf_counter()
        uniq = {}
        for i in held_full:
            uniq.setdefault(texts[i], len(uniq))
            for j in prompts[i].demo_indices:
                uniq.setdefault(task.pool[j].text, len(uniq))
        ulist = list(uniq)
        probs, top, hid = icl.singles_pass(lm, ulist, cfg, quiet=args.quiet)
        from llm_check.sentence_encoder import encode, load_minilm
        emb = encode(load_minilm(), ulist)
        ti = np.array([uniq[texts[i]] for i in held_full])
        di = np.array([[uniq[task.pool[j].text] for j in prompts[i].demo_indices] for i in held_full])
        sim = A.prediction_similarity(probs[ti], probs[di])
        icl.write_npz(spath, items=np.array(held_full), sim=sim, top_test=top[ti], top_demo=top[di],
                      minilm_test=emb[ti], minilm_demo=emb[di], lmh_test=hid[ti], lmh_demo=hid[di])
        del probs
        t_single = time.perf_counter() - t_single
    if probe_set and feats and not os.path.exists(ppath):
        with np.load(spath) as z:
            td = dict(zip(z["items"].tolist(), z["top_demo"]))
        icl.write_json(ppath, icl.fit_probes(feats, prompts, td))

    conf["timings"] = {"model_load_s": lm.load_seconds, "prompt_build_s": t_build, "icl_pass_s": t_icl,
                       "points_run_now": ran, "forward_s": fwd,
                       "points_per_s": (ran / t_icl) if ran else None, "singles_s": t_single,
                       "total_s": time.perf_counter() - t0}
    icl.write_json(cpath, conf)
    res = report.compute(run_dir)
    print(_summary(res, run_dir))
    return 0


def _summary(res: dict, run_dir: str) -> str:
    ch = res["chosen_head"]
    s = (f"{res['task']}: ICL acc {res['icl_accuracy_all']:.3f} (all {res['n_items']}), held-out {res['icl_accuracy_heldout']:.3f}; "
         f"head L{ch['layer']} H{ch['head']}: agreement {res['reconstruction_agreement_heldout']:.3f}, "
         f"reconstructed acc {res['reconstructed_accuracy_heldout']:.3f}")
    if "kr_minilm_accuracy" in res:
        s += f"; KR MiniLM {res['kr_minilm_accuracy']:.3f}, KR LM-hidden {res['kr_lm_hidden_accuracy']:.3f}"
    return s + f"\nreport: {os.path.join(run_dir, 'report.md')}"
