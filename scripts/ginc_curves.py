"""GINC's in-context accuracy curves with exact Bayes beside them (figure + Markdown table).

    .venv/bin/python scripts/ginc_curves.py --runs-dir runs [--sweep-prefix ginc] [--tc-prefix tc-ginc-small] \
        [--figure figures/ginc-curves.png] [--table docs/ginc-curves.md]

Reads the GINC sweeps ``RUNS/{prefix}-{id,ood}-k{3,5,8,10}`` (``icl-kernel sweep --preset ginc``) and, where
they exist, the transformer-checks ``RUNS/{tc-prefix}-{id,ood}-k{K}`` on the same sweeps. One panel per
(law, k): accuracy (argmax = the prompt's label, GINC's metric) against n for exact Bayes under p_pre (on
the prompts of positive probability only), the Oracle (GINC's score under the prompt law; 1 by
construction), each kernel estimator, and the GPT-J; the fraction of prompts with P(prompt | p_pre) = 0
is drawn beside them. Shaded bands are the sweeps' 95% bootstrap intervals.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

KS = (3, 5, 8, 10)
LAWS = ("id", "ood")


def _load(path: Path) -> dict | None:
    f = path / "summary.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: {f} is not valid JSON ({exc}); expected a run's summary.json")


def _col(rows, key="mean"):
    return [None if r.get(key) is None else float(r[key]) for r in rows]


def sweep_curves(s: dict) -> dict:
    """Per method: (n list, mean list, lo list, hi list); plus the zero-probability fraction and Bayes counts."""
    grid = [int(n) for n in s["config"]["grid"]]
    c = s["common"]
    out = {"grid": grid, "zero": _col(c["zero_probability"]), "bayes_count": _col(c["bayes_accuracy"], "count")}
    out["Bayes (P>0 prompts)"] = (grid, _col(c["bayes_accuracy"]), _col(c["bayes_accuracy"], "lo"),
                                  _col(c["bayes_accuracy"], "hi"))
    out["Oracle"] = (grid, _col(c["oracle_accuracy"]), None, None)
    for k, ks in s["kernels"].items():
        rows = ks["accuracy"]
        out[f"kernel {k}"] = ([int(r["n"]) for r in rows], _col(rows), _col(rows, "lo"), _col(rows, "hi"))
    return out


def transformer_curve(t: dict) -> tuple[list, list] | None:
    g = t.get("ginc") or {}
    grid = [n for n in g.get("sweep_grid", []) if n not in set(g.get("skipped_n") or [])]
    acc = t.get("curves", {}).get("transformer", {}).get("accuracy")
    if not grid or acc is None or len(acc) != len(grid):
        return None
    return grid, [None if v is None else float(v) for v in acc]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--sweep-prefix", default="ginc", help="sweep folders PREFIX-{id,ood}-k{3,5,8,10}")
    p.add_argument("--tc-prefix", default="tc-ginc-small", help="transformer-check folders PREFIX-{id,ood}-kK")
    p.add_argument("--kernels", default="predictive:beta=20,belief", help="comma-separated kernels to draw")
    p.add_argument("--figure", default="figures/ginc-curves.png")
    p.add_argument("--table", default=None, help="also write the Markdown table here")
    p.add_argument("--model-label", default="GPT-J (icl-kernel pretrain)", help="legend label of the transformer")
    a = p.parse_args(argv)
    runs = Path(a.runs_dir)
    show = [k.strip() for k in a.kernels.split(",") if k.strip()]
    data = {}
    for law in LAWS:
        for k in KS:
            s = _load(runs / f"{a.sweep_prefix}-{law}-k{k}")
            if s is None:
                continue
            if s["config"].get("prompt_law") != f"ginc-{law}" or int(s["config"].get("k", -1)) != k:
                raise SystemExit(f"error: {runs / f'{a.sweep_prefix}-{law}-k{k}'} is a sweep of law "
                                 f"{s['config'].get('prompt_law')!r}, k = {s['config'].get('k')}; expected ginc-{law}, k = {k}")
            cur = sweep_curves(s)
            t = _load(runs / f"{a.tc_prefix}-{law}-k{k}")
            cur["transformer"] = transformer_curve(t) if t is not None else None
            cur["num_prompts"] = s.get("num_prompts")
            data[(law, k)] = cur
    if not data:
        raise SystemExit(f"error: no GINC sweep found under {runs} as {a.sweep_prefix}-{{id,ood}}-k{{3,5,8,10}}; "
                         "run the sweeps of docs/ginc.md first")
    missing_k = [k for k in show if not any(f"kernel {k}" in d for d in data.values())]
    if missing_k:
        raise SystemExit(f"error: --kernels {missing_k} not in the sweeps; expected some of "
                         f"{sorted({m[7:] for d in data.values() for m in d if m.startswith('kernel ')})}")
    plot(data, show, a.figure, a.model_label)
    table = markdown(data, show)
    print(table)
    if a.table:
        _atomic_text(Path(a.table), table + "\n")
    return 0


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def plot(data: dict, show: list, out: str, model_label: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"Bayes (P>0 prompts)": "k", "Oracle": "0.6", "transformer": "tab:red"}
    kcol = ["tab:blue", "tab:green", "tab:purple", "tab:orange"]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5), sharey=True)
    for i, law in enumerate(LAWS):
        for j, k in enumerate(KS):
            ax = axes[i, j]
            d = data.get((law, k))
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xticks([0, 1, 2, 4, 8, 16, 32, 64], ["0", "1", "2", "4", "8", "16", "32", "64"])
            ax.minorticks_off()
            ax.set_ylim(-0.02, 1.04)
            ax.grid(alpha=0.3)
            ax.set_title(f"{'ID' if law == 'id' else 'OOD'} concepts, k = {k}")
            if d is None:
                ax.text(0.5, 0.5, "no sweep", ha="center", transform=ax.transAxes)
                continue
            ax.plot(d["grid"], d["zero"], ls=":", color="0.4", marker=".", label="fraction with P(prompt | p_pre) = 0")
            for name in ("Oracle", "Bayes (P>0 prompts)"):
                ns, m, lo, hi = d[name]
                pts = [(n, v) for n, v in zip(ns, m) if v is not None]
                ax.plot([n for n, _ in pts], [v for _, v in pts], marker="o", color=colors[name], label=name,
                        ls="--" if name == "Oracle" else "-")
                if lo is not None:
                    band = [(n, l, h) for n, l, h in zip(ns, lo, hi) if l is not None and h is not None]
                    ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band],
                                    color=colors[name], alpha=0.15)
            for c, kname in zip(kcol, show):
                ns, m, lo, hi = d[f"kernel {kname}"]
                pts = [(n, v) for n, v in zip(ns, m) if v is not None]
                ax.plot([n for n, _ in pts], [v for _, v in pts], marker="s", ms=4, color=c, label=f"kernel {kname}")
            if d.get("transformer"):
                ns, m = d["transformer"]
                pts = [(n, v) for n, v in zip(ns, m) if v is not None]
                ax.plot([n for n, _ in pts], [v for _, v in pts], marker="^", color=colors["transformer"],
                        label=model_label)
            if i == 1:
                ax.set_xlabel("n (demonstrations in the prompt)")
            if j == 0:
                ax.set_ylabel("accuracy (argmax = label) / fraction")
    handles, labels = {}, []
    for ax in axes.flat:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=4, frameon=False)
    fig.suptitle("GINC (Xie et al.), published parameters: in-context accuracy vs n, exact Bayes under p_pre "
                 "beside the Oracle, kernels and a trained GPT-J")
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=Path(out).parent, prefix=".ginc-curves.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110, metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, out)


def _f(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def markdown(data: dict, show: list) -> str:
    head = ["law", "k", "n", "P=0 frac", "Bayes acc (P>0)", "Bayes count", "Oracle acc",
            *[f"{k} acc" for k in show], "GPT-J acc"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (law, k), d in sorted(data.items(), key=lambda kv: (LAWS.index(kv[0][0]), kv[0][1])):
        tr = dict(zip(*d["transformer"])) if d.get("transformer") else {}
        for g, n in enumerate(d["grid"]):
            kern = []
            for kname in show:
                ns, m, _, _ = d[f"kernel {kname}"]
                kern.append(_f(dict(zip(ns, m)).get(n)))
            cnt = d["bayes_count"][g]
            lines.append("| " + " | ".join([f"ginc-{law}", str(k), str(n), _f(d["zero"][g]),
                                             _f(d["Bayes (P>0 prompts)"][1][g]), "—" if cnt is None else str(int(cnt)),
                                             _f(d["Oracle"][1][g]), *kern, _f(tr.get(n))]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
