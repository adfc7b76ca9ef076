"""Everything after the forward passes: numbers, figures, tables and the Markdown report.

All of it is recomputed from the run folder (``prompts.jsonl``, ``chunks/``, ``singles.npz``,
``probes.json``), so the report can be rebuilt without the model (``llm-check --analyze-only``).
Every file is read and written through :class:`icl_kernel.runfolder.RunFolder` (checksums: a
corrupted file is a one-line error naming it).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from icl_kernel.runfolder import RunFolder, RunFolderError, atomic_write_bytes, open_existing
from llm_check.realdata import analysis as A
from llm_check.realdata import figures
from llm_check.realdata.config import config_from_dict
from llm_check.realdata.icl import load_chunks, prompt_from_record
from theory import stats
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
# The paper's SST-2 split is unstated; its row stands beside both of our SST-2 evaluation splits.
PAPER_TABLE2["sst2_kim"] = PAPER_TABLE2["sst2"]


def json_line(obj) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def timing_totals(info: dict) -> dict:
    """Seconds summed over every recorded invocation of a run (``run_info.json``'s
    ``timing_history``; a run from before that record has only its last ``timings``)."""
    hist = info.get("timing_history") or ([info["timings"]] if info.get("timings") else [])
    out = {k: sum(h.get(k) or 0.0 for h in hist) for k in ("forward_s", "icl_pass_s", "singles_s", "total_s",
                                                            "points_run_now")}
    out["invocations"] = len(hist)
    return out


def read_records(rf: RunFolder) -> list[dict]:
    text = rf.read_bytes("prompts.jsonl").decode("utf-8", errors="replace")
    try:
        # JSON lines end at "\n" only: str.splitlines would also split inside a string at U+0085,
        # U+2028, … which json.dumps(ensure_ascii=False) writes raw (Rotten Tomatoes' latin-1 text
        # holds U+0085).
        return [json.loads(s) for s in text.split("\n") if s.strip()]
    except ValueError as exc:
        raise RunFolderError(f"{rf.path / 'prompts.jsonl'} is not valid JSON lines ({exc}); "
                             "delete the run folder's prompts.jsonl and rerun the command") from None


class LoadedRun(NamedTuple):
    """What an llm-check run folder holds, read back (N prompts, L layers, H heads, C classes).

    Attributes:
        config: the run's :class:`llm_check.realdata.config.LLMCheckConfig`.
        info: ``run_info.json`` (task, label words and ids, probe offsets, timings).
        prompts: ``[N]`` prompt layouts (spans, demonstration labels).
        records: ``[N]`` ``prompts.jsonl`` records.
        gold: ``[N]`` gold class of each test item.
        rows: ``[N]`` last-token attention rows ``[L, H, S_i]``.
        logits: ``[N, C]`` label-word logits.
        top: ``[N]`` the top next token.
        singles: ``singles.npz`` (similarities, embeddings of the held-out items) or None.
        probes: ``probes.json`` or None.
    """

    config: object
    info: dict
    prompts: list
    records: list
    gold: np.ndarray
    rows: list
    logits: np.ndarray
    top: np.ndarray
    singles: dict | None
    probes: dict | None


def load_run(rf: RunFolder) -> LoadedRun:
    """Read a run folder's prompts, passes and optional extras (checksums verified)."""
    cfg = config_from_dict(rf.config())
    info = rf.read_json("run_info.json")
    recs = read_records(rf)
    prompts = [prompt_from_record(r) for r in recs]
    gold = np.array([r["gold"] for r in recs])
    rows, logits, top = load_chunks(rf, len(prompts))
    singles = dict(rf.load_npz("singles.npz")) if (rf.is_done("singles.npz") or rf.exists("singles.npz")) else None
    probes = rf.read_json("probes.json") if rf.exists("probes.json") else None
    return LoadedRun(cfg, info, prompts, recs, gold, rows, logits, top, singles, probes)


def first_label_token(y_spans: np.ndarray) -> np.ndarray:
    """Label spans cut to their first token: the kernel weight's span [x_i, y_i] then holds the
    same number of label tokens for every class (fair when label words have different lengths)."""
    y = np.asarray(y_spans).copy()
    y[:, 1] = y[:, 0] + 1
    return y


def paper_weights(rows_i: np.ndarray, p) -> np.ndarray:
    """The paper's a_i (max attention over x_i's first token to y_i's first token), ``[L, H, n]``."""
    return A.kernel_weights(rows_i, p.x_spans, first_label_token(p.y_spans), p.block_spans, "max", "xy")


def _npy_bytes(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _csv_bytes(a) -> bytes:
    buf = io.StringIO()
    np.savetxt(buf, a, delimiter=",", fmt="%.5f")
    return buf.getvalue().encode()


def _fig(rf: RunFolder, rel: str, fn, *args) -> None:
    with rf.atomic_path(rel) as tmp:
        fn(str(tmp), *args)


def position_baselines(weights: np.ndarray, demo_labels: np.ndarray, yhat: np.ndarray, gold: np.ndarray,
                       sel: np.ndarray, held: np.ndarray, choice, C: int) -> dict:
    """The shared position baselines (:func:`llm_check.realdata.analysis.position_baselines`: last
    demonstration's label, position-only vote with its profile from the selection items, majority,
    constant) against ŷ on the held-out items, as ``results.json`` keys: their agreement with ŷ and
    accuracy, the chosen head against each (exact McNemar), and the number of heads whose held-out
    agreement beats their own position-only vote with p < 0.05. The constant is ŷ's most frequent
    class on the held-out items (the best constant in hindsight)."""
    pb = A.position_baselines(weights, demo_labels, C, sel)
    l, h = choice.layer, choice.head
    sc = A.score_baselines(pb, yhat, held, l, h, A.most_frequent(yhat[held], C))
    hv = sc.head
    vs = {name: {"agreement": v.agreement, "only_head_agrees": v.only_head, "only_baseline_agrees": v.only_baseline,
                 "mcnemar_p": v.p_value} for name, v in sc.versus.items()}
    L, H = pb.profile.shape[:2]
    return {
        "head_vs_baselines": vs,
        "last_label_agreement_heldout": vs["last_label"]["agreement"],
        "last_label_accuracy_heldout": A.follow_rate(gold[held], pb.last_label[held]),
        "position_vote_agreement_heldout": hv.position_agreement,
        "position_vote_accuracy_heldout": A.follow_rate(gold[held], pb.position_vote[held, l, h]),
        "position_profile_chosen_head": pb.profile[l, h].tolist(),
        "majority_vote_agreement_heldout": vs["majority_vote"]["agreement"],
        "majority_vote_accuracy_heldout": A.follow_rate(gold[held], pb.majority[held]),
        "constant_agreement_heldout": vs["constant"]["agreement"],
        "constant_fitted_on": "heldout",
        "reconstruction_rule": "argmax",
        "head_vs_position": {"head_agreement": hv.head_agreement, "position_agreement": hv.position_agreement,
                             "only_head_agrees": hv.only_head, "only_position_agrees": hv.only_position,
                             "mcnemar_p": hv.p_value, "kernel_like": hv.kernel_like},
        "kernel_like_heads": int(sc.kernel_like.sum()),
        "kernel_like_heads_at": [[a, b] for a in range(L) for b in range(H) if sc.kernel_like[a, b]],
        "heads": int(L * H),
    }


def similarity_without_position(wp: np.ndarray, s: dict, choice) -> tuple[dict, dict]:
    """Per similarity kernel: head maps of r before/after removing position and summary numbers."""
    et = s["minilm_test"] / np.linalg.norm(s["minilm_test"], axis=-1, keepdims=True)
    ed = s["minilm_demo"] / np.linalg.norm(s["minilm_demo"], axis=-1, keepdims=True)
    sims = {"Eq. 9 output-distribution similarity": s["sim"],
            "MiniLM cosine": np.einsum("nd,nid->ni", et, ed)}
    if "lm_layer_cos" in s:
        sims["LM hidden-state cosine at the head's layer"] = s["lm_layer_cos"]
    maps, out = {}, {}
    for name, sim in sims.items():
        pc = A.position_controlled_corr(wp, sim)
        maps[name] = (pc.r_raw, pc.r_within)
        absw = np.abs(pc.r_within)
        out[name] = {"max_abs_r_raw": float(np.nanmax(np.abs(pc.r_raw))),
                     "max_abs_r_within": float(np.nanmax(absw)),
                     "max_abs_r_within_at": [int(v) for v in np.unravel_index(np.nanargmax(absw), absw.shape)],
                     "r_raw_chosen_head": float(pc.r_raw[choice.layer, choice.head]),
                     "r_within_chosen_head": float(pc.r_within[choice.layer, choice.head]),
                     "p_within_chosen_head": float(pc.p_within[choice.layer, choice.head]),
                     "heads_p_below_0.01": int(np.nansum(pc.p_within < 0.01)),
                     "r_raw": pc.r_raw.tolist(), "r_within": pc.r_within.tolist()}
    return maps, out


class Analysis(NamedTuple):
    """Every number of a run, before anything is written (L layers, H heads, T aligned positions).

    Attributes:
        results: ``results.json`` (JSON-ready).
        agreement, accuracy: ``[L, H]`` the paper's reconstruction ỹ against ŷ and against gold, all items.
        agreement_heldout: ``[L, H]`` ỹ against ŷ on the held-out items.
        fig2_map: ``[L, T]`` aligned attention averaged over heads and the prompts of the modal layout.
        fig2_codes: ``[T]`` what each aligned position is (see :func:`llm_check.realdata.analysis.aligned_map`).
        sim_corr: ``[L, H]`` attention vs the Eq. 9 similarity (None without ``singles.npz``).
        position_maps: similarity name → (r before, r within position), each ``[L, H]`` (None without singles).
        title: the figures' title.
    """

    results: dict
    agreement: np.ndarray
    accuracy: np.ndarray
    agreement_heldout: np.ndarray
    fig2_map: np.ndarray
    fig2_codes: np.ndarray
    sim_corr: np.ndarray | None
    position_maps: dict | None
    title: str


def analyse(run: LoadedRun) -> Analysis:
    """All numbers of a run (pure: reads nothing, writes nothing)."""
    cfg, info, prompts, recs, gold, rows = run.config, run.info, run.prompts, run.records, run.gold, run.rows
    C = len(info["label_words"])
    N = len(prompts)
    yhat = run.logits.argmax(1)
    in_label_space = np.isin(run.top, info["label_ids"])
    sel, held = A.selection_split(N, cfg.n_select, cfg.n_heldout)
    L, H = rows[0].shape[:2]
    n = cfg.n
    full = [i for i, p in enumerate(prompts) if len(p.demo_labels) == n]
    if len(full) < N:
        raise RunFolderError(f"{N - len(full)} prompts lost demonstrations (--shorten); the "
                             "position-aware analysis needs all n demonstrations in every prompt")
    demo_labels = np.stack([p.demo_labels for p in prompts])          # [N, n]

    recon = {}
    for name, mode, span, sink in VARIANTS:
        rc = np.zeros((N, L, H), np.int64)
        for i, p in enumerate(prompts):
            w = A.kernel_weights(rows[i], p.x_spans, first_label_token(p.y_spans), p.block_spans, mode, span, sink)
            rc[i] = A.reconstruct(w, p.demo_labels, C, "argmax")
        recon[name] = rc
    weights = np.stack([paper_weights(rows[i], p) for i, p in enumerate(prompts)])   # [N, L, H, n]
    paper = VARIANTS[0][0]
    agree_all = A.head_accuracy(recon[paper], yhat)
    acc_all = A.head_accuracy(recon[paper], gold)
    agree_sel = A.head_accuracy(recon[paper][sel], yhat[sel])
    agree_held = A.head_accuracy(recon[paper][held], yhat[held])
    choice = A.select_head(agree_sel)
    rc_h = recon[paper][held][:, choice.layer, choice.head]

    res = {
        "task": info["task"], "n": n, "n_items": N, "n_select": len(sel), "n_heldout": len(held),
        "start": cfg.start, "label_words": info["label_words"], "selection": cfg.selection, "order": cfg.order,
        "typos": cfg.typos, "seed": cfg.seed,
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
        "last_label_agreement_all": A.follow_rate(yhat, A.last_label(demo_labels)),
        "timings": info.get("timings", {}),
        "timings_all_invocations": timing_totals(info),
    }
    res.update(position_baselines(weights, demo_labels, yhat, gold, sel, held, choice, C))
    if all("demo_similarity" in r for r in recs):
        dsim = np.array([r["demo_similarity"] for r in recs])
        nearest = demo_labels[np.arange(N), np.argmax(dsim, axis=1)]
        res["nearest_label_agreement_all"] = A.follow_rate(yhat, nearest)
        res["nearest_is_last_fraction"] = float(np.mean(np.argmax(dsim, axis=1) == n - 1))
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

    corr = maps = None
    if run.singles is not None:
        s = run.singles
        items = s["items"]
        wp = weights[items]                                  # [Nh, L, H, n]
        corr = A.pearson_per_head(wp, s["sim"])
        res["sim_corr_max"] = float(np.nanmax(corr))
        res["sim_corr_max_at"] = [int(v) for v in np.unravel_index(np.nanargmax(corr), corr.shape)]
        res["sim_corr_at_chosen_head"] = float(corr[choice.layer, choice.head])
        dl = demo_labels[items]
        g = gold[items]
        kr_m = A.kernel_regression(s["minilm_test"], s["minilm_demo"], dl, C, cfg.tau)
        kr_h = A.kernel_regression(s["lmh_test"], s["lmh_demo"], dl, C, cfg.tau)
        res["kr_minilm_accuracy"] = float(np.mean(kr_m == g))
        res["kr_lm_hidden_accuracy"] = float(np.mean(kr_h == g))
        res["kr_items"] = int(len(items))
        maps, res["similarity_without_position"] = similarity_without_position(wp, s, choice)
    if run.probes is not None:
        res["probe_best"] = {k: {"accuracy": float(np.max(v)), "offset": info["probe_offsets"][
            int(np.unravel_index(np.argmax(v), np.shape(v))[2])]} for k, v in run.probes["accuracy"].items()}

    # Fig. 2 data: aligned map averaged over items whose layout has the modal length.
    maps2, codes_list = [], []
    for i, p in enumerate(prompts):
        m, c = A.aligned_map(rows[i], p.x_spans, p.y_spans, p.test_span, p.query_pos, 30)
        maps2.append(m.mean(1))  # average over heads -> [L, T]
        codes_list.append(c)
    lens = np.array([m.shape[-1] for m in maps2])
    modal = int(np.bincount(lens).argmax())
    keep = [i for i in range(N) if lens[i] == modal]
    avg = np.mean([maps2[i] for i in keep], axis=0)
    res["fig2_items"] = len(keep)
    return Analysis(res, agree_all, acc_all, agree_held, avg, codes_list[keep[0]], corr, maps,
                    f"{cfg.model} on {info['task']}, n={n}")


def write(rf: RunFolder, run: LoadedRun, an: Analysis) -> None:
    """Write an analysis into its run folder: per-head CSVs, figures, ``results.json``, ``report.md``."""
    res, title, info = an.results, an.title, run.info
    choice = (res["chosen_head"]["layer"], res["chosen_head"]["head"])
    if an.sim_corr is not None:
        rf.write_bytes("fig4_sim_corr.csv", _csv_bytes(an.sim_corr))
        _fig(rf, "fig_position_removed.png", figures.position_maps, an.position_maps,
             title + f" ({res['kr_items']} held-out prompts)", choice)
    rf.write_bytes("fig3_agreement.csv", _csv_bytes(an.agreement))
    rf.write_bytes("fig3_accuracy.csv", _csv_bytes(an.accuracy))
    rf.write_bytes("fig3_agreement_heldout.csv", _csv_bytes(an.agreement_heldout))
    rf.write_bytes("fig2_map.npy", _npy_bytes(an.fig2_map))
    _fig(rf, "fig2_attention_map.png", figures.fig2, an.fig2_map, an.fig2_codes, title + f" ({res['fig2_items']} prompts)")
    _fig(rf, "fig3_reconstruction.png", figures.fig3, an.agreement, an.accuracy, title + f" ({res['n_items']} prompts)",
         choice)
    if an.sim_corr is not None:
        _fig(rf, "fig4_similarity.png", figures.fig4, an.sim_corr, title + f" ({res['kr_items']} prompts)")
    if run.probes is not None:
        _fig(rf, "fig5_probes.png", figures.fig5, run.probes, info["probe_offsets"],
             title + f" ({run.probes['n_items']} prompts)")
    rf.write_json("results.json", res)
    rf.write_text("report.md", markdown(res, run.config, info))


def compute(rf: RunFolder) -> dict:
    """Read a run folder, compute every number (:func:`analyse`), write the files (:func:`write`); the results."""
    run = load_run(rf)
    try:
        an = analyse(run)
    except RunFolderError as exc:
        raise RunFolderError(f"{rf.path}: {exc}") from None
    write(rf, run, an)
    return an.results


def table2_rows(res: dict) -> list[tuple[str, str]]:
    f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    ch = res["chosen_head"]
    hv = res.get("head_vs_position", {})
    return [
        ("ICL accuracy (held out)", f(res["icl_accuracy_heldout"])),
        ("ICL output reconstruction (agreement ỹ vs ŷ, held out)", f(res["reconstruction_agreement_heldout"])),
        ("Reconstructed performance (ỹ vs gold, held out)", f(res["reconstructed_accuracy_heldout"])),
        ("all-MiniLM-L6-v2 KR", f(res.get("kr_minilm_accuracy"))),
        ("LM mean-pooled hidden KR", f(res.get("kr_lm_hidden_accuracy"))),
        ("agreement of the last demonstration's label with ŷ", f(res.get("last_label_agreement_heldout"))),
        ("agreement of the chosen head's position-only vote with ŷ", f(res.get("position_vote_agreement_heldout"))),
        ("McNemar p, chosen head vs its position-only vote", f(hv.get("mcnemar_p"))),
        ("agreement of majority-of-demos with ŷ", f(res["majority_vote_agreement_heldout"])),
        ("agreement of a constant (ŷ's most frequent class) with ŷ", f(res.get("constant_agreement_heldout"))),
        ("majority label of the demonstrations (accuracy)", f(res["majority_vote_accuracy_heldout"])),
        ("chosen head (layer, head), 0-based", f"L{ch['layer']} H{ch['head']}"),
    ]


def markdown(res: dict, cfg, info: dict) -> str:
    lines = [f"# llm-check: {cfg.model} on {res['task']}", "",
             f"{res['n_items']} test points (from item {cfg.start} of the evaluation order), n = {cfg.n} "
             f"demonstrations ({cfg.selection}, order {cfg.order}), seed {cfg.seed}, label words "
             f"{res['label_words']}, typo rate {cfg.typos}. Split: {info.get('split_note', '')}.",
             f"Head chosen on {res['n_select']} items by agreement ỹ vs ŷ; numbers below on the other "
             f"{res['n_heldout']} (held out). Kernel weight a_i = max attention from x_i's first token to "
             "y_i's first token (the first token only, so classes whose label word has more tokens get no "
             "extra chances); reconstruction rule "
             f"{res.get('reconstruction_rule', 'argmax')}: ỹ = argmax_y Σ_i a_i e(y_i)[y].", ""]
    if info.get("label_warnings"):
        lines += ["Label words: " + "; ".join(info["label_warnings"]), ""]
    lines += ["## Table 2 analogue, with position-aware baselines", "", "| quantity | ours | paper (GPT-J-6B) |",
              "|---|---|---|"]
    pp = PAPER_TABLE2.get(res["task"])
    rows = table2_rows(res)
    paper_vals = (list(pp) if pp else [None] * 4) + [None] * (len(rows) - 4)
    for (k, v), pv in zip(rows, paper_vals):
        lines.append(f"| {k} | {v} | {'—' if pv is None else f'{pv:.3f}'} |")
    hv = res["head_vs_position"]
    lines += ["", f"Chosen head vs its position-only vote on the held-out items: the head alone agrees with ŷ on "
              f"{hv['only_head_agrees']} items, the vote alone on {hv['only_position_agrees']} (exact McNemar "
              f"p = {hv['mcnemar_p']:.3g}); kernel-like (beats the vote with p < 0.05): "
              f"**{'yes' if hv['kernel_like'] else 'no'}**. Heads kernel-like by this test: "
              f"{res['kernel_like_heads']} of {res['heads']}. The chosen head's mean weight per position "
              f"(1 = first demonstration): " + ", ".join(f"{v:.3f}" for v in res["position_profile_chosen_head"]) + "."]
    if res.get("head_vs_baselines"):
        lines += ["", "The chosen head against each content-free baseline on the held-out items (exact McNemar):", "",
                  "| baseline | its agreement with ŷ | only the head agrees | only the baseline agrees | p |",
                  "|---|---|---|---|---|"]
        for name, v in res["head_vs_baselines"].items():
            lines.append(f"| {name.replace('_', ' ')} | {v['agreement']:.3f} | {v['only_head_agrees']} | "
                         f"{v['only_baseline_agrees']} | {v['mcnemar_p']:.3g} |")
    if "nearest_label_agreement_all" in res:
        lines += ["", f"Retrieved demonstrations: ŷ equals the nearest demonstration's label on "
                  f"{res['nearest_label_agreement_all']:.3f} of all items and the last one's on "
                  f"{res['last_label_agreement_all']:.3f}; the nearest sits last in "
                  f"{res['nearest_is_last_fraction']:.3f} of the prompts."]
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
                  f"H{res['sim_corr_max_at'][1]}; at the chosen head r = {res['sim_corr_at_chosen_head']:.3f}.", "",
                  "## Attention vs similarity with position removed (fig_position_removed.png)", "",
                  "r pooled over (held-out prompt, demonstration); 'within' = both sides residualised on position; "
                  "p = within-position permutation test (200 shuffles of the similarities among prompts at the same "
                  "position; smallest possible p 0.005; about 1% of the heads fall below 0.01 by chance).", "",
                  "| similarity | max abs r before | max abs r within position (head) | chosen head r before / within (p) | heads with p < 0.01 |",
                  "|---|---|---|---|---|"]
        for name, v in res["similarity_without_position"].items():
            at = v["max_abs_r_within_at"]
            lines.append(f"| {name} | {v['max_abs_r_raw']:.3f} | {v['max_abs_r_within']:.3f} (L{at[0]} H{at[1]}) | "
                         f"{v['r_raw_chosen_head']:.3f} / {v['r_within_chosen_head']:.3f} ({v['p_within_chosen_head']:.3f}) | "
                         f"{v['heads_p_below_0.01']} of {res['heads']} |")
    if "probe_best" in res:
        lines += ["", "## Fig. 5: ridge probes (λ = 0.01)", ""]
        for k, v in res["probe_best"].items():
            lines.append(f"- {k}: best accuracy {v['accuracy']:.3f} at offset {v['offset']:+d}")
    if res.get("timings"):
        t = res["timings"]
        lines += ["", "## Timing", "", "This invocation: " + ", ".join(
            f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}" for k, v in t.items())]
        if res.get("timings_all_invocations"):
            lines += ["", "Summed over every invocation that computed part of this run (seconds): " + ", ".join(
                f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}"
                for k, v in res["timings_all_invocations"].items())]
    lines += ["", "Figures: fig2_attention_map.png, fig3_reconstruction.png, fig4_similarity.png, fig5_probes.png, "
              "fig_position_removed.png.", ""]
    return "\n".join(lines)


def fixed_head_scores(rf: RunFolder, layer: int, head: int) -> dict:
    """The paper's reconstruction at one given head over all items of a run, beside the shared position
    baselines of that head (position-only vote with its profile from the same items, last label, majority)."""
    run = load_run(rf)
    C = len(run.info["label_words"])
    L, H = run.rows[0].shape[:2]
    if not (0 <= layer < L and 0 <= head < H):
        raise RunFolderError(f"--fixed-head {layer},{head} is outside the model of {rf.path} "
                             f"({L} layers, {H} heads, 0-based)")
    yhat, gold = run.logits.argmax(1), run.gold
    demo_labels = np.stack([p.demo_labels for p in run.prompts])
    w = np.stack([paper_weights(run.rows[i][layer:layer + 1, head:head + 1], p) for i, p in enumerate(run.prompts)])
    every = np.arange(len(run.prompts))
    pb = A.position_baselines(w, demo_labels, C, every)                 # one head: [N, 1, 1, n]
    sc = A.score_baselines(pb, yhat, every, 0, 0, A.most_frequent(yhat, C))
    rc = pb.recon[:, 0, 0]
    return {"agreement": float(np.mean(rc == yhat)), "accuracy": float(np.mean(rc == gold)),
            "icl_accuracy": float(np.mean(yhat == gold)), "n_items": len(run.prompts),
            "position_vote_agreement": sc.head.position_agreement, "mcnemar_p": sc.head.p_value,
            "last_label_agreement": sc.versus["last_label"].agreement,
            "majority_vote_agreement": sc.versus["majority_vote"].agreement,
            "_yhat": yhat, "_sources": [r["source"] for r in run.records],
            "_demo_sets": [sorted(r["demo_indices"]) for r in run.records]}


def _png_bytes(fn, *args) -> bytes:
    buf = io.BytesIO()
    fn(buf, *args)
    return buf.getvalue()


BASELINE_KEYS = ("last_label_agreement_heldout", "position_vote_agreement_heldout",
                 "majority_vote_agreement_heldout", "constant_agreement_heldout")


def worst_baseline_p(r: dict) -> float | None:
    """The largest of the chosen head's exact McNemar p-values against the last-label, position-only,
    majority and constant baselines (it beats all four only if it beats each: an intersection-union
    test); None for a run analysed before these tests existed (``llm-check --analyze-only`` adds them)."""
    vs = r.get("head_vs_baselines")
    return max(v["mcnemar_p"] for v in vs.values()) if vs else None


def kernel_like_verdicts(results: list[dict], alpha: float = 0.05) -> list[tuple[float | None, bool | None]]:
    """Per run ``(Holm-adjusted p, beats every baseline)``: the chosen head's held-out agreement with
    ŷ exceeds each of the last-label, position-only, majority and constant agreements, and the
    largest of its McNemar p-values against them (:func:`worst_baseline_p`), Holm-adjusted over the
    runs that have one, is below ``alpha``. ``(None, None)`` for a run without these numbers."""
    idx = [i for i, r in enumerate(results)
           if worst_baseline_p(r) is not None and all(r.get(k) is not None for k in BASELINE_KEYS)]
    adj = stats.holm([worst_baseline_p(results[i]) for i in idx]) if idx else []
    out: list[tuple[float | None, bool | None]] = [(None, None)] * len(results)
    for i, a in zip(idx, adj):
        r = results[i]
        beats = bool(a < alpha and all(r["reconstruction_agreement_heldout"] > r[k] for k in BASELINE_KEYS))
        out[i] = (float(a), beats)
    return out


def summarize(run_dirs: list[str], out_dir: str, fixed_head: tuple[int, int] | None = None,
              prefix: str = "llm", title: str = "Table 2 analogue: SmolLM2-135M-Instruct (held out) vs the paper's GPT-J-6B"
              ) -> str:
    """Cross-run Markdown tables (ours beside the paper's GPT-J-6B Table 2) and a bar figure.

    ``fixed_head`` (layer, head): also score every run's reconstruction at that one head (used for
    the phenomena runs, whose few items make a per-run head choice noisy)."""
    res = []
    for d in run_dirs:
        with open_existing(d, "llm-check") as rf:
            if not rf.exists("results.json"):
                raise RunFolderError(f"{rf.path} has no results.json; expected a finished llm-check run")
            r = rf.read_json("results.json")
            r["_dir"] = Path(d).name
            if fixed_head is not None:
                r["_fixed"] = fixed_head_scores(rf, *fixed_head)
        res.append(r)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--summary-dir {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create --summary-dir {out}: {exc.strerror}") from None
    f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    fp = lambda v: "—" if v is None else f"{v:.2g}"  # noqa: E731
    lines = ["| run | task | items (select / held out) | ICL acc | agreement ỹ vs ŷ | reconstructed acc | "
             "last-label agreement | position-vote agreement | McNemar p (head vs position vote) | "
             "largest McNemar p vs the 4 baselines (Holm) | "
             "majority-of-demos agreement | constant agreement | beats every baseline | MiniLM KR | LM-hidden KR | head |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    shown = set()
    verdicts = kernel_like_verdicts(res)
    for r, (holm_p, beats) in zip(res, verdicts):
        pp = PAPER_TABLE2.get(r["task"]) if r["task"] not in shown else None
        shown.add(r["task"])
        ch = r["chosen_head"]
        hv = r.get("head_vs_position", {})
        lines.append(f"| {r['_dir']} | {r['task']} | {r['n_select']} / {r['n_heldout']} | {f(r['icl_accuracy_heldout'])} | "
                     f"{f(r['reconstruction_agreement_heldout'])} | {f(r['reconstructed_accuracy_heldout'])} | "
                     f"{f(r.get('last_label_agreement_heldout'))} | {f(r.get('position_vote_agreement_heldout'))} | "
                     f"{fp(hv.get('mcnemar_p'))} | {fp(worst_baseline_p(r))} ({fp(holm_p)}) | "
                     f"{f(r['majority_vote_agreement_heldout'])} | "
                     f"{f(r.get('constant_agreement_heldout'))} | {'—' if beats is None else ('**yes**' if beats else 'no')} | "
                     f"{f(r.get('kr_minilm_accuracy'))} | "
                     f"{f(r.get('kr_lm_hidden_accuracy'))} | L{ch['layer']} H{ch['head']} |")
        if pp:
            lines.append(f"| paper GPT-J-6B | {r['task']} | 700 / 300 | {f(pp[0])} | {f(pp[1])} | {f(pp[2])} | "
                         f"— | — | — | — | — | — | — | {f(pp[3])} | — | 17 / 10 (indexing unstated) |")
    if fixed_head is not None:
        lines += ["", f"At the fixed head L{fixed_head[0]} H{fixed_head[1]}, all items of each run (position-only "
                  "vote: the head's mean weight per position over the same items; 'same ŷ as the first run': on "
                  "runs with the same test items, how often the prediction is unchanged; '—' where the items or "
                  "demonstration sets differ):", "",
                  "| run | items | ICL acc | agreement ỹ vs ŷ | reconstructed acc | position-vote agreement | "
                  "McNemar p | last-label agreement | nearest-demo-label agreement | majority-of-demos agreement | "
                  "same ŷ as the first run |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        base = res[0]["_fixed"]
        for r in res:
            x = r["_fixed"]
            same = None
            if x["_sources"] == base["_sources"] and x["_demo_sets"] == base["_demo_sets"]:
                same = float(np.mean(x["_yhat"] == base["_yhat"]))
            lines.append(f"| {r['_dir']} | {x['n_items']} | {f(x['icl_accuracy'])} | {f(x['agreement'])} | "
                         f"{f(x['accuracy'])} | {f(x['position_vote_agreement'])} | {fp(x['mcnemar_p'])} | "
                         f"{f(x['last_label_agreement'])} | {f(r.get('nearest_label_agreement_all'))} | "
                         f"{f(x['majority_vote_agreement'])} | {f(same)} |")
    if any(b is not None for _, b in verdicts):
        lines += ["", f"Beats every baseline: the head's held-out agreement with ŷ is above the last-label, "
                  "position-only, majority and constant agreements, and the largest of its four exact McNemar "
                  "p-values against them (an intersection-union test) stays below 0.05 after Holm's correction "
                  f"over the {sum(b is not None for _, b in verdicts)} runs of this table: "
                  f"{sum(bool(b) for _, b in verdicts)} of them."]
    md = "\n".join(lines) + "\n"
    atomic_write_bytes(out / f"{prefix}-summary.md", md.encode())
    labels = [r["_dir"] for r in res]
    series = {"ICL accuracy (ours)": [r["icl_accuracy_heldout"] for r in res],
              "agreement ỹ vs ŷ (ours)": [r["reconstruction_agreement_heldout"] for r in res],
              "position-only vote agreement (ours)": [r.get("position_vote_agreement_heldout") for r in res],
              "last-label agreement (ours)": [r.get("last_label_agreement_heldout") for r in res],
              "strongest baseline (ours: last, position, majority, constant)": [
                  max(r[k] for k in BASELINE_KEYS) if all(r.get(k) is not None for k in BASELINE_KEYS) else None
                  for r in res],
              "ICL accuracy (paper GPT-J)": [PAPER_TABLE2.get(r["task"], (None,) * 4)[0] for r in res],
              "agreement (paper GPT-J)": [PAPER_TABLE2.get(r["task"], (None,) * 4)[1] for r in res]}
    if fixed_head is not None:
        series[f"agreement at L{fixed_head[0]} H{fixed_head[1]}, all items (ours)"] = [r["_fixed"]["agreement"] for r in res]
        series[f"position-only vote at L{fixed_head[0]} H{fixed_head[1]} (ours)"] = [
            r["_fixed"]["position_vote_agreement"] for r in res]
    intervals = {"agreement ỹ vs ŷ (ours)": [r.get("reconstruction_agreement_heldout_ci") for r in res]}
    atomic_write_bytes(out / f"{prefix}-summary.png",
                       _png_bytes(figures.bars, labels, series, title + " (bars: 95% bootstrap CI)",
                                  "fraction of test points", intervals))
    return md
