"""Compare the numbers of two `icl-kernel phenomena` run folders (e.g. before and after a refactor).

    .venv/bin/python scripts/compare_phenomena_runs.py OLD_RUN NEW_RUN [--rtol 1e-12]

Walks summary.json's ``results``, ``full_pool``, ``floor_by_task`` and the numeric ``extras``
(ε_θ, shift, η², ...) and per_prompt.npz (either layout: the old ``COND|EST|MET`` ``[G, P]`` names
or the current ``metric|COND|EST|MET`` ``[P, G]`` and ``side|NAME`` ``[P]``), and prints the count
of numbers compared and the largest absolute and relative difference. Exit 1 when a number differs
by more than ``--rtol`` (relative, with an absolute floor of 1e-15), a NaN pattern differs or a
name is missing on one side.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

SKIP = {"wall_seconds", "figure", "config", "num_prompts"}


def _walk(a, b, path, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in SKIP:
                continue
            if k not in a or k not in b:
                out["missing"].append(f"{path}/{k}")
                continue
            _walk(a[k], b[k], f"{path}/{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out["missing"].append(f"{path} (length {len(a)} vs {len(b)})")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            _walk(x, y, f"{path}[{i}]", out)
    elif isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        if a != b:
            out["missing"].append(f"{path} ({a!r} vs {b!r})")
    elif a is None or b is None or isinstance(a, (int, float)):
        x = math.nan if a is None else float(a)
        y = math.nan if b is None else float(b)
        _num(np.array([x]), np.array([y]), path, out)


def _num(x, y, path, out):
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape:
        out["missing"].append(f"{path} (shape {x.shape} vs {y.shape})")
        return
    nx, ny = ~np.isfinite(x), ~np.isfinite(y)
    if np.any(nx != ny):
        out["missing"].append(f"{path} (non-finite pattern differs)")
        return
    ok = ~nx
    d = np.abs(x[ok] - y[ok])
    out["count"] += int(ok.sum())
    if d.size:
        rel = d / np.maximum(np.abs(x[ok]), 1e-15)
        if d.max() > out["max_abs"][0]:
            out["max_abs"] = (float(d.max()), path)
        if rel.max() > out["max_rel"][0]:
            out["max_rel"] = (float(rel.max()), path)


def _per_prompt(run: Path) -> dict:
    """per_prompt.npz as {name: array with the prompt axis first}, names without the layout prefix."""
    with np.load(run / "per_prompt.npz") as z:
        arrays = {k: z[k] for k in z.files}
    if any(k.startswith(("metric|", "side|")) for k in arrays):
        return {k.split("|", 1)[1]: v for k, v in arrays.items()}
    return {k: (v.T if v.ndim == 2 else v) for k, v in arrays.items()}  # the old [G, P] layout


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--rtol", type=float, default=1e-12)
    args = p.parse_args(argv)
    out = dict(count=0, max_abs=(0.0, ""), max_rel=(0.0, ""), missing=[])
    a = json.loads((args.old / "summary.json").read_text())
    b = json.loads((args.new / "summary.json").read_text())
    _walk(a, b, "summary", out)
    n_summary = out["count"]
    pa, pb = _per_prompt(args.old), _per_prompt(args.new)
    for k in sorted(set(pa) | set(pb)):
        if k not in pa or k not in pb:
            out["missing"].append(f"per_prompt/{k}")
        else:
            _num(pa[k], pb[k], f"per_prompt/{k}", out)
    print(f"{args.old} vs {args.new}: {n_summary} summary numbers, {out['count'] - n_summary} per-prompt numbers; "
          f"max |diff| {out['max_abs'][0]:.3g} ({out['max_abs'][1]}); max rel {out['max_rel'][0]:.3g} "
          f"({out['max_rel'][1]}); {len(out['missing'])} mismatched names/patterns")
    for m in out["missing"][:20]:
        print("  ", m)
    return 1 if out["missing"] or out["max_rel"][0] > args.rtol else 0


if __name__ == "__main__":
    sys.exit(main())
