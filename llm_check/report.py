"""Everything after the forward passes: numbers, figures, tables and the Markdown report.

All of it is recomputed from the run folder (``prompts.jsonl``, ``chunks/``, ``singles.npz``,
``probes.json``), so the report can be rebuilt without the model (``llm-check --analyze-only``).
"""
from __future__ import annotations

import json
import os

import numpy as np

from llm_check import analysis as A
from llm_check.icl import load_chunks, prompt_from_record, write_atomic, write_json

# (name, weight mode, span, drop sink). The first is the paper's.
VARIANTS = [
    ("max over [x_i, y_i] (paper)", "max", "xy", False),
    ("attention at y_i", "at_y", "xy", False),
    ("sum over [x_i, y_i]", "sum", "xy", False),
    ("mean over [x_i, y_i]", "mean", "xy", False),
    ("max over demo block", "max", "block", False),
    ("sum over demo block", "sum", "block", False),
    ("sum over demo block, no sink", "sum", "block", True),
]

# Han et al. Table 2, GPT-J-6B (read exactly from the paper digest).
PAPER_TABLE2 = {
    "sst2": (0.805, 0.797, 0.750, 0.503),
    "mnli": (0.383, 0.597, 0.360, 0.321),
    "rotten_tomatoes": (0.671, 0.683, 0.527, 0.478),
    "tweet_eval_hate": (0.539, 0.713, 0.587, 0.548),
    "tweet_eval_irony": (0.519, 0.722, 0.522, 0.491),
    "tweet_eval_offensive": (0.542, 0.753, 0.513, 0.588),
}


def load_run(run_dir: str):
    cfg = json.load(open(os.path.join(run_dir, "config.json")))
    recs = [json.loads(s) for s in open(os.path.join(run_dir, "prompts.jsonl"), encoding="utf-8") if s.strip()]
    prompts = [prompt_from_record(r) for r in recs]
    gold = np.array([r["gold"] for r in recs])
    rows, logits, top = load_chunks(run_dir, len(prompts))
    return cfg, prompts, gold, rows, logits, top


def compute(run_dir: str) -> dict:
    """All numbers of the run; also writes the per-head CSVs, figures, tables and report."""
    cfg, prompts, gold, rows, logits, top = load_run(run_dir)
    C = len(cfg["label_words"])
    N = len(prompts)
    yhat = logits.argmax(1)
    in_label_space = np.isin(top, cfg["label_ids"])
    sel, held = A.selection_split(N, cfg["n_select"], cfg["n_heldout"])
    L, H = rows[0].shape[:2]

    recon = {}
    weights_paper = []
    for name, mode, span, sink in VARIANTS:
        rc = np.zeros((N, L, H), np.int64)
        for i, p in enumerate(prompts):
            w = A.kernel_weights(rows[i], p.x_spans, p.y_spans, p.block_spans, mode, span, sink)
            if mode == "max" and span == "xy" and not sink:
                weights_paper.append(w)
            rc[i] = A.reconstruct(w, p.demo_labels, C)
        recon[name] = rc
    paper = VARIANTS[0][0]
    agree_all = A.head_accuracy(recon[paper], yhat)
    acc_all = A.head_accuracy(recon[paper], gold)
    agree_sel = A.head_accuracy(recon[paper][sel], yhat[sel])
    choice = A.select_head(agree_sel)
    rc_h = recon[paper][held][:, choice.layer, choice.head]
    vote = np.array([np.argmax(np.bincount(p.demo_labels, minlength=C)) if len(p.demo_labels) else 0 for p in prompts])

    res = {
        "task": cfg["task"], "n": cfg["n"], "n_items": N, "n_select": len(sel), "n_heldout": len(held),
        "label_words": cfg["label_words"], "selection": cfg["selection"], "typos": cfg["typos"],
        "icl_accuracy_all": float(np.mean(yhat == gold)),
        "icl_accuracy_heldout": float(np.mean(yhat[held] == gold[held])),
        "icl_accuracy_heldout_ci": A.bootstrap_ci(yhat[held] == gold[held]),
        "top_token_in_label_space": float(np.mean(in_label_space)),
        "prediction_counts": np.bincount(yhat, minlength=C).tolist(),
        "chosen_head": {"layer": choice.layer, "head": choice.head, "select_agreement": choice.select_agreement},
        "reconstruction_agreement_heldout": float(np.mean(rc_h == yhat[held])),
        "reconstruction_agreement_heldout_ci": A.bootstrap_ci(rc_h == yhat[held]),
        "reconstructed_accuracy_heldout": float(np.mean(rc_h == gold[held])),
        "best_head_agreement_all": float(agree_all.max()),
        "best_head_agreement_all_at": [int(v) for v in np.unravel_index(np.argmax(agree_all), agree_all.shape)],
        "best_head_accuracy_all": float(acc_all.max()),
        "best_head_accuracy_all_at": [int(v) for v in np.unravel_index(np.argmax(acc_all), acc_all.shape)],
        "majority_vote_accuracy_heldout": float(np.mean(vote[held] == gold[held])),
        "majority_vote_agreement_heldout": float(np.mean(vote[held] == yhat[held])),
        # Agreement a constant predictor reaches: the share of ŷ's most frequent class.
        "constant_agreement_heldout": float(np.bincount(yhat[held], minlength=C).max() / max(1, len(held))),
        "timings": cfg.get("timings", {}),
    }
    variants = []
    for name, *_ in VARIANTS:
        ag_sel = A.head_accuracy(recon[name][sel], yhat[sel])
        ch = A.select_head(ag_sel)
        r = recon[name][held][:, ch.layer, ch.head]
        variants.append({"variant": name, "layer": ch.layer, "head": ch.head,
                         "agreement_heldout": float(np.mean(r == yhat[held])),
                         "accuracy_heldout": float(np.mean(r == gold[held])),
                         "best_agreement_all": float(A.head_accuracy(recon[name], yhat).max())})
    res["variants"] = variants

    sdir = os.path.join(run_dir, "singles.npz")
    corr = None
    if os.path.exists(sdir):
        with np.load(sdir) as z:
            s = {k: z[k] for k in z.files}
        items = s["items"]
        wp = np.stack([weights_paper[i] for i in items])  # [Nh, L, H, n]
        corr = A.pearson_per_head(wp, s["sim"])
        res["sim_corr_max"] = float(np.nanmax(corr))
        res["sim_corr_max_at"] = [int(v) for v in np.unravel_index(np.nanargmax(corr), corr.shape)]
        res["sim_corr_at_chosen_head"] = float(corr[choice.layer, choice.head])
        dl = np.stack([prompts[i].demo_labels for i in items])
        g = gold[items]
        kr_m = A.kernel_regression(s["minilm_test"], s["minilm_demo"], dl, C, cfg["tau"])
        kr_h = A.kernel_regression(s["lmh_test"], s["lmh_demo"], dl, C, cfg["tau"])
        res["kr_minilm_accuracy"] = float(np.mean(kr_m == g))
        res["kr_lm_hidden_accuracy"] = float(np.mean(kr_h == g))
        res["kr_items"] = int(len(items))
        np.savetxt(os.path.join(run_dir, "fig4_sim_corr.csv"), corr, delimiter=",", fmt="%.5f")
    probes = None
    ppath = os.path.join(run_dir, "probes.json")
    if os.path.exists(ppath):
        probes = json.load(open(ppath))
        res["probe_best"] = {k: {"accuracy": float(np.max(v)), "offset": cfg["probe_offsets"][
            int(np.unravel_index(np.argmax(v), np.shape(v))[2])]} for k, v in probes["accuracy"].items()}
    np.savetxt(os.path.join(run_dir, "fig3_agreement.csv"), agree_all, delimiter=",", fmt="%.5f")
    np.savetxt(os.path.join(run_dir, "fig3_accuracy.csv"), acc_all, delimiter=",", fmt="%.5f")

    # Fig. 2 data: aligned map averaged over items whose layout has the modal length.
    maps, codes_list = [], []
    for i, p in enumerate(prompts):
        m, c = A.aligned_map(rows[i], p.x_spans, p.y_spans, p.test_span, p.query_pos, 30)
        maps.append(m.mean(1))  # average over heads -> [L, T]
        codes_list.append(c)
    lens = np.array([m.shape[-1] for m in maps])
    modal = int(np.bincount(lens).argmax())
    keep = [i for i in range(N) if lens[i] == modal]
    avg = np.mean([maps[i] for i in keep], axis=0)
    codes = codes_list[keep[0]]
    res["fig2_items"] = len(keep)
    np.save(os.path.join(run_dir, "fig2_map.npy"), avg)

    from llm_check import figures
    title = f"{cfg['model']} on {cfg['task']}, n={cfg['n']}"
    figures.fig2(os.path.join(run_dir, "fig2_attention_map.png"), avg, codes, title + f" ({len(keep)} prompts)")
    figures.fig3(os.path.join(run_dir, "fig3_reconstruction.png"), agree_all, acc_all, title + f" ({N} prompts)",
                 (choice.layer, choice.head))
    if corr is not None:
        figures.fig4(os.path.join(run_dir, "fig4_similarity.png"), corr, title + f" ({res['kr_items']} prompts)")
    if probes is not None:
        figures.fig5(os.path.join(run_dir, "fig5_probes.png"), probes, cfg["probe_offsets"],
                     title + f" ({probes['n_items']} prompts)")
    write_json(os.path.join(run_dir, "results.json"), res)
    write_atomic(os.path.join(run_dir, "report.md"), markdown(res, cfg).encode())
    return res


def table2_rows(res: dict) -> list[tuple[str, str]]:
    f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    ch = res["chosen_head"]
    return [
        ("ICL accuracy (held out)", f(res["icl_accuracy_heldout"])),
        ("ICL output reconstruction (agreement ỹ vs ŷ, held out)", f(res["reconstruction_agreement_heldout"])),
        ("Reconstructed performance (ỹ vs gold, held out)", f(res["reconstructed_accuracy_heldout"])),
        ("all-MiniLM-L6-v2 KR", f(res.get("kr_minilm_accuracy"))),
        ("LM mean-pooled hidden KR", f(res.get("kr_lm_hidden_accuracy"))),
        ("majority label of the demonstrations", f(res["majority_vote_accuracy_heldout"])),
        ("agreement of majority-of-demos with ŷ", f(res["majority_vote_agreement_heldout"])),
        ("agreement of a constant (ŷ's most frequent class) with ŷ", f(res.get("constant_agreement_heldout"))),
        ("chosen head (layer, head), 0-based", f"L{ch['layer']} H{ch['head']}"),
    ]


def markdown(res: dict, cfg: dict) -> str:
    lines = [f"# llm-check: {cfg['model']} on {cfg['task']}", "",
             f"{res['n_items']} test points, n = {cfg['n']} demonstrations ({cfg['selection']}), seed {cfg['seed']}, "
             f"label words {cfg['label_words']}, typo rate {cfg['typos']}. Split: {cfg.get('split_note', '')}.",
             f"Head chosen on {res['n_select']} items by agreement ỹ vs ŷ; numbers below on the other "
             f"{res['n_heldout']} (held out).", ""]
    if cfg.get("label_warnings"):
        lines += ["Label words: " + "; ".join(cfg["label_warnings"]), ""]
    lines += ["## Table 2 analogue", "", "| quantity | ours | paper (GPT-J-6B) |", "|---|---|---|"]
    pp = PAPER_TABLE2.get(cfg["task"])
    paper_vals = (list(pp) if pp else [None] * 4) + [None] * 5
    for (k, v), pv in zip(table2_rows(res), paper_vals):
        lines.append(f"| {k} | {v} | {'—' if pv is None else f'{pv:.3f}'} |")
    lo, hi = res["icl_accuracy_heldout_ci"]
    lines += ["", f"ICL accuracy on all {res['n_items']} items: {res['icl_accuracy_all']:.3f}; held-out 95% bootstrap "
              f"interval [{lo:.3f}, {hi:.3f}]. Top next token inside the label words: "
              f"{res['top_token_in_label_space']:.3f}. Predictions per class: {res['prediction_counts']}.",
              f"Best single head on all items: agreement {res['best_head_agreement_all']:.3f} at "
              f"L{res['best_head_agreement_all_at'][0]} H{res['best_head_agreement_all_at'][1]}, accuracy "
              f"{res['best_head_accuracy_all']:.3f} at L{res['best_head_accuracy_all_at'][0]} "
              f"H{res['best_head_accuracy_all_at'][1]} (chosen on the same items: optimistic).", ""]
    lines += ["## Kernel-weight variants (head chosen on the selection items, scored held out)", "",
              "| variant | head | agreement | accuracy | best agreement, all items |", "|---|---|---|---|---|"]
    for v in res["variants"]:
        lines.append(f"| {v['variant']} | L{v['layer']} H{v['head']} | {v['agreement_heldout']:.3f} | "
                     f"{v['accuracy_heldout']:.3f} | {v['best_agreement_all']:.3f} |")
    if "sim_corr_max" in res:
        lines += ["", f"## Fig. 4: attention vs prediction similarity ({res['kr_items']} held-out prompts)", "",
                  f"Largest per-head Pearson r = {res['sim_corr_max']:.3f} at L{res['sim_corr_max_at'][0]} "
                  f"H{res['sim_corr_max_at'][1]}; at the chosen head r = {res['sim_corr_at_chosen_head']:.3f}."]
    if "probe_best" in res:
        lines += ["", "## Fig. 5: ridge probes (λ = 0.01)", ""]
        for k, v in res["probe_best"].items():
            lines.append(f"- {k}: best accuracy {v['accuracy']:.3f} at offset {v['offset']:+d}")
    if res.get("timings"):
        t = res["timings"]
        lines += ["", "## Timing", "", ", ".join(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}"
                                               for k, v in t.items())]
    lines += ["", "Figures: fig2_attention_map.png, fig3_reconstruction.png, fig4_similarity.png, fig5_probes.png.", ""]
    return "\n".join(lines)


def fixed_head_scores(run_dir: str, layer: int, head: int) -> dict:
    """Agreement and accuracy of the paper's reconstruction at one given head over all items of a run."""
    cfg, prompts, gold, rows, logits, top = load_run(run_dir)
    C = len(cfg["label_words"])
    yhat = logits.argmax(1)
    rc = np.array([A.reconstruct(A.kernel_weights(rows[i][layer, head][None, None], p.x_spans, p.y_spans,
                                                  p.block_spans, "max", "xy"), p.demo_labels, C)[0, 0]
                   for i, p in enumerate(prompts)])
    return {"agreement": float(np.mean(rc == yhat)), "accuracy": float(np.mean(rc == gold)),
            "icl_accuracy": float(np.mean(yhat == gold)), "n_items": len(prompts)}


def summarize(run_dirs: list[str], out_dir: str, fixed_head: tuple[int, int] | None = None,
              prefix: str = "llm", title: str = "Table 2 analogue: SmolLM2-135M-Instruct (held out) vs the paper's GPT-J-6B"
              ) -> str:
    """Cross-run Markdown tables (ours beside the paper's GPT-J-6B Table 2) and two bar figures.

    ``fixed_head`` (layer, head): also score every run's reconstruction at that one head (used for
    the phenomena runs, whose few items make a per-run head choice noisy)."""
    from llm_check import figures

    os.makedirs(out_dir, exist_ok=True)
    res = []
    for d in run_dirs:
        path = os.path.join(d, "results.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} missing; expected a finished llm-check run")
        r = json.load(open(path))
        r["_dir"] = os.path.basename(os.path.normpath(d))
        if fixed_head is not None:
            r["_fixed"] = fixed_head_scores(d, *fixed_head)
        res.append(r)
    f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["| run | task | items (select / held out) | ICL acc | agreement ỹ vs ŷ | reconstructed acc | "
             "MiniLM KR | LM-hidden KR | majority-of-demos acc | majority-of-demos agreement | constant agreement | head |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res:
        pp = PAPER_TABLE2.get(r["task"])
        ch = r["chosen_head"]
        lines.append(f"| {r['_dir']} | {r['task']} | {r['n_select']} / {r['n_heldout']} | {f(r['icl_accuracy_heldout'])} | "
                     f"{f(r['reconstruction_agreement_heldout'])} | {f(r['reconstructed_accuracy_heldout'])} | "
                     f"{f(r.get('kr_minilm_accuracy'))} | {f(r.get('kr_lm_hidden_accuracy'))} | "
                     f"{f(r['majority_vote_accuracy_heldout'])} | {f(r['majority_vote_agreement_heldout'])} | "
                     f"{f(r.get('constant_agreement_heldout'))} | L{ch['layer']} H{ch['head']} |")
        if pp:
            lines.append(f"| paper GPT-J-6B | {r['task']} | 700 / 300 | {f(pp[0])} | {f(pp[1])} | {f(pp[2])} | "
                         f"{f(pp[3])} | — | — | — | — | 17 / 10 (indexing unstated) |")
    if fixed_head is not None:
        lines += ["", f"At the fixed head L{fixed_head[0]} H{fixed_head[1]}, all items of each run:", "",
                  "| run | items | ICL acc | agreement ỹ vs ŷ | reconstructed acc | best-head agreement (all items, optimistic) |",
                  "|---|---|---|---|---|---|"]
        for r in res:
            x = r["_fixed"]
            lines.append(f"| {r['_dir']} | {x['n_items']} | {f(x['icl_accuracy'])} | {f(x['agreement'])} | "
                         f"{f(x['accuracy'])} | {f(r['best_head_agreement_all'])} |")
    md = "\n".join(lines) + "\n"
    write_atomic(os.path.join(out_dir, f"{prefix}-summary.md"), md.encode())
    labels = [r["_dir"] for r in res]
    series = {"ICL accuracy (ours)": [r["icl_accuracy_heldout"] for r in res],
              "agreement ỹ vs ŷ (ours)": [r["reconstruction_agreement_heldout"] for r in res],
              "reconstructed accuracy (ours)": [r["reconstructed_accuracy_heldout"] for r in res],
              "majority-of-demos agreement with ŷ (ours)": [r["majority_vote_agreement_heldout"] for r in res],
              "ICL accuracy (paper GPT-J)": [PAPER_TABLE2.get(r["task"], (None,) * 4)[0] for r in res],
              "agreement (paper GPT-J)": [PAPER_TABLE2.get(r["task"], (None,) * 4)[1] for r in res]}
    if fixed_head is not None:
        series[f"agreement at L{fixed_head[0]} H{fixed_head[1]}, all items (ours)"] = [r["_fixed"]["agreement"] for r in res]
    figures.bars(os.path.join(out_dir, f"{prefix}-summary.png"), labels, series, title, "fraction of test points")
    return md
