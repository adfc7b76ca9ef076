"""Print the GINC sweeps' summary table (one row per law, k and n) from their run folders.

    .venv/bin/python scripts/ginc_summary.py runs/ginc-id-k3 runs/ginc-id-k5 ... [--markdown]

Columns: the fraction of prompts with P(prompt | p_pre) = 0, Bayes's accuracy on the others (with
their count), the Oracle's accuracy, and every kernel's accuracy (all prompts, n >= 1).
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from simulate.sweep import read_summary

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args(argv)
    rows = []
    kernels = None
    for run in a.runs:
        s = read_summary(run)
        cfg = s["config"]
        kernels = kernels or list(s["kernels"])
        c = s["common"]
        for i, n in enumerate(cfg["grid"]):
            r = [cfg["prompt_law"], cfg["k"], n, c["zero_probability"][i]["mean"],
                 c["bayes_accuracy"][i]["mean"], c["bayes_accuracy"][i]["count"], c["oracle_accuracy"][i]["mean"]]
            for k in kernels:
                acc = {e["n"]: e["mean"] for e in s["kernels"][k]["accuracy"]}
                r.append(acc.get(n))
            rows.append(r)
    head = ["law", "k", "n", "P=0 frac", "Bayes acc", "Bayes count", "Oracle acc", *[f"{k} acc" for k in kernels]]

    def fmt(v):
        if v is None or (isinstance(v, float) and v != v):
            return "—"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    if a.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(fmt(v) for v in r) + " |")
    else:
        print("  ".join(f"{h:>12}" for h in head))
        for r in rows:
            print("  ".join(f"{fmt(v):>12}" for v in r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
